//! `Backend::start` builds every component under one root `CancellationToken` and one task
//! tracker; `BackendHandle::shutdown` stops them in DESIGN.md's order: HTTP (drain in-flight),
//! subscriptions (`phx_leave` each, close the socket), the pool (waiters get `Closed`), then
//! every remaining task.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, Shared};
use crate::config::{Config, Secret};
use crate::events::{
    Bus, BusReceiver, PoolFigures, SubscriptionFigures, UpstreamFigures, UpstreamState,
};
use crate::monitor::{Level, Monitor, MonitorOptions, Probe};
use crate::subscriptions::SubscriptionManager;
use crate::upstream::Upstream;

/// How the host (binary, desktop shell, tests) wants the backend started.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// A listener to serve on (tests bind port 0); `None` binds `BIND:PORT`.
    pub listener: Option<std::net::TcpListener>,
    /// Built UI (`ui/dist`) served at `/`; `None` serves the API only.
    pub ui_dir: Option<PathBuf>,
    /// Count child processes (the desktop's WebKit processes) in memory figures.
    pub extra_children: bool,
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the Supabase client: {0}")]
    Upstream(#[from] collisionos_supabase::rest::RestError),
}

/// Overall health for the tray and notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    Ok,
    Warning,
    Critical,
    Offline,
}

/// What `shutdown` did, for logs and tests.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// Every step finished inside the deadline.
    pub clean: bool,
    pub took_ms: u64,
    pub subscriptions_closed: usize,
}

pub struct Backend;

/// The running backend. Dropping it without `shutdown` cancels everything (best effort).
pub struct BackendHandle {
    state: AppState,
    addr: SocketAddr,
    root: CancellationToken,
    tracker: TaskTracker,
    server: Option<tokio::task::JoinHandle<()>>,
    shut: bool,
}

struct Probes {
    upstream: Option<Upstream>,
    subscriptions: SubscriptionManager,
    pool_capacity: usize,
}

impl Probe for Probes {
    fn pool(&self) -> PoolFigures {
        match &self.upstream {
            Some(u) => {
                let p = u.pool_stats();
                PoolFigures {
                    capacity: p.capacity,
                    size: p.size,
                    idle: p.idle,
                    active: p.active,
                    waiting: p.waiting,
                    timeouts_total: p.timeouts_total,
                    upstream_errors_total: p.upstream_errors_total,
                }
            }
            None => PoolFigures {
                capacity: self.pool_capacity,
                ..PoolFigures::default()
            },
        }
    }
    fn subscriptions(&self) -> SubscriptionFigures {
        self.subscriptions.figures()
    }
    fn upstream(&self) -> UpstreamFigures {
        match &self.upstream {
            Some(u) => u.figures(),
            None => UpstreamFigures {
                state: UpstreamState::NotConfigured,
                latency_ms: None,
                offline_since: None,
            },
        }
    }
}

/// Reads the per-install API token, creating it (mode 0600) on first start.
fn load_token(config: &Config) -> Result<Secret, StartError> {
    if let Some(t) = &config.server.api_token {
        return Ok(t.clone());
    }
    let dir = &config.data_dir;
    let err = |source| StartError::DataDir {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let path = dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim();
        if t.len() >= 32 && t.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(Secret::new(t));
        }
    }
    use rand::Rng;
    let token: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    write_private(&path, &token).map_err(err)?;
    Ok(Secret::new(token))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

impl Backend {
    pub async fn start(config: Config, opts: StartOptions) -> Result<BackendHandle, StartError> {
        let started = Instant::now();
        let token = load_token(&config)?;
        let config = Arc::new(config);
        let root = CancellationToken::new();
        let tracker = TaskTracker::new();
        let bus = Bus::default();

        let upstream = match &config.supabase {
            Some(sb) => Some(Upstream::new(sb, &config.pool, bus.clone())?),
            None => None,
        };
        let subscriptions = SubscriptionManager::start(&config, bus.clone(), &tracker, &root);
        let monitor = Monitor::start(
            MonitorOptions {
                memory: config.memory.clone(),
                sample_every: Duration::from_secs(1),
                ring: 3600,
                include_children: opts.extra_children,
            },
            Arc::new(Probes {
                upstream: upstream.clone(),
                subscriptions: subscriptions.clone(),
                pool_capacity: config.pool.max,
            }),
            bus.clone(),
            root.child_token(),
            &tracker,
        );

        let listener = match opts.listener {
            Some(l) => l,
            None => {
                let addr = SocketAddr::new(config.server.bind, config.server.port);
                std::net::TcpListener::bind(addr)
                    .map_err(|source| StartError::Bind { addr, source })?
            }
        };
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: SocketAddr::new(config.server.bind, config.server.port),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind { addr, source })?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| StartError::Bind { addr, source })?;

        let http_shutdown = root.child_token();
        let state = AppState(Arc::new(Shared {
            config: config.clone(),
            started,
            monitor,
            upstream: upstream.clone(),
            subscriptions: subscriptions.clone(),
            bus,
            token,
            http: api::metrics::HttpMetrics::default(),
            streams: Arc::new(Semaphore::new(config.server.max_event_streams)),
            http_shutdown: http_shutdown.clone(),
        }));
        let app = api::router(state.clone(), opts.ui_dir);
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(http_shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server stopped with an error");
            }
        });

        if let Some(u) = &upstream {
            u.spawn_probe(root.child_token(), &tracker);
            let u = u.clone();
            tracker.spawn(async move { u.warm().await });
            // The memo's persistent `jobs_subscription`; its events go on the bus.
            let subs = subscriptions.clone();
            tracker.spawn(async move {
                if let Err(e) = subs.start_default().await {
                    tracing::warn!(error = %e, "could not create the jobs subscription");
                }
            });
        }
        tracing::info!(
            %addr,
            mode = if upstream.is_some() { "online" } else { "local-only" },
            "backend ready in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(BackendHandle {
            state,
            addr,
            root,
            tracker,
            server: Some(server),
            shut: false,
        })
    }
}

impl BackendHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn api_token(&self) -> &str {
        self.state.token.expose()
    }

    /// The UI's address with the token, as printed at start-up (like Jupyter).
    pub fn ui_url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.api_token())
    }

    pub fn bus(&self) -> &Bus {
        &self.state.bus
    }

    pub fn subscribe(&self) -> BusReceiver {
        self.state.bus.subscribe()
    }

    pub fn monitor(&self) -> &Monitor {
        &self.state.monitor
    }

    pub fn subscriptions(&self) -> &SubscriptionManager {
        &self.state.subscriptions
    }

    pub fn upstream(&self) -> Option<&Upstream> {
        self.state.upstream.as_ref()
    }

    pub fn status(&self) -> HealthLevel {
        if self
            .state
            .upstream
            .as_ref()
            .is_some_and(|u| u.figures().state == UpstreamState::Offline)
        {
            return HealthLevel::Offline;
        }
        match self.state.monitor.level() {
            Level::Ok => HealthLevel::Ok,
            Level::Warning => HealthLevel::Warning,
            Level::Critical => HealthLevel::Critical,
        }
    }

    /// Stops everything in order within `deadline`. Idempotent.
    pub async fn shutdown(&mut self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let end = tokio::time::Instant::now() + deadline;
        let mut clean = true;
        if self.shut {
            return ShutdownReport {
                clean,
                took_ms: 0,
                subscriptions_closed: 0,
            };
        }
        self.shut = true;
        tracing::info!("shutting down");

        // 1. Stop accepting and let in-flight requests finish; streams end on this token.
        self.state.http_shutdown.cancel();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout_at(end, server).await.is_err() {
                tracing::warn!("in-flight requests did not finish before the deadline");
                abort.abort();
                clean = false;
            }
        }
        // 2. Leave every channel and close the realtime socket.
        let closed = self.state.subscriptions.list().len();
        if tokio::time::timeout_at(end, self.state.subscriptions.destroy_all())
            .await
            .is_err()
        {
            tracing::warn!("subscriptions were not all closed before the deadline");
            clean = false;
        }
        // 3. Close the pool: anyone still waiting gets `Closed`.
        if let Some(u) = &self.state.upstream {
            u.close();
        }
        // 4. Everything else (monitor, probe, realtime tasks).
        self.root.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(end, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tracker.len(),
                "tasks still running at the deadline"
            );
            clean = false;
        }
        let report = ShutdownReport {
            clean,
            took_ms: started.elapsed().as_millis() as u64,
            subscriptions_closed: closed,
        };
        tracing::info!(clean, took_ms = report.took_ms, "shutdown complete");
        report
    }

    /// Tasks still owned by the backend (0 after shutdown).
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if !self.shut {
            self.state.http_shutdown.cancel();
            self.root.cancel();
            if let Some(u) = &self.state.upstream {
                u.close();
            }
        }
    }
}
