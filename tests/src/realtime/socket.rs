//! One WebSocket: the handshake checks, the Phoenix socket (`Phoenix.Socket` message handling)
//! and Realtime's channel rules (`RealtimeWeb.RealtimeChannel`).

use super::auth::{Claims, TokenError, now_secs};
use super::feed::{self, Subscription};
use super::params::{self, Binding};
use super::protocol::{self, Inbound, Vsn};
use super::{Counters, Shared};
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The reason given to joins refused by [`super::Faults::fail_next_joins`]: what Realtime answers
/// when it cannot reach the project database.
pub const JOIN_FAULT_REASON: &str =
    "UnableToConnectToProject: Realtime was unable to connect to the project database";

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `GET /websocket`: Realtime's `UserSocket.connect` checks, then the upgrade.
pub(crate) async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if shared.cancel.is_cancelled() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Realtime is restarting, please standby",
        );
    }
    if shared.faults.refusing() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Error connecting to Realtime",
        );
    }
    let Some(vsn) = Vsn::parse(query.get("vsn").map(String::as_str)) else {
        return json_error(StatusCode::FORBIDDEN, "Unsupported serializer version");
    };
    let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let Some(apikey) = header_key.or(query.get("apikey").map(String::as_str)) else {
        return json_error(StatusCode::UNAUTHORIZED, "API key is missing");
    };
    if let Err(e) = shared.verifier.verify(apikey) {
        return json_error(StatusCode::UNAUTHORIZED, e.handshake_error());
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let apikey = apikey.to_owned();
    let limit = shared.opts.max_frame_bytes;
    upgrade
        .max_frame_size(limit)
        .max_message_size(limit)
        .on_upgrade(move |ws| {
            let tracker = shared.tracker.clone();
            tracker.track_future(run(shared, ws, vsn, apikey))
        })
}

/// A socket's bounded send side, shared with the change feed.
#[derive(Clone)]
pub(crate) struct Outbox {
    pub vsn: Vsn,
    tx: mpsc::Sender<Message>,
    /// Cancels the socket.
    cancel: CancellationToken,
    counters: Arc<Counters>,
    /// Set once, when the queue overflowed; the socket is then being dropped.
    overflowed: Arc<AtomicBool>,
}

impl Outbox {
    /// Queues a frame. A full queue means the client is not reading: the socket is dropped and
    /// counted. Returns whether the frame was queued.
    pub fn push(&self, frame: String) -> bool {
        match self.tx.try_send(Message::Text(frame.into())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    Counters::bump(&self.counters.slow_disconnects_total);
                    tracing::warn!("realtime stand-in: client too slow, dropping its socket");
                }
                self.cancel.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A `system` message of a channel (Phoenix `push`: carries the channel's `join_ref`).
pub(crate) fn system_frame(
    vsn: Vsn,
    topic: &str,
    join_ref: Option<&str>,
    extension: &str,
    ok: bool,
    message: &str,
) -> String {
    let payload = json!({
        "extension": extension,
        "status": if ok { "ok" } else { "error" },
        "message": message,
        "channel": topic.strip_prefix("realtime:").unwrap_or(topic),
    });
    protocol::encode(vsn, join_ref, None, topic, "system", &payload.to_string())
}

/// `phx_close` for a channel: `ref` and `join_ref` are both the join's ref (Phoenix `encode_close`).
fn close_frame(vsn: Vsn, topic: &str, join_ref: Option<&str>) -> String {
    protocol::encode(vsn, join_ref, join_ref, topic, "phx_close", "{}")
}

/// One joined channel.
struct Channel {
    /// Unique across sockets; keys the channel's subscription in the feed.
    uid: u64,
    join_ref: Option<String>,
    /// The token the channel was joined (or last refreshed) with.
    token: String,
    /// Its `exp`; the channel shuts down when it passes, like Realtime's `confirm_token` timer.
    exp: i64,
}

/// What the rest of the stand-in sees of a socket.
pub(crate) struct SocketShared {
    pub out: Outbox,
    /// The handshake's key: the channel token when a join brings none.
    apikey: String,
    /// Joined channels by topic (at most `max_channels_per_socket`).
    channels: Mutex<HashMap<String, Channel>>,
    /// Wakes the socket loop to recompute its token-expiry deadline.
    timers: Notify,
}

impl SocketShared {
    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }

    /// Closes the socket at once, without a close frame (like a lost connection).
    pub fn drop_now(&self) {
        self.out.cancel.cancel();
    }

    /// Ends the channels on `topic` (all when `None`) with `phx_close` (`crash: false`: the
    /// server closed them) or `phx_error` (`crash: true`: the channel process died, the client
    /// rejoins); returns how many.
    pub fn end_channels(&self, shared: &Shared, topic: Option<&str>, crash: bool) -> usize {
        let mut channels = self.channels.lock();
        let topics: Vec<String> = channels
            .keys()
            .filter(|t| topic.is_none_or(|want| want == t.as_str()))
            .cloned()
            .collect();
        for t in &topics {
            if let Some(ch) = channels.remove(t) {
                feed::unsubscribe(shared, ch.uid);
                let join_ref = ch.join_ref.as_deref();
                self.out.push(if crash {
                    // Phoenix `encode_on_exit`.
                    let payload = r#"{"reason":"channel_crash"}"#;
                    protocol::encode(self.out.vsn, join_ref, join_ref, t, "phx_error", payload)
                } else {
                    close_frame(self.out.vsn, t, join_ref)
                });
            }
        }
        topics.len()
    }

    /// Ends every channel as an expired token does; returns how many.
    pub fn expire_all(&self, shared: &Shared) -> usize {
        let message = TokenError::Expired { ago: 0 }.message();
        let mut channels = self.channels.lock();
        let n = channels.len();
        for (topic, ch) in channels.drain() {
            self.shutdown_channel(shared, &topic, ch, &message);
        }
        n
    }

    /// Realtime's `shutdown_response`: a `system` error, then the channel stops (`phx_close`).
    fn shutdown_channel(&self, shared: &Shared, topic: &str, ch: Channel, message: &str) {
        feed::unsubscribe(shared, ch.uid);
        let vsn = self.out.vsn;
        let join_ref = ch.join_ref.as_deref();
        self.out
            .push(system_frame(vsn, topic, join_ref, "system", false, message));
        self.out.push(close_frame(vsn, topic, join_ref));
    }

    /// Ends the channels whose token has expired; returns the next expiry.
    fn expire_due(&self, shared: &Shared) -> Option<i64> {
        let now = now_secs();
        let mut channels = self.channels.lock();
        let due: Vec<String> = channels
            .iter()
            .filter(|(_, ch)| ch.exp <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            if let Some(ch) = channels.remove(&topic) {
                let message = TokenError::Expired { ago: now - ch.exp }.message();
                self.shutdown_channel(shared, &topic, ch, &message);
            }
        }
        channels.values().map(|ch| ch.exp).min()
    }
}

/// Removes the socket and its channels from the stand-in however its task ends.
struct SocketGuard {
    shared: Arc<Shared>,
    id: u64,
    sock: Arc<SocketShared>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.shared.sockets.lock().remove(&self.id);
        for (_, ch) in self.sock.channels.lock().drain() {
            feed::unsubscribe(&self.shared, ch.uid);
        }
        self.sock.out.cancel.cancel();
    }
}

async fn run(shared: Arc<Shared>, ws: WebSocket, vsn: Vsn, apikey: String) {
    let id = shared.next_id();
    let cancel = shared.cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<Message>(shared.opts.outbound_queue.max(1));
    let out = Outbox {
        vsn,
        tx,
        cancel: cancel.clone(),
        counters: shared.counters.clone(),
        overflowed: Arc::new(AtomicBool::new(false)),
    };
    let sock = Arc::new(SocketShared {
        out,
        apikey,
        channels: Mutex::new(HashMap::new()),
        timers: Notify::new(),
    });
    shared.sockets.lock().insert(id, sock.clone());
    let _guard = SocketGuard {
        shared: shared.clone(),
        id,
        sock: sock.clone(),
    };

    let (mut sink, mut stream) = ws.split();
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let idle = shared.opts.idle_timeout;
        let mut idle_at = Instant::now() + idle;
        let mut next_exp: Option<i64> = None;
        loop {
            let exp_at = next_exp.map(|exp| {
                let wait = u64::try_from(exp - now_secs()).unwrap_or(0);
                Instant::now() + Duration::from_secs(wait)
            });
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    idle_at = Instant::now() + idle;
                    match frame {
                        Message::Text(text) => {
                            if let Some(msg) = protocol::decode(vsn, text.as_str()) {
                                handle(&shared, &sock, msg).await;
                            }
                        }
                        Message::Close(_) => break,
                        // Pings are answered by the WebSocket layer; binary frames are user
                        // broadcasts, which the stand-in does not serve.
                        Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
                    }
                    next_exp = sock.channels.lock().values().map(|ch| ch.exp).min();
                }
                // Phoenix drops a socket that stays silent past its timeout.
                () = tokio::time::sleep_until(idle_at) => break,
                () = sleep_until_opt(exp_at) => next_exp = sock.expire_due(&shared),
                () = sock.timers.notified() => {
                    next_exp = sock.channels.lock().values().map(|ch| ch.exp).min();
                }
            }
        }
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = writer => {}
        () = reader => {}
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One inbound message (`Phoenix.Socket.handle_in`, then the channel's `handle_in`).
async fn handle(shared: &Arc<Shared>, sock: &Arc<SocketShared>, msg: Inbound) {
    let vsn = sock.out.vsn;
    if msg.topic == "phoenix" && msg.event == "heartbeat" {
        Counters::bump(&shared.counters.heartbeats_total);
        if !shared.faults.heartbeats_stalled() {
            sock.out.push(protocol::reply(
                vsn,
                None,
                msg.ref_.as_deref(),
                "phoenix",
                true,
                &json!({}),
            ));
        }
        return;
    }
    match msg.event.as_str() {
        "phx_join" => join(shared, sock, msg).await,
        "phx_leave" => leave(shared, sock, &msg),
        _ => {
            let mut channels = sock.channels.lock();
            let Some(ch) = channels.get_mut(&msg.topic) else {
                drop(channels);
                unmatched(sock, &msg);
                return;
            };
            // A message for an earlier join of this topic is stale: ignore it.
            if msg.join_ref.is_some() && msg.join_ref != ch.join_ref {
                return;
            }
            match msg.event.as_str() {
                "access_token" => {
                    if let Err(message) = refresh_token(shared, sock, ch, &msg.payload) {
                        let ch = channels.remove(&msg.topic).expect("present");
                        drop(channels);
                        sock.shutdown_channel(shared, &msg.topic, ch, &message);
                    }
                }
                "presence" => {
                    let join_ref = ch.join_ref.clone();
                    drop(channels);
                    let reply = protocol::reply(
                        vsn,
                        join_ref.as_deref(),
                        msg.ref_.as_deref(),
                        &msg.topic,
                        true,
                        &json!({}),
                    );
                    sock.out.push(reply);
                }
                // Broadcasts and anything else: Realtime answers nothing.
                _ => {}
            }
        }
    }
}

/// Phoenix's `encode_ignore`: a reply with no `join_ref`.
fn unmatched(sock: &SocketShared, msg: &Inbound) {
    let reply = protocol::reply(
        sock.out.vsn,
        None,
        msg.ref_.as_deref(),
        &msg.topic,
        false,
        &json!({ "reason": "unmatched topic" }),
    );
    sock.out.push(reply);
}

/// Handles `access_token` on a joined channel (Realtime ignores `sb_` keys, the same token and
/// no token). `Err` is the message the channel shuts down with when the new token is refused.
fn refresh_token(
    shared: &Shared,
    sock: &SocketShared,
    ch: &mut Channel,
    payload: &Value,
) -> Result<(), String> {
    let Some(token) = payload.get("access_token").and_then(Value::as_str) else {
        return Ok(());
    };
    if token.starts_with("sb_") || token == ch.token {
        return Ok(());
    }
    let claims = shared
        .verifier
        .verify(token)
        .map_err(|e| e.refresh_message())?;
    ch.token = token.to_owned();
    ch.exp = claims.exp;
    feed::resubscribe(shared, ch.uid, &claims);
    sock.timers.notify_one();
    Ok(())
}

fn leave(shared: &Shared, sock: &SocketShared, msg: &Inbound) {
    Counters::bump(&shared.counters.leaves_total);
    let vsn = sock.out.vsn;
    let mut channels = sock.channels.lock();
    match channels.get(&msg.topic) {
        Some(ch) if msg.join_ref.is_none() || msg.join_ref == ch.join_ref => {
            let ch = channels.remove(&msg.topic).expect("present");
            drop(channels);
            feed::unsubscribe(shared, ch.uid);
            let join_ref = ch.join_ref.as_deref();
            let reply = protocol::reply(
                vsn,
                join_ref,
                msg.ref_.as_deref(),
                &msg.topic,
                true,
                &json!({}),
            );
            sock.out.push(reply);
            // The channel stops with `{:shutdown, :left}`, which Phoenix reports as `phx_close`.
            sock.out.push(close_frame(vsn, &msg.topic, join_ref));
        }
        // The client raced a server close: Phoenix answers nothing.
        Some(_) => {}
        None => {
            drop(channels);
            let reply = protocol::reply(
                vsn,
                msg.join_ref.as_deref(),
                msg.ref_.as_deref(),
                &msg.topic,
                true,
                &json!({}),
            );
            sock.out.push(reply);
        }
    }
}

/// A join that passed every check.
struct Accepted {
    token: String,
    claims: Claims,
    /// The join reply's `postgres_changes`: each entry as sent, plus its `id`.
    reply: Vec<Value>,
    /// The parsed entries, or the parse error Realtime pushes as a `system` error.
    bindings: Result<Vec<Binding>, String>,
}

async fn join(shared: &Arc<Shared>, sock: &Arc<SocketShared>, msg: Inbound) {
    let vsn = sock.out.vsn;
    let topic = msg.topic.as_str();
    // A second join of a joined topic closes the first (Phoenix `shutdown_duplicate_channel`).
    let previous = sock.channels.lock().remove(topic);
    if let Some(old) = previous {
        feed::unsubscribe(shared, old.uid);
        sock.out
            .push(close_frame(vsn, topic, old.join_ref.as_deref()));
    }
    if !topic.starts_with("realtime:") {
        unmatched(sock, &msg);
        return;
    }
    Counters::bump(&shared.counters.joins_total);
    shared.last_join.lock().record(topic, msg.payload.clone());
    let accepted = match check_join(shared, sock, &msg) {
        Ok(accepted) => accepted,
        Err(reason) => {
            Counters::bump(&shared.counters.join_errors_total);
            // Realtime's `join_error` sleeps before answering (the whole socket waits, as there).
            if !shared.opts.join_error_delay.is_zero() {
                tokio::time::sleep(shared.opts.join_error_delay).await;
            }
            let reply = protocol::reply(
                vsn,
                msg.join_ref.as_deref(),
                msg.ref_.as_deref(),
                topic,
                false,
                &json!({ "reason": reason }),
            );
            sock.out.push(reply);
            return;
        }
    };
    let uid = shared.next_id();
    let join_ref = msg.join_ref.clone();
    let response = json!({ "postgres_changes": accepted.reply });
    sock.channels.lock().insert(
        topic.to_owned(),
        Channel {
            uid,
            join_ref: join_ref.clone(),
            token: accepted.token,
            exp: accepted.claims.exp,
        },
    );
    sock.out.push(protocol::reply(
        vsn,
        join_ref.as_deref(),
        msg.ref_.as_deref(),
        topic,
        true,
        &response,
    ));
    match accepted.bindings {
        Ok(bindings) if bindings.is_empty() => {}
        Ok(bindings) => feed::subscribe(
            shared,
            Subscription::new(
                uid,
                topic.to_owned(),
                join_ref,
                bindings,
                sock.out.clone(),
                &accepted.claims,
            ),
        ),
        Err(message) => {
            let frame = system_frame(
                vsn,
                topic,
                join_ref.as_deref(),
                "postgres_changes",
                false,
                &message,
            );
            sock.out.push(frame);
        }
    }
    sock.timers.notify_one();
}

/// Realtime's join checks, in its order; `Err` is the reply's `reason`.
fn check_join(shared: &Shared, sock: &SocketShared, msg: &Inbound) -> Result<Accepted, String> {
    if msg.topic == "realtime:" {
        return Err("TopicNameRequired: You must provide a topic name".to_owned());
    }
    if shared.faults.take_join_failure() {
        return Err(JOIN_FAULT_REASON.to_owned());
    }
    if sock.channels.lock().len() >= shared.opts.max_channels_per_socket {
        return Err("ChannelRateLimitReached: Too many channels".to_owned());
    }
    let payload = &msg.payload;
    let given = ["access_token", "user_token"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(Value::as_str))
        .filter(|t| !t.starts_with("sb_"));
    let token = given.unwrap_or(&sock.apikey).to_owned();
    let claims = shared
        .verifier
        .verify(&token)
        .map_err(|e| e.join_reason())?;

    let entries: Vec<&Value> = payload
        .pointer("/config/postgres_changes")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter(|v| !v.is_null()).collect())
        .unwrap_or_default();
    let mut reply = Vec::with_capacity(entries.len());
    let mut bindings = Ok(Vec::with_capacity(entries.len()));
    for entry in entries {
        let Some(map) = entry.as_object() else {
            return Err(
                "UnknownErrorOnChannel: postgres_changes entries must be objects".to_owned(),
            );
        };
        let mut with_id = map.clone();
        with_id.insert("id".to_owned(), Value::from(params::binding_id(entry)));
        reply.push(Value::Object(with_id));
        if let Ok(list) = &mut bindings {
            match params::parse(entry) {
                Ok(b) => list.push(b),
                Err(e) => bindings = Err(e),
            }
        }
    }
    Ok(Accepted {
        token,
        claims,
        reply,
        bindings,
    })
}
