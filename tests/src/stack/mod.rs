//! A local Supabase for tests, benchmarks and trying online mode: a throwaway PostgreSQL 15 with
//! the project's migrations, `postrust` as PostgREST, and an in-process gateway that maps
//! `/rest/v1/` and `/realtime/v1/` like a Supabase project's URL does.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let stack = collisionos_tests::stack::Stack::start().await?;
//! stack.sql("insert into shops (name) values ('Northside')").await?;
//! // SUPABASE_URL = stack.url, SUPABASE_ANON_KEY = stack.anon_key, ...
//! stack.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The stack runs on a runtime of its own (two worker threads), so it can be used from any
//! runtime, shared between tests, and stopped from `Drop`. Everything it started — processes,
//! the temporary directory — is gone after [`Stack::shutdown`], and, best effort, after `Drop`.
//!
//! Needs PostgreSQL 15's server binaries (Debian: `postgresql-15`, plus `postgresql-15-wal2json`
//! for the Realtime stand-in) and `postrust` (`cargo install postrust-server --locked`). Found
//! through `PG_BINDIR` and `POSTRUST_BIN` when they are elsewhere.

mod gateway;
mod jwt;
mod postgres;
mod postrust;
mod process;

pub use gateway::{GatewayOptions, RestFaults, RestStats};
pub use jwt::KEY_LIFETIME;

use anyhow::{Context, Result, anyhow};
use gateway::Gateway;
use postgres::{Migrations, PgBin, Postgres, copy_cluster, pg_error_text};
use postrust::{Postrust, PostrustConfig};
use process::RunAs;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// The demo data `supabase-local --seed` loads (fixed ids; loading it twice changes nothing).
pub const DEMO_SEED_SQL: &str = include_str!("seed.sql");

/// How a stack is started. `StackOptions::default()` is what [`Stack::start`] uses.
#[derive(Debug, Default)]
pub struct StackOptions {
    /// The gateway's port and an optional Realtime router.
    pub gateway: GatewayOptions,
    /// The `*.sql` files applied in name order; default `COLLISIONOS_MIGRATIONS_DIR`, else the
    /// repository's `supabase/migrations`.
    pub migrations_dir: Option<PathBuf>,
    /// Extra PostgreSQL settings (`-c name=value`), after the stack's own.
    pub postgres_settings: Vec<(String, String)>,
    /// Extra environment for postrust (e.g. `PGRST_DB_POOL`), after the stack's own.
    pub postrust_env: Vec<(String, String)>,
}

/// A running local Supabase. See the module docs.
pub struct Stack {
    /// `http://127.0.0.1:PORT`: the gateway, to use as `SUPABASE_URL`.
    pub url: String,
    /// A JWT with `role: anon` (what a project's anon key is).
    pub anon_key: String,
    /// A JWT with `role: service_role`.
    pub service_key: String,
    /// The HS256 secret both keys are signed with; postrust verifies with it.
    pub jwt_secret: String,
    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres`: a superuser over TCP.
    pub db_url: String,
    /// `http://127.0.0.1:PORT`: postrust itself (API under `/api`), bypassing the gateway.
    pub postrust_url: String,
    inner: Option<Inner>,
}

/// Everything the stack owns. Field order is drop order: gateway, postrust, postgres, the
/// directory they lived in, and last the runtime whose threads spawned the children (their
/// parent-death signal follows those threads).
struct Inner {
    gateway: Gateway,
    client: tokio_postgres::Client,
    postrust: Postrust,
    postgres: Postgres,
    dir: tempfile::TempDir,
    runtime: OwnedRuntime,
}

/// The stack's runtime, shut down without blocking when dropped: dropping a `Runtime` inside
/// another runtime (any async test) would panic.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("url", &self.url)
            .field("db_port", &self.inner.as_ref().map(|i| i.postgres.port))
            .field("running", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Start a stack with the default options (free ports, no Realtime router).
    pub async fn start() -> Result<Stack> {
        Stack::start_with(StackOptions::default()).await
    }

    /// Start a stack. Fails with the failing child's log tail when a part does not come up.
    pub async fn start_with(options: StackOptions) -> Result<Stack> {
        let runtime = OwnedRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("collisionos-stack")
                .enable_all()
                .build()
                .context("building the stack's runtime")?,
        ));
        // If this future is dropped mid-start, `runtime` goes with it and takes the half-built
        // stack down (its children stop in their own Drop).
        let booted = runtime.handle().spawn(boot(options)).await;
        let Booted {
            inner,
            url,
            anon_key,
            service_key,
            jwt_secret,
            db_url,
            postrust_url,
        } = match booted {
            Ok(booted) => booted?,
            Err(join) => return Err(anyhow!("starting the stack panicked: {join}")),
        };
        Ok(Stack {
            url,
            anon_key,
            service_key,
            jwt_secret,
            db_url,
            postrust_url,
            inner: Some(Inner { runtime, ..inner }),
        })
    }

    fn inner(&self) -> &Inner {
        self.inner
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
    }

    /// `{url}/rest/v1`.
    pub fn rest_url(&self) -> String {
        format!("{}/rest/v1", self.url)
    }

    /// The PostgreSQL server's port on 127.0.0.1.
    pub fn db_port(&self) -> u16 {
        self.inner().postgres.port
    }

    /// The stack's temporary directory (cluster, logs); removed by shutdown.
    pub fn dir(&self) -> &Path {
        self.inner().dir.path()
    }

    /// Process ids of the PostgreSQL postmaster and of postrust.
    pub fn pids(&self) -> (u32, u32) {
        let inner = self.inner();
        (inner.postgres.pid(), inner.postrust.pid())
    }

    /// Run superuser SQL and return the rows as JSON objects.
    ///
    /// One statement that returns rows (`select`, `... returning`) gives typed JSON (numbers,
    /// booleans, nested JSON, timestamps as strings). Statements without rows give `[]`. Several
    /// statements, or one PostgreSQL cannot wrap (`show`, `explain`), run as a simple query whose
    /// rows come back with text values.
    pub async fn sql(&self, query: &str) -> Result<Vec<Value>> {
        let client = &self.inner().client;
        let single = query
            .trim()
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        match client.prepare(single).await {
            Ok(statement) if statement.columns().is_empty() => {
                client
                    .execute(&statement, &[])
                    .await
                    .map_err(|e| anyhow!("{}", pg_error_text(&e)))?;
                Ok(Vec::new())
            }
            Ok(_) => {
                let wrapped = format!(
                    "with stack_sql_rows as (\n{single}\n)\n\
                     select coalesce(json_agg(stack_sql_rows), '[]'::json) from stack_sql_rows"
                );
                match client.query_one(&wrapped, &[]).await {
                    Ok(row) => match row.get::<_, Value>(0) {
                        Value::Array(rows) => Ok(rows),
                        other => Ok(vec![other]),
                    },
                    // Refused while planning, so nothing ran: run it as it is.
                    Err(e) if is_unwrappable(&e) => simple_rows(client, query).await,
                    Err(e) => Err(anyhow!("{}", pg_error_text(&e))),
                }
            }
            Err(e) if is_unwrappable(&e) => simple_rows(client, query).await,
            Err(e) => Err(anyhow!("{}", pg_error_text(&e))),
        }
    }

    /// Load [`DEMO_SEED_SQL`].
    pub async fn seed_demo(&self) -> Result<()> {
        self.inner()
            .client
            .batch_execute(DEMO_SEED_SQL)
            .await
            .map_err(|e| anyhow!("seeding demo data: {}", pg_error_text(&e)))
    }

    /// Ask postrust to reload its schema cache (after DDL), as `NOTIFY pgrst` does for PostgREST.
    /// The reload is asynchronous: poll for what you need.
    pub async fn reload_schema(&self) -> Result<()> {
        self.sql("notify pgrst, 'reload schema'").await.map(drop)
    }

    /// A JWT for `role` (e.g. `authenticated`) signed with the stack's secret.
    pub fn role_key(&self, role: &str, lifetime: Duration) -> String {
        jwt::role_key(&self.jwt_secret, role, lifetime).expect("HS256 signing of JSON claims")
    }

    /// A JWT with exactly these claims (expired ones, custom `sub`, ...).
    pub fn mint_jwt(&self, claims: &Value) -> String {
        jwt::sign(&self.jwt_secret, claims).expect("HS256 signing of JSON claims")
    }

    /// REST traffic counted by the gateway.
    pub fn rest_stats(&self) -> RestStats {
        self.inner().gateway.shared.stats()
    }

    /// Zero the totals; `inflight_max` restarts from what is in flight now.
    pub fn reset_rest_stats(&self) {
        self.inner().gateway.shared.reset_stats();
    }

    /// Replace the injected REST faults (`RestFaults::default()` heals).
    ///
    /// # Panics
    /// When `error_rate` is outside `0.0..=1.0`.
    pub fn set_rest_faults(&self, faults: RestFaults) {
        self.inner().gateway.shared.set_faults(faults);
    }

    /// The REST faults in force.
    pub fn rest_faults(&self) -> RestFaults {
        self.inner().gateway.shared.faults()
    }

    /// Serve `router` under `/realtime/v1/` from now on (replacing any router mounted before).
    pub fn mount_realtime(&self, router: axum::Router) {
        self.inner().gateway.shared.mount_realtime(router);
    }

    /// Stop the gateway (draining it briefly), postrust, then PostgreSQL (fast shutdown), and
    /// remove the temporary directory.
    pub async fn shutdown(mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        inner.gateway.stop().await;
        drop(inner.client);
        inner.postrust.stop().await;
        inner.postgres.stop().await;
        let Inner { dir, runtime, .. } = inner;
        if let Err(e) = dir.close() {
            tracing::warn!(error = %e, "removing the stack's directory");
        }
        drop(runtime);
    }
}

impl Drop for Stack {
    /// Best effort for a stack that was not shut down: `Inner`'s fields stop in order, each
    /// child in its own Drop (signal, wait, SIGKILL).
    fn drop(&mut self) {
        drop(self.inner.take());
    }
}

/// SQLSTATEs PostgreSQL raises while parsing or planning, before anything executed.
fn is_unwrappable(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "42601" | "0A000"))
}

async fn simple_rows(client: &tokio_postgres::Client, query: &str) -> Result<Vec<Value>> {
    let messages = client
        .simple_query(query)
        .await
        .map_err(|e| anyhow!("{}", pg_error_text(&e)))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                let object = row
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| {
                        let value = row.get(i).map_or(Value::Null, |v| Value::String(v.into()));
                        (column.name().to_string(), value)
                    })
                    .collect();
                Some(Value::Object(object))
            }
            _ => None,
        })
        .collect())
}

/// What `boot` hands back to `start_with`, which adds the runtime (a task cannot own the
/// runtime it runs on).
struct Booted {
    inner: Inner,
    url: String,
    anon_key: String,
    service_key: String,
    jwt_secret: String,
    db_url: String,
    postrust_url: String,
}

/// The stack's own directory: under `COLLISIONOS_STACK_DIR` if set, else in `/dev/shm` (a
/// tmpfs: copying the cluster there takes ~0.1 s where a busy disk took 3 s), else the system's
/// temporary directory. It records our pid, so that the directories of processes that died
/// without cleaning up (SIGKILL) are swept by the next stack.
fn stack_dir() -> Result<tempfile::TempDir> {
    let make = |parent: &Path| -> Result<tempfile::TempDir> {
        sweep_stale_stacks(parent);
        let dir = tempfile::Builder::new()
            .prefix(STACK_DIR_PREFIX)
            .tempdir_in(parent)
            .with_context(|| format!("creating a stack directory in {}", parent.display()))?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        Ok(dir)
    };
    if let Some(parent) = std::env::var_os("COLLISIONOS_STACK_DIR").map(PathBuf::from) {
        std::fs::create_dir_all(&parent)?;
        return make(&parent);
    }
    let shm = Path::new("/dev/shm");
    if let Some(dir) = shm.is_dir().then(|| make(shm).ok()).flatten() {
        return Ok(dir);
    }
    make(&std::env::temp_dir())
}

const STACK_DIR_PREFIX: &str = "collisionos-stack-";
/// In each stack directory: the pid of the process that owns the stack.
const OWNER_FILE: &str = "owner.pid";

/// Remove stack directories whose owning process is gone, and whose server is too (it dies with
/// its owner through the parent-death signal; only the files are left).
fn sweep_stale_stacks(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    // A zombie (state Z: dead, not yet reaped) is gone for our purposes.
    let alive = |pid: Option<u32>| {
        pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
            .unwrap_or(false)
    };
    let first_number = |path: PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
    };
    for entry in entries.flatten() {
        let is_stack = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STACK_DIR_PREFIX));
        let dir = entry.path();
        let owner = first_number(dir.join(OWNER_FILE));
        let postmaster = first_number(dir.join("data/postmaster.pid"));
        if is_stack && owner.is_some() && !alive(owner) && !alive(postmaster) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

async fn boot(options: StackOptions) -> Result<Booted> {
    let started = Instant::now();
    let run_as = RunAs::detect()?;
    let bin = PgBin::find()?;
    let postrust_bin = postrust::find_binary()?;
    let migrations_dir = options
        .migrations_dir
        .clone()
        .or_else(|| std::env::var_os("COLLISIONOS_MIGRATIONS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../supabase/migrations"));
    let migrations = Migrations::load(&migrations_dir)?;
    let template = postgres::template(
        &bin,
        &migrations,
        run_as.as_ref(),
        &postgres::template_root(),
    )
    .await?;
    tracing::debug!(elapsed = ?started.elapsed(), "template ready");

    let dir = stack_dir()?;
    if let Some(user) = &run_as {
        user.chown(dir.path())?;
    }
    let data = dir.path().join("data");
    {
        let (template, data, run_as) = (template.clone(), data.clone(), run_as.clone());
        tokio::task::spawn_blocking(move || copy_cluster(&template, &data, run_as.as_ref()))
            .await??;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "cluster copied");
    let postgres = Postgres::start(
        &bin,
        &data,
        dir.path(),
        &dir.path().join("postgres.log"),
        run_as.as_ref(),
        &options.postgres_settings,
    )
    .await?;
    let client = postgres.connect().await?;
    tracing::debug!(elapsed = ?started.elapsed(), port = postgres.port, "postgres up");

    // Fresh passwords per stack: the template's roles have none, and TCP wants one.
    let superuser_password = jwt::random_secret();
    let authenticator_password = jwt::random_secret();
    client
        .batch_execute(&format!(
            "alter role postgres password '{superuser_password}';
             alter role authenticator password '{authenticator_password}';"
        ))
        .await
        .map_err(|e| anyhow!("setting passwords: {}", pg_error_text(&e)))?;
    let port = postgres.port;
    let db_url = format!("postgres://postgres:{superuser_password}@127.0.0.1:{port}/postgres");
    let authenticator_url =
        format!("postgres://authenticator:{authenticator_password}@127.0.0.1:{port}/postgres");

    let jwt_secret = jwt::random_secret();
    let anon_key = jwt::role_key(&jwt_secret, "anon", KEY_LIFETIME)?;
    let service_key = jwt::role_key(&jwt_secret, "service_role", KEY_LIFETIME)?;

    let postrust = Postrust::start(&PostrustConfig {
        binary: &postrust_bin,
        db_uri: &authenticator_url,
        jwt_secret: &jwt_secret,
        log: &dir.path().join("postrust.log"),
        extra_env: &options.postrust_env,
    })
    .await?;
    tracing::debug!(elapsed = ?started.elapsed(), port = postrust.port, "postrust up");
    let gateway = Gateway::start(
        postrust.port,
        vec![anon_key.clone(), service_key.clone()],
        options.gateway,
    )
    .await?;
    let url = format!("http://{}", gateway.addr);
    let postrust_url = format!("http://127.0.0.1:{}", postrust.port);
    tracing::info!(%url, elapsed = ?started.elapsed(), "local Supabase stack up");
    Ok(Booted {
        inner: Inner {
            gateway,
            client,
            postrust,
            postgres,
            dir,
            runtime: OwnedRuntime(None),
        },
        url,
        anon_key,
        service_key,
        jwt_secret,
        db_url,
        postrust_url,
    })
}
