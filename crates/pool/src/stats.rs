//! Pool figures: the serialisable snapshot and the fixed-bucket wait histogram behind its
//! percentiles (bounded memory, lock-free recording).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Number of wait-histogram buckets. Bucket 0 counts waits of 0 µs; bucket `k` (1..=30)
/// counts waits in `[2^(k-1), 2^k)` µs; the last bucket counts everything from 2^30 µs
/// (about 18 min) up, far past any acquire timeout.
pub const WAIT_BUCKETS: usize = 32;

/// A snapshot of a pool's figures (`GET /api/health/connections`, samples, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// `max_size`: most resources alive at once.
    pub capacity: usize,
    /// Resources created and alive (idle + leased).
    pub size: usize,
    /// Resources waiting in the pool for a caller.
    pub idle: usize,
    /// Leases held right now.
    pub active: usize,
    /// Callers blocked in `acquire` waiting for a free lease right now.
    pub waiting: usize,
    /// Leases handed out since start.
    pub acquired_total: u64,
    /// `acquire` calls that ended in `Timeout`.
    pub timeouts_total: u64,
    /// `acquire` calls that ended in `Closed`.
    pub closed_waiters_total: u64,
    /// Failed `Manager::create` calls (from `acquire` and `warm`).
    pub create_errors_total: u64,
    /// Upstream errors reported by the HTTP layer through `record_upstream_error`.
    pub upstream_errors_total: u64,
    /// Median wait for a lease (bucket upper bound, µs), over successful acquires.
    pub wait_p50_us: u64,
    /// 99th percentile wait for a lease (bucket upper bound, µs).
    pub wait_p99_us: u64,
    /// Longest wait for a lease seen (µs, exact).
    pub wait_max_us: u64,
    /// Successful acquires per wait bucket; see [`WAIT_BUCKETS`] for the bounds.
    pub wait_histogram: [u64; WAIT_BUCKETS],
}

impl PoolStats {
    /// Inclusive upper bound in µs of wait bucket `bucket` (`u64::MAX` for the open last
    /// one), e.g. for Prometheus `le` labels.
    pub fn wait_bucket_upper_us(bucket: usize) -> u64 {
        match bucket {
            0 => 0,
            b if b < WAIT_BUCKETS - 1 => (1u64 << b) - 1,
            _ => u64::MAX,
        }
    }
}

/// Lock-free histogram of acquire waits.
pub(crate) struct WaitHistogram {
    buckets: [AtomicU64; WAIT_BUCKETS],
    max_us: AtomicU64,
}

/// A consistent-enough read of a [`WaitHistogram`] (each counter is read once).
pub(crate) struct WaitSnapshot {
    pub(crate) buckets: [u64; WAIT_BUCKETS],
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

impl WaitHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, wait: Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WaitSnapshot {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let max_us = self.max_us.load(Ordering::Relaxed);
        WaitSnapshot {
            p50_us: percentile(&buckets, max_us, 500),
            p99_us: percentile(&buckets, max_us, 990),
            max_us,
            buckets,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    ((u64::BITS - us.leading_zeros()) as usize).min(WAIT_BUCKETS - 1)
}

/// Upper bound of the bucket holding the `per_mille`-th ranked wait, capped by the exact
/// maximum so that `p50 <= p99 <= max` always holds.
fn percentile(buckets: &[u64; WAIT_BUCKETS], max_us: u64, per_mille: u64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    // Nearest-rank: the smallest rank r with r >= q * total, at least 1.
    let rank = (total.saturating_mul(per_mille).div_ceil(1000)).max(1);
    let mut seen = 0;
    for (bucket, &count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return PoolStats::wait_bucket_upper_us(bucket).min(max_us);
        }
    }
    max_us
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn buckets_are_log2_of_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 3);
        assert_eq!(bucket_of(1023), 10);
        assert_eq!(bucket_of(1024), 11);
        assert_eq!(bucket_of(u64::MAX), WAIT_BUCKETS - 1);
        // Every value lies within its bucket's bounds.
        for v in [0, 1, 5, 17, 999, 5_000_000, 1 << 30, u64::MAX] {
            let b = bucket_of(v);
            assert!(
                v <= PoolStats::wait_bucket_upper_us(b),
                "{v} above bucket {b}"
            );
            if b > 0 {
                assert!(
                    v > PoolStats::wait_bucket_upper_us(b - 1),
                    "{v} below bucket {b}"
                );
            }
        }
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let s = WaitHistogram::new().snapshot();
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (0, 0, 0));
        assert_eq!(s.buckets, [0; WAIT_BUCKETS]);
    }

    #[test]
    fn percentiles_come_from_the_buckets() {
        let h = WaitHistogram::new();
        for _ in 0..98 {
            h.record(us(10)); // bucket [8, 16)
        }
        h.record(us(300)); // bucket [256, 512)
        h.record(us(70_000));
        let s = h.snapshot();
        assert_eq!(s.p50_us, 15);
        // Rank 99 of 100 is the 300 µs wait.
        assert_eq!(s.p99_us, 511);
        assert_eq!(s.max_us, 70_000);
        assert_eq!(s.buckets.iter().sum::<u64>(), 100);
        assert_eq!(s.buckets[bucket_of(10)], 98);
    }

    #[test]
    fn percentiles_are_ordered_and_capped_by_the_max() {
        let h = WaitHistogram::new();
        h.record(us(1_000)); // bucket upper bound 1023 > max
        let s = h.snapshot();
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (1_000, 1_000, 1_000));

        let h = WaitHistogram::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            // xorshift: spread over many buckets without a rand dependency here.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            h.record(us(x % 5_000_000));
        }
        let s = h.snapshot();
        assert!(
            s.p50_us <= s.p99_us && s.p99_us <= s.max_us,
            "{s:?}",
            s = (s.p50_us, s.p99_us, s.max_us)
        );
        assert!(s.p50_us > 0);
    }
}
