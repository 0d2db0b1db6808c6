//! PostgREST failures as one typed error.

use serde::Deserialize;

/// Why a request failed. Messages never contain keys, tokens or request URLs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// PostgREST (or the gateway) answered with an error status.
    /// `code` is a SQLSTATE (`23505`) or a PostgREST code (`PGRST116`); empty when the body
    /// was not PostgREST's JSON error.
    #[error("PostgREST {status}{}: {message}", code_suffix(.code))]
    Http {
        status: u16,
        code: String,
        message: String,
        details: Option<String>,
        hint: Option<String>,
    },
    /// No complete answer within the configured request timeout.
    #[error("PostgREST request timed out")]
    Timeout,
    /// The upstream could not be reached or said it cannot serve now (connect and network
    /// errors, 502/503/504, SQLSTATE class 08).
    #[error("PostgREST unavailable: {0}")]
    Unavailable(String),
    /// The answer was not the JSON the caller asked for.
    #[error("cannot decode PostgREST response: {0}")]
    Decode(String),
    /// The request was refused before sending (bad identifier, bad configuration, ...).
    #[error("invalid PostgREST request: {0}")]
    InvalidRequest(String),
}

/// PostgREST's error body; every field may be missing or null.
#[derive(Deserialize)]
struct Body {
    code: Option<String>,
    message: Option<String>,
    details: Option<serde_json::Value>,
    hint: Option<serde_json::Value>,
}

/// Longest piece of a non-JSON error body kept in a message.
const MAX_TEXT: usize = 200;

impl RestError {
    /// The upstream is down or unreachable: worth retrying later, and a reason to go offline.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RestError::Unavailable(_))
    }

    /// A unique (23505) or foreign-key (23503) violation, or any 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, RestError::Http { status: 409, .. })
            || self.code().is_some_and(|c| c == "23505" || c == "23503")
    }

    /// No such row for a single-row request (PGRST116 with zero rows), or no such table
    /// (PGRST205). PGRST116 for *several* rows is not "not found".
    pub fn is_not_found(&self) -> bool {
        match self {
            RestError::Http { code, details, .. } if code == "PGRST116" => {
                details.as_deref().is_none_or(says_zero_rows)
            }
            RestError::Http { code, .. } => code == "PGRST205",
            _ => false,
        }
    }

    /// The HTTP status, when the upstream answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RestError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The SQLSTATE or PostgREST code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RestError::Http { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// Maps an error answer: status plus whatever body came with it.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Body>(body).ok();
        let (code, message, details, hint) = match parsed {
            Some(b) => (
                b.code.unwrap_or_default(),
                b.message.unwrap_or_default(),
                b.details.and_then(text),
                b.hint.and_then(text),
            ),
            // A gateway page or an empty HEAD answer: keep a short, single-line excerpt.
            None => (String::new(), excerpt(body), None, None),
        };
        let message = match message.is_empty() {
            true => reason(status).to_owned(),
            false => message,
        };
        if matches!(status, 502..=504) || code.starts_with("08") {
            return RestError::Unavailable(format!(
                "HTTP {status}{}: {message}",
                code_suffix(&code)
            ));
        }
        RestError::Http {
            status,
            code,
            message,
            details,
            hint,
        }
    }

    /// Maps a transport failure. URLs are dropped: they carry filter values (customer data).
    pub(crate) fn from_transport(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return RestError::Timeout;
        }
        if e.is_decode() {
            return RestError::Decode(chain(&e.without_url()));
        }
        if e.is_builder() {
            return RestError::InvalidRequest(chain(&e.without_url()));
        }
        RestError::Unavailable(chain(&e.without_url()))
    }
}

fn code_suffix(code: &str) -> String {
    match code.is_empty() {
        true => String::new(),
        false => format!(" {code}"),
    }
}

/// `details`/`hint` are usually strings; keep other JSON as its text.
fn text(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// PostgREST says "The result contains 0 rows" (older: "Results contain 0 rows, ...").
fn says_zero_rows(details: &str) -> bool {
    details.match_indices("0 rows").any(|(i, _)| {
        !details[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

/// The error and its sources on one line: reqwest's own text alone hides the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> RestError {
        RestError::from_response(status, body.as_bytes())
    }

    #[test]
    fn postgrest_bodies_become_http_errors() {
        let e = http(
            409,
            r#"{"code":"23505","details":"Key (id)=(1) already exists.","hint":null,"message":"duplicate key value violates unique constraint \"customers_pkey\""}"#,
        );
        match &e {
            RestError::Http {
                status,
                code,
                message,
                details,
                hint,
            } => {
                assert_eq!(*status, 409);
                assert_eq!(code, "23505");
                assert!(message.starts_with("duplicate key"));
                assert_eq!(details.as_deref(), Some("Key (id)=(1) already exists."));
                assert_eq!(*hint, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_conflict());
        assert!(!e.is_not_found());
        assert!(!e.is_unavailable());
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.code(), Some("23505"));
    }

    #[test]
    fn conflicts_by_status_or_sqlstate() {
        assert!(http(409, "{}").is_conflict());
        assert!(http(400, r#"{"code":"23503","message":"fk"}"#).is_conflict());
        assert!(http(400, r#"{"code":"23505","message":"dup"}"#).is_conflict());
        assert!(!http(400, r#"{"code":"23502","message":"not null"}"#).is_conflict());
    }

    #[test]
    fn not_found_is_zero_rows_or_unknown_table() {
        let zero = r#"{"code":"PGRST116","details":"The result contains 0 rows","hint":null,"message":"Cannot coerce the result to a single JSON object"}"#;
        assert!(http(406, zero).is_not_found());
        let old = r#"{"code":"PGRST116","details":"Results contain 0 rows, application/vnd.pgrst.object+json requires 1 row","message":"m"}"#;
        assert!(http(406, old).is_not_found());
        let many = r#"{"code":"PGRST116","details":"The result contains 10 rows","message":"m"}"#;
        assert!(!http(406, many).is_not_found());
        let two = r#"{"code":"PGRST116","details":"The result contains 2 rows","message":"m"}"#;
        assert!(!http(406, two).is_not_found());
        assert!(
            http(
                404,
                r#"{"code":"PGRST205","message":"Could not find the table"}"#
            )
            .is_not_found()
        );
        assert!(!http(404, "").is_not_found());
    }

    #[test]
    fn gateway_and_connection_failures_are_unavailable() {
        for status in [502, 503, 504] {
            let e = http(status, "<html><body>Bad   gateway</body></html>");
            assert!(e.is_unavailable(), "{status}");
            assert_eq!(e.status(), None);
        }
        let e = http(
            503,
            r#"{"code":"PGRST001","message":"Database client error"}"#,
        );
        assert_eq!(
            e.to_string(),
            "PostgREST unavailable: HTTP 503 PGRST001: Database client error"
        );
        assert!(http(500, r#"{"code":"08006","message":"connection failure"}"#).is_unavailable());
        assert!(!http(500, r#"{"code":"XX000","message":"internal"}"#).is_unavailable());
    }

    #[test]
    fn non_json_bodies_keep_a_short_excerpt() {
        let e = http(500, &format!("oops\n\n{}", "x".repeat(1000)));
        match e {
            RestError::Http { code, message, .. } => {
                assert_eq!(code, "");
                assert!(message.starts_with("oops x"));
                assert!(message.len() < MAX_TEXT + 10);
            }
            other => panic!("{other:?}"),
        }
        // HEAD answers have no body: the reason phrase stands in.
        assert_eq!(http(401, "").to_string(), "PostgREST 401: Unauthorized");
    }

    #[test]
    fn structured_details_are_kept_as_text() {
        match http(
            400,
            r#"{"code":"PGRST100","message":"m","details":{"a":1},"hint":"h"}"#,
        ) {
            RestError::Http { details, hint, .. } => {
                assert_eq!(details.as_deref(), Some(r#"{"a":1}"#));
                assert_eq!(hint.as_deref(), Some("h"));
            }
            other => panic!("{other:?}"),
        }
    }
}
