//! The HTTP API (axum), in-process on `BIND:PORT`.
//!
//! Layers, outermost first: panic → 500 JSON; `Host` must be a loopback name (DNS rebinding);
//! one log line and metrics per request; body limit. The health family and `/metrics` are open
//! on loopback; every other `/api` route needs the per-install token.

pub mod error;
pub mod events;
pub mod health;
pub mod json;
pub mod metrics;
pub mod records;
pub mod subscriptions;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

pub use error::ApiError;

use crate::config::{Config, Secret};
use crate::events::Bus;
use crate::monitor::Monitor;
use crate::subscriptions::SubscriptionManager;
use crate::upstream::Upstream;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

pub struct Shared {
    pub config: Arc<Config>,
    pub started: Instant,
    pub monitor: Monitor,
    /// `None` in local-only mode (no `SUPABASE_URL`).
    pub upstream: Option<Upstream>,
    pub subscriptions: SubscriptionManager,
    pub bus: Bus,
    pub token: Secret,
    pub http: metrics::HttpMetrics,
    /// Permits for concurrent event streams (`MAX_EVENT_STREAMS`).
    pub streams: Arc<Semaphore>,
    /// Cancelled at shutdown so long-lived streams end and the server can drain.
    pub http_shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The pool, or 503 in local-only mode.
    pub fn upstream(&self) -> Result<&Upstream, ApiError> {
        self.upstream.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "upstream_not_configured",
                "Supabase is not configured (SUPABASE_URL is unset): running local-only",
                std::time::Duration::from_secs(60),
            )
        })
    }
}

/// Route template of the request, carried on the response for the outer logging layer.
#[derive(Clone)]
struct RouteTag(MatchedPath);

/// Builds the whole router.
pub fn router(state: AppState, ui_dir: Option<PathBuf>) -> Router {
    let open = Router::new().merge(health::routes());
    let protected = Router::new()
        .merge(events::routes())
        .merge(records::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let subs = subscriptions::router(state.subscriptions.clone())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));

    let mut app = Router::new()
        .merge(open)
        .merge(protected)
        .with_state(state.clone())
        .merge(subs)
        .route_layer(middleware::from_fn(tag_route))
        .method_not_allowed_fallback(method_not_allowed);

    app = match ui_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            let index = ServeFile::new(dir.join("index.html"));
            let files = ServeDir::new(&dir).precompressed_gzip().fallback(index);
            app.route("/api/{*rest}", axum::routing::any(api_not_found))
                .fallback_service(files)
        }
        _ => app.fallback(api_not_found),
    };

    app.layer(axum::extract::DefaultBodyLimit::max(json::JSON_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(desktop_cors())
        .layer(middleware::from_fn(loopback_host_only))
        .layer(CatchPanicLayer::custom(panic_response))
}

/// The desktop webview loads the UI from `tauri://localhost` (Linux/macOS) or
/// `http(s)://tauri.localhost` (Windows); those origins, and only those, may call the API.
fn desktop_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list([
            HeaderValue::from_static("tauri://localhost"),
            HeaderValue::from_static("http://tauri.localhost"),
            HeaderValue::from_static("https://tauri.localhost"),
        ]))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

async fn tag_route(req: Request, next: Next) -> Response {
    let tag = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(t) = tag {
        res.extensions_mut().insert(RouteTag(t));
    }
    res
}

/// One line per request (method, path, status, latency, RSS) and the HTTP metrics.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let elapsed = started.elapsed();
    let route = res
        .extensions()
        .get::<RouteTag>()
        .map_or("unmatched", |t| t.0.as_str());
    let status = res.status().as_u16();
    state.http.record(method.as_str(), route, status, elapsed);
    let rss_mb = state.monitor.latest().memory.rss_bytes as f64 / 1_048_576.0;
    tracing::info!(
        target: "http",
        "{method} {path} {status} {:.2}ms rss={rss_mb:.1}MB",
        elapsed.as_secs_f64() * 1000.0
    );
    res
}

/// Refuses requests whose `Host` is not a loopback name: a web page on another origin that
/// rebinds its DNS to 127.0.0.1 still sends its own host name.
async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    match host {
        Some(h) if is_loopback_host(h) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "this API only answers requests addressed to localhost",
        )
        .into_response(),
    }
}

/// `localhost`, `127.0.0.1` (any 127/8), `[::1]`, each with an optional port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
            Some(_) => return false,
            None => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `Authorization: Bearer <token>` or `?token=` (EventSource cannot set headers).
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let ok = from_header
        .or(from_query)
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(state.token.expose().as_bytes())));
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: open the URL the backend printed at start-up",
        )
        .into_response()
    }
}

async fn api_not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; its lease and resources were released");
    ApiError::internal("internal error while handling the request").into_response()
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:3002",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:3002",
            "LOCALHOST",
            "127.1.2.3:9",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:3002",
            "localhost.evil.com",
            "10.0.0.1",
            "[::2]:1",
            "127.0.0.1:abc",
            "",
            "[::1]x",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
