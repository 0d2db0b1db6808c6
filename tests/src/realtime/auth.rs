//! JWT checks as Realtime makes them (`RealtimeWeb.ChannelsAuthorization.authorize_conn`):
//! an HMAC signature with the project's JWT secret, the claims `role` and `exp` present, `exp`
//! in the future. The error texts are Realtime's, since clients log and sometimes match them.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT at all.
    Malformed,
    /// Signed with another key or algorithm.
    Signature,
    /// `role` or `exp` missing.
    MissingClaims,
    /// `exp` passed this many seconds ago (0 at the very second).
    Expired { ago: i64 },
}

impl TokenError {
    /// The message of Realtime's join error / channel shutdown for this error.
    pub fn message(&self) -> String {
        match self {
            TokenError::Malformed => "The token provided is not a valid JWT".to_owned(),
            TokenError::Signature => "Failed to validate JWT signature".to_owned(),
            TokenError::MissingClaims => "Fields `role` and `exp` are required in JWT".to_owned(),
            TokenError::Expired { ago } => format!("Token has expired {ago} seconds ago"),
        }
    }

    /// The reason of a refused `phx_join` (`"Code: message"`, as `Logging.log_error` builds it).
    pub fn join_reason(&self) -> String {
        let code = match self {
            TokenError::Malformed => "MalformedJWT",
            TokenError::Signature => "JwtSignatureError",
            TokenError::MissingClaims | TokenError::Expired { .. } => "InvalidJWTToken",
        };
        format!("{code}: {}", self.message())
    }

    /// The `{error}` of a refused handshake (`RealtimeWeb.UserSocket.error_response`).
    pub fn handshake_error(&self) -> &'static str {
        match self {
            TokenError::Malformed => "The token provided is not a valid JWT",
            TokenError::Signature => "Failed to validate JWT signature",
            TokenError::MissingClaims => "Fields `role` and `exp` are required in JWT",
            TokenError::Expired { .. } => "Token has expired",
        }
    }

    /// The message a channel shuts down with when a refreshed token is refused.
    pub fn refresh_message(&self) -> String {
        match self {
            // `{:error, :signature_error}` falls through to `inspect(error)` in Realtime.
            TokenError::Signature => ":signature_error".to_owned(),
            other => other.message(),
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `exp`, in seconds since the epoch.
    pub exp: i64,
    /// The `role` claim: the database role changes are checked with.
    pub role: String,
    /// All claims (PostgreSQL's `request.jwt.claims` during row level security checks).
    pub all: Value,
}

/// Checks JWTs against one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &str) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        // `exp` is checked below so the error can say how long ago it passed.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's claims when it is valid now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, now_secs())
    }

    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        // Realtime URI-decodes and strips whitespace first (`clean_token`).
        let token: String = token.chars().filter(|c| !c.is_whitespace()).collect();
        let data = jsonwebtoken::decode::<Value>(&token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Signature,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims.as_object().ok_or(TokenError::Malformed)?;
        let exp = claims.get("exp").and_then(Value::as_f64);
        let (Some(exp), Some(role)) = (exp, claims.get("role")) else {
            return Err(TokenError::MissingClaims);
        };
        let exp = exp.round() as i64;
        if exp <= now {
            return Err(TokenError::Expired { ago: now - exp });
        }
        let role = role
            .as_str()
            .map_or_else(|| role.to_string(), str::to_owned);
        Ok(Claims {
            exp,
            role,
            all: data.claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn sign(secret: &str, claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn realtime_rules() {
        let v = Verifier::new("s3cret-s3cret-s3cret-s3cret-s3cret");
        let good = sign(
            "s3cret-s3cret-s3cret-s3cret-s3cret",
            json!({"role": "anon", "exp": 2000}),
        );
        let claims = v.verify_at(&good, 1000).unwrap();
        assert_eq!((claims.exp, claims.role.as_str()), (2000, "anon"));
        assert_eq!(
            v.verify_at(&good, 2000),
            Err(TokenError::Expired { ago: 0 })
        );
        assert_eq!(
            v.verify_at(&good, 2005),
            Err(TokenError::Expired { ago: 5 })
        );
        let other = sign(
            "another-secret-another-secret-000",
            json!({"role": "anon", "exp": 2000}),
        );
        assert_eq!(v.verify_at(&other, 1000), Err(TokenError::Signature));
        let no_role = sign("s3cret-s3cret-s3cret-s3cret-s3cret", json!({"exp": 2000}));
        assert_eq!(v.verify_at(&no_role, 1000), Err(TokenError::MissingClaims));
        assert_eq!(v.verify_at("not-a-jwt", 1000), Err(TokenError::Malformed));
        assert_eq!(
            TokenError::Expired { ago: 3 }.join_reason(),
            "InvalidJWTToken: Token has expired 3 seconds ago"
        );
    }
}
