//! The connection actor: one task per [`super::RealtimeClient`] that owns the socket and every
//! channel on it. All state lives here, touched by one task, so there are no locks; handles
//! talk to it through the bounded command queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::token::{is_pushable, refresh_in};
use super::{
    Change, ChannelOptions, ChannelStatus, ClientConfig, Command, Connector, Counters, EndReason,
    Frame, PostgresChanges, RealtimeError, TokenProvider, WsSink, WsStream, backoff,
};

const PHOENIX: &str = "phoenix";

/// The write buffer tungstenite keeps in front of the socket; its hard cap is this plus one
/// frame (tungstenite's own default cap is unbounded).
const WRITE_BUFFER: usize = 128 * 1024;

enum Phase {
    /// No socket: joins when one opens.
    Waiting,
    /// Join sent; `deadline` for the reply.
    Joining {
        deadline: Instant,
    },
    /// Join acknowledged; `deadline` for the `system` readiness message.
    Joined {
        deadline: Instant,
    },
    Subscribed,
    /// Crashed (`phx_error`): rejoin at `at`.
    Rejoin {
        at: Instant,
    },
}

struct ChannelState {
    handle_id: u64,
    options: ChannelOptions,
    /// The distinct bindings, in the order sent (each distinct filter once: the server gives
    /// identical ones the same id, so duplicates would misalign the reply; supabase-js #1917).
    distinct: Vec<PostgresChanges>,
    /// For each of `options.postgres_changes`, its index in `distinct`.
    slot: Vec<usize>,
    /// For each of `distinct`, the server's id from the join reply.
    server_ids: Vec<i64>,
    /// Ref of the current join; messages carrying another join_ref are stale.
    join_ref: Option<String>,
    phase: Phase,
    rejoin_attempt: u32,
    status: watch::Sender<ChannelStatus>,
    changes: mpsc::Sender<Change>,
    dropped: Arc<AtomicU64>,
}

impl ChannelState {
    fn set(&self, status: ChannelStatus) {
        self.status.send_replace(status);
    }
}

enum Outcome {
    /// Cancelled or every handle gone: the actor ends.
    Exit,
    /// `close()`: idle until a channel is added.
    Closed,
    /// The socket failed: reconnect with backoff.
    Lost(String),
}

pub(crate) struct Actor {
    cfg: ClientConfig,
    tokens: Arc<dyn TokenProvider>,
    connector: Arc<dyn Connector>,
    counters: Arc<Counters>,
    cmd_rx: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    /// Keyed by topic. Bounded by `cfg.max_channels` (checked on every insert).
    channels: HashMap<String, ChannelState>,
    next_ref: u64,
    reconnect_attempt: u32,
    /// The token the channels were last given; a different one from the provider is pushed.
    token: Option<String>,
    /// When to ask the provider again (`token_refresh_margin` before the token's `exp`).
    token_check_at: Option<Instant>,
    /// The socket's send queue while connected (bounded by `cfg.send_queue`).
    out: Option<mpsc::Sender<Message>>,
    /// Ref and send time of the heartbeat awaiting its reply.
    pending_heartbeat: Option<(String, Instant)>,
}

impl Actor {
    pub(crate) fn new(
        cfg: ClientConfig,
        tokens: Arc<dyn TokenProvider>,
        connector: Arc<dyn Connector>,
        counters: Arc<Counters>,
        cmd_rx: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            cfg,
            tokens,
            connector,
            counters,
            cmd_rx,
            cancel,
            channels: HashMap::new(),
            next_ref: 0,
            reconnect_attempt: 0,
            token: None,
            token_check_at: None,
            out: None,
            pending_heartbeat: None,
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        let max = self.cfg.max_frame_bytes;
        WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(WRITE_BUFFER + max + 1024)
    }

    pub(crate) async fn run(mut self) {
        let cancel = self.cancel.clone();
        // When the next connect attempt may start (backoff after a failure).
        let mut retry_at: Option<Instant> = None;
        loop {
            if retry_at.is_some_and(|t| t <= Instant::now()) {
                retry_at = None;
            }
            if self.channels.is_empty() || retry_at.is_some() {
                // Idle (no channel wants a socket) or backing off: only commands and the timer.
                tokio::select! {
                    _ = cancel.cancelled() => {
                        self.end_all(EndReason::ClientClosed, false);
                        return;
                    }
                    cmd = self.cmd_rx.recv() => match cmd {
                        None => return,
                        Some(Command::Close { done }) => {
                            self.end_all(EndReason::ClientClosed, false);
                            retry_at = None;
                            let _ = done.send(());
                        }
                        Some(c) => self.command(c),
                    },
                    _ = sleep_opt(retry_at) => retry_at = None,
                }
                continue;
            }

            let connect = tokio::time::timeout(
                self.cfg.connect_timeout,
                self.connector
                    .connect(self.cfg.socket_url(), self.ws_config()),
            );
            tokio::pin!(connect);
            let result = loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        self.end_all(EndReason::ClientClosed, false);
                        return;
                    }
                    r = &mut connect => break Some(r),
                    cmd = self.cmd_rx.recv() => match cmd {
                        None => return,
                        Some(Command::Close { done }) => {
                            self.end_all(EndReason::ClientClosed, false);
                            let _ = done.send(());
                            break None;
                        }
                        Some(c) => self.command(c),
                    },
                }
            };
            let Some(result) = result else { continue };
            let failure = match result {
                Ok(Ok((sink, stream))) => {
                    Counters::inc(&self.counters.connects);
                    tracing::debug!(channels = self.channels.len(), "realtime socket open");
                    match self.connected(sink, stream).await {
                        Outcome::Exit => return,
                        Outcome::Closed => None,
                        Outcome::Lost(reason) => {
                            Counters::inc(&self.counters.socket_losses);
                            Some(reason)
                        }
                    }
                }
                Ok(Err(e)) => {
                    Counters::inc(&self.counters.connect_failures);
                    Some(e)
                }
                Err(_) => {
                    Counters::inc(&self.counters.connect_failures);
                    Some("connect timed out".to_string())
                }
            };
            if let Some(reason) = failure {
                let delay = backoff(
                    &self.cfg.reconnect_backoff,
                    self.reconnect_attempt,
                    self.cfg.jitter,
                );
                self.reconnect_attempt = self.reconnect_attempt.saturating_add(1);
                tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "realtime socket down");
                self.errored_all(&reason);
                retry_at = Some(Instant::now() + delay);
            }
        }
    }

    async fn connected(&mut self, sink: WsSink, mut stream: WsStream) -> Outcome {
        let cancel = self.cancel.clone();
        let (out_tx, out_rx) = mpsc::channel(self.cfg.send_queue.max(1));
        let writer = write_loop(sink, out_rx);
        tokio::pin!(writer);
        self.out = Some(out_tx);
        self.counters.connected.store(1, Ordering::Relaxed);
        self.pending_heartbeat = None;
        // Every channel (re)joins with its stored options and the provider's current token.
        self.token = None;
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for topic in topics {
            self.send_join(&topic);
        }
        let period = self.cfg.heartbeat_interval;
        // Fixed schedule from the socket's opening; inbound traffic never moves it.
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);

        let outcome = loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.leave_all_and_close(writer.as_mut(), &mut stream).await;
                    break Outcome::Exit;
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    None => {
                        self.leave_all_and_close(writer.as_mut(), &mut stream).await;
                        break Outcome::Exit;
                    }
                    Some(Command::Close { done }) => {
                        self.leave_all_and_close(writer.as_mut(), &mut stream).await;
                        let _ = done.send(());
                        break Outcome::Closed;
                    }
                    Some(c) => self.command(c),
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Binary(_))) => {
                        // 2.0.0 binary frames carry user broadcast only, which no channel here joins.
                        Counters::inc(&self.counters.frames_in);
                    }
                    Some(Ok(Message::Close(_))) => break Outcome::Lost("server closed the socket".into()),
                    Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        Counters::inc(&self.counters.oversized);
                        break Outcome::Lost(format!("frame refused: {e}"));
                    }
                    Some(Err(e)) => break Outcome::Lost(format!("socket read failed: {e}")),
                    None => break Outcome::Lost("socket ended".into()),
                },
                _ = heartbeat.tick() => {
                    if self.pending_heartbeat.is_some() {
                        Counters::inc(&self.counters.heartbeat_timeouts);
                        break Outcome::Lost("heartbeat not answered".into());
                    }
                    self.send_heartbeat();
                    self.sweep_orphans();
                    self.check_token();
                }
                _ = sleep_opt(deadline) => self.on_timers(),
                reason = &mut writer => break Outcome::Lost(reason),
            }
        };
        self.out = None;
        self.pending_heartbeat = None;
        self.counters.connected.store(0, Ordering::Relaxed);
        outcome
    }

    /// `phx_leave` for every channel, a close frame, then waits (bounded) for both to be
    /// written and for the server's close reply.
    async fn leave_all_and_close(
        &mut self,
        writer: std::pin::Pin<&mut impl Future<Output = String>>,
        stream: &mut WsStream,
    ) {
        self.end_all(EndReason::ClientClosed, true);
        if let Some(out) = self.out.take() {
            let _ = out.try_send(Message::Close(None));
        }
        let _ = tokio::time::timeout(self.cfg.close_timeout, async {
            writer.await;
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                topic,
                handle_id,
                options,
                status,
                changes,
                dropped,
                reply,
            } => {
                let res = self.add_channel(&topic, handle_id, options, status, changes, dropped);
                let ok = res.is_ok();
                if reply.send(res).is_err() {
                    // The caller gave up (its future was dropped): nobody owns this channel.
                    if ok {
                        self.end(&topic, EndReason::Left, false);
                    }
                } else if ok && self.out.is_some() {
                    self.send_join(&topic);
                }
            }
            Command::Leave {
                topic,
                handle_id,
                done,
            } => {
                if self
                    .channels
                    .get(&topic)
                    .is_some_and(|c| c.handle_id == handle_id)
                {
                    self.end(&topic, EndReason::Left, true);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::RefreshToken => self.check_token(),
            // Handled by the loops, which own the socket.
            Command::Close { done } => {
                let _ = done.send(());
            }
        }
    }

    fn add_channel(
        &mut self,
        topic: &str,
        handle_id: u64,
        options: ChannelOptions,
        status: watch::Sender<ChannelStatus>,
        changes: mpsc::Sender<Change>,
        dropped: Arc<AtomicU64>,
    ) -> Result<(), RealtimeError> {
        if let Some(existing) = self.channels.get(topic) {
            if existing.changes.is_closed() {
                self.end(topic, EndReason::Left, true);
            } else {
                return Err(RealtimeError::TopicInUse(
                    topic.trim_start_matches("realtime:").to_string(),
                ));
            }
        }
        if self.channels.len() >= self.cfg.max_channels {
            return Err(RealtimeError::TooManyChannels(self.cfg.max_channels));
        }
        if let Some(b) = options
            .postgres_changes
            .iter()
            .find(|b| b.schema.is_empty())
        {
            return Err(RealtimeError::InvalidOptions(format!(
                "binding {b:?} has no schema"
            )));
        }
        let mut distinct: Vec<PostgresChanges> = Vec::new();
        let mut slot = Vec::with_capacity(options.postgres_changes.len());
        for b in &options.postgres_changes {
            match distinct.iter().position(|d| d == b) {
                Some(i) => slot.push(i),
                None => {
                    slot.push(distinct.len());
                    distinct.push(b.clone());
                }
            }
        }
        status.send_replace(ChannelStatus::Joining);
        self.channels.insert(
            topic.to_string(),
            ChannelState {
                handle_id,
                options,
                distinct,
                slot,
                server_ids: Vec::new(),
                join_ref: None,
                phase: Phase::Waiting,
                rejoin_attempt: 0,
                status,
                changes,
                dropped,
            },
        );
        self.sync_count();
        Ok(())
    }

    fn sync_count(&self) {
        self.counters
            .channels
            .store(self.channels.len() as u64, Ordering::Relaxed);
    }

    fn make_ref(&mut self) -> String {
        self.next_ref = self.next_ref.wrapping_add(1);
        self.next_ref.to_string()
    }

    /// Queues a frame; a full queue drops it (counted). Returns whether it was queued.
    fn send(&self, frame: &Frame) -> bool {
        let Some(out) = &self.out else { return false };
        let text = frame.encode(self.cfg.serializer);
        if text.len() > self.cfg.max_frame_bytes {
            Counters::inc(&self.counters.oversized);
            tracing::warn!(topic = %frame.topic, event = %frame.event, bytes = text.len(), "outbound frame over the limit: not sent");
            return false;
        }
        match out.try_send(Message::Text(text.into())) {
            Ok(()) => {
                Counters::inc(&self.counters.frames_out);
                true
            }
            Err(TrySendError::Full(_)) => {
                Counters::inc(&self.counters.send_dropped);
                tracing::debug!(topic = %frame.topic, event = %frame.event, "send queue full: frame dropped");
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// The provider's token, if it may be sent; a new one is pushed to the joined channels.
    fn current_token(&mut self) -> Option<String> {
        let token = self.tokens.access_token().filter(|t| is_pushable(t));
        if token != self.token {
            self.adopt_token(token.clone());
        }
        token
    }

    fn adopt_token(&mut self, token: Option<String>) {
        let margin = self.cfg.token_refresh_margin;
        self.token_check_at = token
            .as_deref()
            .and_then(|t| refresh_in(t, margin))
            .map(|d| {
                // Already within the margin: ask again soon rather than spin.
                let d = if d.is_zero() {
                    (margin / 4).max(Duration::from_millis(100))
                } else {
                    d
                };
                Instant::now() + d
            });
        let Some(t) = token.as_deref() else {
            self.token = None;
            return;
        };
        let pushes: Vec<Frame> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Joined { .. } | Phase::Subscribed))
            .map(|(topic, c)| Frame {
                join_ref: c.join_ref.clone(),
                msg_ref: None,
                topic: topic.clone(),
                event: "access_token".into(),
                payload: json!({ "access_token": t }),
            })
            .collect();
        for mut f in pushes {
            f.msg_ref = Some(self.make_ref());
            if self.send(&f) {
                Counters::inc(&self.counters.token_pushes);
            }
        }
        self.token = token;
    }

    fn check_token(&mut self) {
        let token = self.tokens.access_token().filter(|t| is_pushable(t));
        if token != self.token {
            self.adopt_token(token);
        } else if self.token_check_at.is_some_and(|t| t <= Instant::now()) {
            // Same token and still due: reschedule (the provider has nothing newer yet).
            self.adopt_token(token);
        }
    }

    fn send_join(&mut self, topic: &str) {
        let token = self.current_token();
        let join_ref = self.make_ref();
        let deadline = Instant::now() + self.cfg.join_timeout;
        let Some(ch) = self.channels.get_mut(topic) else {
            return;
        };
        let mut payload = json!({
            "config": {
                "broadcast": { "ack": false, "self": false },
                "presence": { "key": "", "enabled": false },
                "postgres_changes": ch.distinct,
                "private": ch.options.private,
            }
        });
        if let Some(t) = token {
            payload["access_token"] = Value::String(t);
        }
        ch.join_ref = Some(join_ref.clone());
        ch.server_ids.clear();
        ch.phase = Phase::Joining { deadline };
        ch.set(ChannelStatus::Joining);
        let frame = Frame {
            join_ref: Some(join_ref.clone()),
            msg_ref: Some(join_ref),
            topic: topic.to_string(),
            event: "phx_join".into(),
            payload,
        };
        if self.send(&frame) {
            Counters::inc(&self.counters.joins);
        }
    }

    fn send_heartbeat(&mut self) {
        let r = self.make_ref();
        let frame = Frame {
            join_ref: None,
            msg_ref: Some(r.clone()),
            topic: PHOENIX.into(),
            event: "heartbeat".into(),
            payload: json!({}),
        };
        // Pending even when the queue was full: a socket that cannot take a heartbeat is dead.
        self.pending_heartbeat = Some((r, Instant::now()));
        if self.send(&frame) {
            Counters::inc(&self.counters.heartbeats);
        }
    }

    /// Forgets a channel, tells its owner, and leaves it on the server when it may be joined.
    fn end(&mut self, topic: &str, reason: EndReason, leave: bool) {
        let Some(ch) = self.channels.remove(topic) else {
            return;
        };
        // Give back the table after a burst (e.g. 1,000 channels then none).
        if self.channels.capacity() > 64 && self.channels.len() < self.channels.capacity() / 4 {
            self.channels.shrink_to_fit();
        }
        self.sync_count();
        if leave && let Some(join_ref) = ch.join_ref.clone() {
            let frame = Frame {
                join_ref: Some(join_ref),
                msg_ref: Some(self.make_ref()),
                topic: topic.to_string(),
                event: "phx_leave".into(),
                payload: json!({}),
            };
            if self.send(&frame) {
                Counters::inc(&self.counters.leaves);
            }
        }
        tracing::debug!(topic, ?reason, "channel ended");
        ch.set(ChannelStatus::Ended { end: reason });
    }

    fn end_all(&mut self, reason: EndReason, leave: bool) {
        let topics: Vec<String> = self.channels.keys().cloned().collect();
        for t in topics {
            self.end(&t, reason.clone(), leave);
        }
    }

    /// The socket is gone: every channel waits for the next one and rejoins then.
    fn errored_all(&mut self, reason: &str) {
        for ch in self.channels.values_mut() {
            ch.join_ref = None;
            ch.phase = Phase::Waiting;
            ch.set(ChannelStatus::Errored {
                reason: reason.to_string(),
            });
        }
    }

    /// Channels whose owner dropped its handle while the command queue was full.
    fn sweep_orphans(&mut self) {
        let orphans: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.changes.is_closed())
            .map(|(t, _)| t.clone())
            .collect();
        for t in orphans {
            self.end(&t, EndReason::Left, true);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.channels
            .values()
            .filter_map(|c| match c.phase {
                Phase::Joining { deadline } | Phase::Joined { deadline } => Some(deadline),
                Phase::Rejoin { at } => Some(at),
                Phase::Waiting | Phase::Subscribed => None,
            })
            .chain(self.token_check_at)
            .min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let mut timed_out = Vec::new();
        let mut rejoin = Vec::new();
        for (t, c) in &self.channels {
            match c.phase {
                Phase::Joining { deadline } | Phase::Joined { deadline } if deadline <= now => {
                    timed_out.push(t.clone());
                }
                Phase::Rejoin { at } if at <= now => rejoin.push(t.clone()),
                _ => {}
            }
        }
        for t in timed_out {
            self.end(&t, EndReason::TimedOut, true);
        }
        for t in rejoin {
            self.send_join(&t);
        }
        if self.token_check_at.is_some_and(|t| t <= now) {
            self.check_token();
        }
    }

    fn on_text(&mut self, text: &str) {
        Counters::inc(&self.counters.frames_in);
        let frame = match Frame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                Counters::inc(&self.counters.malformed);
                tracing::warn!(error = %e, bytes = text.len(), "malformed realtime frame ignored");
                return;
            }
        };
        if frame.topic == PHOENIX {
            if frame.event == "phx_reply"
                && let Some((r, sent)) = &self.pending_heartbeat
                && frame.msg_ref.as_deref() == Some(r.as_str())
            {
                let rtt = sent.elapsed().as_micros() as u64;
                self.counters.hb_rtt_us.store(rtt, Ordering::Relaxed);
                self.pending_heartbeat = None;
                // The socket has proven itself: the next loss starts the backoff afresh.
                self.reconnect_attempt = 0;
            }
            return;
        }
        let topic = frame.topic.clone();
        let Some(ch) = self.channels.get(&topic) else {
            return; // a channel already left or ended
        };
        if let Some(jr) = &frame.join_ref
            && ch.join_ref.as_ref() != Some(jr)
        {
            Counters::inc(&self.counters.stale_dropped);
            return;
        }
        match frame.event.as_str() {
            "phx_reply"
                if frame.msg_ref.is_some()
                    && frame.msg_ref == ch.join_ref
                    && matches!(ch.phase, Phase::Joining { .. }) =>
            {
                self.on_join_reply(&topic, frame.payload);
            }
            "phx_error"
                if matches!(
                    ch.phase,
                    Phase::Joining { .. } | Phase::Joined { .. } | Phase::Subscribed
                ) =>
            {
                self.on_channel_error(&topic);
            }
            "phx_close" => self.end(&topic, EndReason::ServerClosed, false),
            "system" => self.on_system(&topic, &frame.payload),
            "postgres_changes" => self.on_change(&topic, frame.payload),
            _ => {} // presence, broadcast: not joined by this client
        }
    }

    fn on_channel_error(&mut self, topic: &str) {
        let jitter = self.cfg.jitter;
        let Some(ch) = self.channels.get_mut(topic) else {
            return;
        };
        let delay = backoff(&self.cfg.rejoin_backoff, ch.rejoin_attempt, jitter);
        ch.rejoin_attempt = ch.rejoin_attempt.saturating_add(1);
        ch.join_ref = None;
        ch.phase = Phase::Rejoin {
            at: Instant::now() + delay,
        };
        ch.set(ChannelStatus::Errored {
            reason: "channel crashed (phx_error)".into(),
        });
        tracing::warn!(
            topic,
            rejoin_in_ms = delay.as_millis() as u64,
            "channel error"
        );
    }

    fn on_join_reply(&mut self, topic: &str, payload: Value) {
        let status = payload.get("status").and_then(Value::as_str).unwrap_or("");
        let response = payload.get("response").cloned().unwrap_or(Value::Null);
        match status {
            "ok" => {
                let Some(ch) = self.channels.get_mut(topic) else {
                    return;
                };
                let got = response
                    .get("postgres_changes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                match match_bindings(&ch.distinct, &got) {
                    Ok(ids) => {
                        ch.server_ids = ids;
                        ch.rejoin_attempt = 0;
                        if ch.distinct.is_empty() {
                            ch.phase = Phase::Subscribed;
                            ch.set(ChannelStatus::Subscribed);
                        } else {
                            ch.phase = Phase::Joined {
                                deadline: Instant::now() + self.cfg.subscribe_timeout,
                            };
                            ch.set(ChannelStatus::Joined);
                        }
                        self.reconnect_attempt = 0;
                    }
                    Err(why) => self.end(topic, EndReason::BindingMismatch(why), true),
                }
            }
            "error" => {
                let reason = response
                    .get("reason")
                    .and_then(Value::as_str)
                    .map_or_else(|| response.to_string(), str::to_owned);
                self.end(topic, EndReason::JoinRejected(reason), false);
            }
            other => self.end(
                topic,
                EndReason::JoinRejected(format!("unexpected join reply status {other:?}")),
                true,
            ),
        }
    }

    fn on_system(&mut self, topic: &str, payload: &Value) {
        let status = payload.get("status").and_then(Value::as_str);
        let extension = payload.get("extension").and_then(Value::as_str);
        let message = payload.get("message").and_then(Value::as_str).unwrap_or("");
        match status {
            Some("ok") if extension == Some("postgres_changes") => {
                if let Some(ch) = self.channels.get_mut(topic)
                    && matches!(ch.phase, Phase::Joined { .. })
                {
                    ch.phase = Phase::Subscribed;
                    ch.set(ChannelStatus::Subscribed);
                }
            }
            Some("error") => {
                tracing::warn!(topic, message, "realtime system error");
                self.end(topic, EndReason::SystemError(message.to_string()), true);
            }
            _ => {}
        }
    }

    fn on_change(&mut self, topic: &str, mut payload: Value) {
        let Some(ch) = self.channels.get(topic) else {
            return;
        };
        if !matches!(ch.phase, Phase::Joined { .. } | Phase::Subscribed) {
            return;
        }
        let ids: Vec<i64> = payload
            .get("ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let mut data = payload.get_mut("data").map(Value::take).unwrap_or_default();
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| data.get("eventType").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let bindings: Vec<usize> = ch
            .options
            .postgres_changes
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                ch.server_ids
                    .get(ch.slot[*i])
                    .is_some_and(|id| ids.contains(id))
                    && b.event.matches(&kind)
            })
            .map(|(i, _)| i)
            .collect();
        if bindings.is_empty() {
            return;
        }
        let mut take_str = |k: &str| match data.get_mut(k).map(Value::take) {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let schema = take_str("schema");
        let table = take_str("table");
        let commit_timestamp = take_str("commit_timestamp");
        let mut take = |k: &str| data.get_mut(k).map(Value::take).filter(|v| !v.is_null());
        let change = Change {
            bindings,
            schema,
            table,
            kind,
            commit_timestamp,
            record: take("record"),
            old_record: take("old_record"),
            errors: take("errors"),
        };
        Counters::inc(&self.counters.changes);
        match ch.changes.try_send(change) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                ch.dropped.fetch_add(1, Ordering::Relaxed);
                Counters::inc(&self.counters.changes_dropped);
            }
            Err(TrySendError::Closed(_)) => self.end(topic, EndReason::Left, true),
        }
    }
}

/// The server's ids for the bindings sent, checked pairwise (realtime-js does the same and
/// errors the channel on a mismatch rather than dispatching to the wrong binding).
fn match_bindings(sent: &[PostgresChanges], got: &[Value]) -> Result<Vec<i64>, String> {
    if sent.len() != got.len() {
        return Err(format!(
            "sent {} bindings, server answered {}",
            sent.len(),
            got.len()
        ));
    }
    sent.iter()
        .zip(got)
        .map(|(s, g)| {
            let field = |k: &str| g.get(k).and_then(Value::as_str);
            let same_event =
                field("event").is_some_and(|e| e.eq_ignore_ascii_case(s.event.as_str()));
            let same = same_event
                && field("schema") == Some(s.schema.as_str())
                && (s.table.is_none() || field("table") == s.table.as_deref())
                && (s.filter.is_none() || field("filter") == s.filter.as_deref());
            let id = g.get("id").and_then(Value::as_i64);
            match (same, id) {
                (true, Some(id)) => Ok(id),
                _ => Err(format!("binding {s:?} answered with {g}")),
            }
        })
        .collect()
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes queued frames, batching what is already queued into one flush. Returns why it
/// stopped: a write error, or the queue closing (after which it closes the sink).
async fn write_loop(mut sink: WsSink, mut rx: mpsc::Receiver<Message>) -> String {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = sink.feed(msg).await {
            return format!("socket write failed: {e}");
        }
        while let Ok(msg) = rx.try_recv() {
            if let Err(e) = sink.feed(msg).await {
                return format!("socket write failed: {e}");
            }
        }
        if let Err(e) = sink.flush().await {
            return format!("socket write failed: {e}");
        }
    }
    let _ = sink.close().await;
    "send queue closed".into()
}
