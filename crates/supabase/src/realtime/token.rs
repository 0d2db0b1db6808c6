//! Access tokens for channel joins.
//!
//! The client never keeps its own copy of a token for later joins: every join and every
//! refresh asks the [`TokenProvider`], so a rejoin after a standby or a reconnect carries the
//! current token instead of an expired one (supabase-js #1732). Whoever refreshes tokens
//! (an auth client, a test minting JWTs) stores the new one where the provider reads it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of the `access_token` sent with joins and pushed before expiry.
pub trait TokenProvider: Send + Sync + 'static {
    /// The token to use now; `None` joins without one (the server then uses the `apikey`).
    fn access_token(&self) -> Option<String>;
}

impl<F> TokenProvider for F
where
    F: Fn() -> Option<String> + Send + Sync + 'static,
{
    fn access_token(&self) -> Option<String> {
        self()
    }
}

/// A fixed token (e.g. a long-lived service-role JWT).
#[derive(Clone)]
pub struct StaticToken(Option<Arc<str>>);

impl StaticToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(Arc::from))
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StaticToken(<redacted>)"
        } else {
            "StaticToken(None)"
        })
    }
}

impl TokenProvider for StaticToken {
    fn access_token(&self) -> Option<String> {
        self.0.as_deref().map(str::to_owned)
    }
}

/// Whether a token may be sent as `access_token`: the new `sb_...` API keys are not JWTs and
/// the server refuses them there.
pub fn is_pushable(token: &str) -> bool {
    !token.starts_with("sb_") && token.split('.').count() == 3
}

/// The `exp` claim of a JWT (seconds since the epoch), read without verifying the signature:
/// the client only needs to know when to push the next token.
pub fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload.trim_end_matches('='))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64()
        .or_else(|| exp.as_f64().map(|f| f.max(0.0) as u64))
}

/// Decodes unpadded base64url (RFC 4648 §5), the JWT segment encoding.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing sextet cannot encode a byte.
    (bits < 6).then_some(out)
}

/// Encodes unpadded base64url (the tests mint JWTs with it).
#[cfg(test)]
pub(crate) fn base64url_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// How long from now until `margin` before the token's `exp`; `None` when it has no `exp`.
/// Zero when that moment has already passed.
pub fn refresh_in(token: &str, margin: Duration) -> Option<Duration> {
    let exp = Duration::from_secs(jwt_exp(token)?);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Some(exp.saturating_sub(now).saturating_sub(margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            base64url_encode(claims.as_bytes())
        )
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let enc = base64url_encode(&data);
            assert!(!enc.contains('=') && !enc.contains('+') && !enc.contains('/'));
            assert_eq!(base64url(&enc).unwrap(), data, "{enc}");
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url("A"), None);
        assert_eq!(base64url("a+b/"), None);
    }

    #[test]
    fn exp_is_read_from_the_payload() {
        assert_eq!(
            jwt_exp(&jwt(r#"{"exp":1700000000,"role":"anon"}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_exp(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(jwt_exp(&jwt(r#"{"role":"anon"}"#)), None);
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn refresh_is_due_margin_before_exp() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = jwt(&format!(r#"{{"exp":{}}}"#, now + 3600));
        let d = refresh_in(&t, Duration::from_secs(600)).unwrap();
        assert!(
            d <= Duration::from_secs(3000) && d >= Duration::from_secs(2990),
            "{d:?}"
        );
        let expired = jwt(&format!(r#"{{"exp":{}}}"#, now - 10));
        assert_eq!(
            refresh_in(&expired, Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn sb_keys_are_never_pushed() {
        assert!(!is_pushable("sb_publishable_abc"));
        assert!(!is_pushable("sb_secret_abc"));
        assert!(!is_pushable("plain"));
        assert!(is_pushable(&jwt(r#"{"exp":1}"#)));
        let p = StaticToken::new(Some("x.y.z"));
        assert_eq!(p.access_token().as_deref(), Some("x.y.z"));
        assert!(!format!("{p:?}").contains("x.y.z"));
        let f = || Some("a.b.c".to_string());
        assert_eq!(f.access_token().as_deref(), Some("a.b.c"));
    }
}
