//! The Tauri app around the backend: plugins, the main window, the tray and notification
//! followers, and the exit path.
//!
//! Exit, whatever asks for it (tray Quit, closing the window, SIGINT/SIGTERM, the last window
//! going away): the first `ExitRequested` is held back with `prevent_exit`, the followers stop,
//! `BackendHandle::shutdown` runs to completion (DESIGN.md's order, bounded by
//! [`SHUTDOWN_DEADLINE`]), and only then is the exit let through with code 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use collisionos::config::Config;
use collisionos::events::{Alert, Bus, BusReceiver, Event};
use collisionos::{Backend, BackendHandle, HealthLevel, StartOptions};
use tauri::{AppHandle, Manager, RunEvent, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_notification::NotificationExt;

use crate::notify::{self, RateLimit};
use crate::settings::Settings;
use crate::{tray, webview};

/// The whole backend shutdown must fit in this.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Label of the one window.
pub const MAIN: &str = "main";

/// State the shell's callbacks share.
struct Shell {
    /// `Some` from start-up until shutdown takes it.
    backend: Mutex<Option<BackendHandle>>,
    settings: Settings,
    /// Tray and notification followers, stopped before the backend shuts down.
    followers: Mutex<Vec<tauri::async_runtime::JoinHandle<()>>>,
    /// Set once an exit has begun; the next `ExitRequested` is let through.
    exiting: AtomicBool,
    /// Set when start-up failed; the exit goes through with this error printed by `run`.
    start_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shell {
    fn status(&self) -> Option<HealthLevel> {
        lock(&self.backend).as_ref().map(BackendHandle::status)
    }

    /// Stops the followers, then the backend. Idempotent.
    async fn shutdown(&self) {
        for follower in lock(&self.followers).drain(..) {
            follower.abort();
        }
        let backend = lock(&self.backend).take();
        if let Some(mut backend) = backend {
            let report = backend.shutdown(SHUTDOWN_DEADLINE).await;
            tracing::info!(
                clean = report.clean,
                took_ms = report.took_ms,
                subscriptions_closed = report.subscriptions_closed,
                "backend stopped"
            );
        }
    }
}

/// Builds and runs the app; returns the process exit code.
pub fn run(
    config: Config,
    settings: Settings,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<i32> {
    // The content security policy is fixed when Tauri is built, so the port must be known now.
    // A fixed PORT is known from the configuration; PORT=0 is bound here and handed over.
    let (listener, addr) = if config.server.port == 0 {
        let listener = std::net::TcpListener::bind((config.server.bind, 0))
            .with_context(|| format!("cannot listen on {}:0", config.server.bind))?;
        let addr = listener.local_addr()?;
        (Some(listener), addr)
    } else {
        (
            None,
            SocketAddr::new(config.server.bind, config.server.port),
        )
    };
    let api = webview::api_base(addr);
    let signals = Signals::register(runtime)?;

    let mut context = tauri::generate_context!();
    let csp = webview::csp_for(context.config().app.security.csp.clone(), &api);
    context.config_mut().app.security.csp = Some(csp);

    let shell = Arc::new(Shell {
        backend: Mutex::new(None),
        settings,
        followers: Mutex::new(Vec::new()),
        exiting: AtomicBool::new(false),
        start_error: Mutex::new(None),
    });

    let setup_shell = shell.clone();
    let window_shell = shell.clone();
    let app = tauri::Builder::default()
        // First, so a second launch hands over to the running one before it starts anything.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            show_main(app);
        }))
        .plugin(tauri_plugin_notification::init())
        .setup(move |app| {
            // Errors here would make Tauri panic: record them and exit instead.
            if let Err(e) = start(app.handle(), &setup_shell, config, listener, &api, signals) {
                *lock(&setup_shell.start_error) = Some(format!("{e:#}"));
                setup_shell.exiting.store(true, Ordering::SeqCst);
                app.handle().exit(crate::EXIT_START as i32);
            }
            Ok(())
        })
        .on_window_event(move |window, event| {
            if let WindowEvent::CloseRequested { api, .. } = event
                && window_shell.settings.close_to_tray
                && !window_shell.exiting.load(Ordering::SeqCst)
            {
                api.prevent_close();
                if let Err(e) = window.hide() {
                    tracing::warn!("cannot hide the window: {e}");
                }
            }
        })
        .build(context)
        .context("cannot build the desktop app")?;

    let exit_shell = shell.clone();
    let code = app.run_return(move |app, event| {
        if let RunEvent::ExitRequested { api, code, .. } = event {
            if exit_shell.exiting.swap(true, Ordering::SeqCst) {
                // An exit already began: this is the one sent after shutdown (or start failed).
                return;
            }
            api.prevent_exit();
            let code = code.unwrap_or(0);
            let app = app.clone();
            let shell = exit_shell.clone();
            tauri::async_runtime::spawn(async move {
                shell.shutdown().await;
                app.exit(code);
            });
        }
    });

    // Normally a no-op (shutdown already ran); covers an event loop that ended on its own.
    runtime.block_on(shell.shutdown());
    if let Some(e) = lock(&shell.start_error).take() {
        anyhow::bail!(e);
    }
    Ok(code)
}

/// Starts the backend, then the window, the tray and the followers.
fn start(
    app: &AppHandle,
    shell: &Arc<Shell>,
    config: Config,
    listener: Option<std::net::TcpListener>,
    api: &str,
    signals: Signals,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let backend = tauri::async_runtime::block_on(Backend::start(
        config,
        StartOptions {
            listener,
            ui_dir: None,
            extra_children: true,
        },
    ))?;
    let bound = webview::api_base(backend.addr());
    anyhow::ensure!(
        bound == api,
        "the backend listens on {bound}, the window was set up for {api}"
    );
    let token = backend.api_token().to_string();
    let level = backend.status();
    let bus = backend.bus().clone();
    // Subscribed before reading what start-up raised already, so no alert falls in between (one
    // seen twice is held back by the rate limit).
    let alerts = bus.subscribe();
    let raised_at_start = backend.monitor().alerts();
    *lock(&shell.backend) = Some(backend);
    tracing::info!(
        api,
        ms = started.elapsed().as_millis() as u64,
        "backend started"
    );

    let window_config = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == MAIN)
        .cloned()
        .context("tauri.conf.json has no `main` window")?;
    let window = WebviewWindowBuilder::from_config(app, &window_config)?
        .initialization_script(webview::init_script(api, &token))
        .on_navigation(|url| {
            let ours = webview::is_app_url(url);
            if !ours {
                tracing::warn!(%url, "navigation away from the app blocked");
            }
            ours
        })
        .build()
        .context("cannot open the window")?;
    #[cfg(target_os = "linux")]
    if !shell.settings.gpu_compositing {
        window.with_webview(webview::software_compositing)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = window;
    tracing::info!(ms = started.elapsed().as_millis() as u64, "window created");

    let tray =
        tray::build(app, level, show_main, request_quit).context("cannot create the tray icon")?;
    let followers = vec![
        tauri::async_runtime::spawn(follow_health(tray, shell.clone(), bus.clone(), level)),
        tauri::async_runtime::spawn(notify_alerts(app.clone(), alerts, raised_at_start)),
        tauri::async_runtime::spawn(quit_on_signal(app.clone(), signals)),
    ];
    lock(&shell.followers).extend(followers);
    Ok(())
}

/// Shows, unminimises and focuses the main window (tray Open, a second launch).
fn show_main(app: &AppHandle) {
    if let Some(window) = app.get_webview_window(MAIN) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
}

/// Tray Quit: the normal exit path (shutdown first, see the module docs).
fn request_quit(app: &AppHandle) {
    tracing::info!("quit requested from the tray");
    app.exit(0);
}

/// Keeps the tray colour on the backend's health, re-read on every sample and alert.
async fn follow_health(
    tray: tauri::tray::TrayIcon,
    shell: Arc<Shell>,
    bus: Bus,
    mut shown: HealthLevel,
) {
    let mut events = bus.subscribe();
    while let Some(event) = events.recv().await {
        if !matches!(event, Event::Sample(_) | Event::Alert(_)) {
            continue;
        }
        let Some(level) = shell.status() else { break };
        if level != shown {
            tracing::info!(from = ?shown, to = ?level, "health changed");
            if let Err(e) = tray::show(&tray, level) {
                tracing::warn!("cannot update the tray icon: {e}");
            }
            shown = level;
        }
    }
}

/// Turns alerts into desktop notifications, rate-limited per kind: first those raised while the
/// backend started, then every new one.
async fn notify_alerts(app: AppHandle, mut events: BusReceiver, raised_at_start: Vec<Alert>) {
    let mut limit = RateLimit::default();
    for alert in &raised_at_start {
        show_notice(&app, &mut limit, alert);
    }
    while let Some(event) = events.recv().await {
        if let Event::Alert(alert) = event {
            show_notice(&app, &mut limit, &alert);
        }
    }
}

fn show_notice(app: &AppHandle, limit: &mut RateLimit, alert: &Alert) {
    let Some(notice) = notify::notice(limit, alert, Instant::now()) else {
        return;
    };
    tracing::info!(kind = ?notice.kind, "desktop notification");
    if let Err(e) = app
        .notification()
        .builder()
        .title(notice.title)
        .body(notice.body)
        .show()
    {
        tracing::warn!("cannot show a notification: {e}");
    }
}

/// SIGINT and SIGTERM (Ctrl-C, logout, `kill`), registered before anything starts so that no
/// signal can kill the process between the backend's start and the exit path being ready.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
        let _in_runtime = runtime.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }
}

/// A signal takes the same exit path as Quit.
async fn quit_on_signal(app: AppHandle, mut signals: Signals) {
    #[cfg(unix)]
    tokio::select! {
        _ = signals.term.recv() => tracing::info!("SIGTERM"),
        _ = signals.int.recv() => tracing::info!("SIGINT"),
    }
    #[cfg(not(unix))]
    {
        let _ = &mut signals;
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
    }
    app.exit(0);
}
