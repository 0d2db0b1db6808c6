//! `collisionos-desktop`: CollisionOS Monitor's desktop shell.
//!
//! A thin Tauri 2 shell around the in-process backend (`collisionos::Backend`): one window on the
//! bundled UI, a tray icon whose colour follows health, desktop notifications for alerts, single
//! instance, and an exit path that always runs `BackendHandle::shutdown` first. Everything the
//! UI shows comes from the backend's HTTP API; no business logic lives here.
//!
//! Process edge, in order: configuration (exit 2 on a bad value), a display (exit 3 without
//! one, before anything is started), one multi-thread tokio runtime shared with Tauri, then the
//! app itself ([`app::run`]), whose exit code becomes the process's.

// Release builds on Windows are GUI programs (no console window).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod app;
mod notify;
mod settings;
mod tray;
mod webview;

use std::process::ExitCode;

// jemalloc, as in the headless binary: the monitor's allocator figures (allocated/resident)
// are only real when jemalloc is the allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration the backend refuses (same as the headless binary).
const EXIT_CONFIG: u8 = 2;
/// Exit code when there is no graphical display to open a window on.
const EXIT_NO_DISPLAY: u8 = 3;
/// Exit code when the app could not start (port taken, data directory unusable, ...).
const EXIT_START: u8 = 1;

const NO_DISPLAY: &str = "CollisionOS Monitor needs a graphical display; run `collisionos --headless` for the headless backend";

fn main() -> ExitCode {
    let config = match collisionos::config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match settings::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // tao panics (with a backtrace) when GTK cannot open a display, and the backend would already
    // hold its port by then: find out first, and say what to do instead.
    if !display_available() {
        eprintln!("{NO_DISPLAY}");
        return ExitCode::from(EXIT_NO_DISPLAY);
    }

    let _log =
        collisionos::logging::init(&config.log_level, &config.data_dir, config.log_max_files);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collisionos")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    // Tauri's own tasks (plugins, IPC) and the backend's share this one runtime.
    tauri::async_runtime::set(runtime.handle().clone());

    let code = match app::run(config, settings, &runtime) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("CollisionOS Monitor could not start: {e:#}");
            EXIT_START as i32
        }
    };
    // Stray blocking work (a notification still talking to D-Bus) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_START))
}

/// Whether a window can be opened: a display is named and GTK can open it.
fn display_available() -> bool {
    #[cfg(target_os = "linux")]
    {
        let named = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if !named("DISPLAY") && !named("WAYLAND_DISPLAY") {
            return false;
        }
        // Initialises GTK on this (the main) thread; tao's own `gtk::init` then finds it done.
        gtk::init().is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}
