//! `collisionos`: the headless backend. Serves the API and the built UI on `BIND:PORT` and
//! prints the UI's URL with the API token. Never links GTK or WebKit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use collisionos::config::Config;
use collisionos::{Backend, StartOptions};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "collisionos",
    version,
    about = "CollisionOS Monitor backend (headless)"
)]
struct Cli {
    /// Run without a window (the only mode of this binary; accepted for scripts).
    #[arg(long)]
    headless: bool,
    /// Directory of the built UI to serve at `/` (default: $COLLISIONOS_UI_DIR, ./ui/dist,
    /// or the source tree's ui/dist).
    #[arg(long)]
    ui_dir: Option<PathBuf>,
    /// Seconds to let in-flight work finish at shutdown.
    #[arg(long, default_value_t = 10)]
    shutdown_timeout: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (secrets redacted) and where each value came from.
    Config,
}

fn ui_dir(flag: Option<PathBuf>) -> Option<PathBuf> {
    let candidates = [
        flag,
        std::env::var_os("COLLISIONOS_UI_DIR").map(PathBuf::from),
        Some(PathBuf::from("ui/dist")),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../ui/dist"
        ))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("index.html").is_file())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("collisionos: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    let _ = cli.headless;
    let _logs =
        collisionos::logging::init(&config.log_level, &config.data_dir, config.log_max_files);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("collisionos: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ui = ui_dir(cli.ui_dir);
    rt.block_on(async move {
        if ui.is_none() {
            tracing::warn!(
                "no built UI found (run `npm --prefix ui run build`); serving the API only"
            );
        }
        let mut handle = match Backend::start(
            config,
            StartOptions {
                listener: None,
                ui_dir: ui,
                extra_children: false,
            },
        )
        .await
        {
            Ok(h) => h,
            Err(e) => {
                eprintln!("collisionos: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The one place the token is shown: the user's own terminal.
        println!("CollisionOS Monitor is running: {}", handle.ui_url());
        wait_for_signal().await;
        let report = handle
            .shutdown(Duration::from_secs(cli.shutdown_timeout))
            .await;
        if report.clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
