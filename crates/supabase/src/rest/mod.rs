//! PostgREST client: a typed query builder and one shared HTTP client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), collisionos_supabase::rest::RestError> {
//! use collisionos_supabase::rest::{Count, Order, RestClient, RestConfig, escape_like};
//! # let url = url::Url::parse("http://127.0.0.1:54321").unwrap();
//! let client = RestClient::new(RestConfig::new(url, "anon-key"))?;
//! let page = client
//!     .from("customers")
//!     .select("id,first_name,last_name")
//!     .ilike("last_name", format!("*{}*", escape_like("o'br")))
//!     .order("last_name", Order::asc())
//!     .limit(25)
//!     .count(Count::Exact)
//!     .execute::<serde_json::Value>()
//!     .await?;
//! # let _ = page; Ok(()) }
//! ```
//!
//! Wire rules (headers, `Prefer`, quoting) follow `shared/PROTOCOL.md`. The client owns no
//! timers or tasks: everything it does happens inside the caller's future, so dropping that
//! future cancels the request and the connection goes back to (or is dropped from) the pool.

mod builder;
mod error;
mod filter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

pub use builder::{Count, Delete, Insert, Order, Page, RawPage, Select, Table, Update, Upsert};
pub use error::RestError;
pub use filter::{Cond, IsValue, OrGroup, Value, escape_like};

/// Where and how to reach PostgREST. Secrets are redacted from `Debug`.
#[derive(Clone)]
pub struct RestConfig {
    /// The Supabase project URL; requests go to `{base_url}/rest/v1/{table}`.
    pub base_url: Url,
    /// Sent as `apikey` (the gateway's key check).
    pub api_key: String,
    /// Sent as `Authorization: Bearer`; `None` sends `api_key` (the anon/service key is a JWT).
    pub bearer: Option<String>,
    /// Limit on a whole request, connect to last body byte. Default 10 s.
    pub timeout: Duration,
    /// Limit on opening a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Requests slower than this log a warning. Default 1 s.
    pub slow_threshold: Duration,
    /// `Accept-Profile`/`Content-Profile`. Default `public`.
    pub schema: String,
    /// Idle keep-alive connections kept per host. Default 10.
    pub pool_max_idle_per_host: usize,
    /// Idle connections are closed after this. Default 30 s.
    pub pool_idle_timeout: Duration,
}

impl RestConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(base_url: Url, api_key: impl Into<String>) -> Self {
        Self {
            base_url,
            api_key: api_key.into(),
            bearer: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            slow_threshold: Duration::from_secs(1),
            schema: "public".to_owned(),
            pool_max_idle_per_host: 10,
            pool_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for RestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"<redacted>")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("slow_threshold", &self.slow_threshold)
            .field("schema", &self.schema)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .finish()
    }
}

/// A PostgREST client. Cloning is cheap and shares one HTTP connection pool.
#[derive(Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{base}/rest/v1/`, always with the trailing slash so `join(table)` appends.
    rest_root: Url,
    schema: HeaderValue,
    slow_threshold: Duration,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("rest_root", &self.inner.rest_root.as_str())
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

const OBJECT: &str = "application/vnd.pgrst.object+json";
const JSON: &str = "application/json";
static ACCEPT_PROFILE: HeaderName = HeaderName::from_static("accept-profile");
static CONTENT_PROFILE: HeaderName = HeaderName::from_static("content-profile");
static PREFER: HeaderName = HeaderName::from_static("prefer");

impl RestClient {
    /// Builds the HTTP client once. Fails on a URL that is not http(s), a bad schema name, or a
    /// key that cannot be a header value (the key itself is never echoed).
    pub fn new(cfg: RestConfig) -> Result<Self, RestError> {
        let rest_root = rest_root(&cfg.base_url)?;
        filter::ident("schema", &cfg.schema)?;
        let http = reqwest::Client::builder()
            .default_headers(default_headers(&cfg)?)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(cfg.pool_idle_timeout)
            // `apikey` is not a header reqwest strips on a cross-host redirect; never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RestError::from_transport)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                rest_root,
                schema: HeaderValue::from_str(&cfg.schema)
                    .map_err(|_| RestError::InvalidRequest("bad schema".into()))?,
                slow_threshold: cfg.slow_threshold,
            }),
        })
    }

    /// Starts a request on `table`. A bad name fails the request when it is executed.
    pub fn from(&self, table: &str) -> Table {
        Table::new(self.clone(), table)
    }

    /// `HEAD /rest/v1/` and the time it took: proves the gateway and PostgREST answer without
    /// reading the OpenAPI document. No answer in time is reported as unavailable (here a timeout
    /// means "not reachable"); an answer with an error status (e.g. 401 for a bad key) is an
    /// `Http` error, so a probe can tell "down" from "refusing us".
    pub async fn ping(&self) -> Result<Duration, RestError> {
        let started = Instant::now();
        let call = Call {
            method: Method::HEAD,
            table: String::new(),
            query: String::new(),
            prefer: Vec::new(),
            object: false,
            body: None,
        };
        match self.send(call).await {
            Ok(_) => Ok(started.elapsed()),
            Err(RestError::Timeout) => Err(RestError::Unavailable(format!(
                "no answer to ping within {} ms",
                started.elapsed().as_millis()
            ))),
            Err(e) => Err(e),
        }
    }

    /// Sends one request and reads the whole answer; error statuses become `RestError`.
    async fn send(&self, call: Call) -> Result<Answer, RestError> {
        let mut url = self
            .inner
            .rest_root
            .join(&call.table)
            .map_err(|e| RestError::InvalidRequest(e.to_string()))?;
        if !call.query.is_empty() {
            url.set_query(Some(&call.query));
        }
        let read = matches!(call.method, Method::GET | Method::HEAD);
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), url)
            .header(header::ACCEPT, if call.object { OBJECT } else { JSON });
        req = if read {
            req.header(&ACCEPT_PROFILE, self.inner.schema.clone())
        } else {
            req.header(&CONTENT_PROFILE, self.inner.schema.clone())
                .header(header::CONTENT_TYPE, JSON)
        };
        if !call.prefer.is_empty() {
            req = req.header(&PREFER, call.prefer.join(","));
        }
        if let Some(body) = call.body {
            req = req.body(body);
        }

        let started = Instant::now();
        let result = async {
            let resp = req.send().await.map_err(RestError::from_transport)?;
            let status = resp.status().as_u16();
            let total = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range_total);
            let body = read_body(resp).await?;
            Ok::<_, RestError>((status, total, body))
        }
        .await;
        let elapsed = started.elapsed();
        let status = match &result {
            Ok((status, ..)) => status.to_string(),
            Err(RestError::Timeout) => "timeout".to_owned(),
            Err(RestError::Unavailable(_)) => "unreachable".to_owned(),
            Err(_) => "error".to_owned(),
        };
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        // URL and headers stay out of logs: they hold customer data and keys.
        if elapsed >= self.inner.slow_threshold {
            tracing::warn!(
                method = %call.method,
                table = %call.table,
                elapsed_ms,
                status = %status,
                "slow PostgREST request"
            );
        } else {
            tracing::debug!(method = %call.method, table = %call.table, elapsed_ms, status = %status, "PostgREST request");
        }

        let (status, total, body) = result?;
        if !(200..300).contains(&status) {
            return Err(RestError::from_response(status, &body));
        }
        Ok(Answer { total, body })
    }
}

/// Largest answer read into memory; a bigger one fails with `Decode` instead of growing the
/// heap (page with `limit`/`range`, or narrow the `select`).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

async fn read_body(mut resp: reqwest::Response) -> Result<bytes::Bytes, RestError> {
    let too_big = || {
        RestError::Decode(format!(
            "response body larger than {} MiB",
            MAX_RESPONSE_BYTES >> 20
        ))
    };
    let announced = resp.content_length().unwrap_or(0);
    if announced > MAX_RESPONSE_BYTES as u64 {
        return Err(too_big());
    }
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await.map_err(RestError::from_transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// One request as the builders describe it.
struct Call {
    method: Method,
    /// Validated table name, or empty for the API root.
    table: String,
    /// Already percent-encoded.
    query: String,
    prefer: Vec<&'static str>,
    /// Ask for one object (`application/vnd.pgrst.object+json`) instead of an array.
    object: bool,
    body: Option<Vec<u8>>,
}

struct Answer {
    total: Option<u64>,
    body: bytes::Bytes,
}

fn rest_root(base: &Url) -> Result<Url, RestError> {
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(RestError::InvalidRequest(format!(
            "base_url must be an http(s) URL, got scheme {:?}",
            base.scheme()
        )));
    }
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    if !root.path().ends_with('/') {
        let path = format!("{}/", root.path());
        root.set_path(&path);
    }
    root.join("rest/v1/")
        .map_err(|e| RestError::InvalidRequest(e.to_string()))
}

fn default_headers(cfg: &RestConfig) -> Result<HeaderMap, RestError> {
    let secret = |name: &str, value: &str| {
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            RestError::InvalidRequest(format!(
                "{name} contains characters not allowed in a header"
            ))
        })?;
        // Keeps it out of reqwest's and http's Debug output.
        v.set_sensitive(true);
        Ok::<_, RestError>(v)
    };
    let bearer = cfg.bearer.as_deref().unwrap_or(&cfg.api_key);
    let mut headers = HeaderMap::new();
    headers.insert("apikey", secret("api_key", &cfg.api_key)?);
    headers.insert(
        header::AUTHORIZATION,
        secret("bearer", &format!("Bearer {bearer}"))?,
    );
    headers.insert(
        "x-client-info",
        HeaderValue::from_static(concat!("collisionos-monitor/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(headers)
}

/// The total after `/` in `Content-Range: 0-24/3573458` (`*` = not counted).
fn content_range_total(v: &str) -> Option<u64> {
    v.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(base: &str) -> RestConfig {
        RestConfig::new(Url::parse(base).unwrap(), "anon.jwt.key")
    }

    #[test]
    fn rest_root_appends_rest_v1() {
        for (base, root) in [
            ("http://127.0.0.1:54321", "http://127.0.0.1:54321/rest/v1/"),
            ("http://127.0.0.1:54321/", "http://127.0.0.1:54321/rest/v1/"),
            (
                "https://x.supabase.co/?a=b#f",
                "https://x.supabase.co/rest/v1/",
            ),
            ("http://host/prefix", "http://host/prefix/rest/v1/"),
        ] {
            assert_eq!(
                rest_root(&Url::parse(base).unwrap()).unwrap().as_str(),
                root
            );
        }
        assert!(matches!(
            RestClient::new(cfg("ftp://host/")),
            Err(RestError::InvalidRequest(_))
        ));
        assert!(RestClient::new(cfg("mailto:a@b")).is_err());
    }

    #[test]
    fn default_headers_carry_keys_sensitively() {
        let h = default_headers(&cfg("http://h")).unwrap();
        assert_eq!(h["apikey"], "anon.jwt.key");
        assert_eq!(h[header::AUTHORIZATION], "Bearer anon.jwt.key");
        assert!(h["apikey"].is_sensitive() && h[header::AUTHORIZATION].is_sensitive());
        assert_eq!(
            h["x-client-info"],
            concat!("collisionos-monitor/", env!("CARGO_PKG_VERSION"))
        );

        let mut c = cfg("http://h");
        c.bearer = Some("user.jwt".into());
        let h = default_headers(&c).unwrap();
        assert_eq!(h["apikey"], "anon.jwt.key");
        assert_eq!(h[header::AUTHORIZATION], "Bearer user.jwt");
    }

    #[test]
    fn bad_keys_and_schemas_are_refused_without_echo() {
        let mut c = cfg("http://h");
        c.api_key = "sec\nret".into();
        let e = RestClient::new(c).unwrap_err().to_string();
        assert!(!e.contains("sec"), "{e}");
        let mut c = cfg("http://h");
        c.schema = "public;drop".into();
        assert!(matches!(
            RestClient::new(c),
            Err(RestError::InvalidRequest(_))
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut c = cfg("http://h");
        c.bearer = Some("user.jwt.secret".into());
        let shown = format!("{c:?} {:?}", RestClient::new(c.clone()).unwrap());
        assert!(!shown.contains("anon.jwt.key") && !shown.contains("user.jwt.secret"));
        assert!(shown.contains("http://h/"));
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(content_range_total("0-24/3573458"), Some(3_573_458));
        assert_eq!(content_range_total("*/0"), Some(0));
        assert_eq!(content_range_total("0-24/*"), None);
        assert_eq!(content_range_total("garbage"), None);
    }
}
