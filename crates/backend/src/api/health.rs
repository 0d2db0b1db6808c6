//! The health family: `/api/health`, `/api/health/connections` (the memo's shape, kept for
//! existing monitoring scripts), `/api/health/memory`, `/api/health/samples` and `/metrics`.
//! All read the monitor's latest snapshot; nothing samples on the request path.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::metrics::metric;
use super::{ApiError, AppState};
use crate::events::{BUS_CAPACITY, UpstreamState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/health/connections", get(connections))
        .route("/api/health/memory", get(memory))
        .route("/api/health/samples", get(samples))
        .route("/metrics", get(prometheus))
}

fn mb(bytes: u64) -> String {
    format!("{}MB", (bytes as f64 / 1_048_576.0).round() as u64)
}

async fn health(State(s): State<AppState>) -> axum::Json<Value> {
    // The upstream state is a live read of the pool's last outcome (no I/O), so an outage
    // shows at once rather than at the next sample.
    let up = match &s.upstream {
        Some(u) => u.figures(),
        None => s.monitor.latest().upstream,
    };
    let status = match (up.state, s.monitor.level()) {
        (UpstreamState::Offline, _) => "offline",
        (_, crate::monitor::Level::Ok) => "ok",
        _ => "degraded",
    };
    axum::Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "memory_level": s.monitor.level(),
        "supabase": {
            "configured": s.upstream.is_some(),
            "reachable": s.upstream.as_ref().and_then(|u| u.reachable()),
            "state": up.state,
            "latency_ms": up.latency_ms,
            "offline_since": up.offline_since,
            "last_error": s.upstream.as_ref().and_then(|u| u.last_error()),
        },
    }))
}

async fn connections(State(s): State<AppState>) -> axum::Json<Value> {
    let m = s.monitor.latest().memory;
    let pool = s.upstream.as_ref().map(|u| u.pool_stats());
    let mut pool_json = json!({
        "poolSize": pool.as_ref().map_or(0, |p| p.idle),
        "activeConnections": pool.as_ref().map_or(0, |p| p.active),
        "waitingRequests": pool.as_ref().map_or(0, |p| p.waiting),
        "totalCapacity": pool.as_ref().map_or(s.config.pool.max, |p| p.capacity),
        "configured": pool.is_some(),
    });
    if let (Some(p), Value::Object(obj)) = (&pool, &mut pool_json)
        && let Ok(Value::Object(extra)) = serde_json::to_value(p)
    {
        obj.extend(extra);
    }
    let subs = serde_json::to_value(s.subscriptions.stats()).unwrap_or(Value::Null);
    let uptime = s.started.elapsed().as_secs();
    // The memo's heap figures map to the allocator: heapUsed = allocated, heapTotal = resident.
    axum::Json(json!({
        "timestamp": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "memory": {
            "heapUsed": mb(m.allocated_bytes),
            "heapTotal": mb(m.resident_bytes),
            "rss": mb(m.rss_bytes),
            "external": mb(m.children_rss_bytes),
            "bytes": {
                "rss": m.rss_bytes,
                "allocated": m.allocated_bytes,
                "resident": m.resident_bytes,
                "heap_total": m.resident_bytes,
                "children_rss": m.children_rss_bytes,
            },
        },
        "connectionPool": pool_json,
        "subscriptions": subs,
        "uptime": format!("{} minutes", (uptime as f64 / 60.0).round() as u64),
        "uptime_s": uptime,
    }))
}

async fn memory(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(serde_json::to_value(s.monitor.report()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
struct SamplesQuery {
    since: Option<u64>,
}

async fn samples(
    State(s): State<AppState>,
    q: Result<Query<SamplesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::invalid_field(
            "since",
            format!("{}; expected epoch milliseconds", e.body_text()),
        )
    })?;
    let samples = s.monitor.samples_since(q.since.unwrap_or(0));
    Ok(axum::Json(json!({ "samples": samples })))
}

async fn prometheus(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(8 * 1024);
    let sample = s.monitor.latest();
    let m = sample.memory;
    metric(
        &mut out,
        "collisionos_process_resident_memory_bytes",
        "gauge",
        "Process RSS.",
        m.rss_bytes as f64,
    );
    metric(
        &mut out,
        "collisionos_allocator_allocated_bytes",
        "gauge",
        "jemalloc stats.allocated.",
        m.allocated_bytes as f64,
    );
    metric(
        &mut out,
        "collisionos_allocator_resident_bytes",
        "gauge",
        "jemalloc stats.resident.",
        m.resident_bytes as f64,
    );
    metric(
        &mut out,
        "collisionos_children_resident_memory_bytes",
        "gauge",
        "RSS of child processes (WebKit).",
        m.children_rss_bytes as f64,
    );
    let report = s.monitor.report();
    // Absent (not 0) until the window holds enough samples for a slope.
    if let Some(slope) = report.slope_mb_per_h {
        metric(
            &mut out,
            "collisionos_memory_slope_mb_per_hour",
            "gauge",
            "Least-squares RSS slope over the sample window.",
            slope,
        );
    }
    metric(
        &mut out,
        "collisionos_uptime_seconds",
        "gauge",
        "Seconds since start.",
        s.started.elapsed().as_secs_f64(),
    );
    if let Some(u) = &s.upstream {
        let p = u.pool_stats();
        metric(
            &mut out,
            "collisionos_pool_capacity",
            "gauge",
            "Most leases (SUPABASE_POOL_MAX).",
            p.capacity as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_size",
            "gauge",
            "Leases created and alive.",
            p.size as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_idle",
            "gauge",
            "Idle leases.",
            p.idle as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_active",
            "gauge",
            "Leases in use.",
            p.active as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_waiting",
            "gauge",
            "Requests waiting for a lease.",
            p.waiting as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_acquired_total",
            "counter",
            "Leases handed out.",
            p.acquired_total as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_timeouts_total",
            "counter",
            "Acquire timeouts (503).",
            p.timeouts_total as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_upstream_errors_total",
            "counter",
            "Upstream errors seen through the pool.",
            p.upstream_errors_total as f64,
        );
        metric(
            &mut out,
            "collisionos_pool_wait_p50_seconds",
            "gauge",
            "Median lease wait.",
            p.wait_p50_us as f64 / 1e6,
        );
        metric(
            &mut out,
            "collisionos_pool_wait_p99_seconds",
            "gauge",
            "99th percentile lease wait.",
            p.wait_p99_us as f64 / 1e6,
        );
    }
    let up = sample.upstream;
    metric(
        &mut out,
        "collisionos_upstream_up",
        "gauge",
        "1 when Supabase answered last, 0 when unreachable, -1 when not configured.",
        match up.state {
            UpstreamState::Online => 1.0,
            UpstreamState::Offline => 0.0,
            UpstreamState::NotConfigured => -1.0,
        },
    );
    metric(
        &mut out,
        "collisionos_upstream_latency_seconds",
        "gauge",
        "Latency of the last upstream answer.",
        up.latency_ms.unwrap_or(0.0) / 1000.0,
    );
    let subs = s.subscriptions.stats();
    if let Ok(Value::Object(fields)) = serde_json::to_value(&subs) {
        render_fields(&mut out, "collisionos_subscriptions_", &fields);
        if let Some(Value::Object(socket)) = fields.get("socket") {
            render_fields(&mut out, "collisionos_realtime_", socket);
        }
    }
    metric(
        &mut out,
        "collisionos_bus_capacity",
        "gauge",
        "Event bus ring size.",
        BUS_CAPACITY as f64,
    );
    metric(
        &mut out,
        "collisionos_bus_receivers",
        "gauge",
        "Live event-bus readers.",
        s.bus.receivers() as f64,
    );
    metric(
        &mut out,
        "collisionos_bus_published_total",
        "counter",
        "Events published.",
        s.bus.published_total() as f64,
    );
    metric(
        &mut out,
        "collisionos_bus_lagged_total",
        "counter",
        "Events skipped by lagging readers.",
        s.bus.lagged_total() as f64,
    );
    metric(
        &mut out,
        "collisionos_event_streams_open",
        "gauge",
        "Open UI event streams.",
        (s.config.server.max_event_streams - s.streams.available_permits()) as f64,
    );
    s.http.render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// Renders the numeric fields of a stats object: `fooTotal`/`foo_total` as counters, the rest
/// as gauges, names in snake case under `prefix`.
fn render_fields(out: &mut String, prefix: &str, fields: &serde_json::Map<String, Value>) {
    for (k, v) in fields {
        let value = match v {
            Value::Number(n) => n.as_f64().unwrap_or(0.0),
            Value::Bool(b) => f64::from(u8::from(*b)),
            _ => continue,
        };
        let mut name = String::from(prefix);
        for c in k.chars() {
            if c.is_ascii_uppercase() {
                name.push('_');
                name.push(c.to_ascii_lowercase());
            } else {
                name.push(c);
            }
        }
        let kind = if name.ends_with("_total") && !name.ends_with("subscriptions_total") {
            "counter"
        } else {
            "gauge"
        };
        metric(
            out,
            &name,
            kind,
            &format!("{k} (see /api/subscriptions)."),
            value,
        );
    }
}
