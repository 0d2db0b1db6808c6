//! The manager against an in-memory Phoenix peer, in paused time: cap, LRU, TTL and sweep,
//! retries, sink and shutdown, asserted on counts and on the virtual clock.

use std::collections::HashSet;

use collisionos_supabase::realtime::tokio_tungstenite::WebSocketStream;
use collisionos_supabase::realtime::tokio_tungstenite::tungstenite::{
    self, Message, protocol::Role,
};
use collisionos_supabase::realtime::{
    ConnectFuture, Connector, Frame, Serializer, WsSink, WsStream,
};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};

use super::*;
use crate::events::BusReceiver;

#[derive(Default)]
struct Peer {
    joined: HashSet<String>,
    joins: Vec<(String, Value)>,
    reject_next: u32,
    sockets: usize,
    push: Option<mpsc::Sender<String>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Peer>>);

impl Connector for Fake {
    fn connect(
        &self,
        _url: String,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> ConnectFuture {
        let state = self.0.clone();
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(1 << 16);
            let client = WebSocketStream::from_raw_socket(a, Role::Client, Some(config)).await;
            let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
            let (push_tx, push_rx) = mpsc::channel(1024);
            {
                let mut s = state.lock();
                s.sockets += 1;
                s.push = Some(push_tx);
            }
            tokio::spawn(serve(state, server, push_rx));
            let (sink, stream) = client.split();
            Ok((Box::pin(sink) as WsSink, Box::pin(stream) as WsStream))
        })
    }
}

async fn serve(
    state: Arc<Mutex<Peer>>,
    mut ws: WebSocketStream<tokio::io::DuplexStream>,
    mut push: mpsc::Receiver<String>,
) {
    let mut mine = HashSet::new();
    loop {
        let text = tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            p = push.recv() => match p {
                Some(p) => { let _ = ws.send(Message::Text(p.into())).await; continue; }
                None => continue,
            },
        };
        let f = Frame::decode(&text).unwrap();
        let reply = |payload: Value| Frame {
            join_ref: f.join_ref.clone(),
            msg_ref: f.msg_ref.clone(),
            topic: f.topic.clone(),
            event: "phx_reply".into(),
            payload,
        };
        let mut out = Vec::new();
        match f.event.as_str() {
            "heartbeat" => out.push(reply(json!({"status": "ok", "response": {}}))),
            "phx_join" => {
                let mut s = state.lock();
                s.joins.push((f.topic.clone(), f.payload.clone()));
                if s.reject_next > 0 {
                    s.reject_next -= 1;
                    out.push(reply(json!({"status": "error", "response": {"reason": "Injected: join refused"}})));
                } else {
                    let ids: Vec<Value> = f.payload["config"]["postgres_changes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let mut b = b.clone();
                            b["id"] = json!(100 + i);
                            b
                        })
                        .collect();
                    out.push(reply(
                        json!({"status": "ok", "response": {"postgres_changes": ids}}),
                    ));
                    out.push(Frame {
                        join_ref: f.join_ref.clone(),
                        msg_ref: None,
                        topic: f.topic.clone(),
                        event: "system".into(),
                        payload: json!({"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL"}),
                    });
                    s.joined.insert(f.topic.clone());
                    mine.insert(f.topic.clone());
                }
            }
            "phx_leave" => {
                state.lock().joined.remove(&f.topic);
                mine.remove(&f.topic);
                out.push(reply(json!({"status": "ok", "response": {}})));
            }
            _ => {}
        }
        for o in out {
            let _ = ws
                .send(Message::Text(o.encode(Serializer::V2).into()))
                .await;
        }
    }
    let mut s = state.lock();
    s.sockets -= 1;
    for t in mine {
        s.joined.remove(&t);
    }
}

fn change_frame(topic: &str, id: i64) -> String {
    Frame {
        join_ref: None,
        msg_ref: None,
        topic: topic.into(),
        event: "postgres_changes".into(),
        payload: json!({"ids": [100], "data": {"schema": "public", "table": "jobs",
            "commit_timestamp": "2025-11-19T00:22:40.877Z", "type": "INSERT",
            "record": {"id": id}, "old_record": null, "errors": null}}),
    }
    .encode(Serializer::V2)
}

struct H {
    m: SubscriptionManager,
    fake: Fake,
    bus: Bus,
    rx: BusReceiver,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

fn realtime(cap: usize) -> RealtimeConfig {
    RealtimeConfig {
        max_subscriptions: cap,
        subscription_ttl: Duration::from_secs(30 * 60),
        sweep_interval: Duration::from_secs(5 * 60),
        max_retries: 3,
    }
}

fn start(cfg: RealtimeConfig) -> H {
    let fake = Fake::default();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let mut cc = ClientConfig::new(url::Url::parse("ws://fake/socket").unwrap(), "k");
    cc.jitter = 0.0;
    cc.max_channels = cfg.max_subscriptions;
    let client = RealtimeClient::start_with(
        cc,
        Arc::new(StaticToken::new(None)),
        Arc::new(fake.clone()),
        &tracker,
        cancel.clone(),
    );
    let bus = Bus::new(65_536);
    let rx = bus.subscribe();
    let tuning = Tuning {
        retry_backoff: vec![Duration::from_secs(1), Duration::from_secs(2)],
        ..Tuning::default()
    };
    let m =
        SubscriptionManager::with_client(cfg, Some(client), tuning, bus.clone(), &tracker, &cancel);
    H {
        m,
        fake,
        bus,
        rx,
        tracker,
        cancel,
    }
}

impl H {
    async fn state(&mut self, id: &str, state: &str) {
        loop {
            match self.rx.recv().await {
                Some(Event::Subscription(e)) if e.id == id && e.state == state => return,
                Some(_) => {}
                None => panic!("bus closed"),
            }
        }
    }

    fn joined(&self) -> usize {
        self.fake.0.lock().joined.len()
    }
}

fn opts() -> SubscriptionOptions {
    SubscriptionOptions::table("public", "jobs")
}

#[tokio::test]
async fn without_supabase_it_is_an_empty_manager_that_says_why() {
    let config = Config::from_layers(&Default::default()).unwrap();
    let m = SubscriptionManager::start(
        &config,
        Bus::default(),
        &TaskTracker::new(),
        &CancellationToken::new(),
    );
    assert!(!m.is_configured());
    assert!(m.list().is_empty());
    assert_eq!(m.start_default().await, Ok(false));
    let err = m.create("x", opts()).await.unwrap_err();
    assert_eq!(err.code(), "realtime_not_configured");
    assert_eq!(
        m.destroy("x").await,
        Err(SubscriptionError::NotFound("x".into()))
    );
    assert!(!m.mark_activity("x"));
    let s = m.stats();
    assert_eq!((s.total, s.capacity, s.socket), (0, 100, None));
    assert_eq!(
        m.figures(),
        SubscriptionFigures {
            capacity: 100,
            ..Default::default()
        }
    );
    m.destroy_all().await;
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_least_recently_active_non_persistent_one_goes() {
    let mut h = start(realtime(3));
    h.m.create(
        "p",
        SubscriptionOptions {
            persistent: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    h.m.create("a", opts()).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    h.m.create("b", opts()).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(h.m.mark_activity("a"));
    h.state("b", "subscribed").await;
    tokio::time::advance(Duration::from_secs(1)).await;
    h.m.create("c", opts()).await.unwrap();
    let ids: Vec<String> = h.m.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec!["p", "a", "c"]);
    assert_eq!(h.m.stats().evictions_total, 1);
    h.state("c", "subscribed").await;
    assert!(!h.fake.0.lock().joined.contains("realtime:b"));
    assert_eq!(h.joined(), 3);
    // The persistent one survives however stale it is.
    tokio::time::advance(Duration::from_secs(1)).await;
    h.m.create("d", opts()).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    h.m.create("e", opts()).await.unwrap();
    let ids: Vec<String> = h.m.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec!["p", "d", "e"]);
    assert_eq!(
        h.m.create("d", opts()).await.unwrap_err(),
        SubscriptionError::AlreadyExists("d".into())
    );
}

#[tokio::test(start_paused = true)]
async fn only_persistent_ones_left_is_a_clear_error() {
    let h = start(realtime(2));
    for id in ["p1", "p2"] {
        h.m.create(
            id,
            SubscriptionOptions {
                persistent: true,
                ..opts()
            },
        )
        .await
        .unwrap();
    }
    let err = h.m.create("x", opts()).await.unwrap_err();
    assert_eq!(err, SubscriptionError::CapacityExhausted { capacity: 2 });
    assert_eq!(err.code(), "subscriptions_full");
    assert_eq!(h.m.stats().persistent, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_subscriptions_expire_at_the_sweep_and_activity_extends_them() {
    let mut h = start(realtime(10));
    let t0 = Instant::now();
    let ten = Some(Duration::from_secs(10 * 60));
    h.m.create("idle", SubscriptionOptions { ttl: ten, ..opts() })
        .await
        .unwrap();
    h.m.create("used", SubscriptionOptions { ttl: ten, ..opts() })
        .await
        .unwrap();
    h.m.create(
        "jobs_subscription",
        SubscriptionOptions {
            persistent: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    h.state("idle", "subscribed").await;
    assert_eq!(h.m.stats().active, 3);

    tokio::time::sleep_until(t0 + Duration::from_secs(6 * 60)).await;
    let s = h.m.stats();
    assert_eq!((s.active, s.expiring_soon, s.expiries_total), (0, 2, 0));
    assert!(h.m.mark_activity("used"));
    let s = h.m.stats();
    assert_eq!((s.active, s.expiring_soon), (1, 1));

    // The sweep at 10 min removes the idle one; the one used at 6 min lives to 16 min.
    h.state("idle", "expired").await;
    assert_eq!((Instant::now() - t0).as_secs(), 10 * 60);
    let ids: Vec<String> = h.m.list().into_iter().map(|i| i.id).collect();
    assert_eq!(
        ids,
        vec!["jobs_subscription", "used"],
        "oldest first, ties by id"
    );
    h.state("used", "expired").await;
    assert_eq!((Instant::now() - t0).as_secs(), 20 * 60);
    assert_eq!(h.m.stats().expiries_total, 2);
    assert_eq!(h.m.list().len(), 1);
    assert_eq!(h.joined(), 1);
    // Persistent: never, however long.
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert_eq!(h.m.list().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_join_is_really_retried_three_times_then_failed_and_alerted() {
    let mut h = start(realtime(10));
    h.fake.0.lock().reject_next = 4;
    let filtered = SubscriptionOptions {
        filter: Some("status=eq.open".into()),
        ..opts()
    };
    h.m.create("s", filtered).await.unwrap();
    let mut alert = None;
    let mut retrying = 0;
    while alert.is_none() {
        match h.rx.recv().await.unwrap() {
            Event::Alert(a) => alert = Some(a),
            Event::Subscription(e) if e.state == "retrying" => retrying += 1,
            _ => {}
        }
    }
    let alert = alert.unwrap();
    assert_eq!(alert.level, AlertLevel::SubscriptionFailed);
    assert!(
        alert.message.contains("Injected: join refused"),
        "{}",
        alert.message
    );
    assert_eq!(retrying, 3);
    let joins = h.fake.0.lock().joins.clone();
    assert_eq!(joins.len(), 4);
    for (topic, payload) in &joins {
        assert_eq!(topic, "realtime:s");
        assert_eq!(payload["config"], joins[0].1["config"]);
        assert_eq!(
            payload["config"]["postgres_changes"][0]["filter"],
            "status=eq.open"
        );
    }
    let info = h.m.get("s").unwrap();
    assert_eq!((info.state, info.retries), ("failed", 3));
    assert!(info.error.unwrap().starts_with("CHANNEL_ERROR"));
    let s = h.m.stats();
    assert_eq!((s.failed, s.retries_total), (1, 3));
    assert_eq!(h.m.figures().failed, 1);
    // Kept and shown until destroyed (or, not being persistent, expired by its TTL).
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert_eq!(h.m.get("s").unwrap().state, "failed");
    h.m.destroy("s").await.unwrap();
    assert!(h.m.list().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_starts_a_fresh_streak_and_changes_flow() {
    let mut h = start(realtime(10));
    h.fake.0.lock().reject_next = 2;
    h.m.create("s", opts()).await.unwrap();
    let mut sink = h.m.sink("s", 4).unwrap();
    h.state("s", "subscribed").await;
    let info = h.m.get("s").unwrap();
    assert_eq!(
        (info.state, info.retries, info.error),
        ("subscribed", 0, None)
    );
    assert_eq!(h.m.stats().retries_total, 2);
    assert_eq!(h.fake.0.lock().joins.len(), 3);

    let push = h.fake.0.lock().push.clone().unwrap();
    for i in 0..10 {
        push.send(change_frame("realtime:s", i)).await.unwrap();
    }
    let mut on_bus = 0;
    while on_bus < 10 {
        if let Some(Event::Change(c)) = h.rx.recv().await {
            assert_eq!((c.subscription.as_str(), c.kind.as_str()), ("s", "INSERT"));
            assert_eq!(c.record, Some(json!({"id": on_bus})));
            on_bus += 1;
        }
    }
    let mut in_sink = 0;
    while sink.try_recv().is_ok() {
        in_sink += 1;
    }
    assert_eq!(in_sink, 4);
    let s = h.m.stats();
    assert_eq!((s.events_total, s.sink_dropped_total), (10, 6));
    assert_eq!(h.m.get("s").unwrap().events, 10);
}

#[tokio::test(start_paused = true)]
async fn destroy_all_leaves_every_channel_and_closes_the_socket() {
    let mut h = start(realtime(100));
    for n in 0..20 {
        h.m.create(&format!("s{n}"), opts()).await.unwrap();
    }
    assert_eq!(h.m.start_default().await, Ok(true));
    h.state("jobs_subscription", "subscribed").await;
    while h.joined() < 21 {
        h.rx.recv().await;
    }
    h.m.destroy_all().await;
    assert!(h.m.list().is_empty());
    assert_eq!(h.m.stats().socket.unwrap().channels, 0);
    assert!(!h.m.stats().socket.unwrap().connected);
    // The peer sees the leaves and the close frame.
    while h.fake.0.lock().sockets > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(h.joined(), 0);
    assert_eq!(h.m.stats().socket.unwrap().leaves_sent_total, 21);
    h.cancel.cancel();
    h.tracker.close();
    h.tracker.wait().await;
    assert_eq!(
        h.m.create("late", opts()).await.unwrap_err(),
        SubscriptionError::ShuttingDown
    );
    drop(h.bus);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_create_destroy_cycles_leave_nothing_behind() {
    let mut h = start(realtime(100));
    for n in 0..1000 {
        let id = format!("churn-{}", n % 7);
        h.m.create(&id, opts()).await.unwrap();
        if n % 3 == 0 {
            h.state(&id, "subscribed").await;
        }
        h.m.destroy(&id).await.unwrap();
    }
    assert!(h.m.list().is_empty());
    let s = h.m.stats();
    assert_eq!((s.created_total, s.destroyed_total), (1000, 1000));
    assert_eq!(s.socket.unwrap().channels, 0);
    // Leaves are written before the peer can answer; let it drain.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.joined(), 0);
}

#[test]
fn validation_names_the_field() {
    let bad = |o: SubscriptionOptions| validate("id", &o).unwrap_err().code();
    assert_eq!(
        bad(SubscriptionOptions {
            filter: Some("x=like.1".into()),
            ..opts()
        }),
        "invalid_filter"
    );
    assert_eq!(
        bad(SubscriptionOptions::table("public", "jobs; drop")),
        "invalid_identifier"
    );
    assert_eq!(
        bad(SubscriptionOptions::table("", "jobs")),
        "invalid_identifier"
    );
    assert_eq!(
        bad(SubscriptionOptions {
            ttl: Some(Duration::from_millis(5)),
            ..opts()
        }),
        "invalid_ttl"
    );
    assert_eq!(
        validate("a b", &opts()).unwrap_err().code(),
        "invalid_identifier"
    );
    assert!(
        validate(
            "ok",
            &SubscriptionOptions {
                filter: Some("id=in.(1,2)".into()),
                ..opts()
            }
        )
        .is_ok()
    );
}
