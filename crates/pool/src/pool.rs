//! The pool and its RAII lease.
//!
//! Accounting: a semaphore holds `max_size` permits; a caller needs one to take an idle
//! resource or to create one, and a [`Lease`] keeps it until dropped. A lease puts its
//! resource back on the idle list *before* releasing its permit, and a new resource is only
//! created when the idle list is empty, so `idle + leased + being created <= max_size`.
//! A returned resource that is not kept is dropped before its permit is released.
//!
//! Idle reaping is lazy (on acquire, on return and on `stats`), not a timer: the monitor
//! reads `stats()` every second, which bounds how late a reap can be, and a pool without a
//! background task has nothing to own, cancel or leak.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::stats::{PoolStats, WaitHistogram};
use crate::{Manager, PoolConfig, PoolError};

/// A bounded pool of `M::Resource`s handed out as [`Lease`]s.
///
/// Cheap to clone (an `Arc` inside); all clones are the same pool. Every
/// [`acquire`](Pool::acquire) waits at most `acquire_timeout`; [`close`](Pool::close) ends
/// every wait with [`PoolError::Closed`].
///
/// ```
/// use collisionos_pool::{Manager, Pool, PoolConfig, PoolError};
///
/// struct Clients;
///
/// impl Manager for Clients {
///     type Resource = String; // e.g. an HTTP client
///     type Error = std::io::Error;
///
///     async fn create(&self) -> Result<String, std::io::Error> {
///         Ok("client".to_owned())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), PoolError<std::io::Error>> {
/// let pool = Pool::new(Clients, PoolConfig::default());
/// pool.warm().await; // min_idle resources ready before the first request
/// {
///     let client = pool.acquire().await?; // Timeout after acquire_timeout
///     assert_eq!(client.len(), 6);
/// } // the lease goes back here, whatever path leaves the block
/// assert_eq!(pool.stats().active, 0);
/// pool.close();
/// assert!(matches!(pool.acquire().await, Err(PoolError::Closed)));
/// # Ok(())
/// # }
/// ```
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
}

/// A resource borrowed from a [`Pool`]; derefs to it and goes back when dropped.
///
/// Dropped normally, on an error path, during a panic's unwinding or with its task
/// cancelled, the permit is always released. The resource itself returns to the idle list
/// if the pool is open and [`Manager::recycle`] accepts it; it is dropped instead when
/// the holder panicked (its state is unknown), on [`Lease::discard`], or when the pool is
/// closed or gone. The lease holds only a `Weak` to the pool, so it never keeps a dropped
/// pool alive.
pub struct Lease<M: Manager> {
    // `Some` until `Drop`/`discard` takes it.
    resource: Option<M::Resource>,
    pool: Weak<Shared<M>>,
}

struct Shared<M: Manager> {
    manager: M,
    config: PoolConfig,
    // One permit per resource that may be leased or created; closed by `close()`.
    permits: Semaphore,
    // Short critical sections only, never held across an await.
    slots: Mutex<Slots<M::Resource>>,
    // Written under `slots`' lock so that returns and acquires see close() in order.
    closed: AtomicBool,
    waiting: AtomicUsize,
    acquired_total: AtomicU64,
    timeouts_total: AtomicU64,
    closed_waiters_total: AtomicU64,
    create_errors_total: AtomicU64,
    upstream_errors_total: AtomicU64,
    waits: WaitHistogram,
}

struct Slots<R> {
    // Oldest first: returns push at the back, acquires pop the back (warm resources are
    // reused), reaping takes from the front. Never longer than `max_size` (see module doc).
    idle: VecDeque<Idle<R>>,
    // Resources alive: idle + leased.
    size: usize,
    // Leases held.
    active: usize,
}

struct Idle<R> {
    resource: R,
    since: Instant,
}

impl<R> Slots<R> {
    /// Takes out idle resources idle for longer than `idle_timeout` while more than
    /// `min_idle` stay. The caller drops them after unlocking.
    fn reap(&mut self, now: Instant, config: &PoolConfig) -> Vec<R> {
        let mut expired = Vec::new();
        while self.idle.len() > config.min_idle {
            match self.idle.front() {
                Some(oldest) if now.duration_since(oldest.since) > config.idle_timeout => {
                    if let Some(idle) = self.idle.pop_front() {
                        expired.push(idle.resource);
                    }
                }
                _ => break,
            }
        }
        self.size -= expired.len();
        expired
    }
}

/// Counts a caller blocked on the semaphore; undone on drop, so a cancelled wait does not
/// leave `waiting` high.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<M: Manager> Pool<M> {
    /// A pool with no resources yet; call [`warm`](Pool::warm) to create `min_idle`.
    /// `max_size` is clamped to `1..=Semaphore::MAX_PERMITS`, `min_idle` to `max_size`.
    pub fn new(manager: M, config: PoolConfig) -> Self {
        let max_size = config.max_size.clamp(1, Semaphore::MAX_PERMITS);
        let config = PoolConfig {
            max_size,
            min_idle: config.min_idle.min(max_size),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                manager,
                config,
                permits: Semaphore::new(max_size),
                slots: Mutex::new(Slots {
                    idle: VecDeque::with_capacity(max_size),
                    size: 0,
                    active: 0,
                }),
                closed: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                acquired_total: AtomicU64::new(0),
                timeouts_total: AtomicU64::new(0),
                closed_waiters_total: AtomicU64::new(0),
                create_errors_total: AtomicU64::new(0),
                upstream_errors_total: AtomicU64::new(0),
                waits: WaitHistogram::new(),
            }),
        }
    }

    /// Borrows a resource: an idle one if any, else a new one while fewer than `max_size`
    /// exist, else waits (FIFO) for a lease to come back. Gives up after `acquire_timeout`
    /// with [`PoolError::Timeout`]. Cancel-safe: dropping the future at any point releases
    /// whatever it held.
    pub async fn acquire(&self) -> Result<Lease<M>, PoolError<M::Error>> {
        let shared = &*self.shared;
        let start = Instant::now();
        let result = match tokio::time::timeout(shared.config.acquire_timeout, self.lease()).await {
            Ok(result) => result,
            // The inner future (wait or create) is dropped here and undoes itself.
            Err(_elapsed) => Err(PoolError::Timeout {
                waited: start.elapsed(),
            }),
        };
        let counter = match &result {
            Ok(_) => {
                shared.waits.record(start.elapsed());
                &shared.acquired_total
            }
            Err(PoolError::Timeout { .. }) => &shared.timeouts_total,
            Err(PoolError::Closed) => &shared.closed_waiters_total,
            Err(PoolError::Create(_)) => &shared.create_errors_total,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// `acquire` without the deadline and the counting.
    async fn lease(&self) -> Result<Lease<M>, PoolError<M::Error>> {
        let shared = &*self.shared;
        let permit = match shared.permits.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(PoolError::Closed),
            Err(TryAcquireError::NoPermits) => {
                let _waiting = Waiting::enter(&shared.waiting);
                shared
                    .permits
                    .acquire()
                    .await
                    .map_err(|_closed| PoolError::Closed)?
            }
        };
        // From here until `forget` the permit is released by its own Drop if we bail out
        // or are cancelled (mid-create included).

        let now = Instant::now();
        let (reused, expired) = {
            let mut slots = shared.slots.lock();
            if shared.closed.load(Ordering::Acquire) {
                return Err(PoolError::Closed);
            }
            let expired = slots.reap(now, &shared.config);
            let reused = slots.idle.pop_back().map(|idle| idle.resource);
            if reused.is_some() {
                slots.active += 1;
            }
            (reused, expired)
        };
        drop(expired);
        if let Some(resource) = reused {
            permit.forget();
            return Ok(self.lease_of(resource));
        }

        let resource = shared.manager.create().await.map_err(PoolError::Create)?;
        {
            let mut slots = shared.slots.lock();
            if shared.closed.load(Ordering::Acquire) {
                drop(slots);
                drop(resource);
                return Err(PoolError::Closed);
            }
            slots.size += 1;
            slots.active += 1;
        }
        permit.forget();
        Ok(self.lease_of(resource))
    }

    // No await between counting a lease as active and building it: nothing to cancel.
    fn lease_of(&self, resource: M::Resource) -> Lease<M> {
        Lease {
            resource: Some(resource),
            pool: Arc::downgrade(&self.shared),
        }
    }

    /// Creates resources until `min_idle` are idle (called once at start). Stops early,
    /// without failing, if the pool is busy or closed or a create fails or outlasts
    /// `acquire_timeout` (counted in `create_errors_total` / logged).
    pub async fn warm(&self) {
        let shared = &*self.shared;
        loop {
            if shared.slots.lock().idle.len() >= shared.config.min_idle {
                return;
            }
            // A permit per create keeps warm-up inside `max_size` next to live acquires.
            let Ok(permit) = shared.permits.try_acquire() else {
                return;
            };
            let created =
                tokio::time::timeout(shared.config.acquire_timeout, shared.manager.create()).await;
            let resource = match created {
                Ok(Ok(resource)) => resource,
                Ok(Err(error)) => {
                    shared.create_errors_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "pool warm-up: create failed");
                    return;
                }
                Err(_elapsed) => {
                    shared.create_errors_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(timeout = ?shared.config.acquire_timeout, "pool warm-up: create timed out");
                    return;
                }
            };
            {
                let mut slots = shared.slots.lock();
                if shared.closed.load(Ordering::Acquire) {
                    drop(slots);
                    drop(resource);
                    return;
                }
                slots.size += 1;
                slots.idle.push_back(Idle {
                    resource,
                    since: Instant::now(),
                });
            }
            drop(permit);
        }
    }

    /// Current figures. Also reaps expired idle resources.
    pub fn stats(&self) -> PoolStats {
        let shared = &*self.shared;
        let now = Instant::now();
        let (size, idle, active, expired) = {
            let mut slots = shared.slots.lock();
            let expired = slots.reap(now, &shared.config);
            (slots.size, slots.idle.len(), slots.active, expired)
        };
        drop(expired);
        let waits = shared.waits.snapshot();
        PoolStats {
            capacity: shared.config.max_size,
            size,
            idle,
            active,
            waiting: shared.waiting.load(Ordering::Relaxed),
            acquired_total: shared.acquired_total.load(Ordering::Relaxed),
            timeouts_total: shared.timeouts_total.load(Ordering::Relaxed),
            closed_waiters_total: shared.closed_waiters_total.load(Ordering::Relaxed),
            create_errors_total: shared.create_errors_total.load(Ordering::Relaxed),
            upstream_errors_total: shared.upstream_errors_total.load(Ordering::Relaxed),
            wait_p50_us: waits.p50_us,
            wait_p99_us: waits.p99_us,
            wait_max_us: waits.max_us,
            wait_histogram: waits.buckets,
        }
    }

    /// Closes the pool (shutdown): every current and future `acquire` gets
    /// [`PoolError::Closed`] (one mid-create gets it when its create ends), idle resources
    /// are dropped now, leased ones when returned. Idempotent.
    pub fn close(&self) {
        let shared = &*self.shared;
        let idle = {
            let mut slots = shared.slots.lock();
            if shared.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            let idle = std::mem::take(&mut slots.idle);
            slots.size -= idle.len();
            idle
        };
        // Wakes every waiter with an error; holders of a permit re-check `closed`.
        shared.permits.close();
        drop(idle);
        tracing::debug!("pool closed");
    }

    /// Whether [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Counts an upstream failure seen through a lease (bumped by the HTTP layer).
    pub fn record_upstream_error(&self) {
        self.shared
            .upstream_errors_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl<M: Manager> Shared<M> {
    /// Takes a resource back from a lease and releases its permit.
    fn give_back(&self, mut resource: M::Resource, reuse: bool) {
        // recycle() is the manager's code: run it outside the lock.
        let reuse =
            reuse && !self.closed.load(Ordering::Acquire) && self.manager.recycle(&mut resource);
        let now = Instant::now();
        let (dropped, expired) = {
            let mut slots = self.slots.lock();
            slots.active -= 1;
            if reuse && !self.closed.load(Ordering::Acquire) {
                slots.idle.push_back(Idle {
                    resource,
                    since: now,
                });
                (None, slots.reap(now, &self.config))
            } else {
                slots.size -= 1;
                (Some(resource), Vec::new())
            }
        };
        // Dropped before the permit goes back, so a new create never overlaps them.
        drop(dropped);
        drop(expired);
        self.permits.add_permits(1);
    }
}

impl<M: Manager> Lease<M> {
    /// Drops a broken resource instead of returning it to the pool; the permit is
    /// released, so a later `acquire` creates a fresh one.
    pub fn discard(mut self) {
        if let Some(resource) = self.resource.take() {
            match self.pool.upgrade() {
                Some(shared) => shared.give_back(resource, false),
                None => drop(resource),
            }
        }
    }
}

impl<M: Manager> Drop for Lease<M> {
    fn drop(&mut self) {
        let Some(resource) = self.resource.take() else {
            return;
        };
        match self.pool.upgrade() {
            // A panicking holder may have left the resource half-used: don't reuse it.
            Some(shared) => shared.give_back(resource, !std::thread::panicking()),
            // The pool is gone, and with it the permits: nothing to return to.
            None => drop(resource),
        }
    }
}

impl<M: Manager> Deref for Lease<M> {
    type Target = M::Resource;

    fn deref(&self) -> &M::Resource {
        self.resource
            .as_ref()
            .expect("a lease holds its resource until dropped")
    }
}

impl<M: Manager> DerefMut for Lease<M> {
    fn deref_mut(&mut self) -> &mut M::Resource {
        self.resource
            .as_mut()
            .expect("a lease holds its resource until dropped")
    }
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("pool_alive", &(self.pool.strong_count() > 0))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;

    /// Resources are numbers; `create` sleeps `delay_ms` (paused time) first.
    struct Numbers {
        next: AtomicU32,
        delay_ms: AtomicU64,
    }

    impl Manager for Numbers {
        type Resource = u32;
        type Error = std::io::Error;

        async fn create(&self) -> Result<u32, std::io::Error> {
            let delay = self.delay_ms.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok(self.next.fetch_add(1, Ordering::Relaxed))
        }

        fn recycle(&self, resource: &mut u32) -> bool {
            // Odd numbers are "broken".
            resource.is_multiple_of(2)
        }
    }

    fn pool(max_size: usize, delay_ms: u64) -> Pool<Numbers> {
        let manager = Numbers {
            next: AtomicU32::new(0),
            delay_ms: AtomicU64::new(delay_ms),
        };
        let config = PoolConfig {
            max_size,
            min_idle: 0,
            ..PoolConfig::default()
        };
        Pool::new(manager, config)
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn acquire_future_and_pool_are_send_and_sync() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Pool<Numbers>>();
        assert_sync::<Lease<Numbers>>();
        let p = pool(1, 0);
        assert_send(&p.acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_wait_undoes_waiting_and_keeps_the_permit_count() {
        let p = pool(1, 0);
        let held = p.acquire().await.unwrap();
        let mut waiter = Box::pin(p.acquire());
        assert!(futures::poll!(&mut waiter).is_pending());
        assert_eq!(p.stats().waiting, 1);
        drop(waiter);
        assert_eq!(p.stats().waiting, 0);

        drop(held);
        let again = p.acquire().await.unwrap();
        assert_eq!(*again, 0, "the returned resource is reused");
        let s = p.stats();
        assert_eq!((s.size, s.active, s.idle, s.waiting), (1, 1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_create_releases_the_permit_and_counts_nothing() {
        let p = pool(1, 10_000);
        let cancelled = tokio::time::timeout(Duration::from_secs(1), p.acquire()).await;
        assert!(cancelled.is_err(), "outer timeout cancels mid-create");
        let s = p.stats();
        assert_eq!(
            (s.size, s.active, s.waiting, s.acquired_total),
            (0, 0, 0, 0)
        );

        p.shared.manager.delay_ms.store(0, Ordering::Relaxed);
        // With a leaked permit this would wait out the acquire timeout and fail.
        let lease = p.acquire().await.unwrap();
        assert_eq!(p.stats().size, 1);
        drop(lease);
    }

    #[tokio::test(start_paused = true)]
    async fn recycle_failure_and_discard_drop_the_resource() {
        let p = pool(2, 0);
        let even = p.acquire().await.unwrap();
        let odd = p.acquire().await.unwrap();
        assert_eq!((*even, *odd), (0, 1));
        drop(odd); // recycle says no
        let s = p.stats();
        assert_eq!((s.size, s.idle, s.active), (1, 0, 1));
        even.discard();
        let s = p.stats();
        assert_eq!((s.size, s.idle, s.active), (0, 0, 0));
        // Both permits came back.
        let a = p.acquire().await.unwrap();
        let b = p.acquire().await.unwrap();
        assert_eq!((*a, *b), (2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_holder_returns_the_permit_but_not_the_resource() {
        let p = pool(1, 0);
        let lease = p.acquire().await.unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = lease;
            panic!("deliberate panic while holding a lease");
        }));
        assert!(outcome.is_err());
        let s = p.stats();
        assert_eq!((s.size, s.idle, s.active), (0, 0, 0));
        let next = p.acquire().await.unwrap();
        assert_eq!(*next, 1, "a fresh resource, not the one the panic left");
    }
}
