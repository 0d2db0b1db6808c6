//! Leak and threshold detection as pure functions over check points and sample series, so every
//! rule can be tested on synthetic data without a clock or a process.
//!
//! Two leak rules run side by side:
//! - the memo's rule ([`detect_leak`]): RSS grew in at least 8 of the last 10 checks;
//! - a least-squares slope over the per-second ring ([`detect_slope_leak`]): catches slow leaks
//!   that whole-MB check points never show as "growth" (1 MB per 10 min grows in one check of
//!   ten), and shows them after minutes instead of ten checks.

use serde::Serialize;

/// Checks the memo's rule looks back over.
pub const LEAK_WINDOW: usize = 10;
/// Growing steps (of the `LEAK_WINDOW - 1` between those checks) that make a leak.
pub const LEAK_MIN_GROWING: usize = 8;
/// Fewest samples a slope is computed from: one minute of per-second samples. Below this a
/// slope is mostly noise and is reported as `null`.
pub const MIN_SLOPE_SAMPLES: usize = 60;
/// A slope above this many MB/h is a leak. It is the memo's own success target for the fixed
/// backend ("leak rate < 5 MB/hour"): a backend above it is failing the memo's goal, and at
/// this threshold a 1 MB-per-10-min leak (6 MB/h) is caught.
pub const SLOPE_LEAK_MB_PER_H: f64 = 5.0;
/// Least span of samples (ms) before the slope rule may fire: ten minutes, so that a slope is
/// a trend over hundreds of samples, not a burst.
pub const SLOPE_MIN_SPAN_MS: u64 = 10 * 60_000;
/// A state that persists is alerted again once per this many checks (the first check in a new
/// state always alerts).
pub const REPEAT_EVERY_CHECKS: u32 = 10;

const MS_PER_HOUR: f64 = 3_600_000.0;
const MS_PER_MIN: f64 = 60_000.0;

/// One of the memo's check points: RSS and heap (allocator `allocated`) in whole MB, as the
/// memo rounds them. Whole MB also keeps page-level jitter from counting as "growth".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckPoint {
    /// Epoch milliseconds.
    pub timestamp: u64,
    /// Process RSS, MB.
    pub rss: u64,
    /// Allocator `stats.allocated`, MB (0 without jemalloc).
    pub heap_used: u64,
}

/// What the memo's rule reports: growth rate and the window's first and last RSS.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Leak {
    /// MB per minute over the window, rounded to 2 decimals (the memo's `toFixed(2)`).
    pub rate: f64,
    /// RSS (MB) at the first check of the window.
    pub first: u64,
    /// RSS (MB) at the last check of the window.
    pub last: u64,
}

/// The memo's rule: of the last [`LEAK_WINDOW`] check points, at least [`LEAK_MIN_GROWING`]
/// steps grew. Unlike the memo, the window must also have grown overall (eight small rises and
/// one larger fall is not a leak) and span some time (otherwise there is no rate).
pub fn detect_leak(points: &[CheckPoint]) -> Option<Leak> {
    let recent = points.get(points.len().checked_sub(LEAK_WINDOW)?..)?;
    let growing = recent.windows(2).filter(|w| w[1].rss > w[0].rss).count();
    let (first, last) = (recent.first()?, recent.last()?);
    if growing < LEAK_MIN_GROWING || last.rss <= first.rss {
        return None;
    }
    let minutes = last.timestamp.checked_sub(first.timestamp)? as f64 / MS_PER_MIN;
    if minutes <= 0.0 {
        return None;
    }
    let rate = (last.rss - first.rss) as f64 / minutes;
    Some(Leak {
        rate: (rate * 100.0).round() / 100.0,
        first: first.rss,
        last: last.rss,
    })
}

/// Least-squares slope, in MB per hour, of `(epoch ms, MB)` samples; `None` below
/// [`MIN_SLOPE_SAMPLES`] or when the samples do not spread over time.
///
/// Times are taken relative to the first sample and values centred on their means, so epoch
/// milliseconds (~1.7e12) lose no precision.
pub fn slope_mb_per_hour(samples: &[(u64, f64)]) -> Option<f64> {
    if samples.len() < MIN_SLOPE_SAMPLES {
        return None;
    }
    let t0 = samples[0].0 as f64;
    let hours = |t: u64| (t as f64 - t0) / MS_PER_HOUR;
    let n = samples.len() as f64;
    let (sum_t, sum_y) = samples
        .iter()
        .fold((0.0, 0.0), |(st, sy), &(t, y)| (st + hours(t), sy + y));
    let (mean_t, mean_y) = (sum_t / n, sum_y / n);
    let (sxy, sxx) = samples.iter().fold((0.0, 0.0), |(sxy, sxx), &(t, y)| {
        let dt = hours(t) - mean_t;
        (sxy + dt * (y - mean_y), sxx + dt * dt)
    });
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The slope rule over time-ordered `(epoch ms, MB)` samples: the samples span at least
/// [`SLOPE_MIN_SPAN_MS`] and the slope is above [`SLOPE_LEAK_MB_PER_H`] over the whole window
/// *and* over each of its halves. Growth must be sustained: a one-off step (start-up warm-up, a
/// cache filling once) lies in one half and leaves the other flat. Returns the whole window's
/// slope when the rule fires.
pub fn detect_slope_leak(samples: &[(u64, f64)]) -> Option<f64> {
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    if last.saturating_sub(first) < SLOPE_MIN_SPAN_MS {
        return None;
    }
    let mid = first + (last - first) / 2;
    let split = samples.partition_point(|&(t, _)| t < mid);
    let whole = slope_mb_per_hour(samples)?;
    let older = slope_mb_per_hour(&samples[..split])?;
    let recent = slope_mb_per_hour(&samples[split..])?;
    [whole, older, recent]
        .iter()
        .all(|&s| s > SLOPE_LEAK_MB_PER_H)
        .then_some(whole)
}

/// Rate limiter for alerts of a persisting state: alert when the state changes to a new
/// non-ok value, then once every [`REPEAT_EVERY_CHECKS`] checks while it persists. Returning to
/// ok is silent.
#[derive(Debug, Clone)]
pub(crate) struct Gate<S> {
    current: Option<S>,
    checks_since_alert: u32,
}

impl<S> Default for Gate<S> {
    fn default() -> Self {
        Self {
            current: None,
            checks_since_alert: 0,
        }
    }
}

impl<S: PartialEq + Copy> Gate<S> {
    /// Records one check's state (`None` = ok); true when this check should alert.
    pub(crate) fn observe(&mut self, state: Option<S>) -> bool {
        match state {
            None => {
                self.current = None;
                false
            }
            Some(s) if self.current != Some(s) => {
                self.current = Some(s);
                self.checks_since_alert = 0;
                true
            }
            Some(_) => {
                self.checks_since_alert += 1;
                if self.checks_since_alert >= REPEAT_EVERY_CHECKS {
                    self.checks_since_alert = 0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_761_300_000_000; // an October 2025 epoch ms: precision must hold here
    const MINUTE: u64 = 60_000;

    fn points(rss: &[u64]) -> Vec<CheckPoint> {
        rss.iter()
            .enumerate()
            .map(|(i, &rss)| CheckPoint {
                timestamp: T0 + i as u64 * MINUTE,
                rss,
                heap_used: rss / 2,
            })
            .collect()
    }

    /// `(ms, MB)` every second for `secs` seconds.
    fn series(secs: u64, mb: impl Fn(u64) -> f64) -> Vec<(u64, f64)> {
        (0..secs).map(|s| (T0 + s * 1000, mb(s))).collect()
    }

    /// Deterministic jitter in [-1, 1) (an LCG; no dependency, same numbers every run).
    fn jitter(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn steady_growth_is_a_leak_with_the_memos_rate() {
        // +2 MB per one-minute check: 100 → 118 over 9 minutes = 2.00 MB/min.
        let p = points(&[100, 102, 104, 106, 108, 110, 112, 114, 116, 118]);
        assert_eq!(
            detect_leak(&p),
            Some(Leak {
                rate: 2.0,
                first: 100,
                last: 118
            })
        );
        // The rate follows the timestamps: the same growth over 18 minutes is 1 MB/min.
        let mut slow = p.clone();
        for (i, c) in slow.iter_mut().enumerate() {
            c.timestamp = T0 + i as u64 * 2 * MINUTE;
        }
        assert_eq!(detect_leak(&slow).map(|l| l.rate), Some(1.0));
        // Rounded like the memo's toFixed(2): 10 MB over 9 minutes.
        let p = points(&[100, 101, 102, 103, 104, 105, 106, 107, 108, 110]);
        assert_eq!(detect_leak(&p).map(|l| l.rate), Some(1.11));
    }

    #[test]
    fn flat_noisy_or_short_series_are_not_leaks() {
        assert_eq!(detect_leak(&points(&[100; 10])), None);
        assert_eq!(
            detect_leak(&points(&[100, 101, 100, 101, 100, 101, 100, 101, 100, 101])),
            None
        );
        // Nine growing checks are not enough history.
        assert_eq!(detect_leak(&points(&[1, 2, 3, 4, 5, 6, 7, 8, 9])), None);
        assert_eq!(detect_leak(&[]), None);
    }

    #[test]
    fn eight_growing_steps_are_a_leak_and_seven_are_not() {
        let eight = points(&[100, 101, 102, 103, 103, 104, 105, 106, 107, 108]);
        assert!(detect_leak(&eight).is_some());
        let seven = points(&[100, 101, 102, 103, 103, 104, 104, 105, 106, 107]);
        assert_eq!(detect_leak(&seven), None);
    }

    #[test]
    fn only_the_last_ten_checks_count() {
        let mut rss = vec![100; 50];
        rss.extend(101..=110);
        assert_eq!(
            detect_leak(&points(&rss)).map(|l| (l.first, l.last)),
            Some((101, 110))
        );
        let mut rss: Vec<u64> = (101..=110).collect();
        rss.extend([110; 5]);
        assert_eq!(detect_leak(&points(&rss)), None);
    }

    #[test]
    fn eight_rises_and_a_larger_fall_is_not_a_leak() {
        let p = points(&[120, 121, 122, 123, 124, 125, 126, 127, 128, 100]);
        assert_eq!(detect_leak(&p), None);
    }

    #[test]
    fn slope_of_a_linear_series_is_exact() {
        // 2 MB/h for an hour of per-second samples, from a realistic 80 MB baseline.
        let s = series(3600, |sec| 80.0 + 2.0 * sec as f64 / 3600.0);
        let slope = slope_mb_per_hour(&s).unwrap();
        assert!((slope - 2.0).abs() < 1e-6, "{slope}");
        // Falling memory gives a negative slope; flat gives zero.
        let s = series(600, |sec| 80.0 - 12.0 * sec as f64 / 3600.0);
        assert!((slope_mb_per_hour(&s).unwrap() + 12.0).abs() < 1e-6);
        let s = series(600, |_| 42.0);
        assert!(slope_mb_per_hour(&s).unwrap().abs() < 1e-9);
    }

    #[test]
    fn slope_needs_sixty_samples_spread_over_time() {
        let linear = |sec: u64| 10.0 + sec as f64;
        assert_eq!(slope_mb_per_hour(&series(59, linear)), None);
        assert!(slope_mb_per_hour(&series(60, linear)).is_some());
        let same_instant: Vec<(u64, f64)> = (0..100).map(|i| (T0, i as f64)).collect();
        assert_eq!(slope_mb_per_hour(&same_instant), None);
    }

    #[test]
    fn slow_leak_is_caught_by_the_slope_before_the_ten_check_rule() {
        // 1 MB per 10 minutes (6 MB/h) for 30 minutes, sampled every second, checked every
        // minute in whole MB as the memo does.
        let mb = |sec: u64| 50.2 + sec as f64 / 600.0;
        let all = series(30 * 60, mb);
        let mut checks = Vec::new();
        let mut slope_fired_at = None;
        for minute in 0..30u64 {
            let now = minute * 60;
            checks.push(CheckPoint {
                timestamp: T0 + now * 1000,
                rss: mb(now).round() as u64,
                heap_used: 0,
            });
            assert_eq!(
                detect_leak(&checks),
                None,
                "memo rule fired at minute {minute}"
            );
            let window = &all[..=now as usize];
            if slope_fired_at.is_none() && detect_slope_leak(window).is_some() {
                slope_fired_at = Some(minute);
            }
        }
        // The slope shows the trend after a minute of samples ...
        let first_minute = slope_mb_per_hour(&all[..60]).unwrap();
        assert!((first_minute - 6.0).abs() < 1e-6, "{first_minute}");
        // ... and the rule fires as soon as it has its ten minutes of data.
        assert_eq!(slope_fired_at, Some(10));
    }

    #[test]
    fn the_slope_rule_ignores_steps_noise_and_short_spans() {
        // Start-up warm-up: 20 → 30 MB in the first 30 s, then flat. The whole-window slope is
        // well above the threshold, but the later half is flat.
        let warmup = series(
            11 * 60,
            |s| if s < 30 { 20.0 + s as f64 / 3.0 } else { 30.0 },
        );
        assert!(slope_mb_per_hour(&warmup).unwrap() > SLOPE_LEAK_MB_PER_H);
        assert_eq!(detect_slope_leak(&warmup), None);
        // A cache filling once, late in the window.
        let late_step = series(20 * 60, |s| if s < 16 * 60 { 30.0 } else { 33.0 });
        assert!(slope_mb_per_hour(&late_step).unwrap() > SLOPE_LEAK_MB_PER_H);
        assert_eq!(detect_slope_leak(&late_step), None);
        // ±1 MB of jitter on a flat line, an hour of it.
        let mut seed = 7;
        let noisy: Vec<(u64, f64)> = series(3600, |_| 0.0)
            .into_iter()
            .map(|(t, _)| (t, 40.0 + jitter(&mut seed)))
            .collect();
        assert!(slope_mb_per_hour(&noisy).unwrap().abs() < 1.0);
        assert_eq!(detect_slope_leak(&noisy), None);
        // A fast leak, but only nine minutes of data.
        let short = series(9 * 60, |s| 30.0 + s as f64 / 60.0);
        assert_eq!(detect_slope_leak(&short), None);
        // The same leak with noise on top, over ten minutes, fires with its slope (60 MB/h).
        let mut seed = 11;
        let leak: Vec<(u64, f64)> = series(10 * 60 + 1, |s| 30.0 + s as f64 / 60.0)
            .into_iter()
            .map(|(t, y)| (t, y + jitter(&mut seed)))
            .collect();
        let slope = detect_slope_leak(&leak).unwrap();
        assert!((slope - 60.0).abs() < 3.0, "{slope}");
    }

    #[test]
    fn the_gate_alerts_on_change_and_every_tenth_check_while_it_persists() {
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum L {
            Warn,
            Crit,
        }
        let mut g = Gate::default();
        assert!(!g.observe(None), "ok is silent");
        assert!(g.observe(Some(L::Warn)), "entering warning alerts");
        let repeats: Vec<bool> = (1..=20).map(|_| g.observe(Some(L::Warn))).collect();
        let fired: Vec<usize> = (1..=20).filter(|i| repeats[i - 1]).collect();
        assert_eq!(fired, vec![10, 20]);
        assert!(g.observe(Some(L::Crit)), "a level change alerts at once");
        assert!(!g.observe(Some(L::Crit)));
        assert!(g.observe(Some(L::Warn)), "so does going down a level");
        assert!(!g.observe(None), "back to ok is silent");
        assert!(g.observe(Some(L::Warn)), "and a new episode alerts again");
    }
}
