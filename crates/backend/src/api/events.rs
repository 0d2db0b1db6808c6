//! `GET /api/events`: the one Server-Sent-Events stream the UI listens to (health samples,
//! alerts, row changes, subscription state) and `GET /api/alerts`.
//!
//! Streams are capped by `MAX_EVENT_STREAMS`; a stream holds one permit and one bus reader and
//! releases both when the client goes away (the response body is dropped) or at shutdown.
//! `?table=jobs[&schema=&event=&filter=]` also opens a subscription that lives exactly as long
//! as the stream: it is destroyed when the stream ends, however it ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::{ApiError, AppState};
use crate::events::{BusReceiver, Event};
use crate::subscriptions::{SubscriptionManager, SubscriptionOptions};
use collisionos_supabase::realtime::ChangeEvent;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(stream))
        .route("/api/alerts", get(alerts))
}

async fn alerts(State(s): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "alerts": s.bus.recent_alerts() }))
}

/// Optional subscription of one stream.
#[derive(Deserialize)]
struct StreamQuery {
    table: Option<String>,
    schema: Option<String>,
    event: Option<String>,
    filter: Option<String>,
}

/// Destroys the stream's own subscription when the stream is dropped.
struct StreamSubscription {
    manager: SubscriptionManager,
    id: String,
}

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        let (manager, id) = (self.manager.clone(), std::mem::take(&mut self.id));
        // Drop cannot await; the destroy is a short task (and `destroy_all` at shutdown
        // covers a runtime that is already going away).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = manager.destroy(&id).await;
            });
        }
    }
}

/// Everything a live stream owns; dropping it releases all of it.
struct StreamState {
    rx: BusReceiver,
    _permit: OwnedSemaphorePermit,
    subscription: Option<StreamSubscription>,
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
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
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
    // Subscribe to the bus before the subscription exists, so none of its changes are missed.
    let rx = s.bus.subscribe();
    let subscription = match q.table {
        None => None,
        Some(table) => {
            let event = q.event.as_deref().unwrap_or("*");
            let event = ChangeEvent::parse(event).ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_event",
                    format!("event {event:?} is not one of *, INSERT, UPDATE, DELETE"),
                )
            })?;
            let id = format!("stream-{}", uuid::Uuid::new_v4());
            let options = SubscriptionOptions {
                event,
                filter: q.filter.filter(|f| !f.is_empty()),
                ..SubscriptionOptions::table(q.schema.as_deref().unwrap_or("public"), &table)
            };
            s.subscriptions.create(&id, options).await?;
            Some(StreamSubscription {
                manager: s.subscriptions.clone(),
                id,
            })
        }
    };
    let state = StreamState {
        rx,
        _permit: permit,
        subscription,
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
            e = st.rx.recv() => e.map(|e| {
                // A watched subscription is active: the once-a-second sample renews its TTL.
                if let (Event::Sample(_), Some(sub)) = (&e, &st.subscription) {
                    sub.manager.mark_activity(&sub.id);
                }
                (Ok(to_sse(&e)), st)
            }),
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
