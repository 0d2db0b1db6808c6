//! `supabase-local`: a local Supabase (PostgreSQL 15 + postrust + gateway) for trying the app in
//! online mode and for the Playwright and benchmark scripts.
//!
//! Writes `SUPABASE_URL`, `SUPABASE_ANON_KEY` and `SUPABASE_SERVICE_ROLE_KEY` (then
//! `SUPABASE_JWT_SECRET` and `SUPABASE_DB_URL`) to `.stack/env`, prints them, and runs until
//! Ctrl-C or SIGTERM; then everything stops and the env file is removed.

use anyhow::{Context, Result};
use clap::Parser;
use collisionos_tests::realtime::StandIn;
use collisionos_tests::stack::{GatewayOptions, Stack, StackOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Run a local Supabase (PostgreSQL 15, postrust, gateway) until Ctrl-C")]
struct Args {
    /// Gateway port on 127.0.0.1 (Supabase CLI's is 54321); 0 picks a free one.
    #[arg(long, default_value_t = 54321)]
    port: u16,
    /// Load demo shops, customers, vehicles and repair orders.
    #[arg(long)]
    seed: bool,
    /// Where to write the environment file.
    #[arg(long, default_value = ".stack/env")]
    env_file: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    // Listening before anything starts: a signal during start-up must still tear down.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut starting = tokio::spawn(Stack::start_with(StackOptions {
        gateway: GatewayOptions {
            port: (args.port != 0).then_some(args.port),
            ..GatewayOptions::default()
        },
        ..StackOptions::default()
    }));
    let stack = tokio::select! {
        started = &mut starting => started??,
        _ = interrupt.recv() => return stop_while_starting(starting).await,
        _ = terminate.recv() => return stop_while_starting(starting).await,
    };
    // Realtime at /realtime/v1/websocket, from the same Postgres, as on Supabase.
    let realtime = StandIn::start(&stack.db_url, &stack.jwt_secret).await?;
    stack.mount_realtime(realtime.router());
    if args.seed {
        stack.seed_demo().await?;
    }
    let env = format!(
        "SUPABASE_URL={}\nSUPABASE_ANON_KEY={}\nSUPABASE_SERVICE_ROLE_KEY={}\n\
         SUPABASE_JWT_SECRET={}\nSUPABASE_DB_URL={}\n",
        stack.url, stack.anon_key, stack.service_key, stack.jwt_secret, stack.db_url
    );
    let written = write_env(&args.env_file, &env);
    print!("{env}");
    println!(
        "# local Supabase ready in {} ms; REST {}/rest/v1, Realtime /realtime/v1/websocket, stats {}/__stack/stats; Ctrl-C stops it",
        started.elapsed().as_millis(),
        stack.url,
        stack.url
    );
    std::io::stdout().flush()?;
    if let Err(e) = &written {
        eprintln!("could not write {}: {e:#}", args.env_file.display());
    }

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the local Supabase");
    realtime.shutdown().await;
    stack.shutdown().await;
    if written.is_ok() {
        let _ = std::fs::remove_file(&args.env_file);
    }
    Ok(())
}

/// A signal came while the stack was starting: let the start finish (a second or so), then stop
/// what it started.
async fn stop_while_starting(starting: tokio::task::JoinHandle<Result<Stack>>) -> Result<()> {
    eprintln!("interrupted while starting; stopping");
    if let Ok(Ok(stack)) = starting.await {
        stack.shutdown().await;
    }
    Ok(())
}

/// Write the env file, readable by its owner only (it holds the service-role key), and
/// atomically: scripts wait for it to exist and then read it at once.
fn write_env(path: &Path, contents: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    Ok(())
}
