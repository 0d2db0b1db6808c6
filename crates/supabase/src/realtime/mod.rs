//! Supabase Realtime client: Phoenix channels over ONE WebSocket per upstream.
//!
//! Owns the socket, every channel joined on it, the heartbeat, reconnects and rejoins. The
//! design answers the official clients' known failures (see `PROTOCOL.md`):
//! - one connection actor per [`RealtimeClient`]; handlers are wired once, when it starts;
//! - bindings are keyed by the ids the server returns, each distinct filter sent once;
//! - [`ChannelStatus::Subscribed`] only after the server's `system` "Subscribed to PostgreSQL";
//! - the heartbeat runs on a fixed schedule that inbound traffic never resets, and a heartbeat
//!   without a reply by the next tick means the socket is dead: it is replaced;
//! - every join asks the [`TokenProvider`] for the current token; a token is pushed
//!   (`access_token`) `token_refresh_margin` before its `exp`;
//! - every queue has a bound: commands ([`ClientConfig::command_queue`]), the socket send queue
//!   ([`ClientConfig::send_queue`]; full = the frame is dropped and counted, a missed heartbeat
//!   then replaces the socket), each channel's change queue ([`ClientConfig::change_queue`];
//!   full = the change is dropped and counted in [`ClientStats::changes_dropped`]);
//! - [`RealtimeClient::close`] leaves every channel and closes the socket; dropping a
//!   [`Channel`] leaves it.
//!
//! Timings are plain data in [`ClientConfig`] so tests use short values or paused time.

mod client;
mod frame;
mod token;

#[cfg(test)]
mod tests;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Sink, Stream};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

pub use frame::{Frame, FrameError, Serializer};
pub use token::{StaticToken, TokenProvider, is_pushable, jwt_exp};
/// The WebSocket crate [`Connector`] is written against, for implementors and test peers.
pub use tokio_tungstenite;

/// Largest frame accepted or sent, the server's own limit.
pub const MAX_FRAME_BYTES: usize = 5_000_000;

/// Timings and bounds of one client. Defaults are realtime-js's where it has one.
#[derive(Clone)]
pub struct ClientConfig {
    /// The socket endpoint without query, e.g. `wss://abc.supabase.co/realtime/v1/websocket`.
    pub endpoint: Url,
    /// Sent as the `apikey` query parameter. Never logged.
    pub api_key: String,
    /// Serializer (`vsn`); default 2.0.0.
    pub serializer: Serializer,
    /// Heartbeat period (25 s); a heartbeat unanswered at the next tick = dead socket.
    pub heartbeat_interval: Duration,
    /// Socket reconnect delays (1, 2, 5, 10 s; the last repeats), each with `jitter` applied.
    pub reconnect_backoff: Vec<Duration>,
    /// Channel rejoin delays after `phx_error` (1, 2, 5, 10 s; the last repeats).
    pub rejoin_backoff: Vec<Duration>,
    /// Fraction of random spread applied to every backoff delay (0.2 = ±20 %), so many
    /// desktops do not reconnect in step (realtime #1691).
    pub jitter: f64,
    /// No join reply within this = `TimedOut` (10 s).
    pub join_timeout: Duration,
    /// No `system` "Subscribed to PostgreSQL" within this after the join reply = `TimedOut` (30 s).
    pub subscribe_timeout: Duration,
    /// TCP + TLS + WebSocket handshake limit (10 s).
    pub connect_timeout: Duration,
    /// How long `close` waits for the leaves and the close frame to be written (2 s).
    pub close_timeout: Duration,
    /// Push the next token this long before the current one's `exp` (60 s).
    pub token_refresh_margin: Duration,
    /// Most channels on the socket (100, Realtime's default per-client limit).
    pub max_channels: usize,
    /// Frames waiting to be written to the socket (256). Full = dropped and counted.
    pub send_queue: usize,
    /// Changes waiting for a channel's owner (1,024). Full = dropped and counted.
    pub change_queue: usize,
    /// Commands from handles to the connection actor (256; senders wait when full).
    pub command_queue: usize,
    /// Largest frame read or written (5,000,000 bytes). Larger inbound frames close the socket.
    pub max_frame_bytes: usize,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("api_key", &"<redacted>")
            .field("serializer", &self.serializer)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("rejoin_backoff", &self.rejoin_backoff)
            .field("join_timeout", &self.join_timeout)
            .field("max_channels", &self.max_channels)
            .field("send_queue", &self.send_queue)
            .field("change_queue", &self.change_queue)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for a socket endpoint.
    pub fn new(endpoint: Url, api_key: impl Into<String>) -> Self {
        let s = Duration::from_secs;
        Self {
            endpoint,
            api_key: api_key.into(),
            serializer: Serializer::V2,
            heartbeat_interval: s(25),
            reconnect_backoff: vec![s(1), s(2), s(5), s(10)],
            rejoin_backoff: vec![s(1), s(2), s(5), s(10)],
            jitter: 0.2,
            join_timeout: s(10),
            subscribe_timeout: s(30),
            connect_timeout: s(10),
            close_timeout: s(2),
            token_refresh_margin: s(60),
            max_channels: 100,
            send_queue: 256,
            change_queue: 1024,
            command_queue: 256,
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }

    /// Defaults for a project URL (`https://abc.supabase.co` or a local gateway): the socket is
    /// `ws(s)://HOST/realtime/v1/websocket`.
    pub fn for_project(project: &Url, api_key: impl Into<String>) -> Result<Self, RealtimeError> {
        let mut endpoint = project.clone();
        let scheme = match project.scheme() {
            "https" | "wss" => "wss",
            "http" | "ws" => "ws",
            other => return Err(RealtimeError::Url(format!("unsupported scheme {other}"))),
        };
        endpoint
            .set_scheme(scheme)
            .map_err(|()| RealtimeError::Url("cannot set the scheme".into()))?;
        let base = project.path().trim_end_matches('/');
        endpoint.set_path(&format!("{base}/realtime/v1/websocket"));
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        Ok(Self::new(endpoint, api_key))
    }

    /// The URL actually dialled (contains the key: never log it).
    pub(crate) fn socket_url(&self) -> String {
        let mut u = self.endpoint.clone();
        u.query_pairs_mut()
            .append_pair("apikey", &self.api_key)
            .append_pair("vsn", self.serializer.vsn());
        u.into()
    }
}

/// The delay before attempt `attempt` (0-based) of a schedule, with `±jitter` spread.
pub fn backoff(schedule: &[Duration], attempt: u32, jitter: f64) -> Duration {
    let Some(last) = schedule.last() else {
        return Duration::ZERO;
    };
    let base = schedule.get(attempt as usize).unwrap_or(last);
    let j = jitter.clamp(0.0, 1.0);
    if j == 0.0 {
        return *base;
    }
    let factor = 1.0 + rand::random_range(-j..=j);
    base.mul_f64(factor)
}

/// Errors of the client's API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealtimeError {
    #[error("invalid realtime URL: {0}")]
    Url(String),
    #[error("a channel named {0:?} is already open on this client")]
    TopicInUse(String),
    #[error("too many channels on one socket (limit {0})")]
    TooManyChannels(usize),
    #[error("invalid channel options: {0}")]
    InvalidOptions(String),
    #[error("the realtime client is shut down")]
    Shutdown,
}

/// `event` of a postgres_changes binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum ChangeEvent {
    #[default]
    #[serde(rename = "*")]
    All,
    #[serde(rename = "INSERT")]
    Insert,
    #[serde(rename = "UPDATE")]
    Update,
    #[serde(rename = "DELETE")]
    Delete,
}

impl ChangeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeEvent::All => "*",
            ChangeEvent::Insert => "INSERT",
            ChangeEvent::Update => "UPDATE",
            ChangeEvent::Delete => "DELETE",
        }
    }

    /// `*`, `INSERT`, `UPDATE`, `DELETE` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "*" => ChangeEvent::All,
            "INSERT" => ChangeEvent::Insert,
            "UPDATE" => ChangeEvent::Update,
            "DELETE" => ChangeEvent::Delete,
            _ => return None,
        })
    }

    fn matches(self, kind: &str) -> bool {
        self == ChangeEvent::All || self.as_str() == kind
    }
}

/// One `postgres_changes` binding of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PostgresChanges {
    pub event: ChangeEvent,
    pub schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `column=op.value`; validated by the caller (the server refuses bad ones at join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// What a channel joins with; kept by the client and sent again on every rejoin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    pub postgres_changes: Vec<PostgresChanges>,
    /// `config.private` (authorization by RLS on `realtime.messages`).
    pub private: bool,
}

/// Why a channel ended. After this the client forgets the channel; its owner recreates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum EndReason {
    /// The join reply was an error (`Code: message`).
    JoinRejected(String),
    /// No join reply, or no `system` readiness, in time.
    TimedOut,
    /// A `system` error (e.g. "Token has expired"), terminal for the join.
    SystemError(String),
    /// The server closed the channel (`phx_close`).
    ServerClosed,
    /// The server's bindings did not match the ones sent.
    BindingMismatch(String),
    /// The owner left ([`Channel::leave`] or drop).
    Left,
    /// The client was closed or shut down.
    ClientClosed,
}

/// A channel's state, as its owner sees it (latest value; terminal values are never replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChannelStatus {
    /// Waiting for the socket or for the join reply.
    Joining,
    /// Join acknowledged; waiting for the server's "Subscribed to PostgreSQL".
    Joined,
    /// Changes flow.
    Subscribed,
    /// The channel crashed (`phx_error`) or the socket dropped; the client rejoins by itself.
    Errored { reason: String },
    /// Terminal.
    Ended { end: EndReason },
}

impl ChannelStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, ChannelStatus::Ended { .. })
    }

    /// realtime-js's subscribe status for this state.
    pub fn subscribe_status(&self) -> &'static str {
        match self {
            ChannelStatus::Subscribed => "SUBSCRIBED",
            ChannelStatus::Ended {
                end: EndReason::TimedOut,
            } => "TIMED_OUT",
            ChannelStatus::Ended {
                end: EndReason::Left | EndReason::ClientClosed | EndReason::ServerClosed,
            } => "CLOSED",
            ChannelStatus::Ended { .. } | ChannelStatus::Errored { .. } => "CHANNEL_ERROR",
            ChannelStatus::Joining | ChannelStatus::Joined => "JOINING",
        }
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Indices into [`ChannelOptions::postgres_changes`] of the bindings it matched.
    pub bindings: Vec<usize>,
    pub schema: String,
    pub table: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub commit_timestamp: String,
    pub record: Option<Value>,
    pub old_record: Option<Value>,
    pub errors: Option<Value>,
}

/// What [`Channel::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEvent {
    Status(ChannelStatus),
    Change(Change),
}

/// Counters of one client (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ClientStats {
    /// Whether a socket is open now.
    pub connected: bool,
    /// Channels the client holds now (any state).
    pub channels: u64,
    pub connects_total: u64,
    pub connect_failures_total: u64,
    pub socket_losses_total: u64,
    pub heartbeats_sent_total: u64,
    pub heartbeat_timeouts_total: u64,
    pub joins_sent_total: u64,
    pub leaves_sent_total: u64,
    pub token_pushes_total: u64,
    pub frames_in_total: u64,
    pub frames_out_total: u64,
    pub malformed_frames_total: u64,
    pub oversized_frames_total: u64,
    /// Frames dropped because the socket send queue was full.
    pub send_dropped_total: u64,
    /// Inbound messages dropped because their join_ref was not the channel's current one.
    pub stale_dropped_total: u64,
    /// Changes dropped because a channel's change queue was full.
    pub changes_dropped_total: u64,
    pub changes_total: u64,
    /// Round trip of the last answered heartbeat, microseconds (0 before the first).
    pub last_heartbeat_rtt_us: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connected: AtomicU64,
    pub channels: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub socket_losses: AtomicU64,
    pub heartbeats: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
    pub token_pushes: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub malformed: AtomicU64,
    pub oversized: AtomicU64,
    pub send_dropped: AtomicU64,
    pub stale_dropped: AtomicU64,
    pub changes_dropped: AtomicU64,
    pub changes: AtomicU64,
    pub hb_rtt_us: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClientStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            connected: g(&self.connected) == 1,
            channels: g(&self.channels),
            connects_total: g(&self.connects),
            connect_failures_total: g(&self.connect_failures),
            socket_losses_total: g(&self.socket_losses),
            heartbeats_sent_total: g(&self.heartbeats),
            heartbeat_timeouts_total: g(&self.heartbeat_timeouts),
            joins_sent_total: g(&self.joins),
            leaves_sent_total: g(&self.leaves),
            token_pushes_total: g(&self.token_pushes),
            frames_in_total: g(&self.frames_in),
            frames_out_total: g(&self.frames_out),
            malformed_frames_total: g(&self.malformed),
            oversized_frames_total: g(&self.oversized),
            send_dropped_total: g(&self.send_dropped),
            stale_dropped_total: g(&self.stale_dropped),
            changes_dropped_total: g(&self.changes_dropped),
            changes_total: g(&self.changes),
            last_heartbeat_rtt_us: g(&self.hb_rtt_us),
        }
    }
}

/// Boxed halves of a WebSocket, so real sockets and in-memory test pipes are one type.
pub type WsSink = Pin<Box<dyn Sink<tungstenite::Message, Error = tungstenite::Error> + Send>>;
pub type WsStream =
    Pin<Box<dyn Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Send>>;
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<(WsSink, WsStream), String>> + Send>>;

/// Opens WebSockets. [`TcpConnector`] dials for real (rustls for `wss`); tests inject pipes.
pub trait Connector: Send + Sync + 'static {
    /// `url` carries the key: implementations must not log it.
    fn connect(&self, url: String, config: tungstenite::protocol::WebSocketConfig)
    -> ConnectFuture;
}

/// The real connector (tokio-tungstenite, rustls with the webpki roots for `wss`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(
        &self,
        url: String,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> ConnectFuture {
        Box::pin(async move {
            use futures::StreamExt as _;
            match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
                Ok((ws, _response)) => {
                    let (sink, stream) = ws.split();
                    Ok((Box::pin(sink) as WsSink, Box::pin(stream) as WsStream))
                }
                // Only the status and the body's length: the request URL holds the key.
                Err(tungstenite::Error::Http(resp)) => Err(format!(
                    "handshake refused: HTTP {}",
                    resp.status().as_u16()
                )),
                Err(tungstenite::Error::Url(e)) => Err(format!("bad URL: {e}")),
                Err(e) => Err(format!("connect failed: {e}")),
            }
        })
    }
}

pub(crate) enum Command {
    Join {
        topic: String,
        handle_id: u64,
        options: ChannelOptions,
        status: watch::Sender<ChannelStatus>,
        changes: mpsc::Sender<Change>,
        dropped: Arc<AtomicU64>,
        reply: oneshot::Sender<Result<(), RealtimeError>>,
    },
    Leave {
        topic: String,
        handle_id: u64,
        done: Option<oneshot::Sender<()>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
    /// Ask the provider for a token now and push it if it changed.
    RefreshToken,
}

/// Handle to one socket and its channels. Cheap to clone; the connection actor stops when the
/// cancellation token fires or every handle (clients and channels) is gone.
#[derive(Clone)]
pub struct RealtimeClient {
    cmd: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    next_handle: Arc<AtomicU64>,
    /// [`ClientConfig::change_queue`], for the channels this handle opens.
    change_queue: usize,
}

impl fmt::Debug for RealtimeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeClient")
            .field("stats", &self.stats())
            .finish()
    }
}

impl RealtimeClient {
    /// Starts the connection actor on `tracker` (the socket opens when the first channel is
    /// added). `cancel` stops it after leaving every channel and closing the socket.
    pub fn start(
        config: ClientConfig,
        tokens: Arc<dyn TokenProvider>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self::start_with(config, tokens, Arc::new(TcpConnector), tracker, cancel)
    }

    /// [`Self::start`] with an injected [`Connector`].
    pub fn start_with(
        config: ClientConfig,
        tokens: Arc<dyn TokenProvider>,
        connector: Arc<dyn Connector>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.command_queue.max(1));
        let change_queue = config.change_queue.max(1);
        let counters = Arc::new(Counters::default());
        let actor = client::Actor::new(config, tokens, connector, counters.clone(), rx, cancel);
        tracker.spawn(actor.run());
        Self {
            cmd: tx,
            counters,
            next_handle: Arc::new(AtomicU64::new(1)),
            change_queue,
        }
    }

    /// Opens channel `realtime:<name>` with `options`. Returns at once; watch
    /// [`Channel::next`] for `Subscribed`.
    pub async fn channel(
        &self,
        name: &str,
        options: ChannelOptions,
    ) -> Result<Channel, RealtimeError> {
        if name.is_empty() || name.len() > 255 {
            return Err(RealtimeError::InvalidOptions(
                "channel name must be 1 to 255 bytes".into(),
            ));
        }
        let topic = format!("realtime:{name}");
        let handle_id = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let (status_tx, status_rx) = watch::channel(ChannelStatus::Joining);
        let (changes_tx, changes_rx) = mpsc::channel(self.change_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let (reply_tx, reply_rx) = oneshot::channel();
        self.cmd
            .send(Command::Join {
                topic: topic.clone(),
                handle_id,
                options,
                status: status_tx,
                changes: changes_tx,
                dropped: dropped.clone(),
                reply: reply_tx,
            })
            .await
            .map_err(|_| RealtimeError::Shutdown)?;
        reply_rx.await.map_err(|_| RealtimeError::Shutdown)??;
        Ok(Channel {
            topic,
            handle_id,
            status: status_rx,
            changes: changes_rx,
            dropped,
            cmd: self.cmd.clone(),
            terminal_seen: false,
            left: false,
        })
    }

    /// Leaves every channel (`phx_leave`), then closes the socket. Channels end with
    /// [`EndReason::ClientClosed`]. A later [`Self::channel`] opens a new socket.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close { done: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Asks the token provider now and pushes a changed token to every channel.
    pub fn refresh_token(&self) {
        let _ = self.cmd.try_send(Command::RefreshToken);
    }

    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }
}

/// One channel. Dropping it leaves the channel.
pub struct Channel {
    topic: String,
    handle_id: u64,
    status: watch::Receiver<ChannelStatus>,
    changes: mpsc::Receiver<Change>,
    dropped: Arc<AtomicU64>,
    cmd: mpsc::Sender<Command>,
    terminal_seen: bool,
    left: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("topic", &self.topic)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Channel {
    /// `realtime:<name>`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn status(&self) -> ChannelStatus {
        self.status.borrow().clone()
    }

    /// Changes dropped because this channel's queue was full.
    pub fn dropped_changes(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next status change or row change; `None` after the terminal status has been
    /// yielded and the queued changes drained. Status changes come first: a change is never
    /// seen before the `Subscribed` that precedes it.
    pub async fn next(&mut self) -> Option<ChannelEvent> {
        if self.terminal_seen {
            return self.changes.recv().await.map(ChannelEvent::Change);
        }
        tokio::select! {
            biased;
            changed = self.status.changed() => {
                let status = match changed {
                    Ok(()) => self.status.borrow_and_update().clone(),
                    // The actor is gone without a terminal status (shutdown).
                    Err(_) => {
                        let s = self.status.borrow().clone();
                        if s.is_terminal() { s } else {
                            ChannelStatus::Ended { end: EndReason::ClientClosed }
                        }
                    }
                };
                if status.is_terminal() {
                    self.terminal_seen = true;
                }
                Some(ChannelEvent::Status(status))
            }
            change = self.changes.recv() => match change {
                Some(c) => Some(ChannelEvent::Change(c)),
                // The actor dropped the sender: the status is terminal; report it.
                None => {
                    self.terminal_seen = true;
                    let s = self.status.borrow().clone();
                    Some(ChannelEvent::Status(if s.is_terminal() { s } else {
                        ChannelStatus::Ended { end: EndReason::ClientClosed }
                    }))
                }
            },
        }
    }

    /// Waits until the channel is `Subscribed` (true) or ended (false); changes received
    /// meanwhile stay queued.
    pub async fn wait_subscribed(&mut self) -> bool {
        loop {
            let s = self.status.borrow_and_update().clone();
            match s {
                ChannelStatus::Subscribed => return true,
                ChannelStatus::Ended { .. } => return false,
                _ => {}
            }
            if self.status.changed().await.is_err() {
                return *self.status.borrow() == ChannelStatus::Subscribed;
            }
        }
    }

    /// Sends `phx_leave` and forgets the channel; returns once the actor has done so.
    pub async fn leave(mut self) {
        self.left = true;
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Leave {
            topic: self.topic.clone(),
            handle_id: self.handle_id,
            done: Some(tx),
        };
        if self.cmd.send(cmd).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        // If the queue is full the actor still notices: it sweeps channels whose receiver is
        // gone at every heartbeat tick.
        let _ = self.cmd.try_send(Command::Leave {
            topic: std::mem::take(&mut self.topic),
            handle_id: self.handle_id,
            done: None,
        });
    }
}
