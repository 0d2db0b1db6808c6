//! The one road to Supabase's REST API: every request takes a lease from the bounded pool,
//! runs on the shared HTTP client, and its outcome feeds the online/offline state.
//!
//! The lease is an RAII guard, so it returns to the pool on success, upstream error, a panic in
//! the handler and a request future dropped because the client went away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use collisionos_pool::{Manager, Pool, PoolConfig as LeaseConfig, PoolError, PoolStats};
use collisionos_supabase::rest::{RestClient, RestConfig, RestError};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ApiError;
use crate::config::{PoolConfig, SupabaseConfig};
use crate::events::{Alert, AlertLevel, Bus, Event, UpstreamFigures, UpstreamState, now_ms};

/// Hands out clones of the one shared client: a lease is the right to one request in flight.
struct Leases {
    client: RestClient,
}

impl Manager for Leases {
    type Resource = RestClient;
    type Error = std::convert::Infallible;

    async fn create(&self) -> Result<RestClient, Self::Error> {
        Ok(self.client.clone())
    }
}

/// Online/offline state, written by request outcomes and the probe, read by every sample.
#[derive(Default)]
struct Status {
    inner: Mutex<StatusInner>,
    latency_us: AtomicU64,
}

#[derive(Default)]
struct StatusInner {
    /// `None` until the first outcome; then whether the last outcome reached the upstream.
    online: Option<bool>,
    offline_since: Option<u64>,
    last_error: Option<String>,
}

/// Pooled, observable access to PostgREST.
#[derive(Clone)]
pub struct Upstream {
    pool: Pool<Leases>,
    status: Arc<Status>,
    bus: Bus,
    acquire_timeout: Duration,
}

impl Upstream {
    pub fn new(sb: &SupabaseConfig, pool: &PoolConfig, bus: Bus) -> Result<Self, RestError> {
        let client = RestClient::new(RestConfig {
            base_url: sb.url.clone(),
            api_key: sb.anon_key.expose().to_string(),
            bearer: Some(sb.server_key().expose().to_string()),
            timeout: sb.request_timeout,
            connect_timeout: sb.request_timeout.min(Duration::from_secs(5)),
            slow_threshold: sb.slow_query,
            schema: "public".into(),
            // The HTTP connection pool follows the lease pool's bounds.
            pool_max_idle_per_host: pool.max,
            pool_idle_timeout: pool.idle_timeout,
        })?;
        let leases = Pool::new(
            Leases { client },
            LeaseConfig {
                max_size: pool.max,
                min_idle: pool.min,
                idle_timeout: pool.idle_timeout,
                acquire_timeout: pool.acquire_timeout,
            },
        );
        Ok(Self {
            pool: leases,
            status: Arc::default(),
            bus,
            acquire_timeout: pool.acquire_timeout,
        })
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn figures(&self) -> UpstreamFigures {
        let s = self.status.inner.lock();
        let latency = self.status.latency_us.load(Ordering::Relaxed);
        UpstreamFigures {
            state: match s.online {
                Some(false) => UpstreamState::Offline,
                _ => UpstreamState::Online,
            },
            latency_ms: (latency > 0).then(|| latency as f64 / 1000.0),
            offline_since: s.offline_since,
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.status.inner.lock().last_error.clone()
    }

    /// Whether the last outcome reached the upstream (`None` before any).
    pub fn reachable(&self) -> Option<bool> {
        self.status.inner.lock().online
    }

    /// Runs one request under a lease. The lease is held only for the request itself.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(RestClient) -> Fut,
        Fut: Future<Output = Result<T, RestError>>,
    {
        let lease = self.pool.acquire().await.map_err(|e| self.pool_error(e))?;
        let started = Instant::now();
        let out = f((*lease).clone()).await;
        drop(lease);
        match &out {
            Ok(_) => self.mark_online(started.elapsed()),
            // A timeout on flaky shop internet counts as unreachable too.
            Err(e) if e.is_unavailable() || matches!(e, RestError::Timeout) => {
                self.pool.record_upstream_error();
                self.mark_offline(e.to_string());
            }
            Err(e) => {
                // The upstream answered: it is reachable even if it refused this request.
                if e.status().is_some_and(|s| s >= 500) {
                    self.pool.record_upstream_error();
                }
                self.mark_online(started.elapsed());
            }
        }
        out.map_err(map_rest_error)
    }

    fn pool_error(&self, e: PoolError<std::convert::Infallible>) -> ApiError {
        match e {
            PoolError::Timeout { waited } => ApiError::unavailable(
                "pool_timeout",
                format!(
                    "all upstream connections are busy; waited {} ms for one",
                    waited.as_millis()
                ),
                self.acquire_timeout.max(Duration::from_secs(1)),
            ),
            PoolError::Closed => ApiError::unavailable(
                "shutting_down",
                "the backend is shutting down",
                Duration::from_secs(5),
            ),
            PoolError::Create(never) => match never {},
        }
    }

    fn mark_online(&self, latency: Duration) {
        self.status
            .latency_us
            .store(latency.as_micros().max(1) as u64, Ordering::Relaxed);
        let was = {
            let mut s = self.status.inner.lock();
            let was = s.online;
            s.online = Some(true);
            s.offline_since = None;
            was
        };
        if was == Some(false) {
            tracing::info!("Supabase is reachable again");
            self.bus.publish(Event::Alert(Alert {
                ts: now_ms(),
                level: AlertLevel::Online,
                message: "Supabase is reachable again".into(),
                value: None,
            }));
        }
    }

    fn mark_offline(&self, error: String) {
        let newly = {
            let mut s = self.status.inner.lock();
            let newly = s.online != Some(false);
            s.online = Some(false);
            s.offline_since.get_or_insert_with(now_ms);
            s.last_error = Some(error.clone());
            newly
        };
        if newly {
            tracing::warn!(%error, "Supabase is unreachable");
            self.bus.publish(Event::Alert(Alert {
                ts: now_ms(),
                level: AlertLevel::Offline,
                message: format!("Supabase is unreachable: {error}"),
                value: None,
            }));
        }
    }

    /// Probes reachability: every 5 s while online, backing off 1, 2, 5, 10 s while offline.
    /// The probe takes a lease like any request (every Supabase request goes through the
    /// pool); when none is free within the acquire timeout, traffic is flowing and request
    /// outcomes already tell the state, so the round is skipped.
    pub fn spawn_probe(&self, cancel: CancellationToken, tracker: &TaskTracker) {
        let this = self.clone();
        tracker.spawn(async move {
            let offline_steps = [1u64, 2, 5, 10];
            let mut step = 0usize;
            loop {
                let ok = tokio::select! {
                    // Cancelled mid-probe: stop without recording an outcome.
                    () = cancel.cancelled() => return,
                    r = this.probe_once() => r,
                };
                let wait = match ok {
                    Some(false) => {
                        let w = offline_steps[step.min(offline_steps.len() - 1)];
                        step += 1;
                        w
                    }
                    _ => {
                        step = 0;
                        5
                    }
                };
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(wait)) => {}
                }
            }
        });
    }

    /// One probe: `Some(reachable)`, or `None` when no lease was free or the pool is closed.
    async fn probe_once(&self) -> Option<bool> {
        let lease = self.pool.acquire().await.ok()?;
        let started = Instant::now();
        let r = lease.ping().await;
        drop(lease);
        Some(match r {
            Ok(_) => {
                self.mark_online(started.elapsed());
                true
            }
            Err(e) if e.is_unavailable() || matches!(e, RestError::Timeout) => {
                self.pool.record_upstream_error();
                self.mark_offline(e.to_string());
                false
            }
            Err(e) => {
                // Answered with an error (e.g. a bad key): reachable, but say why.
                self.status.inner.lock().last_error = Some(e.to_string());
                self.mark_online(started.elapsed());
                true
            }
        })
    }

    /// Opens the warm minimum of leases.
    pub async fn warm(&self) {
        self.pool.warm().await;
    }

    /// Closes the pool: waiters wake with `Closed`, new requests get 503 `shutting_down`.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Maps a PostgREST failure to the API's error shape.
pub fn map_rest_error(e: RestError) -> ApiError {
    let msg = e.to_string();
    if e.is_unavailable() {
        return ApiError::unavailable("upstream_unavailable", msg, Duration::from_secs(5));
    }
    if matches!(e, RestError::Timeout) {
        return ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", msg);
    }
    if e.is_conflict() {
        return ApiError::conflict("conflict", msg).with_details(rest_details(&e));
    }
    if e.is_not_found() {
        return ApiError::not_found(msg).with_details(rest_details(&e));
    }
    match e.status() {
        Some(401 | 403) => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_auth_failed", msg)
            .with_details(rest_details(&e)),
        Some(s) if (400..500).contains(&s) => {
            ApiError::new(StatusCode::BAD_REQUEST, "upstream_rejected", msg)
                .with_details(rest_details(&e))
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", msg)
            .with_details(rest_details(&e)),
    }
}

fn rest_details(e: &RestError) -> serde_json::Value {
    match e {
        RestError::Http {
            status,
            code,
            details,
            hint,
            ..
        } => {
            serde_json::json!({ "upstream_status": status, "upstream_code": code, "details": details, "hint": hint })
        }
        _ => serde_json::Value::Null,
    }
}
