//! Bounded pool of leases: every upstream (Supabase) request borrows one of at most
//! `max_size` resources and gives it back when the [`Lease`] is dropped, on every path.
//!
//! This crate owns the lease accounting (a semaphore of `max_size` permits plus the idle
//! list), the acquire timeout, the warm minimum, idle reaping, shutdown (`close`) and the
//! live figures ([`PoolStats`]). It does no I/O of its own: what a resource is and how it
//! is made is the [`Manager`]'s business.
//!
//! It replaces the memo's `SupabaseConnectionPool`, whose `acquire()`/`release()` pairs
//! leaked a slot on every error path and whose wait queue had no timeout: here release is
//! `Drop`, waiting is always bounded, and a dropped `acquire()` future undoes what it did.

mod pool;
mod stats;

use std::future::Future;
use std::time::Duration;

pub use pool::{Lease, Pool};
pub use stats::{PoolStats, WAIT_BUCKETS};

/// Makes and checks the pooled resources.
pub trait Manager: Send + Sync + 'static {
    /// What a [`Lease`] derefs to (e.g. an HTTP client bound to the upstream).
    type Resource: Send + 'static;
    /// Why [`Manager::create`] failed; surfaces as [`PoolError::Create`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes a new resource. Runs under the acquire timeout and may be cancelled (dropped)
    /// at any await point.
    fn create(&self) -> impl Future<Output = Result<Self::Resource, Self::Error>> + Send;

    /// Called when a lease is returned; `false` drops the resource instead of keeping it
    /// idle. Runs inside `Drop`, so it must be quick and must not panic.
    fn recycle(&self, _resource: &mut Self::Resource) -> bool {
        true
    }
}

/// Bounds of a [`Pool`]. Plain data; `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most resources alive at once, leased or idle (default 10). Clamped to at least 1.
    pub max_size: usize,
    /// Idle resources kept warm: [`Pool::warm`] creates this many and idle reaping never
    /// goes below it (default 2). Clamped to `max_size`.
    pub min_idle: usize,
    /// An idle resource above `min_idle` idle for longer than this is dropped (default 30 s).
    pub idle_timeout: Duration,
    /// Longest [`Pool::acquire`] waits, creation included, before
    /// [`PoolError::Timeout`] (default 5 s). There is no "wait forever".
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 2,
            idle_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`Pool::acquire`] gave no lease.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// Every lease stayed busy (or creation stayed slow) for the whole acquire timeout.
    #[error("no pool lease became free within {waited:?}")]
    Timeout {
        /// How long the caller waited (the configured acquire timeout).
        waited: Duration,
    },
    /// The pool was closed (shutdown) before or while waiting.
    #[error("the pool is closed")]
    Closed,
    /// The manager failed to create a resource.
    #[error("creating a pooled resource failed: {0}")]
    Create(E),
}

impl<E> PoolError<E> {
    /// Hint for an HTTP `Retry-After` on [`PoolError::Timeout`]: the wait rounded up to
    /// whole seconds, at least 1 s. The pool stayed saturated that long, so retrying sooner
    /// would mostly queue again. `None` for errors a retry does not cure soon.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Timeout { waited } => {
                let secs = waited.as_secs() + u64::from(waited.subsec_nanos() > 0);
                Some(Duration::from_secs(secs.max(1)))
            }
            Self::Closed | Self::Create(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Error = PoolError<std::io::Error>;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = PoolConfig::default();
        assert_eq!((c.max_size, c.min_idle), (10, 2));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.acquire_timeout, Duration::from_secs(5));
    }

    #[test]
    fn retry_after_rounds_the_wait_up_to_whole_seconds() {
        let t = |ms| Error::Timeout {
            waited: Duration::from_millis(ms),
        };
        assert_eq!(t(5_000).retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(t(5_001).retry_after(), Some(Duration::from_secs(6)));
        assert_eq!(t(0).retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(Error::Closed.retry_after(), None);
        assert_eq!(
            Error::Create(std::io::Error::other("x")).retry_after(),
            None
        );
    }

    #[test]
    fn create_error_message_names_the_cause() {
        let e = Error::Create(std::io::Error::other("dns failed"));
        assert_eq!(
            e.to_string(),
            "creating a pooled resource failed: dns failed"
        );
    }
}
