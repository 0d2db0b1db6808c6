//! The stack's PostgreSQL 15: finding the binaries, a cached template cluster with the
//! migrations applied, and one throwaway server per stack copied from it.
//!
//! `initdb` plus the migrations cost about a second; copying a finished cluster costs a few tens
//! of milliseconds. So the template is built once per set of migrations (keyed by a hash of their
//! names and text and the server's version) under `target/stack-template/`, behind a file lock
//! that parallel test processes share, and renamed into place only when complete.

use super::process::{ChildProc, RunAs, Stop, free_port, run_to_end};
use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// Bumped when the template's layout or contents change in a way the key does not see.
const TEMPLATE_FORMAT: &str = "collisionos-stack-template-v2";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts at starting a server whose free port was taken in the meantime.
const PORT_ATTEMPTS: usize = 4;

/// Where PostgreSQL's programs live.
#[derive(Clone, Debug)]
pub(crate) struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// `PG_BINDIR` if set, else Debian's `/usr/lib/postgresql/15/bin` (or the newest other
    /// version there), else `pg_config --bindir`, else the directory of `postgres` on `PATH`.
    pub fn find() -> Result<PgBin> {
        let has_server =
            |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
        if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
            if has_server(&dir) {
                return Ok(PgBin { dir });
            }
            bail!("PG_BINDIR={} holds no postgres and initdb", dir.display());
        }
        let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
        if has_server(&preferred) {
            return Ok(PgBin { dir: preferred });
        }
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .filter(|(_, dir)| has_server(dir))
                .collect();
            versions.sort();
            if let Some((_, dir)) = versions.pop() {
                return Ok(PgBin { dir });
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_server(&dir) {
                return Ok(PgBin { dir });
            }
        }
        if let Some(dir) = which("postgres")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|dir| has_server(dir))
        {
            return Ok(PgBin { dir });
        }
        bail!(
            "PostgreSQL server binaries not found (looked in PG_BINDIR, /usr/lib/postgresql/*/bin, \
             pg_config --bindir, PATH). Install them: `apt-get install postgresql-15 \
             postgresql-15-wal2json`, or set PG_BINDIR"
        )
    }

    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `postgres --version`, part of the template key.
    fn version(&self) -> Result<String> {
        let out = Command::new(self.program("postgres"))
            .arg("--version")
            .output()
            .context("running postgres --version")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// First `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The migration files, in the order they are applied (by file name).
#[derive(Clone, Debug)]
pub(crate) struct Migrations {
    files: Vec<(String, String)>,
}

impl Migrations {
    pub fn load(dir: &Path) -> Result<Migrations> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the migrations directory {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.is_file() && name.ends_with(".sql") {
                let sql = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                files.push((name.to_string(), sql));
            }
        }
        if files.is_empty() {
            bail!("no *.sql migrations in {}", dir.display());
        }
        files.sort();
        Ok(Migrations { files })
    }

    /// A stable name for the cluster these migrations make on this server version.
    fn key(&self, pg_version: &str) -> String {
        let mut hash = Fnv64::new();
        hash.write(TEMPLATE_FORMAT.as_bytes());
        hash.write(pg_version.as_bytes());
        for (name, sql) in &self.files {
            hash.write(name.as_bytes());
            hash.write(&[0]);
            hash.write(sql.as_bytes());
            hash.write(&[0]);
        }
        format!("{:016x}", hash.finish())
    }

    /// Apply every migration, each in its own transaction, recording it where the Supabase CLI
    /// does (`supabase_migrations.schema_migrations`).
    pub async fn apply(&self, client: &mut Client) -> Result<()> {
        client
            .batch_execute(
                "create schema if not exists supabase_migrations;
                 create table if not exists supabase_migrations.schema_migrations
                   (version text primary key, statements text[], name text);",
            )
            .await?;
        for (file, sql) in &self.files {
            let (version, name) = file
                .trim_end_matches(".sql")
                .split_once('_')
                .unwrap_or((file.as_str(), ""));
            let tx = client.transaction().await?;
            tx.batch_execute(sql)
                .await
                .map_err(|e| anyhow!("migration {file} failed: {}", pg_error_text(&e)))?;
            tx.execute(
                "insert into supabase_migrations.schema_migrations (version, name) values ($1, $2)
                 on conflict (version) do nothing",
                &[&version, &name],
            )
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// A database error with its detail, hint and position, which `Display` leaves out.
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; detail: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; where: {w}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// FNV-1a, 64 bits: a cache key that stays the same across Rust releases (unlike `DefaultHasher`).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The directory templates are cached in: `COLLISIONOS_STACK_TEMPLATE_DIR`, else
/// `$CARGO_TARGET_DIR/stack-template`, else the workspace's `target/stack-template`.
pub(crate) fn template_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("COLLISIONOS_STACK_TEMPLATE_DIR") {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    target.join("stack-template")
}

/// The data directory of a stopped cluster with `migrations` applied, building it if needed.
pub(crate) async fn template(
    bin: &PgBin,
    migrations: &Migrations,
    run_as: Option<&RunAs>,
    root: &Path,
) -> Result<PathBuf> {
    let key = migrations.key(&bin.version()?);
    let done = root.join(&key);
    if done.join("data").is_dir() {
        return Ok(done.join("data"));
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;

    // One builder at a time, across threads and processes. The lock is an flock on the open
    // file: it goes away with the process however it ends.
    let lock_path = root.join(".lock");
    let lock = tokio::task::spawn_blocking(move || -> Result<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        Ok(file)
    })
    .await??;

    if done.join("data").is_dir() {
        return Ok(done.join("data"));
    }
    prune_templates(root);

    let building = root.join(format!("{key}.building"));
    let started = Instant::now();
    build_template(bin, migrations, run_as, &building)
        .await
        .with_context(|| format!("building the PostgreSQL template in {}", building.display()))?;
    std::fs::rename(&building, &done)
        .with_context(|| format!("renaming {} into place", building.display()))?;
    tracing::info!(dir = %done.display(), elapsed = ?started.elapsed(), "built stack template");
    drop(lock);
    Ok(done.join("data"))
}

/// Templates kept besides the one being built: other checkouts or binaries sharing this target
/// directory may still copy from theirs, so only the oldest go.
const TEMPLATES_KEPT: usize = 4;

/// Under the template lock: remove builds that died half-way (nobody else is building) and all
/// but the newest [`TEMPLATES_KEPT`] finished templates.
fn prune_templates(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut finished = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name().to_string_lossy().ends_with(".building") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            finished.push((modified, entry.path()));
        }
    }
    finished.sort();
    let excess = finished.len().saturating_sub(TEMPLATES_KEPT);
    for (_, path) in finished.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

async fn build_template(
    bin: &PgBin,
    migrations: &Migrations,
    run_as: Option<&RunAs>,
    dir: &Path,
) -> Result<()> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
    if let Some(user) = run_as {
        user.chown(dir)?;
        user.chown(&data)?;
    }
    let mut initdb = Command::new(bin.program("initdb"));
    initdb
        .arg("--pgdata")
        .arg(&data)
        .args(["--username=postgres", "--encoding=UTF8", "--locale=C"])
        // The socket is private to the server's user (see `socket_dir`); TCP needs a password.
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        // 1 MB WAL segments instead of 16: the template's pg_wal is what every stack copies.
        .args(["--wal-segsize=1", "--no-sync", "--no-instructions"]);
    run_to_end(
        "initdb",
        initdb,
        &dir.join("initdb.log"),
        run_as,
        Duration::from_secs(120),
    )
    .await?;

    let socket = socket_dir(run_as)?;
    let mut server = Postgres::start(
        bin,
        &data,
        socket.path(),
        &dir.join("postgres.log"),
        run_as,
        &[],
    )
    .await?;
    let applied = async {
        let mut client = server.connect().await?;
        migrations.apply(&mut client).await?;
        // A checkpoint now makes every copy's start-up recovery-free and quick.
        client.batch_execute("checkpoint").await?;
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    applied
}

/// A private directory for a server's Unix socket: short (socket paths are limited to 107 bytes)
/// and reachable only by the server's user (and root), so `trust` on it is safe.
pub(crate) fn socket_dir(run_as: Option<&RunAs>) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("collisionos-pg-")
        .tempdir()
        .context("creating a socket directory")?;
    if let Some(user) = run_as {
        user.chown(dir.path())?;
    }
    Ok(dir)
}

/// Copy a cluster's data directory, keeping modes, giving every entry to `run_as`.
pub(crate) fn copy_cluster(from: &Path, to: &Path, run_as: Option<&RunAs>) -> Result<()> {
    fn copy(from: &Path, to: &Path, run_as: Option<&RunAs>) -> Result<()> {
        let meta = std::fs::symlink_metadata(from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(to)?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                copy(&entry.path(), &to.join(entry.file_name()), run_as)?;
            }
            std::fs::set_permissions(to, meta.permissions())?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        } else {
            std::fs::copy(from, to)?;
        }
        if let Some(user) = run_as {
            std::os::unix::fs::lchown(to, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    }
    copy(from, to, run_as)
        .with_context(|| format!("copying the cluster {} to {}", from.display(), to.display()))
}

/// A running server.
#[derive(Debug)]
pub(crate) struct Postgres {
    proc: ChildProc,
    pub port: u16,
    socket_dir: PathBuf,
}

impl Postgres {
    /// Start a server on `data` on a free port, retrying when the port is taken in the meantime,
    /// and wait until it accepts connections.
    pub async fn start(
        bin: &PgBin,
        data: &Path,
        socket_dir: &Path,
        log: &Path,
        run_as: Option<&RunAs>,
        settings: &[(String, String)],
    ) -> Result<Postgres> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = Command::new(bin.program("postgres"));
            cmd.arg("-D").arg(data);
            let mut set = |k: &str, v: &str| {
                cmd.arg("-c").arg(format!("{k}={v}"));
            };
            set("port", &port.to_string());
            set("listen_addresses", "127.0.0.1");
            set("unix_socket_directories", &socket_dir.to_string_lossy());
            // The Realtime stand-in decodes the WAL (wal2json).
            set("wal_level", "logical");
            set("max_replication_slots", "8");
            set("max_wal_senders", "8");
            // A throwaway cluster: durability buys nothing and costs start-up and write time.
            // synchronous_commit stays on: logical decoding only sees flushed WAL, and with it
            // off a change would reach the Realtime stand-in up to 600 ms late. Without fsync a
            // flush is a cheap write.
            set("fsync", "off");
            set("full_page_writes", "off");
            // The cluster may live in RAM (/dev/shm): keep the WAL small.
            set("min_wal_size", "16MB");
            set("max_wal_size", "256MB");
            for (k, v) in settings {
                set(k, v);
            }
            let mut proc = ChildProc::spawn("postgres", cmd, false, log, run_as, Stop::Int)?;
            let server_socket = socket_dir.to_path_buf();
            match wait_ready(&mut proc, &server_socket, port).await {
                Ok(()) => {
                    return Ok(Postgres {
                        proc,
                        port,
                        socket_dir: server_socket,
                    });
                }
                Err(e) => {
                    let tail = proc.log_tail(40);
                    proc.stop(STOP_GRACE).await;
                    if tail.contains("could not bind") || tail.contains("already in use") {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("postgres could not get a port")))
    }

    /// A superuser connection over the Unix socket, its connection task on the current runtime.
    pub async fn connect(&self) -> Result<Client> {
        connect_socket(&self.socket_dir, self.port).await
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Fast shutdown (SIGINT: roll back, disconnect, checkpoint), SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        self.proc.stop(STOP_GRACE).await;
    }
}

async fn connect_socket(socket_dir: &Path, port: u16) -> Result<Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .application_name("collisionos-stack")
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "stack superuser connection ended");
        }
    });
    Ok(client)
}

async fn wait_ready(proc: &mut ChildProc, socket_dir: &Path, port: u16) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "postgres exited during start-up ({status}); its log ends:\n{}",
                proc.log_tail(40)
            );
        }
        match connect_socket(socket_dir, port).await {
            Ok(client) => {
                client.simple_query("select 1").await?;
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "postgres did not accept connections within {START_TIMEOUT:?} ({e}); \
                     its log ends:\n{}",
                    proc.log_tail(40)
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
