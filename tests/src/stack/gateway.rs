//! The stack's API gateway, in process: what Supabase's Kong does for a project, plus the knobs
//! tests and benchmarks need.
//!
//! - `/rest/v1/*` → postrust `/api/*`, bodies streamed both ways. Like Kong's `key-auth` it wants
//!   an `apikey` (header or query) that is one of the project's keys, and strips it before
//!   forwarding; `Authorization` goes through untouched, so postrust judges the JWT.
//! - `/realtime/v1/*` → an axum router mounted by the Realtime stand-in (it sees the path below
//!   the prefix, e.g. `/websocket`), WebSocket upgrades included.
//! - REST is counted on the server side (in flight now, the most in flight at once, total) and
//!   can be made to fail: a delay, a rate of PostgREST-style 503 answers, or an outage in which
//!   every request's connection is dropped without an answer.
//! - `/__stack/stats` (GET), `/__stack/stats/reset` (POST), `/__stack/faults` (GET, POST) expose
//!   the same over HTTP for scripts.

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The HTTP client the gateway (and the readiness probe) reach postrust with.
pub(crate) type Upstream = Client<HttpConnector, Body>;

pub(crate) fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// How long in-flight connections get to finish when the gateway stops.
const DRAIN: Duration = Duration::from_secs(5);

/// REST traffic as the gateway saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestStats {
    /// `/rest/v1` requests being handled now: from arrival until the answer's body is sent (or
    /// the client gives up), injected delays included.
    pub inflight: u64,
    /// The most in flight at once since the stack started or [`reset`](super::Stack::reset_rest_stats).
    pub inflight_max: u64,
    /// `/rest/v1` requests received, whatever became of them.
    pub requests_total: u64,
    /// Requests failed on purpose: injected 503s and connections dropped while `down`.
    pub errors_injected: u64,
}

/// Failures to inject into `/rest/v1`. The default injects nothing.
///
/// Over HTTP (`POST /__stack/faults`) the delay is `delay_ms`, and a field left out takes its
/// default: the body states the whole fault set, it does not patch the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestFaults {
    /// Share of requests (0.0..=1.0) answered `503` with a PostgREST-style body (`PGRST001`)
    /// instead of being forwarded.
    pub error_rate: f64,
    /// Held before each request is handled (counted as in flight meanwhile).
    #[serde(rename = "delay_ms", with = "duration_ms")]
    pub delay: Duration,
    /// An outage: every request's connection is closed without an answer, so a client sees a
    /// transport error ("connection closed before message completed"), as when the upstream
    /// is unreachable. Applied after `delay`.
    pub down: bool,
}

impl RestFaults {
    fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error_rate must be within 0..=1, got {}",
                self.error_rate
            ));
        }
        Ok(())
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What the gateway serves beside REST.
#[derive(Default)]
pub struct GatewayOptions {
    /// Served under `/realtime/v1/` (see the module docs). Can also be mounted later with
    /// [`Stack::mount_realtime`](super::Stack::mount_realtime).
    pub realtime: Option<Router>,
    /// Port to listen on (127.0.0.1); `None` picks a free one.
    pub port: Option<u16>,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("realtime", &self.realtime.as_ref().map(|_| "Router"))
            .field("port", &self.port)
            .finish()
    }
}

/// State shared by the gateway's handlers and the [`Stack`](super::Stack) that owns it.
pub(crate) struct Shared {
    upstream: Upstream,
    /// `http://127.0.0.1:PORT` of postrust.
    upstream_base: String,
    /// The keys `apikey` may carry: anon and service_role.
    api_keys: Vec<String>,
    inflight: AtomicU64,
    inflight_max: AtomicU64,
    requests_total: AtomicU64,
    errors_injected: AtomicU64,
    faults: RwLock<RestFaults>,
    realtime: RwLock<Option<Router>>,
}

impl Shared {
    pub fn stats(&self) -> RestStats {
        RestStats {
            inflight: self.inflight.load(Ordering::Relaxed),
            inflight_max: self.inflight_max.load(Ordering::Relaxed),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            errors_injected: self.errors_injected.load(Ordering::Relaxed),
        }
    }

    /// Zero the totals; the maximum restarts from what is in flight now.
    pub fn reset_stats(&self) {
        self.requests_total.store(0, Ordering::Relaxed);
        self.errors_injected.store(0, Ordering::Relaxed);
        self.inflight_max
            .store(self.inflight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn faults(&self) -> RestFaults {
        *self.faults.read()
    }

    /// Panics on an `error_rate` outside 0..=1 (a bug in the calling test).
    pub fn set_faults(&self, faults: RestFaults) {
        if let Err(e) = faults.check() {
            panic!("set_rest_faults: {e}");
        }
        *self.faults.write() = faults;
    }

    pub fn mount_realtime(&self, router: Router) {
        *self.realtime.write() = Some(router);
    }
}

/// Counts one request as in flight for as long as it lives.
struct InflightGuard(Arc<Shared>);

impl InflightGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.requests_total.fetch_add(1, Ordering::Relaxed);
        let now = shared.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.inflight_max.fetch_max(now, Ordering::Relaxed);
        InflightGuard(shared.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a response the connection loop must not send: it fails the connection instead.
#[derive(Clone, Copy, Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream down (fault injected by the local stack gateway)")
    }
}

impl std::error::Error for DropConnection {}

/// A running gateway.
pub(crate) struct Gateway {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Bind 127.0.0.1 (`options.port`, or a free port) and serve in the current runtime.
    pub async fn start(
        upstream_port: u16,
        api_keys: Vec<String>,
        options: GatewayOptions,
    ) -> Result<Gateway> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0)))
            .await
            .with_context(|| match options.port {
                Some(port) => format!("binding the gateway to 127.0.0.1:{port}"),
                None => "binding the gateway".into(),
            })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream_client(),
            upstream_base: format!("http://127.0.0.1:{upstream_port}"),
            api_keys,
            inflight: AtomicU64::new(0),
            inflight_max: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            errors_injected: AtomicU64::new(0),
            faults: RwLock::new(RestFaults::default()),
            realtime: RwLock::new(options.realtime),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router(shared.clone()), cancel.clone()));
        Ok(Gateway {
            addr,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// Stop accepting, let open connections finish for a moment, then drop them.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/rest/v1", any(rest))
        .route("/rest/v1/", any(rest))
        .route("/rest/v1/{*path}", any(rest))
        .route("/realtime/v1", any(realtime))
        .route("/realtime/v1/", any(realtime))
        .route("/realtime/v1/{*path}", any(realtime))
        .route("/__stack/stats", get(get_stats))
        .route("/__stack/stats/reset", post(reset_stats))
        .route("/__stack/faults", get(get_faults).post(set_faults))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                json!({"message": "no Route matched with those values"}),
            )
        })
        .with_state(shared)
}

/// The accept loop: hyper directly rather than `axum::serve`, so a handler can fail its
/// connection (the `down` fault) and so upgrades reach a mounted Realtime router.
async fn serve(listener: tokio::net::TcpListener, router: Router, cancel: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "gateway accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never| match never {});
                if response.extensions().get::<DropConnection>().is_some() {
                    Err(DropConnection)
                } else {
                    Ok(response)
                }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

fn json_error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Headers that describe one connection, not the message: never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// The query string without its `apikey` parameters (Kong's `hide_credentials`), and the first
/// `apikey` value found there.
fn split_apikey(query: Option<&str>) -> (String, Option<String>) {
    let Some(query) = query else {
        return (String::new(), None);
    };
    let mut key = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name == "apikey" {
                if key.is_none() {
                    key = Some(
                        percent_encoding::percent_decode_str(value)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                }
                false
            } else {
                true
            }
        })
        .collect();
    (kept.join("&"), key)
}

async fn rest(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let guard = InflightGuard::new(&shared);
    let faults = shared.faults();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.down {
        shared.errors_injected.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Body::empty());
        response.extensions_mut().insert(DropConnection);
        return response;
    }
    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        shared.errors_injected.fetch_add(1, Ordering::Relaxed);
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "code": "PGRST001",
                "details": "fault injected by the local stack gateway (error_rate)",
                "hint": null,
                "message": "Database client error. Retrying the connection."
            }),
        );
    }

    let (mut parts, body) = request.into_parts();
    let (query, query_key) = split_apikey(parts.uri.query());
    let header_key = parts
        .headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match header_key.or(query_key) {
        None => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                json!({"message": "No API key found in request"}),
            );
        }
        Some(key) if !shared.api_keys.contains(&key) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Invalid API key"}),
            );
        }
        Some(_) => {}
    }

    let path = parts.uri.path();
    // postrust serves the API's root at `/api`, not `/api/`: `/rest/v1/` is that root too.
    let suffix = match path.strip_prefix("/rest/v1").unwrap_or(path) {
        "/" => "",
        suffix => suffix,
    };
    let target = if query.is_empty() {
        format!("{}/api{suffix}", shared.upstream_base)
    } else {
        format!("{}/api{suffix}?{query}", shared.upstream_base)
    };
    let uri: Uri = match target.parse() {
        Ok(uri) => uri,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("bad request target: {e}")}),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.remove("apikey");
    parts
        .headers
        .insert("x-forwarded-prefix", HeaderValue::from_static("/rest/v1"));
    parts.uri = uri;
    // The connection's upgrade handle and the like stay here.
    parts.extensions = http::Extensions::new();
    let upstream_request = http::Request::from_parts(parts, body);

    match shared.upstream.request(upstream_request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // The guard rides in the body: the request stays in flight until its answer has
            // been streamed out or dropped.
            let body = body.map_frame(move |frame| {
                let _in_flight = &guard;
                frame
            });
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(error = %e, "gateway could not reach postrust");
            json_error(
                StatusCode::BAD_GATEWAY,
                json!({"message": "An invalid response was received from the upstream server"}),
            )
        }
    }
}

async fn realtime(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let Some(router) = shared.realtime.read().clone() else {
        return json_error(
            StatusCode::NOT_FOUND,
            json!({"message": "the Realtime stand-in is not mounted on this stack"}),
        );
    };
    // Like `Router::nest`: the mounted router sees the path below the prefix.
    let path = request.uri().path();
    let below = path.strip_prefix("/realtime/v1").unwrap_or(path);
    let below = if below.is_empty() { "/" } else { below };
    let rewritten = match request.uri().query() {
        Some(q) => format!("{below}?{q}"),
        None => below.to_string(),
    };
    match rewritten.parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("bad request target: {e}")}),
            );
        }
    }
    router
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {})
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> axum::Json<RestStats> {
    axum::Json(shared.stats())
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> axum::Json<RestStats> {
    shared.reset_stats();
    axum::Json(shared.stats())
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> axum::Json<RestFaults> {
    axum::Json(shared.faults())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: bytes::Bytes) -> Response {
    let faults: RestFaults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("expected {{error_rate, delay_ms, down}}: {e}")}),
            );
        }
    };
    if let Err(e) = faults.check() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, json!({ "message": e }));
    }
    *shared.faults.write() = faults;
    axum::Json(faults).into_response()
}
