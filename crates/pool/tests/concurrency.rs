//! Many tasks at once: the bound holds at every step and every lease comes back, whatever
//! the holders do (finish, fail, panic, get cancelled at random points).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use collisionos_pool::{Pool, PoolConfig, PoolError};
use common::{Counters, Counting, Holding};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAX: usize = 10;
const DELIBERATE: &str = "deliberate panic while holding a lease";

fn config() -> PoolConfig {
    PoolConfig {
        max_size: MAX,
        min_idle: 2,
        // Reaping is covered in lifecycle.rs; here idle resources must stay countable.
        idle_timeout: Duration::from_secs(3600),
        // Long enough that no acquirer times out even on a loaded machine.
        acquire_timeout: Duration::from_secs(30),
    }
}

/// Seed from `POOL_TEST_SEED` to replay a failure, else a fresh one (printed).
fn seed() -> u64 {
    let seed = std::env::var("POOL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("POOL_TEST_SEED={seed}");
    seed
}

/// Keeps deliberate panics out of the test output; others still print.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if msg != DELIBERATE {
                default(info);
            }
        }));
    });
}

/// What the test saw from the outside, to hold the pool's own figures against.
#[derive(Default)]
struct Probe {
    holding: AtomicUsize,
    peak_holding: AtomicUsize,
    acquired: AtomicU64,
    create_failed: AtomicU64,
    cancelled: AtomicU64,
}

fn assert_bounded(pool: &Pool<Counting>, counters: &Counters) {
    let s = pool.stats();
    assert!(
        s.size <= MAX && s.active <= MAX && s.idle <= s.size,
        "{s:?}"
    );
    let live = counters.live.load(Ordering::SeqCst);
    assert!(live <= MAX, "{live} resources alive");
}

/// Every lease back, nothing leaked, figures agree with what the test counted.
async fn assert_all_returned(pool: &Pool<Counting>, counters: &Counters, probe: &Probe) {
    let s = pool.stats();
    assert_eq!((s.active, s.waiting), (0, 0), "{s:?}");
    assert_eq!(s.idle, s.size, "every alive resource is idle: {s:?}");
    assert!(s.size <= MAX, "{s:?}");
    assert_eq!(
        s.size,
        counters.live.load(Ordering::SeqCst),
        "no resource leaked"
    );
    assert!(counters.peak_live.load(Ordering::SeqCst) <= MAX);
    assert!(probe.peak_holding.load(Ordering::SeqCst) <= MAX);
    assert_eq!(s.acquired_total, probe.acquired.load(Ordering::SeqCst));
    assert_eq!(
        s.create_errors_total,
        probe.create_failed.load(Ordering::SeqCst)
    );
    assert_eq!((s.timeouts_total, s.closed_waiters_total), (0, 0));
    assert_eq!(s.wait_histogram.iter().sum::<u64>(), s.acquired_total);
    assert!(
        s.wait_p50_us <= s.wait_p99_us && s.wait_p99_us <= s.wait_max_us,
        "{s:?}"
    );

    // All MAX permits are free again: MAX leases at once, without waiting out a timeout.
    let mut leases = Vec::new();
    for _ in 0..MAX {
        leases.push(pool.acquire().await.expect("a permit leaked"));
    }
    assert_eq!(pool.stats().active, MAX);
    drop(leases);
    assert_eq!(pool.stats().active, 0);
}

async fn thousand_acquirers(hold_max_us: u64) -> (Arc<Probe>, Pool<Counting>) {
    let (pool, counters) = common::pool(config());
    let probe = Arc::new(Probe::default());
    let mut rng = StdRng::seed_from_u64(seed());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let hold = Duration::from_micros(rng.random_range(0..=hold_max_us));
            let (pool, counters, probe) = (pool.clone(), Arc::clone(&counters), Arc::clone(&probe));
            tokio::spawn(async move {
                let lease = pool.acquire().await.expect("acquire");
                probe.acquired.fetch_add(1, Ordering::SeqCst);
                // Declared after the lease, so it is undone before the lease goes back.
                let _holding = Holding::enter(&probe.holding, &probe.peak_holding);
                assert_bounded(&pool, &counters);
                tokio::time::sleep(hold).await;
                tokio::task::yield_now().await;
                drop(lease);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("holder task");
    }
    let s = pool.stats();
    assert_eq!(s.acquired_total, 1000);
    assert!(s.idle <= MAX);
    assert_all_returned(&pool, &counters, &probe).await;
    (probe, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_acquirers_on_threads_never_exceed_the_bound() {
    thousand_acquirers(500).await;
}

#[tokio::test(start_paused = true)]
async fn thousand_acquirers_in_paused_time_fill_but_never_exceed_the_bound() {
    let (probe, pool) = thousand_acquirers(2_000).await;
    // Deterministic here: with 1000 waiting, all MAX leases are held at once.
    assert_eq!(probe.peak_holding.load(Ordering::SeqCst), MAX);
    assert!(pool.stats().wait_max_us > 0, "later acquirers did wait");
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    Finish,
    /// The holder's work fails; the lease drops on the `?`/return path.
    Fail,
    /// The holder panics while holding.
    Panic,
    /// The resource is marked broken, so recycle drops it.
    Break,
    /// The whole holder future is dropped after this long: mid-wait, mid-create or mid-hold.
    Cancel(Duration),
}

async fn holder(
    pool: Pool<Counting>,
    counters: Arc<Counters>,
    probe: Arc<Probe>,
    plan: Plan,
    hold: Duration,
) -> Result<(), &'static str> {
    let work = async {
        let mut lease = match pool.acquire().await {
            Ok(lease) => lease,
            Err(PoolError::Create(_)) => {
                probe.create_failed.fetch_add(1, Ordering::SeqCst);
                return Err("create failed");
            }
            Err(other) => panic!("unexpected acquire error: {other}"),
        };
        probe.acquired.fetch_add(1, Ordering::SeqCst);
        let _holding = Holding::enter(&probe.holding, &probe.peak_holding);
        assert_bounded(&pool, &counters);
        tokio::time::sleep(hold).await;
        match plan {
            Plan::Fail => return Err("holder failed"),
            Plan::Panic => std::panic::panic_any(DELIBERATE),
            Plan::Break => lease.broken = true,
            Plan::Finish | Plan::Cancel(_) => {}
        }
        assert_bounded(&pool, &counters);
        Ok(())
    };
    match plan {
        Plan::Cancel(after) => {
            if tokio::time::timeout(after, work).await.is_err() {
                probe.cancelled.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        _ => work.await,
    }
}

async fn churn(tasks: usize, hold_max_us: u64, cancel_max_us: u64) {
    quiet_deliberate_panics();
    let (pool, counters) = common::pool(config());
    counters.create_delay_us.store(200, Ordering::SeqCst);
    counters.fail_every.store(7, Ordering::SeqCst);
    pool.warm().await;
    let probe = Arc::new(Probe::default());
    let mut rng = StdRng::seed_from_u64(seed());

    // Samples the bound between the holders' own checks.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pool, counters, done) = (pool.clone(), Arc::clone(&counters), Arc::clone(&done));
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !done.load(Ordering::SeqCst) {
                assert_bounded(&pool, &counters);
                samples += 1;
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
            samples
        })
    };

    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let plan = match rng.random_range(0..100) {
            0..10 => Plan::Fail,
            10..15 => Plan::Panic,
            15..20 => Plan::Break,
            20..45 => Plan::Cancel(Duration::from_micros(rng.random_range(0..cancel_max_us))),
            _ => Plan::Finish,
        };
        let hold = Duration::from_micros(rng.random_range(0..=hold_max_us));
        let task = holder(
            pool.clone(),
            Arc::clone(&counters),
            Arc::clone(&probe),
            plan,
            hold,
        );
        handles.push((plan, tokio::spawn(task)));
        if rng.random_bool(0.1) {
            tokio::task::yield_now().await;
        }
    }

    let (mut panicked, mut failed) = (0, 0);
    for (plan, handle) in handles {
        match handle.await {
            Err(join) => {
                assert!(join.is_panic(), "{plan:?} holder was cancelled: {join}");
                let payload = join.into_panic();
                let msg = payload.downcast_ref::<&str>().copied().unwrap_or_default();
                assert!(
                    matches!(plan, Plan::Panic) && msg == DELIBERATE,
                    "unplanned panic in {plan:?}: {msg}"
                );
                panicked += 1;
            }
            // Any plan can meet a create error before it holds anything.
            Ok(Err("create failed")) => {}
            Ok(result) => {
                assert!(
                    !matches!(plan, Plan::Panic),
                    "a panicking holder returned {result:?}"
                );
                if matches!(plan, Plan::Fail) {
                    assert_eq!(result, Err("holder failed"));
                    failed += 1;
                } else {
                    assert_eq!(result, Ok(()), "{plan:?}");
                }
            }
        }
    }
    let cancelled = probe.cancelled.load(Ordering::SeqCst);
    assert!(
        panicked > 0 && failed > 0 && cancelled > 0,
        "{panicked} panics, {failed} failures, {cancelled} cancelled"
    );

    done.store(true, Ordering::SeqCst);
    assert!(sampler.await.expect("sampler") > 0);
    assert!(
        pool.stats().create_errors_total > 0,
        "create errors were exercised"
    );
    counters.fail_every.store(0, Ordering::SeqCst);
    assert_all_returned(&pool, &counters, &probe).await;
}

#[tokio::test(start_paused = true)]
async fn mixed_holders_in_paused_time_return_every_lease() {
    churn(1000, 2_000, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_holders_on_threads_return_every_lease() {
    churn(1000, 1_000, 2_000).await;
}
