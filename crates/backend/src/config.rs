//! Configuration: environment, then `.env.local`, then `.env`, then defaults.
//!
//! Every variable of the memo keeps its name and unit (milliseconds for the memo's intervals).
//! A malformed value is a [`ConfigError`] that names the variable, what is wrong and the
//! expected form; the binary turns it into exit code 2.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use url::Url;

/// A secret that never prints: `Debug`, `Display` and `Serialize` all redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The only way to read the value; grep for it when auditing where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn redacted(&self) -> String {
        format!("<redacted, {} chars>", self.0.chars().count())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Supabase project access. `None` in [`Config::supabase`] means local-only mode.
#[derive(Debug, Clone, Serialize)]
pub struct SupabaseConfig {
    /// `SUPABASE_URL`: project URL, e.g. `https://abc.supabase.co` (no default).
    pub url: Url,
    /// `SUPABASE_ANON_KEY`: the public key sent as `apikey`.
    pub anon_key: Secret,
    /// `SUPABASE_SERVICE_ROLE_KEY`: used for server-side requests when set; never leaves the backend.
    pub service_role_key: Option<Secret>,
    /// `SUPABASE_TIMEOUT_MS` (10000): whole-request timeout upstream.
    pub request_timeout: Duration,
    /// `SLOW_QUERY_MS` (1000): upstream requests slower than this are logged as warnings.
    pub slow_query: Duration,
}

impl SupabaseConfig {
    /// The key requests are signed with: the service-role key when present, else anon.
    pub fn server_key(&self) -> &Secret {
        self.service_role_key.as_ref().unwrap_or(&self.anon_key)
    }
}

/// `SYNC_*`: the offline outbox.
#[derive(Debug, Clone, Serialize)]
pub struct SyncConfig {
    /// `SYNC_ENABLED` (true).
    pub enabled: bool,
    /// `SYNC_BMS_INGESTION` (true).
    pub bms_ingestion: bool,
    /// `SYNC_AUTO_RESOLVE` (true): resolve conflicts by `updated_at`.
    pub auto_resolve: bool,
    /// `SYNC_MAX_RETRIES` (3).
    pub max_retries: u32,
    /// `SYNC_BATCH_SIZE` (100).
    pub batch_size: u32,
}

/// `SUPABASE_POOL_*`: bounds of the upstream lease pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolConfig {
    /// `SUPABASE_POOL_MIN` (2): leases kept warm.
    pub min: usize,
    /// `SUPABASE_POOL_MAX` (10): most requests in flight upstream.
    pub max: usize,
    /// `SUPABASE_POOL_IDLE_TIMEOUT` (30000 ms): idle leases above `min` are dropped after this.
    pub idle_timeout: Duration,
    /// `SUPABASE_POOL_ACQUIRE_TIMEOUT` (5000 ms): longest wait for a lease before 503.
    pub acquire_timeout: Duration,
}

/// Memory monitor thresholds (the memo's names and units).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryConfig {
    /// `MAX_MEMORY_MB` (500): critical RSS threshold.
    pub critical_mb: u64,
    /// `MEMORY_WARNING_THRESHOLD` (400): warning RSS threshold, in MB.
    pub warning_mb: u64,
    /// `MEMORY_CHECK_INTERVAL` (60000 ms): how often the memo's check runs.
    pub check_interval: Duration,
}

/// Realtime subscription manager bounds.
#[derive(Debug, Clone, Serialize)]
pub struct RealtimeConfig {
    /// `REALTIME_MAX_SUBSCRIPTIONS` (100).
    pub max_subscriptions: usize,
    /// `REALTIME_SUBSCRIPTION_TTL` (1800000 ms).
    pub subscription_ttl: Duration,
    /// `REALTIME_SWEEP_INTERVAL` (300000 ms).
    pub sweep_interval: Duration,
    /// `REALTIME_MAX_RETRIES` (3).
    pub max_retries: u32,
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// `BIND` (127.0.0.1).
    pub bind: IpAddr,
    /// `PORT` (3002); 0 picks a free port.
    pub port: u16,
    /// `MAX_EVENT_STREAMS` (16): concurrent UI event streams.
    pub max_event_streams: usize,
    /// `COLLISIONOS_API_TOKEN`: fixed API token; generated per install when unset.
    pub api_token: Option<Secret>,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub supabase: Option<SupabaseConfig>,
    pub sync: SyncConfig,
    pub pool: PoolConfig,
    pub memory: MemoryConfig,
    pub realtime: RealtimeConfig,
    pub server: ServerConfig,
    /// `COLLISIONOS_DATA_DIR`: logs, token and local store (default: the OS data dir).
    pub data_dir: PathBuf,
    /// `LOG_LEVEL` (info): a tracing filter such as `info` or `collisionos=debug`.
    pub log_level: String,
    /// `LOG_MAX_FILES` (7): daily log files kept.
    pub log_max_files: usize,
    /// Where each variable's value came from, for `collisionos config`.
    #[serde(skip)]
    pub sources: Vec<(&'static str, Source)>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    Env,
    EnvLocal,
    DotEnv,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Env => "environment",
            Source::EnvLocal => ".env.local",
            Source::DotEnv => ".env",
            Source::Default => "default",
        })
    }
}

/// A value that stops start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}={value:?} ({source_name}): {problem}; expected {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    /// The offending value, redacted for secrets.
    pub value: String,
    pub source_name: String,
    pub problem: String,
    pub expected: String,
}

/// Every variable this module reads, in `collisionos config` order.
pub const VARIABLES: &[&str] = &[
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_TIMEOUT_MS",
    "SLOW_QUERY_MS",
    "SYNC_ENABLED",
    "SYNC_BMS_INGESTION",
    "SYNC_AUTO_RESOLVE",
    "SYNC_MAX_RETRIES",
    "SYNC_BATCH_SIZE",
    "SUPABASE_POOL_MIN",
    "SUPABASE_POOL_MAX",
    "SUPABASE_POOL_IDLE_TIMEOUT",
    "SUPABASE_POOL_ACQUIRE_TIMEOUT",
    "MAX_MEMORY_MB",
    "MEMORY_WARNING_THRESHOLD",
    "MEMORY_CHECK_INTERVAL",
    "REALTIME_MAX_SUBSCRIPTIONS",
    "REALTIME_SUBSCRIPTION_TTL",
    "REALTIME_SWEEP_INTERVAL",
    "REALTIME_MAX_RETRIES",
    "BIND",
    "PORT",
    "MAX_EVENT_STREAMS",
    "COLLISIONOS_API_TOKEN",
    "COLLISIONOS_DATA_DIR",
    "LOG_LEVEL",
    "LOG_MAX_FILES",
];

const SECRETS: &[&str] = &[
    "SUPABASE_ANON_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "COLLISIONOS_API_TOKEN",
];

/// Layered key/value lookup; injected so tests never touch the process environment.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    pub env: HashMap<String, String>,
    pub env_local: HashMap<String, String>,
    pub dot_env: HashMap<String, String>,
}

impl Layers {
    /// The process environment plus `.env.local` and `.env` from `dir`.
    pub fn from_process(dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            env: std::env::vars().collect(),
            env_local: read_dotenv(&dir.join(".env.local"))?,
            dot_env: read_dotenv(&dir.join(".env"))?,
        })
    }

    fn get(&self, var: &str) -> Option<(String, Source)> {
        [
            (&self.env, Source::Env),
            (&self.env_local, Source::EnvLocal),
            (&self.dot_env, Source::DotEnv),
        ]
        .into_iter()
        .find_map(|(m, src)| {
            m.get(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.clone(), src))
        })
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let name = path.display().to_string();
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError {
        var: "(file)",
        value: name.clone(),
        source_name: name.clone(),
        problem: format!("cannot be read: {e}"),
        expected: "a readable file of KEY=value lines".into(),
    })?;
    let mut out = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| ConfigError {
            var: "(file)",
            value: name.clone(),
            source_name: name.clone(),
            problem: format!("has a line that does not parse: {e}"),
            expected: "KEY=value lines".into(),
        })?;
        out.insert(k, v);
    }
    Ok(out)
}

struct Reader<'a> {
    layers: &'a Layers,
    sources: Vec<(&'static str, Source)>,
}

impl Reader<'_> {
    fn raw(&mut self, var: &'static str) -> Option<(String, Source)> {
        let got = self.layers.get(var);
        self.sources
            .push((var, got.as_ref().map_or(Source::Default, |(_, s)| *s)));
        got.map(|(v, s)| (v.trim().to_string(), s))
    }

    fn err(
        var: &'static str,
        value: &str,
        src: Source,
        problem: &str,
        expected: &str,
    ) -> ConfigError {
        let value = if SECRETS.contains(&var) {
            Secret::new(value).redacted()
        } else {
            value.to_string()
        };
        ConfigError {
            var,
            value,
            source_name: src.to_string(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }

    fn string(&mut self, var: &'static str) -> Option<String> {
        self.raw(var).map(|(v, _)| v)
    }

    fn int(
        &mut self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some((v, src)) = self.raw(var) else {
            return Ok(default);
        };
        let expected = format!("a whole number from {min} to {max}");
        let n: u64 = v
            .parse()
            .map_err(|_| Self::err(var, &v, src, "not a whole number", &expected))?;
        if n < min || n > max {
            return Err(Self::err(var, &v, src, "out of range", &expected));
        }
        Ok(n)
    }

    fn millis(
        &mut self,
        var: &'static str,
        default_ms: u64,
        min_ms: u64,
    ) -> Result<Duration, ConfigError> {
        let Some((v, src)) = self.raw(var) else {
            return Ok(Duration::from_millis(default_ms));
        };
        let expected =
            format!("milliseconds as a whole number, at least {min_ms} (e.g. {default_ms})");
        let n: u64 = v.parse().map_err(|_| {
            Self::err(
                var,
                &v,
                src,
                "not a whole number of milliseconds",
                &expected,
            )
        })?;
        if n < min_ms || n > 7 * 24 * 3600 * 1000 {
            return Err(Self::err(var, &v, src, "out of range", &expected));
        }
        Ok(Duration::from_millis(n))
    }

    fn boolean(&mut self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some((v, src)) = self.raw(var) else {
            return Ok(default);
        };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(Self::err(var, &v, src, "not a boolean", "true or false")),
        }
    }
}

impl Config {
    /// Loads from the process environment and the dotenv files in the working directory.
    pub fn load() -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::from_layers(&Layers::from_process(&cwd)?)
    }

    /// Builds and validates the configuration from explicit layers.
    pub fn from_layers(layers: &Layers) -> Result<Self, ConfigError> {
        let mut r = Reader {
            layers,
            sources: Vec::new(),
        };

        let url = match r.raw("SUPABASE_URL") {
            None => None,
            Some((v, src)) => {
                let expected = "an http(s) URL such as https://abc.supabase.co";
                let u = Url::parse(&v).map_err(|e| {
                    Reader::err(
                        "SUPABASE_URL",
                        &v,
                        src,
                        &format!("not a URL ({e})"),
                        expected,
                    )
                })?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(Reader::err(
                        "SUPABASE_URL",
                        &v,
                        src,
                        "not an http(s) URL with a host",
                        expected,
                    ));
                }
                if u.query().is_some() || u.fragment().is_some() {
                    return Err(Reader::err(
                        "SUPABASE_URL",
                        &v,
                        src,
                        "has a query or fragment",
                        expected,
                    ));
                }
                Some(u)
            }
        };
        let anon = r.string("SUPABASE_ANON_KEY").map(Secret::new);
        let service = r.string("SUPABASE_SERVICE_ROLE_KEY").map(Secret::new);
        let request_timeout = r.millis("SUPABASE_TIMEOUT_MS", 10_000, 100)?;
        let slow_query = r.millis("SLOW_QUERY_MS", 1_000, 1)?;
        let supabase = match (url, anon) {
            (None, None) => None,
            (Some(url), Some(anon_key)) => Some(SupabaseConfig {
                url,
                anon_key,
                service_role_key: service,
                request_timeout,
                slow_query,
            }),
            (Some(_), None) => {
                return Err(Reader::err(
                    "SUPABASE_ANON_KEY",
                    "",
                    Source::Default,
                    "missing while SUPABASE_URL is set",
                    "the project's anon key (Settings > API)",
                ));
            }
            (None, Some(_)) => {
                return Err(Reader::err(
                    "SUPABASE_URL",
                    "",
                    Source::Default,
                    "missing while SUPABASE_ANON_KEY is set",
                    "an http(s) URL such as https://abc.supabase.co",
                ));
            }
        };

        let sync = SyncConfig {
            enabled: r.boolean("SYNC_ENABLED", true)?,
            bms_ingestion: r.boolean("SYNC_BMS_INGESTION", true)?,
            auto_resolve: r.boolean("SYNC_AUTO_RESOLVE", true)?,
            max_retries: r.int("SYNC_MAX_RETRIES", 3, 0, 100)? as u32,
            batch_size: r.int("SYNC_BATCH_SIZE", 100, 1, 10_000)? as u32,
        };

        let min = r.int("SUPABASE_POOL_MIN", 2, 0, 1000)? as usize;
        let max_raw = r.raw("SUPABASE_POOL_MAX");
        let max = match &max_raw {
            None => 10,
            Some((v, src)) => {
                let expected = "a whole number from 1 to 1000, not below SUPABASE_POOL_MIN";
                let n: usize = v.parse().map_err(|_| {
                    Reader::err("SUPABASE_POOL_MAX", v, *src, "not a whole number", expected)
                })?;
                if !(1..=1000).contains(&n) {
                    return Err(Reader::err(
                        "SUPABASE_POOL_MAX",
                        v,
                        *src,
                        "out of range",
                        expected,
                    ));
                }
                n
            }
        };
        if min > max {
            let (v, src) = max_raw.unwrap_or_else(|| ("10".into(), Source::Default));
            return Err(Reader::err(
                "SUPABASE_POOL_MAX",
                &v,
                src,
                &format!("below SUPABASE_POOL_MIN ({min})"),
                "a maximum at least as large as SUPABASE_POOL_MIN",
            ));
        }
        let pool = PoolConfig {
            min,
            max,
            idle_timeout: r.millis("SUPABASE_POOL_IDLE_TIMEOUT", 30_000, 100)?,
            acquire_timeout: r.millis("SUPABASE_POOL_ACQUIRE_TIMEOUT", 5_000, 1)?,
        };

        let critical_mb = r.int("MAX_MEMORY_MB", 500, 16, 1 << 20)?;
        let warn_raw = r.raw("MEMORY_WARNING_THRESHOLD");
        let warning_mb = match &warn_raw {
            None => 400.min(critical_mb.saturating_sub(1)),
            Some((v, src)) => {
                let expected =
                    format!("megabytes as a whole number below MAX_MEMORY_MB ({critical_mb})");
                let n: u64 = v.parse().map_err(|_| {
                    Reader::err(
                        "MEMORY_WARNING_THRESHOLD",
                        v,
                        *src,
                        "not a whole number",
                        &expected,
                    )
                })?;
                if n == 0 || n >= critical_mb {
                    return Err(Reader::err(
                        "MEMORY_WARNING_THRESHOLD",
                        v,
                        *src,
                        "not between 1 and MAX_MEMORY_MB",
                        &expected,
                    ));
                }
                n
            }
        };
        let memory = MemoryConfig {
            critical_mb,
            warning_mb,
            check_interval: r.millis("MEMORY_CHECK_INTERVAL", 60_000, 1_000)?,
        };

        let realtime = RealtimeConfig {
            max_subscriptions: r.int("REALTIME_MAX_SUBSCRIPTIONS", 100, 1, 10_000)? as usize,
            subscription_ttl: r.millis("REALTIME_SUBSCRIPTION_TTL", 30 * 60_000, 1_000)?,
            sweep_interval: r.millis("REALTIME_SWEEP_INTERVAL", 5 * 60_000, 100)?,
            max_retries: r.int("REALTIME_MAX_RETRIES", 3, 0, 100)? as u32,
        };

        let bind = match r.raw("BIND") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some((v, src)) => v.parse().map_err(|_| {
                Reader::err(
                    "BIND",
                    &v,
                    src,
                    "not an IP address",
                    "an IP address such as 127.0.0.1",
                )
            })?,
        };
        let server = ServerConfig {
            bind,
            port: r.int("PORT", 3002, 0, 65_535)? as u16,
            max_event_streams: r.int("MAX_EVENT_STREAMS", 16, 1, 1024)? as usize,
            api_token: match r.raw("COLLISIONOS_API_TOKEN") {
                None => None,
                Some((v, src)) => {
                    if v.len() < 16
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(Reader::err(
                            "COLLISIONOS_API_TOKEN",
                            &v,
                            src,
                            "too short or has characters outside [A-Za-z0-9_-]",
                            "at least 16 characters of [A-Za-z0-9_-]",
                        ));
                    }
                    Some(Secret::new(v))
                }
            },
        };

        let data_dir = r
            .string("COLLISIONOS_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::data_local_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("collisionos")
            });
        let log_level = match r.raw("LOG_LEVEL") {
            None => "info".to_string(),
            Some((v, src)) => {
                if tracing_subscriber::EnvFilter::try_new(&v).is_err() {
                    return Err(Reader::err(
                        "LOG_LEVEL",
                        &v,
                        src,
                        "not a log filter",
                        "error, warn, info, debug, trace or a filter like collisionos=debug",
                    ));
                }
                v
            }
        };
        let log_max_files = r.int("LOG_MAX_FILES", 7, 1, 365)? as usize;

        Ok(Config {
            supabase,
            sync,
            pool,
            memory,
            realtime,
            server,
            data_dir,
            log_level,
            log_max_files,
            sources: r.sources,
        })
    }

    /// Human-readable effective configuration, secrets redacted (`collisionos config`).
    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_millis().to_string();
        let sb = self.supabase.as_ref();
        let value = |var: &str| -> String {
            match var {
                "SUPABASE_URL" => {
                    sb.map_or("(unset: local-only mode)".into(), |s| s.url.to_string())
                }
                "SUPABASE_ANON_KEY" => sb.map_or("(unset)".into(), |s| s.anon_key.redacted()),
                "SUPABASE_SERVICE_ROLE_KEY" => sb
                    .and_then(|s| s.service_role_key.as_ref())
                    .map_or("(unset)".into(), Secret::redacted),
                "SUPABASE_TIMEOUT_MS" => sb.map_or("10000".into(), |s| ms(s.request_timeout)),
                "SLOW_QUERY_MS" => sb.map_or("1000".into(), |s| ms(s.slow_query)),
                "SYNC_ENABLED" => self.sync.enabled.to_string(),
                "SYNC_BMS_INGESTION" => self.sync.bms_ingestion.to_string(),
                "SYNC_AUTO_RESOLVE" => self.sync.auto_resolve.to_string(),
                "SYNC_MAX_RETRIES" => self.sync.max_retries.to_string(),
                "SYNC_BATCH_SIZE" => self.sync.batch_size.to_string(),
                "SUPABASE_POOL_MIN" => self.pool.min.to_string(),
                "SUPABASE_POOL_MAX" => self.pool.max.to_string(),
                "SUPABASE_POOL_IDLE_TIMEOUT" => ms(self.pool.idle_timeout),
                "SUPABASE_POOL_ACQUIRE_TIMEOUT" => ms(self.pool.acquire_timeout),
                "MAX_MEMORY_MB" => self.memory.critical_mb.to_string(),
                "MEMORY_WARNING_THRESHOLD" => self.memory.warning_mb.to_string(),
                "MEMORY_CHECK_INTERVAL" => ms(self.memory.check_interval),
                "REALTIME_MAX_SUBSCRIPTIONS" => self.realtime.max_subscriptions.to_string(),
                "REALTIME_SUBSCRIPTION_TTL" => ms(self.realtime.subscription_ttl),
                "REALTIME_SWEEP_INTERVAL" => ms(self.realtime.sweep_interval),
                "REALTIME_MAX_RETRIES" => self.realtime.max_retries.to_string(),
                "BIND" => self.server.bind.to_string(),
                "PORT" => self.server.port.to_string(),
                "MAX_EVENT_STREAMS" => self.server.max_event_streams.to_string(),
                "COLLISIONOS_API_TOKEN" => self
                    .server
                    .api_token
                    .as_ref()
                    .map_or("(generated per install)".into(), Secret::redacted),
                "COLLISIONOS_DATA_DIR" => self.data_dir.display().to_string(),
                "LOG_LEVEL" => self.log_level.clone(),
                "LOG_MAX_FILES" => self.log_max_files.to_string(),
                _ => String::new(),
            }
        };
        let mut out = String::new();
        for var in VARIABLES {
            let src = self
                .sources
                .iter()
                .find(|(v, _)| v == var)
                .map_or(Source::Default, |(_, s)| *s);
            out.push_str(&format!("{var:<30} {:<40} ({src})\n", value(var)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut layers = Layers::default();
        for (k, v) in pairs {
            layers.env.insert((*k).into(), (*v).into());
        }
        Config::from_layers(&layers)
    }

    #[test]
    fn defaults_are_the_memos() {
        let c = with(&[]).unwrap();
        assert!(c.supabase.is_none());
        assert_eq!(c.server.port, 3002);
        assert_eq!(c.server.bind.to_string(), "127.0.0.1");
        assert_eq!((c.pool.min, c.pool.max), (2, 10));
        assert_eq!(c.pool.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.pool.acquire_timeout, Duration::from_secs(5));
        assert_eq!((c.memory.warning_mb, c.memory.critical_mb), (400, 500));
        assert_eq!(c.memory.check_interval, Duration::from_secs(60));
        assert_eq!(c.realtime.max_subscriptions, 100);
        assert_eq!(c.sync.batch_size, 100);
    }

    #[test]
    fn layers_in_order_env_then_local_then_dotenv() {
        let mut l = Layers::default();
        l.dot_env.insert("PORT".into(), "1111".into());
        l.env_local.insert("PORT".into(), "2222".into());
        assert_eq!(Config::from_layers(&l).unwrap().server.port, 2222);
        l.env.insert("PORT".into(), "3333".into());
        let c = Config::from_layers(&l).unwrap();
        assert_eq!(c.server.port, 3333);
        assert!(c.sources.contains(&("PORT", Source::Env)));
        l.env.clear();
        l.env_local.clear();
        assert_eq!(Config::from_layers(&l).unwrap().server.port, 1111);
    }

    #[test]
    fn each_malformed_value_names_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("PORT", "eighty")], "PORT"),
            (&[("PORT", "70000")], "PORT"),
            (&[("BIND", "localhost:80")], "BIND"),
            (
                &[("SUPABASE_URL", "not a url"), ("SUPABASE_ANON_KEY", "k")],
                "SUPABASE_URL",
            ),
            (
                &[
                    ("SUPABASE_URL", "ftp://x.example"),
                    ("SUPABASE_ANON_KEY", "k"),
                ],
                "SUPABASE_URL",
            ),
            (
                &[("SUPABASE_URL", "https://x.example")],
                "SUPABASE_ANON_KEY",
            ),
            (&[("SUPABASE_ANON_KEY", "k")], "SUPABASE_URL"),
            (&[("SUPABASE_POOL_MAX", "0")], "SUPABASE_POOL_MAX"),
            (&[("SUPABASE_POOL_MAX", "ten")], "SUPABASE_POOL_MAX"),
            (
                &[("SUPABASE_POOL_MIN", "5"), ("SUPABASE_POOL_MAX", "4")],
                "SUPABASE_POOL_MAX",
            ),
            (&[("SUPABASE_POOL_MIN", "-1")], "SUPABASE_POOL_MIN"),
            (
                &[("SUPABASE_POOL_IDLE_TIMEOUT", "30s")],
                "SUPABASE_POOL_IDLE_TIMEOUT",
            ),
            (
                &[("SUPABASE_POOL_ACQUIRE_TIMEOUT", "0")],
                "SUPABASE_POOL_ACQUIRE_TIMEOUT",
            ),
            (&[("SUPABASE_TIMEOUT_MS", "fast")], "SUPABASE_TIMEOUT_MS"),
            (&[("SLOW_QUERY_MS", "1.5")], "SLOW_QUERY_MS"),
            (&[("SYNC_ENABLED", "maybe")], "SYNC_ENABLED"),
            (&[("SYNC_BMS_INGESTION", "2")], "SYNC_BMS_INGESTION"),
            (&[("SYNC_AUTO_RESOLVE", "y3s")], "SYNC_AUTO_RESOLVE"),
            (&[("SYNC_MAX_RETRIES", "many")], "SYNC_MAX_RETRIES"),
            (&[("SYNC_BATCH_SIZE", "0")], "SYNC_BATCH_SIZE"),
            (&[("MAX_MEMORY_MB", "lots")], "MAX_MEMORY_MB"),
            (
                &[("MEMORY_WARNING_THRESHOLD", "600")],
                "MEMORY_WARNING_THRESHOLD",
            ),
            (
                &[("MEMORY_WARNING_THRESHOLD", "x")],
                "MEMORY_WARNING_THRESHOLD",
            ),
            (&[("MEMORY_CHECK_INTERVAL", "10")], "MEMORY_CHECK_INTERVAL"),
            (
                &[("REALTIME_MAX_SUBSCRIPTIONS", "0")],
                "REALTIME_MAX_SUBSCRIPTIONS",
            ),
            (
                &[("REALTIME_SUBSCRIPTION_TTL", "1h")],
                "REALTIME_SUBSCRIPTION_TTL",
            ),
            (
                &[("REALTIME_SWEEP_INTERVAL", "-5")],
                "REALTIME_SWEEP_INTERVAL",
            ),
            (&[("REALTIME_MAX_RETRIES", "x")], "REALTIME_MAX_RETRIES"),
            (&[("MAX_EVENT_STREAMS", "0")], "MAX_EVENT_STREAMS"),
            (
                &[("COLLISIONOS_API_TOKEN", "short")],
                "COLLISIONOS_API_TOKEN",
            ),
            (&[("LOG_LEVEL", "loud=[")], "LOG_LEVEL"),
            (&[("LOG_MAX_FILES", "0")], "LOG_MAX_FILES"),
        ];
        for (pairs, var) in cases {
            let err = with(pairs).expect_err(&format!("{pairs:?} must be refused"));
            assert_eq!(err.var, *var, "{pairs:?}");
            let msg = err.to_string();
            assert!(msg.contains(var) && msg.contains("expected"), "{msg}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = with(&[
            ("SUPABASE_URL", "https://x.example"),
            ("SUPABASE_ANON_KEY", "anon-secret-value"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-secret-value"),
            ("COLLISIONOS_API_TOKEN", "token-secret-value-123"),
        ])
        .unwrap();
        for text in [
            c.describe(),
            format!("{c:?}"),
            serde_json::to_string(&c).unwrap(),
        ] {
            assert!(!text.contains("secret-value"), "{text}");
        }
        let err = with(&[("COLLISIONOS_API_TOKEN", "bad token!")]).unwrap_err();
        assert!(!err.to_string().contains("bad token"));
    }

    #[test]
    fn dotenv_files_are_read_without_touching_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "PORT=4444\nSUPABASE_POOL_MAX=20\n").unwrap();
        std::fs::write(dir.path().join(".env.local"), "PORT=5555\n").unwrap();
        let mut l = Layers::from_process(dir.path()).unwrap();
        l.env.clear();
        let c = Config::from_layers(&l).unwrap();
        assert_eq!((c.server.port, c.pool.max), (5555, 20));
    }
}
