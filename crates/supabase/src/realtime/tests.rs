//! The client against a scripted Phoenix peer over an in-memory pipe, in paused time: every
//! timing below is virtual, so the assertions are on counts and on the virtual clock.

use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::io::{AsyncWriteExt as _, DuplexStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Pipe {
    peers: mpsc::Sender<(String, Peer)>,
    refuse: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    buffer: usize,
}

impl Connector for Pipe {
    fn connect(
        &self,
        url: String,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> ConnectFuture {
        let peers = self.peers.clone();
        let refuse = self.refuse.clone();
        let attempts = self.attempts.clone();
        let buffer = self.buffer;
        Box::pin(async move {
            attempts.lock().unwrap().push(Instant::now());
            if refuse
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("refused".to_string());
            }
            let (a, b) = tokio::io::duplex(buffer);
            let client = WebSocketStream::from_raw_socket(a, Role::Client, Some(config)).await;
            let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
            peers
                .send((
                    url,
                    Peer {
                        ws: server,
                        auto_heartbeat: true,
                        heartbeats: Vec::new(),
                    },
                ))
                .await
                .map_err(|_| "test gone".to_string())?;
            let (sink, stream) = client.split();
            Ok((Box::pin(sink) as WsSink, Box::pin(stream) as WsStream))
        })
    }
}

struct Peer {
    ws: WebSocketStream<DuplexStream>,
    /// Answer heartbeats by itself (and record when they came).
    auto_heartbeat: bool,
    heartbeats: Vec<Instant>,
}

impl Peer {
    /// The next frame other than a heartbeat (heartbeats are answered when `auto_heartbeat`).
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    let f = Frame::decode(t.as_str()).expect("client frames decode");
                    if f.topic == "phoenix" && f.event == "heartbeat" {
                        self.heartbeats.push(Instant::now());
                        if self.auto_heartbeat {
                            let reply = Frame {
                                join_ref: None,
                                msg_ref: f.msg_ref.clone(),
                                topic: "phoenix".into(),
                                event: "phx_reply".into(),
                                payload: json!({"status": "ok", "response": {}}),
                            };
                            self.send(&reply).await;
                        }
                        continue;
                    }
                    return Some(f);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn expect(&mut self, event: &str) -> Frame {
        let f = self.recv().await.expect("socket open");
        assert_eq!(f.event, event, "{f:?}");
        f
    }

    async fn send(&mut self, f: &Frame) {
        let _ = self
            .ws
            .send(Message::Text(f.encode(Serializer::V2).into()))
            .await;
    }

    async fn raw(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.to_string().into())).await;
    }

    async fn reply(&mut self, to: &Frame, payload: Value) {
        let f = Frame {
            join_ref: to.join_ref.clone(),
            msg_ref: to.msg_ref.clone(),
            topic: to.topic.clone(),
            event: "phx_reply".into(),
            payload,
        };
        self.send(&f).await;
    }

    /// Answers a join with ids 100, 101, ... and, when `ready`, the system readiness message.
    async fn accept(&mut self, join: &Frame, ready: bool) -> Vec<i64> {
        let sent = join.payload["config"]["postgres_changes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut ids = Vec::new();
        let answered: Vec<Value> = sent
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                let id = 100 + i as i64;
                ids.push(id);
                b["id"] = json!(id);
                b
            })
            .collect();
        self.reply(
            join,
            json!({"status": "ok", "response": {"postgres_changes": answered}}),
        )
        .await;
        if ready {
            self.system(join, "ok", "Subscribed to PostgreSQL").await;
        }
        ids
    }

    async fn system(&mut self, join: &Frame, status: &str, message: &str) {
        let f = Frame {
            join_ref: join.join_ref.clone(),
            msg_ref: None,
            topic: join.topic.clone(),
            event: "system".into(),
            payload: json!({"extension": "postgres_changes", "status": status,
                            "message": message, "channel": join.topic}),
        };
        self.send(&f).await;
    }

    async fn control(&mut self, join: &Frame, event: &str) {
        let f = Frame {
            join_ref: join.join_ref.clone(),
            msg_ref: join.join_ref.clone(),
            topic: join.topic.clone(),
            event: event.into(),
            payload: json!({}),
        };
        self.send(&f).await;
    }

    async fn change(&mut self, topic: &str, ids: &[i64], kind: &str, id: i64) {
        let f = Frame {
            join_ref: None,
            msg_ref: None,
            topic: topic.into(),
            event: "postgres_changes".into(),
            payload: json!({"ids": ids, "data": {
                "schema": "public", "table": "jobs", "commit_timestamp": "2025-11-19T00:22:40.877Z",
                "type": kind, "columns": [{"name": "id", "type": "int8"}],
                "record": {"id": id}, "old_record": null, "errors": null}}),
        };
        self.send(&f).await;
    }
}

struct Harness {
    client: RealtimeClient,
    peers: mpsc::Receiver<(String, Peer)>,
    refuse: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    token: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn config() -> ClientConfig {
    let mut c =
        ClientConfig::for_project(&Url::parse("http://127.0.0.1:1").unwrap(), "anon-key").unwrap();
    c.jitter = 0.0;
    c
}

fn jwt(exp: u64, sub: &str) -> String {
    format!(
        "{}.{}.sig",
        token::base64url_encode(br#"{"alg":"HS256"}"#),
        token::base64url_encode(format!(r#"{{"exp":{exp},"sub":"{sub}"}}"#).as_bytes())
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn start(cfg: ClientConfig, buffer: usize) -> Harness {
    let (tx, rx) = mpsc::channel(8);
    let refuse = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let token = Arc::new(Mutex::new(Some(jwt(unix_now() + 3600, "first"))));
    let t = token.clone();
    let provider = move || t.lock().unwrap().clone();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let client = RealtimeClient::start_with(
        cfg,
        Arc::new(provider),
        Arc::new(Pipe {
            peers: tx,
            refuse: refuse.clone(),
            attempts: attempts.clone(),
            buffer,
        }),
        &tracker,
        cancel.clone(),
    );
    Harness {
        client,
        peers: rx,
        refuse,
        attempts,
        token,
        cancel,
        tracker,
    }
}

impl Harness {
    async fn peer(&mut self) -> (String, Peer) {
        self.peers.recv().await.expect("a connection")
    }
}

fn jobs(event: ChangeEvent, filter: Option<&str>) -> PostgresChanges {
    PostgresChanges {
        event,
        schema: "public".into(),
        table: Some("jobs".into()),
        filter: filter.map(str::to_owned),
    }
}

fn opts(b: Vec<PostgresChanges>) -> ChannelOptions {
    ChannelOptions {
        postgres_changes: b,
        private: false,
    }
}

async fn status_until(ch: &mut Channel, want: impl Fn(&ChannelStatus) -> bool) -> ChannelStatus {
    loop {
        match ch.next().await {
            Some(ChannelEvent::Status(s)) if want(&s) => return s,
            Some(ChannelEvent::Status(s)) if s.is_terminal() => panic!("ended: {s:?}"),
            Some(_) => {}
            None => panic!("channel over"),
        }
    }
}

async fn next_change(ch: &mut Channel) -> Change {
    loop {
        match ch.next().await {
            Some(ChannelEvent::Change(c)) => return c,
            Some(ChannelEvent::Status(s)) if s.is_terminal() => panic!("ended: {s:?}"),
            Some(_) => {}
            None => panic!("channel over"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn join_carries_config_token_and_each_distinct_filter_once() {
    let mut h = start(config(), 1 << 16);
    let mut ch = h
        .client
        .channel(
            "jobs",
            opts(vec![
                jobs(ChangeEvent::Insert, Some("id=eq.1")),
                jobs(ChangeEvent::Insert, Some("id=eq.1")),
                jobs(ChangeEvent::All, None),
            ]),
        )
        .await
        .unwrap();
    let (url, mut peer) = h.peer().await;
    assert!(
        url.starts_with("ws://127.0.0.1:1/realtime/v1/websocket?"),
        "{url}"
    );
    assert!(
        url.contains("apikey=anon-key") && url.contains("vsn=2.0.0"),
        "{url}"
    );
    let join = peer.expect("phx_join").await;
    assert_eq!(join.topic, "realtime:jobs");
    assert_eq!(join.join_ref, join.msg_ref);
    assert_eq!(
        join.payload["config"]["postgres_changes"],
        json!([
            {"event": "INSERT", "schema": "public", "table": "jobs", "filter": "id=eq.1"},
            {"event": "*", "schema": "public", "table": "jobs"},
        ])
    );
    assert_eq!(join.payload["config"]["private"], json!(false));
    assert_eq!(
        join.payload["access_token"].as_str(),
        h.token.lock().unwrap().as_deref()
    );

    let ids = peer.accept(&join, false).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Joined).await;
    // Only the server's readiness message makes it SUBSCRIBED.
    assert_eq!(ch.status().subscribe_status(), "JOINING");
    peer.system(&join, "ok", "Subscribed to PostgreSQL").await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;

    peer.change("realtime:jobs", &[ids[0], ids[1]], "INSERT", 1)
        .await;
    let c = next_change(&mut ch).await;
    assert_eq!(c.bindings, vec![0, 1, 2]);
    assert_eq!(c.record, Some(json!({"id": 1})));
    assert_eq!(c.old_record, None);
    assert_eq!(
        (c.schema.as_str(), c.table.as_str(), c.kind.as_str()),
        ("public", "jobs", "INSERT")
    );
    // Only the `*` binding's id, and an UPDATE: the INSERT bindings do not match.
    peer.change("realtime:jobs", &[ids[1]], "UPDATE", 2).await;
    let c = next_change(&mut ch).await;
    assert_eq!(c.bindings, vec![2]);
    // An id nobody has: nothing delivered. Then one that is, to prove the first was skipped.
    peer.change("realtime:jobs", &[999], "INSERT", 3).await;
    peer.change("realtime:jobs", &[ids[1]], "DELETE", 4).await;
    let c = next_change(&mut ch).await;
    assert_eq!(c.record, Some(json!({"id": 4})));
    assert_eq!(h.client.stats().changes_total, 3);
    h.cancel.cancel();
    h.tracker.close();
    h.tracker.wait().await;
}

#[tokio::test(start_paused = true)]
async fn serializer_1_0_0_sends_objects() {
    let mut cfg = config();
    cfg.serializer = Serializer::V1;
    let mut h = start(cfg, 1 << 16);
    let _ch = h.client.channel("a", opts(vec![])).await.unwrap();
    let (url, mut peer) = h.peer().await;
    assert!(url.contains("vsn=1.0.0"));
    let Some(Ok(Message::Text(t))) = peer.ws.next().await else {
        panic!("a text frame")
    };
    let v: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(v["event"], "phx_join");
    assert_eq!(v["topic"], "realtime:a");
    assert!(v["ref"].is_string() && v["join_ref"] == v["ref"]);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_keeps_its_schedule_whatever_arrives() {
    let mut h = start(config(), 1 << 16);
    let mut ch = h.client.channel("a", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    let t0 = Instant::now();
    let join = peer.expect("phx_join").await;
    peer.accept(&join, false).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    // Inbound traffic every 5 s for two minutes must not move the heartbeat. The peer reads
    // (and answers heartbeats) between its sends.
    for _ in 0..24 {
        let _ = tokio::time::timeout(SECS(5), peer.recv()).await;
        peer.raw(r#"[null,null,"realtime:a","presence_state",{}]"#)
            .await;
    }
    let _ = tokio::time::timeout(SECS(1), peer.recv()).await;
    let offsets: Vec<u64> = peer
        .heartbeats
        .iter()
        .map(|t| (*t - t0).as_secs())
        .collect();
    assert!(
        offsets.starts_with(&[25, 50, 75, 100]),
        "heartbeats at {offsets:?} s"
    );
    assert_eq!(h.client.stats().heartbeat_timeouts_total, 0);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_heartbeat_replaces_the_socket_and_channels_rejoin_with_a_fresh_token() {
    let mut h = start(config(), 1 << 16);
    let b = vec![jobs(ChangeEvent::All, Some("status=eq.open"))];
    let mut ch = h.client.channel("jobs", opts(b)).await.unwrap();
    let (_, mut peer) = h.peer().await;
    let join1 = peer.expect("phx_join").await;
    peer.accept(&join1, true).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;

    peer.auto_heartbeat = false; // the server stalls
    let fresh = jwt(unix_now() + 7200, "second");
    *h.token.lock().unwrap() = Some(fresh.clone());
    let stalled = tokio::spawn(async move {
        while peer.recv().await.is_some() {}
        peer.heartbeats.len()
    });
    status_until(&mut ch, |s| matches!(s, ChannelStatus::Errored { .. })).await;
    // Dead at the second tick: exactly one heartbeat went unanswered.
    assert_eq!(stalled.await.unwrap(), 1);
    assert_eq!(h.client.stats().heartbeat_timeouts_total, 1);

    let (_, mut peer) = h.peer().await;
    let join2 = peer.expect("phx_join").await;
    assert_eq!(join2.topic, join1.topic);
    assert_eq!(join2.payload["config"], join1.payload["config"]);
    assert_eq!(join2.payload["access_token"].as_str(), Some(fresh.as_str()));
    assert_ne!(join2.join_ref, join1.join_ref);
    let ids = peer.accept(&join2, true).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    peer.change("realtime:jobs", &ids, "INSERT", 7).await;
    assert_eq!(next_change(&mut ch).await.record, Some(json!({"id": 7})));
    let s = h.client.stats();
    assert_eq!((s.connects_total, s.socket_losses_total), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn reconnects_back_off_1_2_5_10_then_10() {
    let mut h = start(config(), 1 << 16);
    h.refuse.store(6, Ordering::Relaxed);
    let _ch = h.client.channel("a", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    peer.expect("phx_join").await;
    let at = h.attempts.lock().unwrap().clone();
    let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(gaps, vec![1, 2, 5, 10, 10, 10]);
    assert_eq!(h.client.stats().connect_failures_total, 6);
}

#[test]
fn backoff_schedule_and_jitter_bounds() {
    let s = [SECS(1), SECS(2), SECS(5), SECS(10)];
    let got: Vec<Duration> = (0..6).map(|a| backoff(&s, a, 0.0)).collect();
    assert_eq!(
        got,
        vec![SECS(1), SECS(2), SECS(5), SECS(10), SECS(10), SECS(10)]
    );
    for a in 0..1000 {
        let d = backoff(&s, a % 5, 0.2);
        let base = s[(a % 5).min(3) as usize];
        assert!(d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2), "{d:?}");
    }
    assert_eq!(backoff(&[], 3, 0.2), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn phx_error_rejoins_at_1_then_2_seconds_and_stale_messages_are_dropped() {
    let mut h = start(config(), 1 << 16);
    let mut ch = h
        .client
        .channel("jobs", opts(vec![jobs(ChangeEvent::All, None)]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let join1 = peer.expect("phx_join").await;
    peer.accept(&join1, true).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;

    peer.control(&join1, "phx_error").await;
    let t = Instant::now();
    status_until(&mut ch, |s| matches!(s, ChannelStatus::Errored { .. })).await;
    let join2 = peer.expect("phx_join").await;
    assert_eq!((Instant::now() - t).as_secs(), 1);
    assert_eq!(join2.payload["config"], join1.payload["config"]);
    // A late message of the crashed join is dropped, not taken for the new one.
    peer.system(&join1, "ok", "Subscribed to PostgreSQL").await;
    peer.control(&join1, "phx_close").await;
    peer.control(&join2, "phx_error").await;
    let t = Instant::now();
    let join3 = peer.expect("phx_join").await;
    assert_eq!((Instant::now() - t).as_secs(), 2);
    peer.accept(&join3, true).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    assert_eq!(h.client.stats().stale_dropped_total, 2);
    assert_eq!(h.client.stats().channels, 1);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_join_and_a_timed_out_join_are_handed_back() {
    let mut h = start(config(), 1 << 16);
    let mut a = h.client.channel("a", opts(vec![])).await.unwrap();
    let mut b = h.client.channel("b", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    let j1 = peer.expect("phx_join").await;
    let j2 = peer.expect("phx_join").await;
    let (ja, _jb) = if j1.topic == "realtime:a" {
        (j1, j2)
    } else {
        (j2, j1)
    };
    peer.reply(
        &ja,
        json!({"status": "error", "response": {"reason": "ChannelRateLimitReached: Too many channels"}}),
    )
    .await;
    let s = status_until(&mut a, ChannelStatus::is_terminal).await;
    assert_eq!(
        s,
        ChannelStatus::Ended {
            end: EndReason::JoinRejected("ChannelRateLimitReached: Too many channels".into())
        }
    );
    assert_eq!(s.subscribe_status(), "CHANNEL_ERROR");
    // `b` never gets a reply: TIMED_OUT after 10 s, and a leave in case the server joins late.
    let t = Instant::now();
    let s = status_until(&mut b, ChannelStatus::is_terminal).await;
    assert_eq!((Instant::now() - t).as_secs(), 10);
    assert_eq!(s.subscribe_status(), "TIMED_OUT");
    let leave = peer.expect("phx_leave").await;
    assert_eq!(leave.topic, "realtime:b");
    assert_eq!(h.client.stats().channels, 0);
    assert!(a.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn phx_close_and_system_errors_end_the_channel() {
    let mut h = start(config(), 1 << 16);
    let mut a = h
        .client
        .channel("a", opts(vec![jobs(ChangeEvent::All, None)]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let ja = peer.expect("phx_join").await;
    peer.accept(&ja, true).await;
    status_until(&mut a, |s| *s == ChannelStatus::Subscribed).await;
    peer.system(&ja, "error", "Token has expired 12 seconds ago")
        .await;
    peer.control(&ja, "phx_close").await;
    let s = status_until(&mut a, ChannelStatus::is_terminal).await;
    assert_eq!(
        s,
        ChannelStatus::Ended {
            end: EndReason::SystemError("Token has expired 12 seconds ago".into())
        }
    );
    peer.expect("phx_leave").await;

    let mut b = h.client.channel("b", opts(vec![])).await.unwrap();
    let jb = peer.expect("phx_join").await;
    peer.accept(&jb, false).await;
    status_until(&mut b, |s| *s == ChannelStatus::Subscribed).await;
    peer.control(&jb, "phx_close").await;
    let s = status_until(&mut b, ChannelStatus::is_terminal).await;
    assert_eq!(
        s,
        ChannelStatus::Ended {
            end: EndReason::ServerClosed
        }
    );
    assert_eq!(s.subscribe_status(), "CLOSED");
}

#[tokio::test(start_paused = true)]
async fn mismatched_bindings_error_the_channel() {
    let mut h = start(config(), 1 << 16);
    let mut a = h
        .client
        .channel("a", opts(vec![jobs(ChangeEvent::Insert, Some("id=eq.1"))]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let ja = peer.expect("phx_join").await;
    peer.reply(
        &ja,
        json!({"status": "ok", "response": {"postgres_changes": [
        {"id": 1, "event": "INSERT", "schema": "public", "table": "jobs", "filter": "id=eq.2"}]}}),
    )
    .await;
    let s = status_until(&mut a, ChannelStatus::is_terminal).await;
    assert!(
        matches!(
            s,
            ChannelStatus::Ended {
                end: EndReason::BindingMismatch(_)
            }
        ),
        "{s:?}"
    );
    peer.expect("phx_leave").await;
}

#[tokio::test(start_paused = true)]
async fn malformed_frames_are_counted_and_oversized_or_corrupt_streams_replace_the_socket() {
    let mut cfg = config();
    cfg.max_frame_bytes = 4096;
    let mut h = start(cfg, 1 << 16);
    let mut a = h
        .client
        .channel("a", opts(vec![jobs(ChangeEvent::All, None)]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let ja = peer.expect("phx_join").await;
    let ids = peer.accept(&ja, true).await;
    status_until(&mut a, |s| *s == ChannelStatus::Subscribed).await;
    for bad in [
        "{",
        "[1,2]",
        "null",
        r#"{"topic":5}"#,
        "[null,null,\"realtime:a\",\"postgres_changes\",7]",
    ] {
        peer.raw(bad).await;
    }
    peer.change("realtime:a", &ids, "INSERT", 1).await;
    assert_eq!(next_change(&mut a).await.record, Some(json!({"id": 1})));
    assert_eq!(h.client.stats().malformed_frames_total, 4);

    // A frame over the limit: refused, the socket replaced, the channel rejoined.
    peer.raw(&format!(
        "[null,null,\"realtime:a\",\"x\",\"{}\"]",
        "x".repeat(5000)
    ))
    .await;
    status_until(&mut a, |s| matches!(s, ChannelStatus::Errored { .. })).await;
    assert_eq!(h.client.stats().oversized_frames_total, 1);
    let (_, mut peer) = h.peer().await;
    let ja = peer.expect("phx_join").await;
    peer.accept(&ja, true).await;
    status_until(&mut a, |s| *s == ChannelStatus::Subscribed).await;

    // Bytes that are not a WebSocket frame at all.
    peer.ws.get_mut().write_all(&[0xff; 64]).await.unwrap();
    status_until(&mut a, |s| matches!(s, ChannelStatus::Errored { .. })).await;
    let (_, mut peer) = h.peer().await;
    let ja = peer.expect("phx_join").await;
    peer.accept(&ja, true).await;
    status_until(&mut a, |s| *s == ChannelStatus::Subscribed).await;
    assert_eq!(h.client.stats().socket_losses_total, 2);
}

#[tokio::test(start_paused = true)]
async fn close_leaves_every_channel_then_closes_the_socket() {
    let mut h = start(config(), 1 << 16);
    let mut chans = Vec::new();
    for n in 0..5 {
        chans.push(
            h.client
                .channel(&format!("c{n}"), opts(vec![]))
                .await
                .unwrap(),
        );
    }
    let (_, mut peer) = h.peer().await;
    for _ in 0..5 {
        let j = peer.expect("phx_join").await;
        peer.accept(&j, false).await;
    }
    for c in &mut chans {
        status_until(c, |s| *s == ChannelStatus::Subscribed).await;
    }
    let client = h.client.clone();
    let closing = tokio::spawn(async move { client.close().await });
    let mut left = Vec::new();
    while let Some(f) = peer.recv().await {
        assert_eq!(f.event, "phx_leave");
        left.push(f.topic);
    }
    closing.await.unwrap();
    left.sort();
    assert_eq!(
        left,
        (0..5).map(|n| format!("realtime:c{n}")).collect::<Vec<_>>()
    );
    for c in &mut chans {
        let s = status_until(c, ChannelStatus::is_terminal).await;
        assert_eq!(
            s,
            ChannelStatus::Ended {
                end: EndReason::ClientClosed
            }
        );
    }
    let s = h.client.stats();
    assert!(!s.connected);
    assert_eq!((s.channels, s.leaves_sent_total), (0, 5));
    // Closed, not dead: a new channel opens a new socket.
    let _again = h.client.channel("later", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    assert_eq!(peer.expect("phx_join").await.topic, "realtime:later");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_channel_leaves_it_and_frees_its_topic() {
    let mut h = start(config(), 1 << 16);
    let ch = h.client.channel("a", opts(vec![])).await.unwrap();
    assert_eq!(
        h.client.channel("a", opts(vec![])).await.unwrap_err(),
        RealtimeError::TopicInUse("a".into())
    );
    let (_, mut peer) = h.peer().await;
    let j = peer.expect("phx_join").await;
    peer.accept(&j, false).await;
    drop(ch);
    let leave = peer.expect("phx_leave").await;
    assert_eq!(leave.join_ref, j.join_ref);
    let _ch = h.client.channel("a", opts(vec![])).await.unwrap();
    peer.expect("phx_join").await;
}

#[tokio::test(start_paused = true)]
async fn the_channel_cap_is_enforced() {
    let mut cfg = config();
    cfg.max_channels = 3;
    let h = start(cfg, 1 << 16);
    let mut keep = Vec::new();
    for n in 0..3 {
        keep.push(
            h.client
                .channel(&format!("c{n}"), opts(vec![]))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        h.client.channel("c3", opts(vec![])).await.unwrap_err(),
        RealtimeError::TooManyChannels(3)
    );
    keep.pop().unwrap().leave().await;
    assert!(h.client.channel("c3", opts(vec![])).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_token_is_pushed_before_it_expires() {
    let mut cfg = config();
    cfg.token_refresh_margin = SECS(60);
    let mut h = start(cfg, 1 << 16);
    *h.token.lock().unwrap() = Some(jwt(unix_now() + 300, "short"));
    let mut ch = h
        .client
        .channel("a", opts(vec![jobs(ChangeEvent::All, None)]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let j = peer.expect("phx_join").await;
    peer.accept(&j, true).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    let next = jwt(unix_now() + 3600, "next");
    *h.token.lock().unwrap() = Some(next.clone());
    let t = Instant::now();
    let push = peer.expect("access_token").await;
    // Pushed at the first heartbeat after the provider changed (25 s), well before exp - 60 s.
    assert!((Instant::now() - t) <= SECS(240));
    assert_eq!(push.payload["access_token"].as_str(), Some(next.as_str()));
    assert_eq!(push.join_ref, j.join_ref);
    assert_eq!(h.client.stats().token_pushes_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_due_token_is_fetched_at_its_deadline_between_heartbeats() {
    let mut cfg = config();
    cfg.token_refresh_margin = SECS(60);
    cfg.heartbeat_interval = SECS(1000);
    let mut h = start(cfg, 1 << 16);
    *h.token.lock().unwrap() = Some(jwt(unix_now() + 100, "short"));
    let mut ch = h.client.channel("a", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    let j = peer.expect("phx_join").await;
    peer.accept(&j, false).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    let token = h.token.clone();
    let rotate = async move {
        // The provider refreshes 10 s after the join.
        tokio::time::sleep(SECS(10)).await;
        *token.lock().unwrap() = Some(jwt(unix_now() + 3600, "next"));
    };
    let (_, push) = tokio::join!(rotate, peer.expect("access_token"));
    assert!(push.payload["access_token"].as_str().unwrap().len() > 10);
    assert_eq!(h.client.stats().heartbeats_sent_total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_server_fills_no_queue_past_its_bound() {
    let mut cfg = config();
    cfg.send_queue = 8;
    cfg.change_queue = 10;
    // A pipe of 1 KiB: the writer blocks once the peer stops reading.
    let mut h = start(cfg, 1024);
    let mut first = h
        .client
        .channel("first", opts(vec![jobs(ChangeEvent::All, None)]))
        .await
        .unwrap();
    let (_, mut peer) = h.peer().await;
    let j = peer.expect("phx_join").await;
    let ids = peer.accept(&j, true).await;
    status_until(&mut first, |s| *s == ChannelStatus::Subscribed).await;

    // A flood the owner does not read: 10 kept, 90 dropped and counted.
    for i in 0..100 {
        peer.change("realtime:first", &ids, "INSERT", i).await;
    }
    // The peer stops reading; 60 joins of ~400 bytes cannot all fit the pipe and the queue.
    let mut chans = Vec::new();
    for n in 0..60 {
        chans.push(
            h.client
                .channel(&format!("stalled-{n:03}-{}", "x".repeat(200)), opts(vec![]))
                .await
                .unwrap(),
        );
    }
    // Count the changes the owner gets while waiting for the socket to be declared dead.
    let mut kept = 0;
    loop {
        match first.next().await {
            Some(ChannelEvent::Change(_)) => kept += 1,
            Some(ChannelEvent::Status(ChannelStatus::Errored { .. })) => break,
            Some(ChannelEvent::Status(s)) => assert!(!s.is_terminal(), "{s:?}"),
            None => panic!("channel over"),
        }
    }
    let s = h.client.stats();
    assert!(s.send_dropped_total > 0, "{s:?}");
    assert_eq!(s.heartbeat_timeouts_total, 1);
    assert_eq!(s.changes_dropped_total, 90);
    assert_eq!(first.dropped_changes(), 90);
    while let Ok(Some(ChannelEvent::Change(_))) = tokio::time::timeout(SECS(0), first.next()).await
    {
        kept += 1;
    }
    assert_eq!(kept, 10);
    drop(peer);
}

#[tokio::test(start_paused = true)]
async fn cancel_leaves_and_ends_the_actor() {
    let mut h = start(config(), 1 << 16);
    let mut ch = h.client.channel("a", opts(vec![])).await.unwrap();
    let (_, mut peer) = h.peer().await;
    let j = peer.expect("phx_join").await;
    peer.accept(&j, false).await;
    status_until(&mut ch, |s| *s == ChannelStatus::Subscribed).await;
    h.cancel.cancel();
    assert_eq!(peer.expect("phx_leave").await.topic, "realtime:a");
    assert!(peer.recv().await.is_none());
    h.tracker.close();
    h.tracker.wait().await;
    assert_eq!(
        h.client.channel("b", opts(vec![])).await.unwrap_err(),
        RealtimeError::Shutdown
    );
}

#[test]
fn project_urls_map_to_the_socket_endpoint() {
    let c =
        ClientConfig::for_project(&Url::parse("https://abc.supabase.co").unwrap(), "k").unwrap();
    assert_eq!(
        c.endpoint.as_str(),
        "wss://abc.supabase.co/realtime/v1/websocket"
    );
    let c =
        ClientConfig::for_project(&Url::parse("http://127.0.0.1:54321/").unwrap(), "k").unwrap();
    assert_eq!(
        c.endpoint.as_str(),
        "ws://127.0.0.1:54321/realtime/v1/websocket"
    );
    assert!(ClientConfig::for_project(&Url::parse("ftp://x").unwrap(), "k").is_err());
    assert!(!format!("{c:?}").contains("\"k\""));
}
