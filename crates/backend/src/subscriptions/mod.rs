//! Realtime subscription manager: the memo's `SubscriptionManager` (issue #2) done with owned
//! tasks instead of `setInterval`/`setTimeout` handles.
//!
//! Owns every managed subscription and its task. Bounds and rules:
//! - at most [`RealtimeConfig::max_subscriptions`]; at the cap the least recently active
//!   non-persistent subscription is evicted; persistent ones never are (only persistent left =
//!   [`SubscriptionError::CapacityExhausted`]);
//! - a non-persistent subscription expires [`RealtimeConfig::subscription_ttl`] after its last
//!   activity (creation or [`SubscriptionManager::mark_activity`]); the sweep runs every
//!   [`RealtimeConfig::sweep_interval`];
//! - a channel that ends in error (CHANNEL_ERROR, TIMED_OUT, a server close, an expired token)
//!   is really recreated with its stored options and a current token, after
//!   [`Tuning::retry_backoff`], up to [`RealtimeConfig::max_retries`] times in a row; then it is
//!   `failed`: kept, shown, alerted ([`AlertLevel::SubscriptionFailed`]). A subscription that
//!   reaches SUBSCRIBED starts a fresh streak;
//! - row changes go to the bus ([`Event::Change`]) and to an optional bounded sink per
//!   subscription ([`SubscriptionManager::sink`]; full = dropped and counted).
//!
//! Every task is spawned on the tracker passed in, under a child of the token passed in.
//! [`SubscriptionManager::destroy_all`] leaves every channel and closes the socket.

pub mod filter;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use collisionos_supabase::realtime::{
    ChangeEvent, ChannelEvent, ChannelOptions, ChannelStatus, ClientConfig, ClientStats, EndReason,
    PostgresChanges, RealtimeClient, StaticToken, TokenProvider, is_pushable,
};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RealtimeConfig, SupabaseConfig};
use crate::events::{
    Alert, AlertLevel, Bus, Event, RowChange, SubscriptionEvent, SubscriptionFigures, now_ms,
};

/// The memo's startup subscription: every change of `public.jobs`, persistent.
pub const DEFAULT_SUBSCRIPTION: &str = "jobs_subscription";

/// What one subscription listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub schema: String,
    pub table: String,
    pub event: ChangeEvent,
    /// `column=op.value` (see [`filter`]).
    pub filter: Option<String>,
    /// Idle time before expiry; `None` = [`RealtimeConfig::subscription_ttl`].
    pub ttl: Option<Duration>,
    /// Never expires, never evicted.
    pub persistent: bool,
}

impl SubscriptionOptions {
    /// All events of `schema.table`, default TTL, not persistent.
    pub fn table(schema: &str, table: &str) -> Self {
        Self {
            schema: schema.into(),
            table: table.into(),
            event: ChangeEvent::All,
            filter: None,
            ttl: None,
            persistent: false,
        }
    }

    fn channel_options(&self) -> ChannelOptions {
        ChannelOptions {
            postgres_changes: vec![PostgresChanges {
                event: self.event,
                schema: self.schema.clone(),
                table: Some(self.table.clone()),
                filter: self.filter.clone(),
            }],
            private: false,
        }
    }
}

/// Timings the memo fixes but tests shorten. Defaults stated per field.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Delay before retry n (5, 10, 15 s: the memo's `5000 * retryCount`; the last repeats),
    /// ±10 % jitter.
    pub retry_backoff: Vec<Duration>,
    /// "Active" = activity within this (60 s, the memo's rule).
    pub active_window: Duration,
    /// "Expiring soon" = expires within this (5 min).
    pub expiring_window: Duration,
    /// Capacity of the sink [`SubscriptionManager::sink`] makes when asked for 0 (256).
    pub default_sink_capacity: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            retry_backoff: vec![s(5), s(10), s(15)],
            active_window: s(60),
            expiring_window: s(300),
            default_sink_capacity: 256,
        }
    }
}

/// Why a call was refused. [`SubscriptionError::code`] is the API's stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("realtime is not configured: set SUPABASE_URL and SUPABASE_ANON_KEY")]
    NotConfigured,
    #[error("invalid filter {filter:?}: {reason}")]
    InvalidFilter { filter: String, reason: String },
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("subscription {0:?} already exists")]
    AlreadyExists(String),
    #[error("no subscription {0:?}")]
    NotFound(String),
    #[error("all {capacity} subscriptions are persistent: none can be evicted for a new one")]
    CapacityExhausted { capacity: usize },
    #[error("the subscription manager is shutting down")]
    ShuttingDown,
}

impl SubscriptionError {
    pub fn code(&self) -> &'static str {
        match self {
            SubscriptionError::NotConfigured => "realtime_not_configured",
            SubscriptionError::InvalidFilter { .. } => "invalid_filter",
            SubscriptionError::Invalid { field: "ttl", .. } => "invalid_ttl",
            SubscriptionError::Invalid { .. } => "invalid_identifier",
            SubscriptionError::AlreadyExists(_) => "subscription_exists",
            SubscriptionError::NotFound(_) => "not_found",
            SubscriptionError::CapacityExhausted { .. } => "subscriptions_full",
            SubscriptionError::ShuttingDown => "shutting_down",
        }
    }
}

/// A subscription as the API lists it (times in epoch ms).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubscriptionInfo {
    pub id: String,
    pub schema: String,
    pub table: String,
    pub event: ChangeEvent,
    pub filter: Option<String>,
    /// `joining`, `subscribed`, `errored` (socket down, rejoining), `retrying`, `failed`.
    pub state: &'static str,
    pub persistent: bool,
    pub created_at: u64,
    pub last_activity: u64,
    /// Row changes delivered.
    pub events: u64,
    /// Retries in the current streak.
    pub retries: u32,
    /// `None` for persistent subscriptions.
    pub expires_at: Option<u64>,
    pub error: Option<String>,
}

/// The memo's `getStats()` plus totals (camelCase, as `/api/health/connections` shows it).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStats {
    pub total: usize,
    pub active: usize,
    pub expiring_soon: usize,
    pub persistent: usize,
    pub capacity: usize,
    pub failed: usize,
    pub retries_total: u64,
    pub evictions_total: u64,
    pub expiries_total: u64,
    pub events_total: u64,
    pub created_total: u64,
    pub destroyed_total: u64,
    /// Changes a full sink could not take.
    pub sink_dropped_total: u64,
    /// The socket's counters; `None` when realtime is not configured.
    pub socket: Option<ClientStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Joining,
    Subscribed,
    Errored,
    Retrying,
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Joining => "joining",
            State::Subscribed => "subscribed",
            State::Errored => "errored",
            State::Retrying => "retrying",
            State::Failed => "failed",
        }
    }
}

struct Entry {
    options: SubscriptionOptions,
    ttl: Duration,
    /// Distinguishes this entry from a later one with the same id (its task checks it).
    generation: u64,
    created_at: Instant,
    created_ms: u64,
    last_activity: Instant,
    events: u64,
    retries: u32,
    state: State,
    error: Option<String>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    sink: Option<mpsc::Sender<Arc<RowChange>>>,
}

#[derive(Default)]
struct Totals {
    retries: AtomicU64,
    evictions: AtomicU64,
    expiries: AtomicU64,
    events: AtomicU64,
    created: AtomicU64,
    destroyed: AtomicU64,
    sink_dropped: AtomicU64,
    generation: AtomicU64,
}

struct Inner {
    config: RealtimeConfig,
    tuning: Tuning,
    client: Option<RealtimeClient>,
    bus: Bus,
    /// Bounded by `config.max_subscriptions` (checked under the lock on every insert).
    subs: Mutex<HashMap<String, Entry>>,
    totals: Totals,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Handle to the manager; clones share it.
#[derive(Clone)]
pub struct SubscriptionManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SubscriptionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionManager")
            .field("configured", &self.is_configured())
            .field("subscriptions", &self.inner.subs.lock().len())
            .finish()
    }
}

/// The realtime client settings for a Supabase project (the socket of its gateway).
pub fn client_config(supabase: &SupabaseConfig, max_channels: usize) -> ClientConfig {
    let mut c = ClientConfig::for_project(&supabase.url, supabase.anon_key.expose())
        .unwrap_or_else(|_| {
            // `Config` only accepts http(s) URLs, which always map; keep a usable value anyway.
            ClientConfig::new(supabase.url.clone(), supabase.anon_key.expose())
        });
    c.max_channels = max_channels;
    c
}

/// The token joins carry: the service-role JWT when set (server-side, sees every row), else
/// the anon JWT; `sb_...` keys are not JWTs and are never sent as `access_token`.
pub fn default_tokens(supabase: &SupabaseConfig) -> Arc<dyn TokenProvider> {
    let key = supabase.server_key().expose();
    Arc::new(StaticToken::new(is_pushable(key).then_some(key)))
}

impl SubscriptionManager {
    /// From the backend configuration: with a realtime client when Supabase is configured.
    /// Spawns the client and the sweep on `tracker` under a child of `cancel`.
    pub fn start(
        config: &Config,
        bus: Bus,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let cancel = cancel.child_token();
        let client = config.supabase.as_ref().map(|sb| {
            RealtimeClient::start(
                client_config(sb, config.realtime.max_subscriptions),
                default_tokens(sb),
                tracker,
                cancel.clone(),
            )
        });
        Self::with_client(
            config.realtime.clone(),
            client,
            Tuning::default(),
            bus,
            tracker,
            &cancel,
        )
    }

    /// With an injected client (`None` = not configured) and tuning.
    pub fn with_client(
        config: RealtimeConfig,
        client: Option<RealtimeClient>,
        tuning: Tuning,
        bus: Bus,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            config,
            tuning,
            client,
            bus,
            subs: Mutex::new(HashMap::new()),
            totals: Totals::default(),
            tracker: tracker.clone(),
            cancel: cancel.child_token(),
        });
        let me = Self { inner };
        if me.is_configured() {
            let sweeper = me.clone();
            tracker.spawn(async move { sweeper.sweep_loop().await });
        }
        me
    }

    pub fn is_configured(&self) -> bool {
        self.inner.client.is_some()
    }

    /// Creates the memo's persistent [`DEFAULT_SUBSCRIPTION`] (all events on `public.jobs`).
    /// `Ok(false)` when realtime is not configured or it already exists.
    pub async fn start_default(&self) -> Result<bool, SubscriptionError> {
        if !self.is_configured() {
            return Ok(false);
        }
        let options = SubscriptionOptions {
            persistent: true,
            ..SubscriptionOptions::table("public", "jobs")
        };
        match self.create(DEFAULT_SUBSCRIPTION, options).await {
            Ok(_) => Ok(true),
            Err(SubscriptionError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Validates and creates a subscription; returns at once (state `joining`), the
    /// `subscription` events on the bus tell when it is `subscribed`.
    pub async fn create(
        &self,
        id: &str,
        options: SubscriptionOptions,
    ) -> Result<SubscriptionInfo, SubscriptionError> {
        let inner = &self.inner;
        validate(id, &options)?;
        if inner.client.is_none() {
            return Err(SubscriptionError::NotConfigured);
        }
        if inner.cancel.is_cancelled() {
            return Err(SubscriptionError::ShuttingDown);
        }
        let ttl = options.ttl.unwrap_or(inner.config.subscription_ttl);
        let generation = inner.totals.generation.fetch_add(1, Ordering::Relaxed);
        let (evicted, info) = {
            let mut subs = inner.subs.lock();
            if subs.contains_key(id) {
                return Err(SubscriptionError::AlreadyExists(id.to_string()));
            }
            let evicted = if subs.len() >= inner.config.max_subscriptions {
                let victim = subs
                    .iter()
                    .filter(|(_, e)| !e.options.persistent)
                    .min_by_key(|(_, e)| e.last_activity)
                    .map(|(k, _)| k.clone())
                    .ok_or(SubscriptionError::CapacityExhausted {
                        capacity: inner.config.max_subscriptions,
                    })?;
                subs.remove_entry(&victim)
            } else {
                None
            };
            let now = Instant::now();
            let entry = Entry {
                options,
                ttl,
                generation,
                created_at: now,
                created_ms: now_ms(),
                last_activity: now,
                events: 0,
                retries: 0,
                state: State::Joining,
                error: None,
                cancel: inner.cancel.child_token(),
                task: None,
                sink: None,
            };
            let info = inner.info(id, &entry, now);
            subs.insert(id.to_string(), entry);
            (evicted, info)
        };
        inner.totals.created.fetch_add(1, Ordering::Relaxed);
        if let Some((victim, entry)) = evicted {
            inner.totals.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(subscription = %victim, for_id = id, "evicted (least recently active)");
            // Its leave goes out before the new join, so the socket never holds cap + 1.
            inner.stop(&victim, entry, "evicted").await;
        }
        inner.publish(id, "created", None);
        self.spawn_task(id, generation);
        Ok(info)
    }

    fn spawn_task(&self, id: &str, generation: u64) {
        let mut subs = self.inner.subs.lock();
        let Some(entry) = subs.get_mut(id).filter(|e| e.generation == generation) else {
            return; // destroyed meanwhile
        };
        let task = run(
            self.inner.clone(),
            id.to_string(),
            generation,
            entry.options.channel_options(),
            entry.cancel.clone(),
        );
        entry.task = Some(self.inner.tracker.spawn(task));
    }

    /// Leaves the channel and forgets the subscription.
    pub async fn destroy(&self, id: &str) -> Result<(), SubscriptionError> {
        let entry = self.inner.subs.lock().remove(id);
        let entry = entry.ok_or_else(|| SubscriptionError::NotFound(id.to_string()))?;
        self.inner.stop(id, entry, "destroyed").await;
        Ok(())
    }

    /// Records use by a consumer: refreshes LRU order and the idle TTL. `false` if unknown.
    pub fn mark_activity(&self, id: &str) -> bool {
        match self.inner.subs.lock().get_mut(id) {
            Some(e) => {
                e.last_activity = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Destroys every subscription (each leaves its channel), then closes the socket.
    pub async fn destroy_all(&self) {
        let all: Vec<(String, Entry)> = self.inner.subs.lock().drain().collect();
        let stops = all
            .into_iter()
            .map(|(id, entry)| async move { self.inner.stop(&id, entry, "destroyed").await });
        futures::future::join_all(stops).await;
        if let Some(client) = &self.inner.client {
            client.close().await;
        }
    }

    /// Every subscription, oldest first.
    pub fn list(&self) -> Vec<SubscriptionInfo> {
        let now = Instant::now();
        let subs = self.inner.subs.lock();
        let mut out: Vec<(Instant, SubscriptionInfo)> = subs
            .iter()
            .map(|(id, e)| (e.created_at, self.inner.info(id, e, now)))
            .collect();
        drop(subs);
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        out.into_iter().map(|(_, i)| i).collect()
    }

    pub fn get(&self, id: &str) -> Option<SubscriptionInfo> {
        let subs = self.inner.subs.lock();
        subs.get(id).map(|e| self.inner.info(id, e, Instant::now()))
    }

    /// A bounded stream of this subscription's changes (replaces an earlier sink). Full =
    /// the change is dropped for this sink and counted; the bus still gets it. `capacity` 0
    /// = [`Tuning::default_sink_capacity`].
    pub fn sink(
        &self,
        id: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Arc<RowChange>>, SubscriptionError> {
        let cap = if capacity == 0 {
            self.inner.tuning.default_sink_capacity
        } else {
            capacity
        };
        let mut subs = self.inner.subs.lock();
        let e = subs
            .get_mut(id)
            .ok_or_else(|| SubscriptionError::NotFound(id.to_string()))?;
        let (tx, rx) = mpsc::channel(cap.max(1));
        e.sink = Some(tx);
        Ok(rx)
    }

    pub fn stats(&self) -> SubscriptionStats {
        let inner = &self.inner;
        let now = Instant::now();
        let subs = inner.subs.lock();
        let mut s = SubscriptionStats {
            total: subs.len(),
            active: 0,
            expiring_soon: 0,
            persistent: 0,
            capacity: inner.config.max_subscriptions,
            failed: 0,
            retries_total: inner.totals.retries.load(Ordering::Relaxed),
            evictions_total: inner.totals.evictions.load(Ordering::Relaxed),
            expiries_total: inner.totals.expiries.load(Ordering::Relaxed),
            events_total: inner.totals.events.load(Ordering::Relaxed),
            created_total: inner.totals.created.load(Ordering::Relaxed),
            destroyed_total: inner.totals.destroyed.load(Ordering::Relaxed),
            sink_dropped_total: inner.totals.sink_dropped.load(Ordering::Relaxed),
            socket: inner.client.as_ref().map(RealtimeClient::stats),
        };
        for e in subs.values() {
            if e.options.persistent {
                s.persistent += 1;
            } else if e.last_activity + e.ttl < now + inner.tuning.expiring_window {
                s.expiring_soon += 1;
            }
            if now.saturating_duration_since(e.last_activity) < inner.tuning.active_window {
                s.active += 1;
            }
            if e.state == State::Failed {
                s.failed += 1;
            }
        }
        s
    }

    /// The per-second figures the monitor samples.
    pub fn figures(&self) -> SubscriptionFigures {
        let s = self.stats();
        SubscriptionFigures {
            total: s.total,
            active: s.active,
            persistent: s.persistent,
            capacity: s.capacity,
            failed: s.failed,
        }
    }

    /// Destroys every expired non-persistent subscription now; returns how many.
    pub async fn sweep(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<(String, Entry)> = {
            let mut subs = self.inner.subs.lock();
            let ids: Vec<String> = subs
                .iter()
                .filter(|(_, e)| !e.options.persistent && e.last_activity + e.ttl <= now)
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter()
                .filter_map(|k| subs.remove_entry(&k))
                .collect()
        };
        let n = expired.len();
        for (id, entry) in expired {
            self.inner.totals.expiries.fetch_add(1, Ordering::Relaxed);
            self.inner.stop(&id, entry, "expired").await;
        }
        if n > 0 {
            tracing::info!(expired = n, "swept expired subscriptions");
        }
        n
    }

    async fn sweep_loop(&self) {
        let period = self.inner.config.sweep_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tick.tick() => { self.sweep().await; }
            }
        }
    }
}

fn validate(id: &str, o: &SubscriptionOptions) -> Result<(), SubscriptionError> {
    let invalid = |field: &'static str, value: &str, reason: String| SubscriptionError::Invalid {
        field,
        value: value.to_string(),
        reason,
    };
    filter::subscription_id(id).map_err(|r| invalid("id", id, r))?;
    filter::identifier(&o.schema).map_err(|r| invalid("schema", &o.schema, r))?;
    filter::identifier(&o.table).map_err(|r| invalid("table", &o.table, r))?;
    if let Some(f) = &o.filter {
        filter::parse(f).map_err(|reason| SubscriptionError::InvalidFilter {
            filter: f.clone(),
            reason,
        })?;
    }
    if let Some(ttl) = o.ttl
        && !(Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600)).contains(&ttl)
    {
        return Err(invalid(
            "ttl",
            &format!("{} ms", ttl.as_millis()),
            "must be from 1 s to 7 days".into(),
        ));
    }
    Ok(())
}

impl Inner {
    fn info(&self, id: &str, e: &Entry, now: Instant) -> SubscriptionInfo {
        let ms_ago = |t: Instant| {
            now_ms().saturating_sub(now.saturating_duration_since(t).as_millis() as u64)
        };
        SubscriptionInfo {
            id: id.to_string(),
            schema: e.options.schema.clone(),
            table: e.options.table.clone(),
            event: e.options.event,
            filter: e.options.filter.clone(),
            state: e.state.as_str(),
            persistent: e.options.persistent,
            created_at: e.created_ms,
            last_activity: ms_ago(e.last_activity),
            events: e.events,
            retries: e.retries,
            expires_at: (!e.options.persistent).then(|| {
                let left = (e.last_activity + e.ttl).saturating_duration_since(now);
                now_ms() + left.as_millis() as u64
            }),
            error: e.error.clone(),
        }
    }

    fn publish(&self, id: &str, state: &str, reason: Option<String>) {
        self.bus.publish(Event::Subscription(SubscriptionEvent {
            ts: now_ms(),
            id: id.to_string(),
            state: state.to_string(),
            reason,
        }));
    }

    /// Cancels an entry already removed from the map and waits for its task (which leaves).
    async fn stop(&self, id: &str, entry: Entry, why: &str) {
        {
            // Give back the table after a burst, as the map never shrinks by itself.
            let mut subs = self.subs.lock();
            if subs.capacity() > 64 && subs.len() < subs.capacity() / 4 {
                subs.shrink_to_fit();
            }
        }
        entry.cancel.cancel();
        if let Some(task) = entry.task {
            let _ = task.await;
        }
        self.totals.destroyed.fetch_add(1, Ordering::Relaxed);
        self.publish(id, why, None);
    }

    /// Applies `f` to the entry if it is still this task's; returns `None` otherwise.
    fn update<R>(&self, id: &str, generation: u64, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let mut subs = self.subs.lock();
        subs.get_mut(id)
            .filter(|e| e.generation == generation)
            .map(f)
    }

    fn set_state(&self, id: &str, generation: u64, state: State, error: Option<String>) {
        let changed = self.update(id, generation, |e| {
            let changed = e.state != state;
            e.state = state;
            if state == State::Subscribed {
                e.retries = 0;
                e.error = None;
            } else if error.is_some() {
                e.error.clone_from(&error);
            }
            changed
        });
        if changed == Some(true) {
            self.publish(id, state.as_str(), error);
        }
    }

    fn deliver(&self, id: &str, generation: u64, c: collisionos_supabase::realtime::Change) {
        let change = Arc::new(RowChange {
            subscription: id.to_string(),
            schema: c.schema,
            table: c.table,
            kind: c.kind,
            commit_timestamp: c.commit_timestamp,
            record: c.record,
            old_record: c.old_record,
            received_at: now_ms(),
        });
        self.totals.events.fetch_add(1, Ordering::Relaxed);
        self.update(id, generation, |e| {
            e.events += 1;
            if let Some(sink) = &e.sink {
                match sink.try_send(change.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.totals.sink_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => e.sink = None,
                }
            }
        });
        self.bus.publish(Event::Change(change));
    }
}

/// The subscription's task: holds the channel, delivers changes, retries failures.
async fn run(
    inner: Arc<Inner>,
    id: String,
    generation: u64,
    options: ChannelOptions,
    cancel: CancellationToken,
) {
    let Some(client) = inner.client.clone() else {
        return;
    };
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            r = client.channel(&id, options.clone()) => r,
        };
        let failure = match opened {
            Err(e) => e.to_string(),
            Ok(mut channel) => {
                inner.set_state(&id, generation, State::Joining, None);
                let ended = loop {
                    let event = tokio::select! {
                        _ = cancel.cancelled() => {
                            channel.leave().await;
                            return;
                        }
                        ev = channel.next() => ev,
                    };
                    match event {
                        Some(ChannelEvent::Change(c)) => inner.deliver(&id, generation, c),
                        Some(ChannelEvent::Status(s)) => match s {
                            ChannelStatus::Subscribed => {
                                inner.set_state(&id, generation, State::Subscribed, None);
                            }
                            ChannelStatus::Errored { reason } => {
                                inner.set_state(&id, generation, State::Errored, Some(reason));
                            }
                            ChannelStatus::Joining | ChannelStatus::Joined => {}
                            ChannelStatus::Ended { end } => break Some(end),
                        },
                        None => break None,
                    }
                };
                match ended {
                    // Shut down under us (the client was closed or cancelled): nothing to retry.
                    None | Some(EndReason::ClientClosed | EndReason::Left) => return,
                    Some(end) => describe(&end),
                }
            }
        };
        let attempt = inner.update(&id, generation, |e| e.retries).unwrap_or(0);
        if attempt >= inner.config.max_retries {
            tracing::error!(subscription = %id, retries = attempt, reason = %failure, "subscription failed");
            inner.set_state(&id, generation, State::Failed, Some(failure.clone()));
            inner.bus.publish(Event::Alert(Alert {
                ts: now_ms(),
                level: AlertLevel::SubscriptionFailed,
                message: format!("subscription {id} failed after {attempt} retries: {failure}"),
                value: Some(f64::from(attempt)),
            }));
            // Kept and shown until destroyed.
            cancel.cancelled().await;
            return;
        }
        let delay =
            collisionos_supabase::realtime::backoff(&inner.tuning.retry_backoff, attempt, 0.1);
        inner.totals.retries.fetch_add(1, Ordering::Relaxed);
        inner.update(&id, generation, |e| e.retries = attempt + 1);
        tracing::warn!(subscription = %id, attempt = attempt + 1, reason = %failure, retry_in_ms = delay.as_millis() as u64, "subscription retrying");
        inner.set_state(&id, generation, State::Retrying, Some(failure));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// realtime-js's status word plus the reason, as the UI shows it.
fn describe(end: &EndReason) -> String {
    match end {
        EndReason::JoinRejected(r) => format!("CHANNEL_ERROR: {r}"),
        EndReason::TimedOut => "TIMED_OUT".into(),
        EndReason::SystemError(r) => format!("CHANNEL_ERROR: {r}"),
        EndReason::ServerClosed => "CLOSED by the server".into(),
        EndReason::BindingMismatch(r) => format!("CHANNEL_ERROR: bindings mismatch: {r}"),
        EndReason::Left | EndReason::ClientClosed => "CLOSED".into(),
    }
}

#[cfg(test)]
mod tests;
