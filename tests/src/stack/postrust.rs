//! The stack's PostgREST: `postrust` (crates.io `postrust-server`), serving the API under `/api`.

use super::gateway::{Upstream, upstream_client};
use super::postgres::which;
use super::process::{ChildProc, Stop, free_port};
use anyhow::{Result, anyhow, bail};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 4;

/// `POSTRUST_BIN`, else `$CARGO_HOME/bin/postrust` (`~/.cargo/bin`), else `postrust` on `PATH`.
pub(crate) fn find_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("POSTRUST_BIN").map(PathBuf::from) {
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("POSTRUST_BIN={} is not a file", bin.display());
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(bin) = cargo_home
        .map(|h| h.join("bin").join("postrust"))
        .filter(|bin| bin.is_file())
    {
        return Ok(bin);
    }
    if let Some(bin) = which("postrust") {
        return Ok(bin);
    }
    bail!(
        "the PostgREST server `postrust` was not found (looked at POSTRUST_BIN, \
         ~/.cargo/bin/postrust and PATH). Install it with \
         `cargo install postrust-server --locked` (about 6 minutes on 2 cores), \
         or point POSTRUST_BIN at the binary"
    )
}

/// What postrust is started with.
pub(crate) struct PostrustConfig<'a> {
    pub binary: &'a Path,
    /// `postgres://authenticator:...@127.0.0.1:PORT/postgres`
    pub db_uri: &'a str,
    pub jwt_secret: &'a str,
    pub log: &'a Path,
    /// Further `PGRST_*` variables (pool size, max rows, ...), after the stack's own.
    pub extra_env: &'a [(String, String)],
}

/// A running postrust.
#[derive(Debug)]
pub(crate) struct Postrust {
    proc: ChildProc,
    pub port: u16,
}

impl Postrust {
    /// Start on a free port (retrying if it is taken meanwhile) and wait until `/_/ready` says
    /// the database is reachable and the schema cache loaded.
    pub async fn start(config: &PostrustConfig<'_>) -> Result<Postrust> {
        let client = upstream_client();
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = Command::new(config.binary);
            // Nothing inherited: DATABASE_URL would override PGRST_DB_URI, RUST_LOG the level.
            cmd.env("PGRST_DB_URI", config.db_uri)
                .env("PGRST_DB_SCHEMAS", "public")
                .env("PGRST_DB_ANON_ROLE", "anon")
                .env("PGRST_JWT_SECRET", config.jwt_secret)
                .env("PGRST_SERVER_HOST", "127.0.0.1")
                .env("PGRST_SERVER_PORT", port.to_string())
                // `NOTIFY pgrst, 'reload schema'` after DDL, as with PostgREST.
                .env("PGRST_DB_CHANNEL_ENABLED", "true")
                // Database errors in PostgreSQL's words (`23505`, `42501`, ...) as PostgREST,
                // and so Supabase, answers them; postrust's default is `PGRST50x` "Database error".
                .env("PGRST_DB_ERRORS_VERBATIM", "*")
                .env("PGRST_LOG_LEVEL", "info")
                .env("NO_COLOR", "1");
            for (k, v) in config.extra_env {
                cmd.env(k, v);
            }
            // postrust is not PostgreSQL: it may run as us.
            let mut proc = ChildProc::spawn("postrust", cmd, true, config.log, None, Stop::Term)?;
            match wait_ready(&mut proc, &client, port).await {
                Ok(()) => return Ok(Postrust { proc, port }),
                Err(e) => {
                    let tail = proc.log_tail(40);
                    proc.stop(STOP_GRACE).await;
                    if tail.contains("Address already in use") || tail.contains("AddrInUse") {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("postrust could not get a port")))
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub async fn stop(&mut self) {
        self.proc.stop(STOP_GRACE).await;
    }
}

async fn wait_ready(proc: &mut ChildProc, client: &Upstream, port: u16) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let url: http::Uri = format!("http://127.0.0.1:{port}/_/ready").parse()?;
    let mut last = String::from("no answer yet");
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "postrust exited during start-up ({status}); its log ends:\n{}",
                proc.log_tail(40)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "postrust was not ready within {START_TIMEOUT:?} (last: {last}); its log ends:\n{}",
                proc.log_tail(40)
            );
        }
        let request = http::Request::get(url.clone()).body(axum::body::Body::empty())?;
        match tokio::time::timeout(Duration::from_secs(2), client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status.is_success() {
                    return Ok(());
                }
                last = format!("{status} {}", String::from_utf8_lossy(&body));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
