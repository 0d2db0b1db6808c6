//! A counting manager shared by the integration tests: it tracks how many resources are
//! alive (so a test can see leaks and over-creation that the pool's own figures would hide)
//! and can be told to fail, stall or hand out broken resources.

#![allow(dead_code)] // each test binary uses a different part of it

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collisionos_pool::{Manager, Pool, PoolConfig};

#[derive(Debug, thiserror::Error)]
#[error("create refused (attempt {0})")]
pub struct Refused(pub u64);

#[derive(Default)]
pub struct Counters {
    /// Resources alive right now (incremented on create, decremented on drop).
    pub live: AtomicUsize,
    /// Highest `live` ever seen.
    pub peak_live: AtomicUsize,
    /// Create attempts, failed ones included.
    pub attempts: AtomicU64,
    /// Creates that succeeded.
    pub created: AtomicU64,
    /// Fail this many of the next create attempts.
    pub fail_next: AtomicU64,
    /// Fail every attempt whose number is a multiple of this (0 = never).
    pub fail_every: AtomicU64,
    /// Sleep this long in create.
    pub create_delay_us: AtomicU64,
    /// Set when the manager (and so the pool's shared state) is dropped.
    pub manager_dropped: AtomicBool,
    /// Run (once) inside the next resource's `Drop`, to look at the pool mid-return.
    pub on_drop: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

pub struct Conn {
    pub id: u64,
    /// A holder sets this to make `recycle` refuse the resource.
    pub broken: bool,
    counters: Arc<Counters>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.counters.live.fetch_sub(1, Ordering::SeqCst);
        let hook = self.counters.on_drop.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

pub struct Counting(pub Arc<Counters>);

impl Drop for Counting {
    fn drop(&mut self) {
        self.0.manager_dropped.store(true, Ordering::SeqCst);
    }
}

impl Manager for Counting {
    type Resource = Conn;
    type Error = Refused;

    async fn create(&self) -> Result<Conn, Refused> {
        let c = &self.0;
        let attempt = c.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = c.create_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let fail_every = c.fail_every.load(Ordering::SeqCst);
        let scheduled = c
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if scheduled || (fail_every > 0 && attempt.is_multiple_of(fail_every)) {
            return Err(Refused(attempt));
        }
        let live = c.live.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_live.fetch_max(live, Ordering::SeqCst);
        let id = c.created.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            id,
            broken: false,
            counters: Arc::clone(c),
        })
    }

    fn recycle(&self, conn: &mut Conn) -> bool {
        !conn.broken
    }
}

pub fn pool(config: PoolConfig) -> (Pool<Counting>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    (Pool::new(Counting(Arc::clone(&counters)), config), counters)
}

pub fn config(max_size: usize, min_idle: usize) -> PoolConfig {
    PoolConfig {
        max_size,
        min_idle,
        ..PoolConfig::default()
    }
}

/// Counts concurrent holders; undone on drop, so panics and cancellation count too.
pub struct Holding<'a>(&'a AtomicUsize);

impl<'a> Holding<'a> {
    pub fn enter(now: &'a AtomicUsize, peak: &AtomicUsize) -> Self {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        Self(now)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
