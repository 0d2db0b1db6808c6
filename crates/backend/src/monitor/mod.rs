//! Memory monitor: owns the per-second health-sample ring and the memo's `MemoryMonitor` check.
//!
//! One task, spawned on the backend's tracker and stopped by its cancellation token, does two
//! things on tokio intervals:
//! - every `sample_every` (1 s) it reads a [`HealthSample`] (process RSS, jemalloc figures,
//!   children RSS, and the pool/subscription/upstream figures of a [`Probe`]), keeps it in a
//!   fixed-capacity ring (an hour at 1 s) and publishes it on the bus as [`Event::Sample`];
//! - every `memory.check_interval` (`MEMORY_CHECK_INTERVAL`, 60 s) it runs the memo's check: a
//!   [`CheckPoint`] into a 60-point history, the warning/critical RSS thresholds, the memo's
//!   8-of-10 leak rule, and a least-squares slope over the ring (see [`detect_slope_leak`]) so
//!   slow leaks show before ten checks. Alerts go to the bus, the log and a bounded ring;
//!   repeats of a persisting state are rate-limited (on change, then once per ten checks).
//!
//! Readers ([`Monitor::latest`], [`Monitor::report`], ...) only copy what the task stored:
//! nothing is sampled on a caller's path. Thresholds apply to our own process RSS; children
//! (the desktop's WebKit processes) are reported separately.

mod detect;
mod sample;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MemoryConfig;
use crate::events::{
    Alert, AlertLevel, Bus, Event, HealthSample, PoolFigures, SubscriptionFigures, UpstreamFigures,
};

pub use detect::{
    CheckPoint, LEAK_MIN_GROWING, LEAK_WINDOW, Leak, MIN_SLOPE_SAMPLES, REPEAT_EVERY_CHECKS,
    SLOPE_LEAK_MB_PER_H, SLOPE_MIN_SPAN_MS, detect_leak, detect_slope_leak, slope_mb_per_hour,
};

use detect::Gate;
use sample::{Clock, Sampler};

/// Default sampling period of the health ring.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Default ring capacity: an hour of 1 s samples (~170 bytes each, ~600 KiB reserved once).
pub const RING_CAPACITY: usize = 3600;
/// Check points kept, as in the memo (`maxHistorySize`).
pub const HISTORY_CAPACITY: usize = 60;
pub use crate::events::ALERTS_CAPACITY;
/// The slope looks back this far over the ring (or over what the ring holds, if less).
const SLOPE_WINDOW_MS: u64 = 3_600_000;
const MIB: f64 = 1024.0 * 1024.0;

/// Live figures of the other components, read once per sample on the monitor's task.
/// Implementations must be cheap and must not block (read counters, take no awaited locks).
pub trait Probe: Send + Sync + 'static {
    fn pool(&self) -> PoolFigures;
    fn subscriptions(&self) -> SubscriptionFigures;
    fn upstream(&self) -> UpstreamFigures;
}

/// What the monitor is started with.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Thresholds and check interval (`MAX_MEMORY_MB`, `MEMORY_WARNING_THRESHOLD`,
    /// `MEMORY_CHECK_INTERVAL`).
    pub memory: MemoryConfig,
    /// Sampling period ([`SAMPLE_EVERY`], 1 s); at least 1 ms is used.
    pub sample_every: Duration,
    /// Ring capacity in samples ([`RING_CAPACITY`], 3600); at least 1 is used.
    pub ring: usize,
    /// Count child processes' RSS (the desktop's WebKit processes); false when headless.
    pub include_children: bool,
}

impl MonitorOptions {
    /// The defaults above with the given thresholds, children not counted.
    pub fn new(memory: MemoryConfig) -> Self {
        Self {
            memory,
            sample_every: SAMPLE_EVERY,
            ring: RING_CAPACITY,
            include_children: false,
        }
    }
}

/// Health level for the tray: critical above `MAX_MEMORY_MB`, warning above
/// `MEMORY_WARNING_THRESHOLD` or while a leak is detected, else ok (as of the last check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// One-word summary of the report, most urgent first: critical, leak, warning, ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Warning,
    Critical,
    Leak,
}

/// The thresholds the report was judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    pub warning_mb: u64,
    pub critical_mb: u64,
    pub check_interval_ms: u64,
}

/// `GET /api/health/memory`: the memo's `getStats()` plus the slopes and a verdict. Figures are
/// as of the last check.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The last check point (the first is taken at start, so this is always set in practice).
    pub current: Option<CheckPoint>,
    /// Up to [`HISTORY_CAPACITY`] check points, oldest first.
    pub history: Vec<CheckPoint>,
    /// The memo's 8-of-10 rule over `history`.
    pub leak: Option<Leak>,
    /// Least-squares RSS slope over the ring's last hour; `null` below [`MIN_SLOPE_SAMPLES`].
    pub slope_mb_per_h: Option<f64>,
    /// The same over jemalloc `allocated`; `null` without allocator figures.
    pub slope_allocated_mb_per_h: Option<f64>,
    pub thresholds: Thresholds,
    pub verdict: Verdict,
    /// Samples in the ring.
    pub samples: usize,
}

/// Handle to the running monitor; clones share it. The task stops when the token given to
/// [`Monitor::start`] is cancelled; the handle stays readable afterwards.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

/// What the task writes and readers copy. Separate locks so `latest()` (hot: every health
/// request) never waits behind a `samples_since` copying the whole ring. No lock is held while
/// another is taken.
struct Shared {
    thresholds: Thresholds,
    latest: Mutex<HealthSample>,
    /// Bounded: capacity reserved once, `pop_front` before every push when full.
    ring: Mutex<VecDeque<HealthSample>>,
    checks: Mutex<Checks>,
    /// Holds the alert history (every component's alerts, bounded).
    bus: Bus,
}

/// State of the memo's check.
struct Checks {
    /// Bounded at [`HISTORY_CAPACITY`].
    history: VecDeque<CheckPoint>,
    leak: Option<Leak>,
    slope_rss: Option<f64>,
    slope_allocated: Option<f64>,
    /// Either leak rule fired at the last check.
    leaking: bool,
    /// Threshold level at the last check.
    threshold: Level,
    threshold_gate: Gate<Level>,
    leak_gate: Gate<()>,
}

impl Checks {
    fn level(&self) -> Level {
        match self.threshold {
            Level::Ok if self.leaking => Level::Warning,
            level => level,
        }
    }

    fn verdict(&self) -> Verdict {
        match (self.threshold, self.leaking) {
            (Level::Critical, _) => Verdict::Critical,
            (_, true) => Verdict::Leak,
            (Level::Warning, false) => Verdict::Warning,
            (Level::Ok, false) => Verdict::Ok,
        }
    }
}

impl Monitor {
    /// Takes a first sample and runs a first check at once (so readers always have figures),
    /// then spawns the task on `tracker`. Must be called inside a tokio runtime.
    pub fn start(
        opts: MonitorOptions,
        probe: Arc<dyn Probe>,
        bus: Bus,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Monitor {
        let ring_capacity = opts.ring.max(1);
        let sample_every = opts.sample_every.max(Duration::from_millis(1));
        let check_every = opts.memory.check_interval.max(Duration::from_millis(1));
        let thresholds = Thresholds {
            warning_mb: opts.memory.warning_mb,
            critical_mb: opts.memory.critical_mb,
            check_interval_ms: check_every.as_millis() as u64,
        };

        let mut sampler = Sampler::new(opts.include_children);
        let mut clock = Clock::new();
        let first = read_sample(&mut sampler, &mut clock, probe.as_ref());
        let mut ring = VecDeque::with_capacity(ring_capacity);
        ring.push_back(first);
        let shared = Arc::new(Shared {
            thresholds,
            latest: Mutex::new(first),
            ring: Mutex::new(ring),
            checks: Mutex::new(Checks {
                history: VecDeque::with_capacity(HISTORY_CAPACITY),
                leak: None,
                slope_rss: None,
                slope_allocated: None,
                leaking: false,
                threshold: Level::Ok,
                threshold_gate: Gate::default(),
                leak_gate: Gate::default(),
            }),
            bus: bus.clone(),
        });
        bus.publish(Event::Sample(first));

        let mut task = Task {
            shared: shared.clone(),
            probe,
            bus,
            sampler,
            clock,
            ring_capacity,
            rss_series: Vec::with_capacity(ring_capacity),
            allocated_series: Vec::with_capacity(ring_capacity),
        };
        task.check();
        tracker.spawn(task.run(cancel, sample_every, check_every));
        Monitor { shared }
    }

    /// The newest sample (a copy; never samples).
    pub fn latest(&self) -> HealthSample {
        *self.shared.latest.lock()
    }

    /// Samples newer than `since_ms` (epoch ms), oldest first; `0` gives the whole ring.
    pub fn samples_since(&self, since_ms: u64) -> Vec<HealthSample> {
        let ring = self.shared.ring.lock();
        // Sample times never go backwards (see `sample::Clock`), so the ring is sorted.
        let from = ring.partition_point(|s| s.ts <= since_ms);
        ring.range(from..).copied().collect()
    }

    /// The memory report as of the last check.
    pub fn report(&self) -> MemoryReport {
        let samples = self.shared.ring.lock().len();
        let c = self.shared.checks.lock();
        MemoryReport {
            current: c.history.back().copied(),
            history: c.history.iter().copied().collect(),
            leak: c.leak,
            slope_mb_per_h: c.slope_rss,
            slope_allocated_mb_per_h: c.slope_allocated,
            thresholds: self.shared.thresholds,
            verdict: c.verdict(),
            samples,
        }
    }

    /// Recent alerts, newest last (at most [`ALERTS_CAPACITY`]).
    pub fn alerts(&self) -> Vec<Alert> {
        self.shared.bus.recent_alerts()
    }

    /// Level for the tray, as of the last check.
    pub fn level(&self) -> Level {
        self.shared.checks.lock().level()
    }
}

fn read_sample(sampler: &mut Sampler, clock: &mut Clock, probe: &dyn Probe) -> HealthSample {
    let memory = sampler.memory();
    HealthSample {
        ts: clock.now_ms(),
        memory,
        pool: probe.pool(),
        subscriptions: probe.subscriptions(),
        upstream: probe.upstream(),
    }
}

fn whole_mb(bytes: u64) -> u64 {
    (bytes as f64 / MIB).round() as u64
}

/// Which series the slope rule fired on.
#[derive(Debug, Clone, Copy)]
enum Series {
    Rss,
    Allocated,
}

/// Why a check found a leak: the memo's rule first (it names the figures), else the slope rule
/// with its series, slope (MB/h) and window (minutes).
#[derive(Debug, Clone, Copy)]
enum LeakCause {
    Memo(Leak),
    Slope(Series, f64, u64),
}

/// The monitor's task: sole writer of [`Shared`].
struct Task {
    shared: Arc<Shared>,
    probe: Arc<dyn Probe>,
    bus: Bus,
    sampler: Sampler,
    clock: Clock,
    ring_capacity: usize,
    /// Scratch `(ms, MB)` series for the slopes, reserved once at ring capacity and refilled at
    /// every check: a check allocates only the text of the alerts it raises.
    rss_series: Vec<(u64, f64)>,
    allocated_series: Vec<(u64, f64)>,
}

impl Task {
    async fn run(
        mut self,
        cancel: CancellationToken,
        sample_every: Duration,
        check_every: Duration,
    ) {
        // The first sample and check were taken by `start`; the next ones are one period on.
        let now = Instant::now();
        let mut samples = interval_at(now + sample_every, sample_every);
        samples.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut checks = interval_at(now + check_every, check_every);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // In order: shutdown never waits behind a tick, and when a sample and a check
                // fall due together the check sees the fresh sample.
                biased;
                () = cancel.cancelled() => break,
                _ = samples.tick() => self.sample(),
                _ = checks.tick() => self.check(),
            }
        }
        tracing::debug!("memory monitor stopped");
    }

    fn sample(&mut self) {
        let sample = read_sample(&mut self.sampler, &mut self.clock, self.probe.as_ref());
        {
            let mut ring = self.shared.ring.lock();
            if ring.len() >= self.ring_capacity {
                ring.pop_front();
            }
            ring.push_back(sample);
        }
        *self.shared.latest.lock() = sample;
        self.bus.publish(Event::Sample(sample));
    }

    fn check(&mut self) {
        let memory = self.shared.latest.lock().memory;
        let point = CheckPoint {
            timestamp: self.clock.now_ms(),
            rss: whole_mb(memory.rss_bytes),
            heap_used: whole_mb(memory.allocated_bytes),
        };

        self.rss_series.clear();
        self.allocated_series.clear();
        {
            let ring = self.shared.ring.lock();
            let from = ring
                .back()
                .map_or(0, |s| s.ts.saturating_sub(SLOPE_WINDOW_MS));
            for s in ring.iter().filter(|s| s.ts >= from) {
                self.rss_series
                    .push((s.ts, s.memory.rss_bytes as f64 / MIB));
                // Zero means no allocator figures (feature off): not a data point.
                if s.memory.allocated_bytes > 0 {
                    self.allocated_series
                        .push((s.ts, s.memory.allocated_bytes as f64 / MIB));
                }
            }
        }
        let slope_rss = slope_mb_per_hour(&self.rss_series);
        let slope_allocated = slope_mb_per_hour(&self.allocated_series);
        let slope_leak = detect_slope_leak(&self.rss_series)
            .map(|s| LeakCause::Slope(Series::Rss, s, span_min(&self.rss_series)))
            .or_else(|| {
                detect_slope_leak(&self.allocated_series).map(|s| {
                    LeakCause::Slope(Series::Allocated, s, span_min(&self.allocated_series))
                })
            });

        let t = self.shared.thresholds;
        let level = if point.rss > t.critical_mb {
            Level::Critical
        } else if point.rss > t.warning_mb {
            Level::Warning
        } else {
            Level::Ok
        };

        // At most a threshold alert and a leak alert, raised once the lock is released.
        let mut raised: [Option<Alert>; 2] = [None, None];
        {
            let mut guard = self.shared.checks.lock();
            let c = &mut *guard;
            if c.history.len() >= HISTORY_CAPACITY {
                c.history.pop_front();
            }
            c.history.push_back(point);
            c.leak = detect_leak(c.history.make_contiguous());
            c.slope_rss = slope_rss;
            c.slope_allocated = slope_allocated;
            c.threshold = level;
            let cause = c.leak.map(LeakCause::Memo).or(slope_leak);
            c.leaking = cause.is_some();

            if c.threshold_gate
                .observe((level != Level::Ok).then_some(level))
            {
                raised[0] = Some(threshold_alert(point, level, t));
            }
            if c.leak_gate.observe(cause.map(|_| ()))
                && let Some(cause) = cause
            {
                raised[1] = Some(leak_alert(point.timestamp, cause));
            }
        }
        for alert in raised.into_iter().flatten() {
            self.raise(alert);
        }
    }

    fn raise(&self, alert: Alert) {
        match alert.level {
            AlertLevel::Critical => tracing::error!(value = alert.value, "{}", alert.message),
            _ => tracing::warn!(value = alert.value, "{}", alert.message),
        }
        // The bus keeps the bounded alert history for every component.
        self.bus.publish(Event::Alert(alert));
    }
}

/// Minutes between the first and last sample of a series.
fn span_min(series: &[(u64, f64)]) -> u64 {
    match (series.first(), series.last()) {
        (Some(first), Some(last)) => last.0.saturating_sub(first.0) / 60_000,
        _ => 0,
    }
}

fn threshold_alert(point: CheckPoint, level: Level, t: Thresholds) -> Alert {
    let (level, message) = match level {
        Level::Critical => (
            AlertLevel::Critical,
            format!(
                "memory usage {} MB exceeds {} MB (MAX_MEMORY_MB)",
                point.rss, t.critical_mb
            ),
        ),
        _ => (
            AlertLevel::Warning,
            format!(
                "memory usage {} MB exceeds {} MB (MEMORY_WARNING_THRESHOLD)",
                point.rss, t.warning_mb
            ),
        ),
    };
    Alert {
        ts: point.timestamp,
        level,
        message,
        value: Some(point.rss as f64),
    }
}

/// A leak alert; its value is MB/h whichever rule fired (the memo's rate is MB/min).
fn leak_alert(ts: u64, cause: LeakCause) -> Alert {
    let (message, value) = match cause {
        LeakCause::Memo(l) => (
            format!(
                "possible memory leak: RSS grew in at least {LEAK_MIN_GROWING} of the last \
                 {LEAK_WINDOW} checks, {} MB -> {} MB ({:.2} MB/min)",
                l.first, l.last, l.rate
            ),
            l.rate * 60.0,
        ),
        LeakCause::Slope(series, slope, minutes) => (
            format!(
                "possible memory leak: {} rising {slope:.1} MB/h over the last {minutes} min",
                match series {
                    Series::Rss => "RSS",
                    Series::Allocated => "allocated memory",
                }
            ),
            slope,
        ),
    };
    Alert {
        ts,
        level: AlertLevel::Leak,
        message,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::events::UpstreamState;

    /// Counts how often the monitor asked for figures.
    #[derive(Default)]
    struct FakeProbe {
        calls: AtomicUsize,
    }

    impl Probe for FakeProbe {
        fn pool(&self) -> PoolFigures {
            self.calls.fetch_add(1, Ordering::SeqCst);
            PoolFigures {
                capacity: 10,
                size: 2,
                idle: 2,
                ..PoolFigures::default()
            }
        }
        fn subscriptions(&self) -> SubscriptionFigures {
            SubscriptionFigures {
                total: 3,
                capacity: 100,
                ..SubscriptionFigures::default()
            }
        }
        fn upstream(&self) -> UpstreamFigures {
            UpstreamFigures {
                state: UpstreamState::NotConfigured,
                latency_ms: None,
                offline_since: None,
            }
        }
    }

    /// Thresholds no test process reaches.
    fn quiet() -> MemoryConfig {
        MemoryConfig {
            critical_mb: 1 << 30,
            warning_mb: (1 << 30) - 1,
            check_interval: Duration::from_secs(60),
        }
    }

    struct Running {
        monitor: Monitor,
        probe: Arc<FakeProbe>,
        bus: Bus,
        cancel: CancellationToken,
        tracker: TaskTracker,
    }

    fn start(memory: MemoryConfig, ring: usize) -> Running {
        let probe = Arc::new(FakeProbe::default());
        let bus = Bus::new(1024);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let opts = MonitorOptions {
            ring,
            ..MonitorOptions::new(memory)
        };
        let monitor = Monitor::start(opts, probe.clone(), bus.clone(), cancel.clone(), &tracker);
        Running {
            monitor,
            probe,
            bus,
            cancel,
            tracker,
        }
    }

    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_ring_fills_at_one_sample_a_second() {
        let r = start(quiet(), RING_CAPACITY);
        let first = r.monitor.latest();
        assert_eq!(
            r.monitor.report().samples,
            1,
            "start takes the first sample"
        );
        sleep_ms(10_500).await;
        let new = r.monitor.samples_since(first.ts);
        assert_eq!(new.len(), 10);
        assert!(new.windows(2).all(|w| w[1].ts > w[0].ts), "in time order");
        assert!(
            new.iter()
                .all(|s| s.memory.rss_bytes > 0 && s.pool.capacity == 10)
        );
        assert_eq!(r.monitor.report().samples, 11);
        assert_eq!(r.monitor.samples_since(0).len(), 11);
        assert_eq!(new.last(), Some(&r.monitor.latest()));
        assert_eq!(r.monitor.samples_since(r.monitor.latest().ts), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn samples_are_published_on_the_bus() {
        let probe = Arc::new(FakeProbe::default());
        let bus = Bus::new(64);
        let mut rx = bus.subscribe();
        let tracker = TaskTracker::new();
        let monitor = Monitor::start(
            MonitorOptions::new(quiet()),
            probe,
            bus.clone(),
            CancellationToken::new(),
            &tracker,
        );
        sleep_ms(3_500).await;
        let mut published = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, rx.recv()).await {
            if let Event::Sample(s) = e {
                published.push(s);
            }
        }
        assert_eq!(published, monitor.samples_since(0));
        assert_eq!(published.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ring_never_exceeds_its_capacity() {
        let r = start(quiet(), 5);
        // Half a second off the tick so no wake-up races a sample.
        sleep_ms(500).await;
        for _ in 0..3 {
            sleep_ms(7_000).await;
            let all = r.monitor.samples_since(0);
            assert_eq!(all.len(), 5);
            assert_eq!(r.monitor.report().samples, 5);
            assert_eq!(all.last(), Some(&r.monitor.latest()), "the newest are kept");
        }
        // 1 + 21 samples were taken; the ring holds the last five.
        assert_eq!(r.probe.calls.load(Ordering::SeqCst), 22);
    }

    #[tokio::test(start_paused = true)]
    async fn readers_never_sample() {
        let r = start(quiet(), RING_CAPACITY);
        sleep_ms(2_500).await;
        let calls = r.probe.calls.load(Ordering::SeqCst);
        let latest = r.monitor.latest();
        for _ in 0..1000 {
            assert_eq!(r.monitor.latest(), latest);
            r.monitor.report();
            r.monitor.samples_since(0);
            r.monitor.level();
            r.monitor.alerts();
        }
        assert_eq!(r.probe.calls.load(Ordering::SeqCst), calls);
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_task() {
        let r = start(quiet(), RING_CAPACITY);
        sleep_ms(3_500).await;
        r.cancel.cancel();
        r.tracker.close();
        tokio::time::timeout(Duration::from_secs(1), r.tracker.wait())
            .await
            .expect("the task ends on cancel");
        let calls = r.probe.calls.load(Ordering::SeqCst);
        sleep_ms(10_000).await;
        assert_eq!(
            r.probe.calls.load(Ordering::SeqCst),
            calls,
            "no sampling after cancel"
        );
        assert_eq!(r.monitor.report().samples, 4, "the handle stays readable");
        drop(r.bus);
    }

    fn threshold_alerts(alerts: &[Alert]) -> Vec<&Alert> {
        // The test binary's RSS moves with the other tests running beside this one, so leak
        // alerts may or may not appear; only threshold alerts are deterministic.
        alerts
            .iter()
            .filter(|a| matches!(a.level, AlertLevel::Warning | AlertLevel::Critical))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_warning_is_alerted_on_the_bus_then_rate_limited() {
        let bus = Bus::new(1024);
        let mut rx = bus.subscribe();
        let tracker = TaskTracker::new();
        let memory = MemoryConfig {
            critical_mb: 1 << 30,
            warning_mb: 1,
            check_interval: Duration::from_secs(1),
        };
        let monitor = Monitor::start(
            MonitorOptions::new(memory),
            Arc::new(FakeProbe::default()),
            bus.clone(),
            CancellationToken::new(),
            &tracker,
        );
        // The first check runs in `start`: its alert is already on the bus.
        let alert = loop {
            match rx.recv().await {
                Some(Event::Alert(a)) if a.level == AlertLevel::Warning => break a,
                Some(_) => continue,
                None => panic!("bus closed"),
            }
        };
        assert!(
            alert.message.contains("MEMORY_WARNING_THRESHOLD"),
            "{}",
            alert.message
        );
        assert!(alert.value.unwrap() > 1.0);
        assert_eq!(monitor.level(), Level::Warning);

        // Checks at 0, 1, ..., 25 s: the persisting warning alerts at checks 0, 10 and 20.
        sleep_ms(25_500).await;
        let alerts = monitor.alerts();
        let warnings = threshold_alerts(&alerts);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings.iter().all(|a| a.level == AlertLevel::Warning));
        let report = monitor.report();
        assert_eq!(report.history.len(), 26);
        assert!(matches!(report.verdict, Verdict::Warning | Verdict::Leak));
    }

    #[tokio::test(start_paused = true)]
    async fn critical_is_alerted_and_reported() {
        let memory = MemoryConfig {
            critical_mb: 2,
            warning_mb: 1,
            check_interval: Duration::from_secs(1),
        };
        let r = start(memory, RING_CAPACITY);
        let mut rx = r.bus.subscribe();
        sleep_ms(10_500).await;
        // Check 10 repeats the alert; this receiver joined after the first one.
        let alert = loop {
            match rx.recv().await {
                Some(Event::Alert(a)) if a.level == AlertLevel::Critical => break a,
                Some(_) => continue,
                None => panic!("bus closed"),
            }
        };
        assert!(alert.message.contains("MAX_MEMORY_MB"), "{}", alert.message);
        assert_eq!(threshold_alerts(&r.monitor.alerts()).len(), 2);
        assert_eq!(r.monitor.level(), Level::Critical);
        assert_eq!(r.monitor.report().verdict, Verdict::Critical);
    }

    #[tokio::test(start_paused = true)]
    async fn the_report_has_the_contract_shape() {
        let memory = MemoryConfig {
            check_interval: Duration::from_secs(1),
            ..quiet()
        };
        let r = start(memory, RING_CAPACITY);
        sleep_ms(4_500).await;
        let v = serde_json::to_value(r.monitor.report()).unwrap();
        let current = &v["current"];
        assert!(current["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(current["rss"].as_u64().unwrap() >= 1);
        assert!(current["heapUsed"].is_u64());
        assert_eq!(v["history"].as_array().unwrap().len(), 5);
        assert_eq!(&v["history"][4], current);
        assert!(v["leak"].is_null() || v["leak"]["rate"].is_f64());
        // Five samples are too few for a slope.
        assert!(v["slope_mb_per_h"].is_null());
        assert!(v["slope_allocated_mb_per_h"].is_null());
        assert_eq!(
            v["thresholds"],
            serde_json::json!({
                "warning_mb": (1u64 << 30) - 1,
                "critical_mb": 1u64 << 30,
                "check_interval_ms": 1000
            })
        );
        assert!(matches!(v["verdict"].as_str(), Some("ok" | "leak")));
        assert_eq!(v["samples"], 5);

        // After a minute of samples the RSS slope is computed.
        sleep_ms(60_000).await;
        assert!(r.monitor.report().slope_mb_per_h.is_some());
        assert_eq!(serde_json::to_value(Level::Warning).unwrap(), "warning");
    }

    #[test]
    fn leak_alerts_state_their_rule_in_mb_per_hour() {
        let memo = Leak {
            rate: 2.0,
            first: 100,
            last: 118,
        };
        let a = leak_alert(1, LeakCause::Memo(memo));
        assert_eq!((a.level, a.value), (AlertLevel::Leak, Some(120.0)));
        assert!(
            a.message.contains("100 MB -> 118 MB (2.00 MB/min)"),
            "{}",
            a.message
        );
        let a = leak_alert(1, LeakCause::Slope(Series::Allocated, 6.25, 12));
        assert_eq!(a.value, Some(6.25));
        assert!(
            a.message
                .contains("allocated memory rising 6.2 MB/h over the last 12 min"),
            "{}",
            a.message
        );
    }

    #[test]
    fn level_and_verdict_follow_thresholds_and_leaks() {
        let mut c = Checks {
            history: VecDeque::new(),
            leak: None,
            slope_rss: None,
            slope_allocated: None,
            leaking: false,
            threshold: Level::Ok,
            threshold_gate: Gate::default(),
            leak_gate: Gate::default(),
        };
        assert_eq!((c.level(), c.verdict()), (Level::Ok, Verdict::Ok));
        c.leaking = true;
        assert_eq!((c.level(), c.verdict()), (Level::Warning, Verdict::Leak));
        c.threshold = Level::Warning;
        assert_eq!((c.level(), c.verdict()), (Level::Warning, Verdict::Leak));
        c.threshold = Level::Critical;
        assert_eq!(
            (c.level(), c.verdict()),
            (Level::Critical, Verdict::Critical)
        );
        c.leaking = false;
        c.threshold = Level::Warning;
        assert_eq!((c.level(), c.verdict()), (Level::Warning, Verdict::Warning));
    }
}
