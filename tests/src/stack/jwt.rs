//! The stack's JWT secret and the keys minted with it, shaped like a Supabase project's: HS256,
//! `{"iss":"supabase-demo","role":...,"iat":...,"exp":...}`.

use anyhow::Result;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the stack's anon and service keys live: ten years, like Supabase's demo keys.
pub const KEY_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A fresh random secret (40 alphanumerics, as `supabase start` makes).
pub fn random_secret() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sign `claims` with `secret` (HS256).
pub fn sign(secret: &str, claims: &Value) -> Result<String> {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}

/// A key for `role` that expires `lifetime` from now.
pub fn role_key(secret: &str, role: &str, lifetime: Duration) -> Result<String> {
    let iat = now_secs();
    sign(
        secret,
        &json!({
            "iss": "supabase-demo",
            "role": role,
            "iat": iat,
            "exp": iat + lifetime.as_secs(),
        }),
    )
}
