//! `GET /api/events`: the one Server-Sent-Events stream the UI listens to (health samples,
//! alerts, row changes, subscription state) and `GET /api/alerts`.
//!
//! Streams are capped by `MAX_EVENT_STREAMS`; a stream holds one permit and one bus reader and
//! releases both when the client goes away (the response body is dropped) or at shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::{ApiError, AppState};
use crate::events::{BusReceiver, Event};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(stream))
        .route("/api/alerts", get(alerts))
}

async fn alerts(State(s): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "alerts": s.bus.recent_alerts() }))
}

/// Everything a live stream owns; dropping it releases all of it.
struct StreamState {
    rx: BusReceiver,
    _permit: OwnedSemaphorePermit,
    shutdown: tokio_util::sync::CancellationToken,
    first: Option<Event>,
}

fn to_sse(e: &Event) -> SseEvent {
    let data = match e {
        Event::Sample(x) => serde_json::to_string(x),
        Event::Alert(x) => serde_json::to_string(x),
        Event::Change(x) => serde_json::to_string(x),
        Event::Subscription(x) => serde_json::to_string(x),
    }
    .unwrap_or_else(|_| "null".into());
    SseEvent::default().event(e.name()).data(data)
}

async fn stream(
    State(s): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let permit = s.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(
            "too_many_streams",
            format!(
                "{} event streams are already open (MAX_EVENT_STREAMS)",
                s.config.server.max_event_streams
            ),
            Duration::from_secs(5),
        )
    })?;
    let state = StreamState {
        rx: s.bus.subscribe(),
        _permit: permit,
        shutdown: s.http_shutdown.clone(),
        // The newest sample first, so a fresh page shows figures before the next tick.
        first: Some(Event::Sample(s.monitor.latest())),
    };
    let events = futures::stream::unfold(state, |mut st| async move {
        if let Some(e) = st.first.take() {
            return Some((Ok(to_sse(&e)), st));
        }
        tokio::select! {
            // Shutdown ends the stream so the server can drain.
            () = st.shutdown.cancelled() => None,
            e = st.rx.recv() => e.map(|e| (Ok(to_sse(&e)), st)),
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
