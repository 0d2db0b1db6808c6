//! The event bus: one bounded broadcast that carries health samples, alerts, row changes and
//! subscription state to the UI stream, the tray and notifications.
//!
//! A lagging reader skips ahead; every skip is counted in [`Bus::lagged_total`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Capacity of the broadcast ring. At one sample a second plus bursts of changes this is
/// minutes of slack for a reader; beyond it the reader skips (counted), the sender never blocks.
pub const BUS_CAPACITY: usize = 1024;

/// Alerts kept for `GET /api/alerts` and a newly opened page (newest last).
pub const ALERTS_CAPACITY: usize = 200;

/// Milliseconds since the Unix epoch (what the UI's charts use).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Memory figures of one sample, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct MemoryFigures {
    /// Process resident set size (sysinfo).
    pub rss_bytes: u64,
    /// jemalloc `stats.allocated` (0 without jemalloc).
    pub allocated_bytes: u64,
    /// jemalloc `stats.resident` (0 without jemalloc).
    pub resident_bytes: u64,
    /// Sum of RSS of child processes (the desktop's WebKit processes); 0 when headless.
    pub children_rss_bytes: u64,
}

/// Pool figures of one sample (a subset of the pool's stats that charts need).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PoolFigures {
    pub capacity: usize,
    pub size: usize,
    pub idle: usize,
    pub active: usize,
    pub waiting: usize,
    pub timeouts_total: u64,
    pub upstream_errors_total: u64,
}

/// Subscription figures of one sample.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct SubscriptionFigures {
    pub total: usize,
    pub active: usize,
    pub persistent: usize,
    pub capacity: usize,
    pub failed: usize,
}

/// Upstream state as the UI shows it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    /// No `SUPABASE_URL`: local-only mode.
    NotConfigured,
    Online,
    Offline,
}

/// Supabase status of one sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct UpstreamFigures {
    pub state: UpstreamState,
    /// Latency of the last successful probe.
    pub latency_ms: Option<f64>,
    /// Since when the upstream has been unreachable (epoch ms).
    pub offline_since: Option<u64>,
}

/// One per-second health sample: what the charts draw.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct HealthSample {
    /// Epoch milliseconds.
    pub ts: u64,
    pub memory: MemoryFigures,
    pub pool: PoolFigures,
    pub subscriptions: SubscriptionFigures,
    pub upstream: UpstreamFigures,
}

/// Alert levels (the UI colours and the tray follow these).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    Warning,
    Critical,
    Leak,
    Offline,
    Online,
    /// A subscription gave up after its retries.
    SubscriptionFailed,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub ts: u64,
    pub level: AlertLevel,
    pub message: String,
    /// The figure behind the alert (MB for memory, MB/h for leaks), when there is one.
    pub value: Option<f64>,
}

/// A row change delivered by a subscription.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowChange {
    /// Id of the subscription that delivered it.
    pub subscription: String,
    pub schema: String,
    pub table: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub commit_timestamp: String,
    pub record: Option<serde_json::Value>,
    pub old_record: Option<serde_json::Value>,
    /// When this process received it (epoch ms).
    pub received_at: u64,
}

/// A subscription's state changed (created, subscribed, retrying, failed, destroyed).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubscriptionEvent {
    pub ts: u64,
    pub id: String,
    pub state: String,
    pub reason: Option<String>,
}

/// Everything on the bus. Serialized as `{"type": "...", "data": {...}}`; the SSE event name
/// is the same `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    Sample(HealthSample),
    Alert(Alert),
    Change(Arc<RowChange>),
    Subscription(SubscriptionEvent),
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Sample(_) => "sample",
            Event::Alert(_) => "alert",
            Event::Change(_) => "change",
            Event::Subscription(_) => "subscription",
        }
    }
}

/// Cloneable handle to the bus.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
    lagged: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    /// Every alert that crossed the bus, bounded by [`ALERTS_CAPACITY`].
    alerts: Arc<Mutex<VecDeque<Alert>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("receivers", &self.tx.receiver_count())
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(BUS_CAPACITY)
    }
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self {
            tx,
            lagged: Arc::default(),
            published: Arc::default(),
            alerts: Arc::new(Mutex::new(VecDeque::with_capacity(ALERTS_CAPACITY))),
        }
    }

    /// Never blocks; with no reader the event is dropped (alerts are still kept).
    pub fn publish(&self, event: Event) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if let Event::Alert(a) = &event {
            let mut alerts = self.alerts.lock();
            if alerts.len() >= ALERTS_CAPACITY {
                alerts.pop_front();
            }
            alerts.push_back(a.clone());
        }
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> BusReceiver {
        BusReceiver {
            rx: self.tx.subscribe(),
            lagged: self.lagged.clone(),
        }
    }

    /// Live readers (streams, tray, notifications): a leak check for the UI streams.
    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Recent alerts of every component, newest last.
    pub fn recent_alerts(&self) -> Vec<Alert> {
        self.alerts.lock().iter().cloned().collect()
    }

    pub fn lagged_total(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    pub fn published_total(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

/// A reader that skips ahead when it falls behind and counts what it skipped.
pub struct BusReceiver {
    rx: broadcast::Receiver<Event>,
    lagged: Arc<AtomicU64>,
}

impl BusReceiver {
    /// The next event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_reader_skips_and_the_skip_is_counted() {
        let bus = Bus::new(4);
        let mut rx = bus.subscribe();
        for i in 0..10 {
            bus.publish(Event::Subscription(SubscriptionEvent {
                ts: i,
                id: i.to_string(),
                state: "created".into(),
                reason: None,
            }));
        }
        let Some(Event::Subscription(first)) = rx.recv().await else {
            panic!("expected an event")
        };
        assert_eq!(first.id, "6");
        assert_eq!(bus.lagged_total(), 6);
        assert_eq!(bus.receivers(), 1);
        drop(rx);
        assert_eq!(bus.receivers(), 0);
    }
}
