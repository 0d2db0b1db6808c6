//! One behaviour at a time, in paused time (exact durations, no sleeps): acquire timeout,
//! close, a lease outliving its pool, idle reaping, warm-up and create errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use collisionos_pool::{PoolConfig, PoolError};
use common::config;
use futures::FutureExt;
use tokio::time::advance;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Lets spawned tasks run until `ready` holds (bounded, so a bug fails instead of hanging).
async fn settle(mut ready: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("spawned tasks never reached the expected state");
}

#[tokio::test(start_paused = true)]
async fn acquire_times_out_after_exactly_the_acquire_timeout() {
    let (pool, _) = common::pool(PoolConfig {
        acquire_timeout: TIMEOUT,
        ..config(2, 0)
    });
    let a = pool.acquire().await.unwrap();
    let _b = pool.acquire().await.unwrap();

    let err = pool.acquire().await.unwrap_err();
    let PoolError::Timeout { waited } = err else {
        panic!("expected Timeout, got {err:?}");
    };
    assert_eq!(waited, TIMEOUT);
    assert_eq!(err.retry_after(), Some(TIMEOUT));
    let s = pool.stats();
    assert_eq!((s.timeouts_total, s.acquired_total, s.waiting), (1, 2, 0));

    // The timed-out waiter took nothing: a returned lease is immediately available.
    drop(a);
    let start = tokio::time::Instant::now();
    let _c = pool.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(pool.stats().size, 2);
}

#[tokio::test(start_paused = true)]
async fn a_create_slower_than_the_timeout_times_out_and_leaks_nothing() {
    let (pool, counters) = common::pool(PoolConfig {
        acquire_timeout: TIMEOUT,
        ..config(1, 0)
    });
    counters.create_delay_us.store(60_000_000, Ordering::SeqCst);
    let err = pool.acquire().await.unwrap_err();
    assert!(
        matches!(err, PoolError::Timeout { waited } if waited == TIMEOUT),
        "{err:?}"
    );
    let s = pool.stats();
    assert_eq!((s.size, s.active, s.timeouts_total), (0, 0, 1));

    counters.create_delay_us.store(0, Ordering::SeqCst);
    let lease = pool.acquire().await.expect("the only permit came back");
    assert_eq!(counters.live.load(Ordering::SeqCst), 1);
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn close_wakes_every_waiter_with_closed() {
    let (pool, counters) = common::pool(config(1, 0));
    let held = pool.acquire().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.map(|_| ()) })
        })
        .collect();
    settle(|| pool.stats().waiting == 3).await;

    pool.close();
    assert!(pool.is_closed());
    for waiter in waiters {
        // Woken by close, not by the acquire timeout (that would be Timeout).
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Closed), "{err:?}");
    }
    let s = pool.stats();
    assert_eq!((s.waiting, s.closed_waiters_total), (0, 3));

    // Future callers too.
    assert!(matches!(pool.acquire().await, Err(PoolError::Closed)));
    assert_eq!(pool.stats().closed_waiters_total, 4);

    // A lease returned after close is dropped, not kept idle.
    assert_eq!(counters.live.load(Ordering::SeqCst), 1);
    drop(held);
    let s = pool.stats();
    assert_eq!((s.size, s.idle, s.active), (0, 0, 0));
    assert_eq!(counters.live.load(Ordering::SeqCst), 0);
    pool.close(); // idempotent
}

#[tokio::test(start_paused = true)]
async fn close_drops_idle_resources_and_stops_warm() {
    let (pool, counters) = common::pool(config(4, 3));
    pool.warm().await;
    assert_eq!(counters.live.load(Ordering::SeqCst), 3);
    pool.close();
    assert_eq!(counters.live.load(Ordering::SeqCst), 0);
    let s = pool.stats();
    assert_eq!((s.size, s.idle), (0, 0));
    pool.warm().await;
    assert_eq!(
        counters.created.load(Ordering::SeqCst),
        3,
        "warm after close creates nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_outliving_its_pool_drops_cleanly() {
    let (pool, counters) = common::pool(config(2, 0));
    let clone = pool.clone();
    let lease = pool.acquire().await.unwrap();
    drop(pool);
    assert!(
        !counters.manager_dropped.load(Ordering::SeqCst),
        "a clone still holds the pool"
    );
    drop(clone);
    // The lease holds only a Weak: the pool is gone while the lease is still in use.
    assert!(counters.manager_dropped.load(Ordering::SeqCst));
    assert_eq!(lease.id, 0);
    assert_eq!(counters.live.load(Ordering::SeqCst), 1);
    drop(lease);
    assert_eq!(counters.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_resources_above_min_idle_are_reaped_after_the_idle_timeout() {
    let (pool, counters) = common::pool(PoolConfig {
        idle_timeout: Duration::from_secs(30),
        ..config(10, 1)
    });
    let mut first: Vec<_> = Vec::new();
    for _ in 0..6 {
        first.push(pool.acquire().await.unwrap());
    }
    let later = first.split_off(4);
    drop(first); // 4 idle since t=0
    advance(Duration::from_secs(20)).await;
    drop(later); // 2 idle since t=20
    assert_eq!(pool.stats().idle, 6);

    advance(Duration::from_secs(10)).await; // t=30: not idle *longer* than 30 s yet
    assert_eq!(pool.stats().idle, 6);
    advance(Duration::from_secs(1)).await; // t=31: the four from t=0 expire
    let s = pool.stats();
    assert_eq!((s.idle, s.size), (2, 2));
    assert_eq!(counters.live.load(Ordering::SeqCst), 2);

    advance(Duration::from_secs(30)).await; // t=61: both expire, min_idle keeps one
    let s = pool.stats();
    assert_eq!((s.idle, s.size), (1, 1));
    assert_eq!(counters.live.load(Ordering::SeqCst), 1);

    advance(Duration::from_secs(3600)).await;
    assert_eq!(pool.stats().idle, 1, "never below min_idle");
}

#[tokio::test(start_paused = true)]
async fn acquire_reaps_lazily_and_reuses_the_freshest_resource() {
    let (pool, counters) = common::pool(PoolConfig {
        idle_timeout: Duration::from_secs(30),
        ..config(10, 0)
    });
    let old = pool.acquire().await.unwrap();
    let fresh = pool.acquire().await.unwrap();
    let (old_id, fresh_id) = (old.id, fresh.id);
    drop(old);
    advance(Duration::from_secs(29)).await;
    drop(fresh);
    advance(Duration::from_secs(2)).await; // old idle 31 s, fresh 2 s

    let lease = pool.acquire().await.unwrap();
    assert_eq!(lease.id, fresh_id);
    assert_ne!(lease.id, old_id);
    assert_eq!(
        counters.live.load(Ordering::SeqCst),
        1,
        "the expired one was reaped"
    );
}

#[tokio::test(start_paused = true)]
async fn warm_creates_min_idle_once() {
    let (pool, counters) = common::pool(config(10, 2));
    pool.warm().await;
    let s = pool.stats();
    assert_eq!((s.size, s.idle, s.active), (2, 2, 0));
    pool.warm().await;
    assert_eq!(counters.created.load(Ordering::SeqCst), 2);
    // Warm resources are handed out without creating.
    let _a = pool.acquire().await.unwrap();
    let _b = pool.acquire().await.unwrap();
    assert_eq!(counters.created.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn warm_stops_at_a_create_error_and_counts_it() {
    let (pool, counters) = common::pool(config(10, 3));
    counters.fail_every.store(2, Ordering::SeqCst);
    pool.warm().await;
    let s = pool.stats();
    assert_eq!((s.size, s.idle, s.create_errors_total), (1, 1, 1));
    counters.fail_every.store(0, Ordering::SeqCst);
    pool.warm().await;
    assert_eq!(pool.stats().idle, 3);
}

#[tokio::test(start_paused = true)]
async fn create_errors_surface_and_leak_no_permit() {
    let (pool, counters) = common::pool(config(2, 0));
    counters.fail_next.store(5, Ordering::SeqCst);
    for attempt in 1..=5 {
        let err = pool.acquire().await.unwrap_err();
        match err {
            PoolError::Create(common::Refused(n)) => assert_eq!(n, attempt),
            other => panic!("expected Create, got {other:?}"),
        }
    }
    let s = pool.stats();
    assert_eq!(
        (s.size, s.active, s.waiting, s.create_errors_total),
        (0, 0, 0, 5)
    );
    assert_eq!(s.acquired_total, 0);

    // Five failures on a pool of two: a leaked permit would make these time out.
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let s = pool.stats();
    assert_eq!((s.size, s.active, s.timeouts_total), (2, 2, 0));
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn upstream_errors_and_waits_are_counted() {
    let (pool, _) = common::pool(config(3, 0));
    pool.record_upstream_error();
    pool.record_upstream_error();
    let lease = pool.acquire().await.unwrap();
    drop(lease);
    let s = pool.stats();
    assert_eq!(s.upstream_errors_total, 2);
    assert_eq!(s.capacity, 3);
    assert_eq!(s.wait_histogram[0], 1, "a paused-time acquire waits 0 µs");
    assert_eq!((s.wait_p50_us, s.wait_p99_us, s.wait_max_us), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_resource_is_gone_before_its_permit_is_free() {
    let (pool, counters) = common::pool(config(1, 0));
    let mut lease = pool.acquire().await.unwrap();
    lease.broken = true; // recycle refuses it, so returning drops it
    let acquired_mid_drop = Arc::new(AtomicBool::new(false));
    {
        let (pool, seen) = (pool.clone(), Arc::clone(&acquired_mid_drop));
        *counters.on_drop.lock().unwrap() = Some(Box::new(move || {
            // Succeeds only if the permit was released while the old resource still lives.
            seen.store(pool.acquire().now_or_never().is_some(), Ordering::SeqCst);
        }));
    }
    drop(lease);
    assert!(!acquired_mid_drop.load(Ordering::SeqCst));
    assert!(counters.peak_live.load(Ordering::SeqCst) <= 1);
    assert!(counters.on_drop.lock().unwrap().is_none(), "the hook ran");
    assert!(
        pool.acquire().now_or_never().is_some(),
        "and the permit is free after"
    );
}

#[tokio::test(start_paused = true)]
async fn close_during_create_gives_closed_and_drops_the_new_resource() {
    let (pool, counters) = common::pool(config(2, 0));
    counters.create_delay_us.store(1_000_000, Ordering::SeqCst);
    let creating = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await.map(|_| ()) })
    };
    settle(|| counters.attempts.load(Ordering::SeqCst) == 1).await;
    pool.close();
    let err = creating.await.unwrap().unwrap_err();
    assert!(matches!(err, PoolError::Closed), "{err:?}");
    assert_eq!(
        counters.created.load(Ordering::SeqCst),
        1,
        "the create did finish"
    );
    assert_eq!(counters.live.load(Ordering::SeqCst), 0);
    let s = pool.stats();
    assert_eq!((s.size, s.active, s.closed_waiters_total), (0, 0, 1));
}
