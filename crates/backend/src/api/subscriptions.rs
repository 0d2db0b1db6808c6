//! `/api/subscriptions`: list, create, destroy managed realtime subscriptions.
//!
//! Input is checked here and again by the manager: identifiers, the event, the TTL and the
//! filter grammar (see [`crate::subscriptions::filter`]). A bad filter is 422 `invalid_filter`
//! with the reason; a body that is not JSON is 400 `malformed_json`, a wrong or unknown field
//! 400 `invalid_field` (the API's JSON extractor).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};

use crate::api::json::Json as JsonBody;
use collisionos_supabase::realtime::ChangeEvent;
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiError;
use crate::subscriptions::{SubscriptionError, SubscriptionManager, SubscriptionOptions};

/// The routes, with the manager as state (so this is a `Router<()>` the lead nests).
pub fn router(manager: SubscriptionManager) -> Router {
    Router::new()
        .route("/api/subscriptions", get(list).post(create))
        .route("/api/subscriptions/{id}", delete(destroy))
        .with_state(manager)
}

/// `POST /api/subscriptions` body (CONTRACTS.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    #[serde(default = "public")]
    schema: String,
    table: String,
    #[serde(default = "all_events")]
    event: String,
    filter: Option<String>,
    ttl_ms: Option<u64>,
    #[serde(default)]
    persistent: bool,
}

fn public() -> String {
    "public".into()
}

fn all_events() -> String {
    "*".into()
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        let code = e.code();
        let message = e.to_string();
        match &e {
            SubscriptionError::NotConfigured => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            }
            SubscriptionError::InvalidFilter { filter, reason } => {
                ApiError::unprocessable(code, message)
                    .with_details(json!({"field": "filter", "filter": filter, "reason": reason}))
            }
            SubscriptionError::Invalid {
                field,
                value,
                reason,
            } => ApiError::unprocessable(code, message)
                .with_details(json!({"field": field, "value": value, "reason": reason})),
            SubscriptionError::AlreadyExists(id) => {
                ApiError::conflict(code, message).with_details(json!({"id": id}))
            }
            SubscriptionError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            SubscriptionError::CapacityExhausted { capacity } => {
                ApiError::conflict(code, message).with_details(json!({"capacity": capacity}))
            }
            SubscriptionError::ShuttingDown => {
                ApiError::unavailable(code, message, Duration::from_secs(5))
            }
        }
    }
}

async fn list(State(manager): State<SubscriptionManager>) -> Response {
    Json(json!({
        "subscriptions": manager.list(),
        "stats": manager.stats(),
    }))
    .into_response()
}

async fn create(
    State(manager): State<SubscriptionManager>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let event = ChangeEvent::parse(&body.event).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_event",
            format!(
                "event {:?} is not one of *, INSERT, UPDATE, DELETE",
                body.event
            ),
        )
        .with_details(json!({"field": "event", "value": body.event}))
    })?;
    let id = body
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let options = SubscriptionOptions {
        schema: body.schema,
        table: body.table,
        event,
        filter: body.filter.filter(|f| !f.is_empty()),
        ttl: body.ttl_ms.map(Duration::from_millis),
        persistent: body.persistent,
    };
    let info = manager.create(&id, options).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn destroy(
    State(manager): State<SubscriptionManager>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    manager.destroy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::events::Bus;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    use tower::ServiceExt as _;

    fn unconfigured() -> SubscriptionManager {
        let config = Config::from_layers(&Default::default()).unwrap();
        SubscriptionManager::start(
            &config,
            Bus::default(),
            &TaskTracker::new(),
            &CancellationToken::new(),
        )
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    #[tokio::test]
    async fn validation_comes_before_configuration() {
        let app = router(unconfigured());
        let (s, v) = call(&app, "GET", "/api/subscriptions", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["subscriptions"], json!([]));
        assert_eq!(v["stats"]["capacity"], 100);
        assert_eq!(v["stats"]["socket"], serde_json::Value::Null);

        let cases = [
            (
                r#"{"table":"jobs","filter":"status=like.x"}"#,
                422,
                "invalid_filter",
            ),
            (
                r#"{"table":"jobs","filter":"status"}"#,
                422,
                "invalid_filter",
            ),
            (r#"{"table":"jobs;drop"}"#, 422, "invalid_identifier"),
            (
                r#"{"schema":"1x","table":"jobs"}"#,
                422,
                "invalid_identifier",
            ),
            (r#"{"id":"a b","table":"jobs"}"#, 422, "invalid_identifier"),
            (
                r#"{"table":"jobs","event":"TRUNCATE"}"#,
                422,
                "invalid_event",
            ),
            (r#"{"table":"jobs","ttl_ms":10}"#, 422, "invalid_ttl"),
            (r#"{"table":"jobs""#, 400, "malformed_json"),
            (r#"{"schema":"public"}"#, 400, "invalid_field"),
            (r#"{"table":"jobs","colour":"red"}"#, 400, "invalid_field"),
            (r#"{"table":5}"#, 400, "invalid_field"),
            (
                r#"{"table":"jobs","filter":"status=eq.open"}"#,
                503,
                "realtime_not_configured",
            ),
        ];
        for (body, status, code) in cases {
            let (s, v) = call(&app, "POST", "/api/subscriptions", Some(body)).await;
            assert_eq!(
                (s.as_u16(), v["code"].as_str()),
                (status, Some(code)),
                "{body}: {v}"
            );
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
        let (_, v) = call(
            &app,
            "POST",
            "/api/subscriptions",
            Some(r#"{"table":"jobs","filter":"id=in.()"}"#),
        )
        .await;
        assert_eq!(v["details"]["reason"], "in has an empty value");

        let (s, v) = call(&app, "DELETE", "/api/subscriptions/nope", None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (s, _) = call(&app, "POST", "/api/subscriptions", None).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
