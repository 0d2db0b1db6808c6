//! JSON request bodies: size-limited, and every failure is a 4xx `{error, code, details}` that
//! names the field (axum's own rejection is plain text and vague about where).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest JSON body any route accepts (DESIGN.md: 1 MiB).
pub const JSON_LIMIT: usize = 1 << 20;

/// Like `axum::Json`, with our error shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {JSON_LIMIT} bytes"),
                )
                .with_details(serde_json::json!({ "limit_bytes": JSON_LIMIT }))
            } else {
                ApiError::bad_request("body_unreadable", e.body_text())
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Parses with the failing field's path in the error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (code, message) = if inner.is_syntax() || inner.is_eof() {
            ("malformed_json", format!("body is not valid JSON: {inner}"))
        } else {
            ("invalid_field", format!("{path}: {inner}"))
        };
        // `.` is the root: the body as a whole had the wrong shape.
        let field = (path != ".").then_some(path);
        ApiError::bad_request(code, message).with_details(serde_json::json!({ "field": field }))
    })
}
