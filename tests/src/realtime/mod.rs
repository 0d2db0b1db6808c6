//! A stand-in for Supabase Realtime: the Phoenix channel protocol of `shared/PROTOCOL.md` over a
//! WebSocket, fed with real row changes from PostgreSQL logical decoding.
//!
//! Supabase Realtime is Elixir and cannot be built here, so this module plays it in tests and in
//! the local stack. It is held to the official client by `tests/conformance` (realtime-js) and
//! follows supabase/realtime's own code where behaviour matters to a client:
//!
//! - **Handshake** `GET …/websocket?apikey=JWT&vsn=1.0.0|2.0.0`: the key (or an `x-api-key`
//!   header) must be an HMAC JWT of the project secret with `role` and `exp`; otherwise HTTP 401
//!   `{"error": …}` with Realtime's texts. Frames above 5,000,000 bytes close the socket; a
//!   socket that sends nothing for 60 s is dropped (Phoenix's idle timeout).
//! - **Channels** `phx_join` on `realtime:<name>`: the token (`access_token` of the join, else
//!   the socket's key) is checked, at most 100 channels per socket, then the reply lists every
//!   `postgres_changes` entry with an id that is a stable hash of the entry (identical entries
//!   share one id). The change feed then checks the entries against the database and pushes a
//!   `system` message: `Subscribed to PostgreSQL` once a poll of the slot has run with the
//!   subscription in place (so any change committed after it is delivered), or Realtime's error
//!   text. A token that expires while joined, or a refused `access_token` refresh, ends the
//!   channel with a `system` error and `phx_close`.
//! - **Changes** come from a temporary `wal2json` replication slot on a connection of our own,
//!   polled every 100 ms (`pg_logical_slot_get_changes`, like Realtime's `list_changes`). Rows
//!   are turned into Realtime's payload inside PostgreSQL (`session.sql`: `to_jsonb` of each
//!   typed value, `pg_type.typname` column types, ISO commit timestamps) and filters are compared
//!   with PostgreSQL's own operators on the column's type, so values and matching are as
//!   Realtime's. There is no row level security: every subscriber sees what the service role
//!   sees. The slot is dropped on shutdown and, being temporary, with the connection anyway.
//! - **Faults** on demand through [`Faults`] or `POST /__faults`, and counters through
//!   [`StandIn::stats`] or `GET /__stats`, for leak and recovery tests.
//!
//! Every socket's outbound queue is bounded ([`Options::outbound_queue`]); a client that does not
//! read is disconnected and counted instead of growing memory.

mod auth;
mod faults;
mod feed;
mod params;
mod protocol;
mod socket;

pub use faults::{FaultRequest, Faults};
pub use protocol::Vsn;
pub use socket::JOIN_FAULT_REASON;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tunables; the defaults are Realtime's where it has one.
#[derive(Clone, Debug)]
pub struct Options {
    /// Slot poll period while any channel has `postgres_changes` (Realtime's
    /// `poll_interval_ms`: 100 ms). A new subscription wakes the poller at once.
    pub poll_interval: Duration,
    /// Poll period with no subscription, only to keep the slot drained (Realtime backs off five
    /// times when idle): 500 ms.
    pub idle_poll_interval: Duration,
    /// Changes read per poll (`upto_nchanges`; whole transactions, so a poll may read more); the
    /// poller goes again at once when it read this many: 1,000.
    pub max_changes_per_poll: i32,
    /// A change whose wal2json text is larger gets `errors: ["Error 413: Payload Too Large"]` and
    /// loses values above 64 bytes (Realtime's `poll_max_record_bytes`): 1 MiB.
    pub max_record_bytes: i32,
    /// Frames queued per socket before the client counts as too slow and is dropped: 1,024.
    pub outbound_queue: usize,
    /// Channels per socket (Realtime's `max_channels_per_client`): 100.
    pub max_channels_per_socket: usize,
    /// Largest inbound frame or message (Realtime's endpoint): 5,000,000 bytes.
    pub max_frame_bytes: usize,
    /// A socket with no inbound frame for this long is dropped (Phoenix's websocket timeout): 60 s.
    pub idle_timeout: Duration,
    /// Wait before answering a refused join. Realtime waits 5 s; the default here is none so
    /// tests stay fast. Set it to test client timeouts.
    pub join_error_delay: Duration,
    /// Only tables in this publication are streamed and can be subscribed to, as in Supabase
    /// (`supabase_realtime`, which must then exist); `None` streams every table.
    pub publication: Option<String>,
    /// Topics whose last join payload is kept for [`StandIn::last_join`] (oldest forgotten first): 4,096.
    pub last_join_topics: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            poll_interval: Duration::from_millis(100),
            idle_poll_interval: Duration::from_millis(500),
            max_changes_per_poll: 1000,
            max_record_bytes: 1024 * 1024,
            outbound_queue: 1024,
            max_channels_per_socket: 100,
            max_frame_bytes: 5_000_000,
            idle_timeout: Duration::from_secs(60),
            join_error_delay: Duration::ZERO,
            publication: Some("supabase_realtime".to_owned()),
            last_join_topics: 4096,
        }
    }
}

/// A snapshot of the stand-in's counters (`GET /__stats` serves the same as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Open sockets now.
    pub sockets: usize,
    /// Joined channels now, across sockets.
    pub joined_channels: usize,
    /// Channels with `postgres_changes` known to the change feed now.
    pub subscriptions: usize,
    /// `phx_join` messages received on `realtime:` topics (refused ones included).
    pub joins_total: u64,
    /// Joins answered with an error.
    pub join_errors_total: u64,
    /// `phx_leave` messages received.
    pub leaves_total: u64,
    /// Heartbeats received (answered or not).
    pub heartbeats_total: u64,
    /// `postgres_changes` messages queued to clients.
    pub changes_sent_total: u64,
    /// Sockets dropped because their outbound queue was full.
    pub slow_disconnects_total: u64,
    /// Times the change feed lost its database connection and came back.
    pub feed_reconnects_total: u64,
}

/// Monotonic counters shared with every socket's outbox.
#[derive(Default)]
pub(crate) struct Counters {
    joins_total: AtomicU64,
    join_errors_total: AtomicU64,
    leaves_total: AtomicU64,
    heartbeats_total: AtomicU64,
    changes_sent_total: AtomicU64,
    slow_disconnects_total: AtomicU64,
    feed_reconnects_total: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Last join payload per topic, bounded by [`Options::last_join_topics`].
struct LastJoins {
    cap: usize,
    by_topic: HashMap<String, Value>,
    /// Topics in first-seen order; each appears once, so its length equals `by_topic`'s.
    order: VecDeque<String>,
}

impl LastJoins {
    fn record(&mut self, topic: &str, payload: Value) {
        if let Some(slot) = self.by_topic.get_mut(topic) {
            *slot = payload;
            return;
        }
        while self.by_topic.len() >= self.cap.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_topic.remove(&old);
                }
                None => break,
            }
        }
        self.by_topic.insert(topic.to_owned(), payload);
        self.order.push_back(topic.to_owned());
    }
}

/// State shared by the router, the sockets, the change feed and the fault handle.
pub(crate) struct Shared {
    opts: Options,
    verifier: auth::Verifier,
    counters: Arc<Counters>,
    faults: faults::FaultState,
    /// Open sockets by id (bounded by the clients connected).
    sockets: Mutex<HashMap<u64, Arc<socket::SocketShared>>>,
    /// Channels with `postgres_changes`, by channel id; at most one per joined channel.
    subs: Mutex<HashMap<u64, Arc<feed::Subscription>>>,
    /// Wakes the poller when a subscription needs checking or announcing.
    feed_wake: Notify,
    last_join: Mutex<LastJoins>,
    next_id: AtomicU64,
    /// Cancelled by `shutdown` and `Drop`; every socket's token is a child of it.
    cancel: CancellationToken,
    /// Every task of the stand-in: the poller, its connection, sockets, `serve`.
    tracker: TaskTracker,
    slot: String,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn sockets_snapshot(&self) -> Vec<Arc<socket::SocketShared>> {
        self.sockets.lock().values().cloned().collect()
    }

    fn stats(&self) -> Stats {
        let sockets = self.sockets_snapshot();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            sockets: sockets.len(),
            joined_channels: sockets.iter().map(|s| s.channel_count()).sum(),
            subscriptions: self.subs.lock().len(),
            joins_total: get(&c.joins_total),
            join_errors_total: get(&c.join_errors_total),
            leaves_total: get(&c.leaves_total),
            heartbeats_total: get(&c.heartbeats_total),
            changes_sent_total: get(&c.changes_sent_total),
            slow_disconnects_total: get(&c.slow_disconnects_total),
            feed_reconnects_total: get(&c.feed_reconnects_total),
        }
    }
}

/// The running stand-in. Owns its tasks: [`StandIn::shutdown`] stops them and drops the slot;
/// dropping it cancels them.
pub struct StandIn {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("slot", &self.shared.slot)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Connects to `db_url` (a superuser on a cluster with `wal_level=logical` and wal2json),
    /// creates the replication slot and starts polling it. Errors when any of that fails.
    pub async fn start(db_url: &str, jwt_secret: &str) -> Result<StandIn> {
        StandIn::start_with(db_url, jwt_secret, Options::default()).await
    }

    /// [`StandIn::start`] with non-default [`Options`].
    pub async fn start_with(db_url: &str, jwt_secret: &str, options: Options) -> Result<StandIn> {
        let config: tokio_postgres::Config = db_url
            .parse()
            .context("realtime stand-in: parsing the database URL")?;
        let slot = format!(
            "collisionos_rt_{}_{:x}",
            std::process::id(),
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let shared = Arc::new(Shared {
            last_join: Mutex::new(LastJoins {
                cap: options.last_join_topics,
                by_topic: HashMap::new(),
                order: VecDeque::new(),
            }),
            opts: options,
            verifier: auth::Verifier::new(jwt_secret),
            counters: Arc::new(Counters::default()),
            faults: faults::FaultState::default(),
            sockets: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            feed_wake: Notify::new(),
            next_id: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            slot,
        });
        let conn = feed::FeedConn::connect(&config, &shared).await.context(
            "realtime stand-in: starting the change feed (needs wal_level=logical and wal2json)",
        )?;
        shared
            .tracker
            .spawn(feed::run(shared.clone(), config, conn));
        Ok(StandIn { shared })
    }

    /// Routes `GET /websocket`, `POST /__faults` and `GET /__stats`. The gateway nests it at
    /// `/realtime/v1`, so clients use `ws://HOST/realtime/v1/websocket?apikey=…&vsn=2.0.0`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/websocket", get(socket::websocket))
            .route("/__faults", post(faults::http))
            .route("/__stats", get(faults::http_stats))
            .with_state(self.shared.clone())
    }

    /// Serves [`StandIn::router`] on `listener` without the gateway, at `/realtime/v1/…` and at
    /// self-hosted Realtime's `/socket/…`, until shutdown. Returns the bound address.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let app = Router::new()
            .nest("/realtime/v1", self.router())
            .nest("/socket", self.router());
        let cancel = self.shared.cancel.clone();
        self.shared.tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "realtime stand-in: server stopped");
            }
        });
        Ok(addr)
    }

    /// The fault-injection handle (cheap to clone).
    pub fn faults(&self) -> Faults {
        Faults::new(self.shared.clone())
    }

    /// All counters at once.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Joined channels right now, across sockets.
    pub fn joined_channels(&self) -> usize {
        self.stats().joined_channels
    }

    /// Open sockets right now.
    pub fn sockets(&self) -> usize {
        self.shared.sockets.lock().len()
    }

    /// `phx_join` messages received on `realtime:` topics.
    pub fn joins_total(&self) -> u64 {
        self.shared.counters.joins_total.load(Ordering::Relaxed)
    }

    /// `phx_leave` messages received.
    pub fn leaves_total(&self) -> u64 {
        self.shared.counters.leaves_total.load(Ordering::Relaxed)
    }

    /// Heartbeats received.
    pub fn heartbeats_total(&self) -> u64 {
        self.shared
            .counters
            .heartbeats_total
            .load(Ordering::Relaxed)
    }

    /// `postgres_changes` messages queued to clients.
    pub fn changes_sent_total(&self) -> u64 {
        self.shared
            .counters
            .changes_sent_total
            .load(Ordering::Relaxed)
    }

    /// Sockets dropped for not reading.
    pub fn slow_disconnects_total(&self) -> u64 {
        self.shared
            .counters
            .slow_disconnects_total
            .load(Ordering::Relaxed)
    }

    /// The payload of the last `phx_join` on `topic` (e.g. `realtime:jobs`), as received.
    pub fn last_join(&self, topic: &str) -> Option<Value> {
        self.shared.last_join.lock().by_topic.get(topic).cloned()
    }

    /// The replication slot's name (unique per stand-in).
    pub fn slot_name(&self) -> &str {
        &self.shared.slot
    }

    /// Stops serving, closes every socket, drops the replication slot and waits for every task.
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}
