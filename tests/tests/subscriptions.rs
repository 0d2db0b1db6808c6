//! `collisionos::subscriptions` against the Realtime stand-in behind the stack's gateway: row
//! changes from PostgREST and SQL to the bus, churn, retries, token expiry, dropped sockets,
//! shutdown. Heap bytes are counted by a wrapper of the system allocator (the same figure as
//! jemalloc's `stats.allocated`). Waits are bounded by a guard; assertions are on counts.
//!
//! `bench_realtime` (ignored) prints the benchmark figures: `bench/realtime.sh` runs it.

// The one unsafe block is the counting allocator below: it forwards to `System` unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use collisionos::config::{Config, Layers, RealtimeConfig};
use collisionos::events::{AlertLevel, Bus, BusReceiver, Event};
use collisionos::subscriptions::{SubscriptionManager, SubscriptionOptions, Tuning};
use collisionos_supabase::realtime::tokio_tungstenite::WebSocketStream;
use collisionos_supabase::realtime::tokio_tungstenite::tungstenite::{
    self, Message, protocol::Role,
};
use collisionos_supabase::realtime::{
    ClientConfig, ConnectFuture, Connector, Frame, RealtimeClient, Serializer, StaticToken,
    TokenProvider, WsSink, WsStream,
};
use collisionos_tests::realtime::{Options, StandIn};
use collisionos_tests::stack::Stack;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments; the counter is a
// side effect that never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live heap bytes, the lowest of a few readings (background polls allocate briefly).
async fn heap() -> i64 {
    let mut low = i64::MAX;
    for _ in 0..5 {
        low = low.min(LIVE_BYTES.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    low
}

const GUARD: Duration = Duration::from_secs(90);

async fn guard<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(GUARD, f)
        .await
        .map_err(|_| anyhow!("hung waiting for {what}"))
}

async fn eventually(what: &str, check: impl Fn() -> bool) -> Result<()> {
    guard(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn mint(secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secs = (now / 1_000_000_000) as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        // `jti` makes every token distinct, so a replaced one is visible in `last_join`.
        &json!({"role": "service_role", "iss": "supabase", "exp": secs + 3600, "jti": now.to_string()}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

struct Env {
    stack: Stack,
    rt: StandIn,
    bus: Bus,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

async fn env_with(options: Options) -> Result<Env> {
    let stack = Stack::start().await.context("starting the stack")?;
    let rt = StandIn::start_with(&stack.db_url, &stack.jwt_secret, options).await?;
    stack.mount_realtime(rt.router());
    Ok(Env {
        stack,
        rt,
        bus: Bus::new(65_536),
        tracker: TaskTracker::new(),
        cancel: CancellationToken::new(),
    })
}

async fn env() -> Result<Env> {
    env_with(Options::default()).await
}

fn fast() -> Tuning {
    Tuning {
        retry_backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ..Tuning::default()
    }
}

impl Env {
    fn realtime(&self, cap: usize) -> RealtimeConfig {
        RealtimeConfig {
            max_subscriptions: cap,
            subscription_ttl: Duration::from_secs(1800),
            sweep_interval: Duration::from_secs(300),
            max_retries: 3,
        }
    }

    /// A manager whose client mints a fresh token per join.
    fn manager(&self, realtime: RealtimeConfig) -> SubscriptionManager {
        let secret = self.stack.jwt_secret.clone();
        let tokens: Arc<dyn TokenProvider> = Arc::new(move || Some(mint(&secret)));
        let mut cc =
            ClientConfig::for_project(&self.stack.url.parse().unwrap(), &self.stack.anon_key)
                .unwrap();
        cc.max_channels = realtime.max_subscriptions;
        cc.reconnect_backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
        cc.rejoin_backoff = vec![Duration::from_millis(50)];
        let client = RealtimeClient::start(cc, tokens, &self.tracker, self.cancel.clone());
        SubscriptionManager::with_client(
            realtime,
            Some(client),
            fast(),
            self.bus.clone(),
            &self.tracker,
            &self.cancel,
        )
    }

    async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(GUARD, self.tracker.wait()).await;
        self.rt.shutdown().await;
        self.stack.shutdown().await;
    }
}

async fn state(rx: &mut BusReceiver, id: &str, want: &str) -> Result<()> {
    guard(&format!("{id} {want}"), async {
        loop {
            match rx.recv().await {
                Some(Event::Subscription(e)) if e.id == id && e.state == want => return Ok(()),
                Some(_) => {}
                None => return Err(anyhow!("bus closed")),
            }
        }
    })
    .await?
}

/// The next change on the bus for subscription `id` whose record has `ro_number == ro`.
async fn change(
    rx: &mut BusReceiver,
    id: &str,
    ro: &str,
) -> Result<Arc<collisionos::events::RowChange>> {
    guard(&format!("{ro} on {id}"), async {
        loop {
            match rx.recv().await {
                Some(Event::Change(c))
                    if c.subscription == id
                        && c.record.as_ref().and_then(|r| r["ro_number"].as_str()) == Some(ro) =>
                {
                    return Ok(c);
                }
                Some(_) => {}
                None => return Err(anyhow!("bus closed")),
            }
        }
    })
    .await?
}

/// Polls the manager until every one of `ids` is `subscribed` (bus events of several ids can
/// come in any order).
async fn subscribed(m: &SubscriptionManager, ids: &[&str]) -> Result<()> {
    eventually(&format!("{ids:?} subscribed"), || {
        ids.iter()
            .all(|id| m.get(id).is_some_and(|i| i.state == "subscribed"))
    })
    .await
}

fn jobs() -> SubscriptionOptions {
    SubscriptionOptions::table("public", "jobs")
}

async fn insert_job(stack: &Stack, ro: &str) -> Result<()> {
    stack
        .sql(&format!(
            "insert into public.jobs (ro_number) values ('{ro}')"
        ))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgrest_writes_reach_the_bus_and_the_sink_through_the_configured_manager() -> Result<()>
{
    let env = env().await?;
    let mut layers = Layers::default();
    for (k, v) in [
        ("SUPABASE_URL", env.stack.url.as_str()),
        ("SUPABASE_ANON_KEY", env.stack.anon_key.as_str()),
        ("SUPABASE_SERVICE_ROLE_KEY", env.stack.service_key.as_str()),
    ] {
        layers.env.insert(k.into(), v.into());
    }
    let config = Config::from_layers(&layers)?;
    let mut rx = env.bus.subscribe();
    let m = SubscriptionManager::start(&config, env.bus.clone(), &env.tracker, &env.cancel);
    assert_eq!(m.start_default().await, Ok(true));
    let approved = SubscriptionOptions {
        filter: Some("status=eq.approved".into()),
        ..jobs()
    };
    m.create("approved", approved).await?;
    let mut sink = m.sink("approved", 16)?;
    subscribed(&m, &["jobs_subscription", "approved"]).await?;
    let info = m.get("jobs_subscription").unwrap();
    assert!(info.persistent && info.expires_at.is_none());

    let res = reqwest::Client::new()
        .post(format!("{}/rest/v1/jobs", env.stack.url))
        .header("apikey", &env.stack.service_key)
        .header("Authorization", format!("Bearer {}", env.stack.service_key))
        .header("Content-Type", "application/json")
        .header("Prefer", "return=minimal")
        .json(&json!({"ro_number": "RO-REST-1"}))
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await?);
    let c = change(&mut rx, "jobs_subscription", "RO-REST-1").await?;
    assert_eq!(
        (c.schema.as_str(), c.table.as_str(), c.kind.as_str()),
        ("public", "jobs", "INSERT")
    );
    env.stack
        .sql("update public.jobs set status = 'approved' where ro_number = 'RO-REST-1'")
        .await?;
    let c = change(&mut rx, "approved", "RO-REST-1").await?;
    assert_eq!(c.kind, "UPDATE");
    // The sink got exactly the filtered one: the insert (status estimate) did not match.
    let got = sink.recv().await.context("sink")?;
    assert_eq!(
        (got.kind.as_str(), got.subscription.as_str()),
        ("UPDATE", "approved")
    );
    assert!(sink.try_recv().is_err());
    // The counter is bumped by the forwarding task after it publishes: wait for it.
    eventually("events counted", || m.stats().events_total >= 3).await?;
    assert_eq!(
        env.rt.last_join("realtime:approved").unwrap()["config"]["postgres_changes"][0]["filter"],
        "status=eq.approved"
    );
    m.destroy_all().await;
    eventually("leaves and close", || {
        env.rt.sockets() == 0 && env.rt.joined_channels() == 0
    })
    .await?;
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_create_destroy_cycles_leave_no_channel_and_no_heap() -> Result<()> {
    let env = env().await?;
    let m = env.manager(env.realtime(100));
    let mut rx = env.bus.subscribe();
    // Warm-up: lazy statics, map capacities, the socket itself.
    for n in 0..200 {
        let id = format!("churn-{}", n % 8);
        m.create(&id, jobs()).await?;
        m.destroy(&id).await?;
    }
    m.create("warm", jobs()).await?;
    state(&mut rx, "warm", "subscribed").await?;
    m.destroy("warm").await?;
    drop(rx);
    eventually("warm-up leaves", || env.rt.joined_channels() == 0).await?;
    let before = heap().await;
    for n in 0..10_000 {
        let id = format!("churn-{}", n % 8);
        m.create(&id, jobs()).await?;
        m.destroy(&id).await?;
    }
    assert!(m.list().is_empty());
    let s = m.stats();
    assert_eq!(
        (s.total, s.created_total, s.destroyed_total),
        (0, 10_201, 10_201)
    );
    eventually("every leave", || env.rt.joined_channels() == 0).await?;
    // The client forgets a cancelled channel on its own task: wait for it too.
    eventually("the client holds no channel", || {
        m.stats().socket.is_some_and(|c| c.channels == 0)
    })
    .await?;
    assert_eq!(env.rt.sockets(), 1);
    let after = heap().await;
    let delta = after - before;
    println!("heap delta after 10,000 cycles: {delta} bytes");
    // A leak of 100 bytes a cycle would be 1,000,000.
    assert!(delta < 1_000_000, "heap grew by {delta} bytes");
    m.destroy_all().await;
    eventually("close", || env.rt.sockets() == 0).await?;
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_are_retried_with_the_same_config_then_fail_with_an_alert() -> Result<()> {
    let env = env().await?;
    let m = env.manager(env.realtime(100));
    let mut rx = env.bus.subscribe();
    let filtered = SubscriptionOptions {
        filter: Some("status=eq.estimate".into()),
        ..jobs()
    };
    env.rt.faults().fail_next_joins(2);
    let joins = env.rt.joins_total();
    m.create("retried", filtered.clone()).await?;
    state(&mut rx, "retried", "subscribed").await?;
    assert_eq!(env.rt.joins_total(), joins + 3);
    assert_eq!(m.stats().retries_total, 2);
    let last = env.rt.last_join("realtime:retried").unwrap();
    assert_eq!(
        last["config"]["postgres_changes"],
        json!([{"event": "*", "schema": "public", "table": "jobs", "filter": "status=eq.estimate"}])
    );
    insert_job(&env.stack, "RO-RETRY").await?;
    change(&mut rx, "retried", "RO-RETRY").await?;
    // A server close mid-life: recreated with the same config, changes flow again.
    assert_eq!(env.rt.faults().close_channels(Some("realtime:retried")), 1);
    state(&mut rx, "retried", "retrying").await?;
    state(&mut rx, "retried", "subscribed").await?;
    assert_eq!(
        env.rt.last_join("realtime:retried").unwrap()["config"],
        last["config"]
    );
    insert_job(&env.stack, "RO-RETRY-2").await?;
    change(&mut rx, "retried", "RO-RETRY-2").await?;

    // Four refusals in a row: three retries, then failed, kept and alerted.
    env.rt.faults().fail_next_joins(4);
    m.create("doomed", filtered).await?;
    let alert = guard("the alert", async {
        loop {
            if let Some(Event::Alert(a)) = rx.recv().await {
                return a;
            }
        }
    })
    .await?;
    assert_eq!(alert.level, AlertLevel::SubscriptionFailed);
    let info = m.get("doomed").unwrap();
    assert_eq!((info.state, info.retries), ("failed", 3));
    assert_eq!(m.figures().failed, 1);
    assert_eq!(env.rt.joined_channels(), 1);
    m.destroy_all().await;
    eventually("close", || {
        env.rt.sockets() == 0 && env.rt.joined_channels() == 0
    })
    .await?;
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_and_the_channel_recreated() -> Result<()> {
    let env = env().await?;
    let m = env.manager(env.realtime(100));
    let mut rx = env.bus.subscribe();
    m.create("jobs", jobs()).await?;
    state(&mut rx, "jobs", "subscribed").await?;
    let first = env.rt.last_join("realtime:jobs").unwrap()["access_token"].clone();
    assert_eq!(env.rt.faults().expire_tokens(), 1);
    state(&mut rx, "jobs", "retrying").await?;
    state(&mut rx, "jobs", "subscribed").await?;
    let second = env.rt.last_join("realtime:jobs").unwrap()["access_token"].clone();
    assert!(second.is_string() && second != first);
    insert_job(&env.stack, "RO-TOKEN").await?;
    change(&mut rx, "jobs", "RO-TOKEN").await?;
    assert_eq!(
        m.get("jobs").unwrap().retries,
        0,
        "a success starts a fresh streak"
    );
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_dropped_socket_every_subscription_rejoins_and_changes_flow() -> Result<()> {
    let env = env().await?;
    let m = env.manager(env.realtime(100));
    let mut rx = env.bus.subscribe();
    for n in 0..5 {
        m.create(&format!("s{n}"), jobs()).await?;
    }
    let ids: Vec<String> = (0..5).map(|n| format!("s{n}")).collect();
    subscribed(&m, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    assert_eq!(env.rt.faults().drop_sockets(), 1);
    // Each one goes errored, then subscribed again (only then is CDC live for it).
    let mut errored = std::collections::BTreeSet::new();
    let mut back = std::collections::BTreeSet::new();
    guard("every subscription back", async {
        while back.len() < 5 {
            if let Some(Event::Subscription(e)) = rx.recv().await {
                if e.state == "errored" {
                    errored.insert(e.id);
                } else if e.state == "subscribed" && errored.contains(&e.id) {
                    back.insert(e.id);
                }
            }
        }
    })
    .await?;
    assert_eq!((env.rt.joined_channels(), env.rt.sockets()), (5, 1));
    insert_job(&env.stack, "RO-REJOIN").await?;
    let mut seen = std::collections::BTreeSet::new();
    guard("RO-REJOIN on all five", async {
        while seen.len() < 5 {
            if let Some(Event::Change(c)) = rx.recv().await
                && c.record.as_ref().and_then(|r| r["ro_number"].as_str()) == Some("RO-REJOIN")
            {
                seen.insert(c.subscription.clone());
            }
        }
    })
    .await?;
    assert_eq!(
        m.stats().retries_total,
        0,
        "socket recovery is the client's, not a retry"
    );
    m.destroy_all().await;
    eventually("close", || {
        env.rt.sockets() == 0 && env.rt.joined_channels() == 0
    })
    .await?;
    assert!(env.rt.leaves_total() >= 5);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_ttl_and_persistence_hold_against_the_server() -> Result<()> {
    let env = env().await?;
    let mut realtime = env.realtime(3);
    realtime.subscription_ttl = Duration::from_secs(1);
    realtime.sweep_interval = Duration::from_millis(200);
    let m = env.manager(realtime);
    let mut rx = env.bus.subscribe();
    m.create(
        "p",
        SubscriptionOptions {
            persistent: true,
            ..jobs()
        },
    )
    .await?;
    for id in ["a", "b", "c"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        m.create(
            id,
            SubscriptionOptions {
                ttl: Some(Duration::from_secs(60)),
                ..jobs()
            },
        )
        .await?;
    }
    state(&mut rx, "c", "subscribed").await?;
    let ids: Vec<String> = m.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec!["p", "b", "c"]);
    assert_eq!(m.stats().evictions_total, 1);
    eventually("3 joined", || env.rt.joined_channels() == 3).await?;
    // A 1 s TTL one (evicting `b`) expires at a sweep; the persistent one stays.
    let short = SubscriptionOptions {
        ttl: Some(Duration::from_secs(1)),
        ..jobs()
    };
    m.create("short", short).await?;
    state(&mut rx, "short", "expired").await?;
    let ids: Vec<String> = m.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec!["p", "c"]);
    let s = m.stats();
    assert_eq!(
        (s.expiries_total, s.evictions_total, s.persistent),
        (1, 2, 1)
    );
    eventually("2 joined", || env.rt.joined_channels() == 2).await?;
    env.shutdown().await;
    Ok(())
}

/// A peer that answers heartbeats and joins and keeps nothing per channel, so heap growth
/// measured against it is the manager's and the client's alone.
#[derive(Clone, Copy)]
struct Stateless;

impl Connector for Stateless {
    fn connect(
        &self,
        _url: String,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> ConnectFuture {
        Box::pin(async move {
            let (a, b) = tokio::io::duplex(1 << 20);
            let client = WebSocketStream::from_raw_socket(a, Role::Client, Some(config)).await;
            let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
            tokio::spawn(async move {
                while let Some(Ok(Message::Text(t))) = server.next().await {
                    let Ok(f) = Frame::decode(t.as_str()) else {
                        continue;
                    };
                    let reply = |payload: Value| Frame {
                        join_ref: f.join_ref.clone(),
                        msg_ref: f.msg_ref.clone(),
                        topic: f.topic.clone(),
                        event: "phx_reply".into(),
                        payload,
                    };
                    let mut out = vec![reply(json!({"status": "ok", "response": {}}))];
                    if f.event == "phx_join" {
                        let mut b = f.payload["config"]["postgres_changes"][0].clone();
                        b["id"] = json!(1);
                        out = vec![
                            reply(json!({"status": "ok", "response": {"postgres_changes": [b]}})),
                            Frame {
                                event: "system".into(),
                                msg_ref: None,
                                payload: json!({"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL"}),
                                ..f.clone()
                            },
                        ];
                    }
                    for o in out {
                        let _ = server
                            .send(Message::Text(o.encode(Serializer::V2).into()))
                            .await;
                    }
                }
            });
            let (sink, stream) = client.split();
            Ok((Box::pin(sink) as WsSink, Box::pin(stream) as WsStream))
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/realtime.sh"]
async fn bench_realtime() -> Result<()> {
    // 1. Bytes per live subscription: manager + client, 1,000 live, against a stateless peer.
    {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let bus = Bus::new(1024);
        let mut cc = ClientConfig::new("ws://bench/socket".parse().unwrap(), "k");
        cc.max_channels = 1000;
        let client = RealtimeClient::start_with(
            cc,
            Arc::new(StaticToken::new(None)),
            Arc::new(Stateless),
            &tracker,
            cancel.clone(),
        );
        let realtime = RealtimeConfig {
            max_subscriptions: 1000,
            subscription_ttl: Duration::from_secs(1800),
            sweep_interval: Duration::from_secs(300),
            max_retries: 3,
        };
        let m = SubscriptionManager::with_client(
            realtime,
            Some(client),
            Tuning::default(),
            bus.clone(),
            &tracker,
            &cancel,
        );
        m.create("warm", jobs()).await?;
        eventually("warm", || m.list().iter().all(|i| i.state == "subscribed")).await?;
        m.destroy("warm").await?;
        let before = heap().await;
        for n in 0..1000 {
            m.create(&format!("live-{n:04}"), jobs()).await?;
        }
        eventually("1,000 subscribed", || {
            m.list().iter().all(|i| i.state == "subscribed")
        })
        .await?;
        let live = heap().await;
        m.destroy_all().await;
        let after = heap().await;
        println!(
            "BENCH bytes_per_live_subscription {:.0}",
            (live - before) as f64 / 1000.0
        );
        println!(
            "BENCH heap_after_destroy_all_delta_bytes {}",
            after - before
        );
        cancel.cancel();
    }

    // A deep per-socket queue: the flood below must not count us as a slow reader.
    let env = env_with(Options {
        outbound_queue: 20_000,
        ..Options::default()
    })
    .await?;
    let m = env.manager(env.realtime(100));
    let mut rx = env.bus.subscribe();

    // 2. Create + destroy per second against the stand-in over the gateway.
    m.create("warm", jobs()).await?;
    state(&mut rx, "warm", "subscribed").await?;
    m.destroy("warm").await?;
    let n = 5000;
    let joins = env.rt.joins_total();
    let t = Instant::now();
    for i in 0..n {
        let id = format!("cycle-{}", i % 8);
        m.create(&id, jobs()).await?;
        m.destroy(&id).await?;
    }
    eventually("leaves", || env.rt.joined_channels() == 0).await?;
    println!(
        "BENCH cycles_whose_join_reached_the_server {}",
        env.rt.joins_total() - joins
    );
    println!(
        "BENCH create_destroy_per_s {:.0}",
        n as f64 / t.elapsed().as_secs_f64()
    );

    // 3. Changes per second, Postgres -> bus (one statement of 5,000 rows).
    m.create("flow", jobs()).await?;
    state(&mut rx, "flow", "subscribed").await?;
    let rows: u32 = 5000;
    let t = Instant::now();
    env.stack
        .sql(&format!("insert into public.jobs (ro_number) select 'RO-B-' || g from generate_series(1, {rows}) g"))
        .await?;
    let sent_before = env.rt.changes_sent_total();
    let mut got = 0u32;
    let mut last = t.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while got < rows {
            if let Some(Event::Change(c)) = rx.recv().await
                && c.subscription == "flow"
            {
                got += 1;
                last = t.elapsed();
            }
        }
    })
    .await;
    let socket = m.stats().socket.unwrap();
    println!("BENCH flood_received {got} of {rows}");
    println!(
        "BENCH standin_changes_sent {}",
        env.rt.changes_sent_total() - sent_before
    );
    println!(
        "BENCH client_changes_dropped {}",
        socket.changes_dropped_total
    );
    println!("BENCH client_socket_losses {}", socket.socket_losses_total);
    println!(
        "BENCH changes_per_s {:.0}",
        f64::from(got) / last.as_secs_f64()
    );
    println!("BENCH bus_lagged_total {}", env.bus.lagged_total());

    // 4. End-to-end latency, commit -> bus, one row at a time.
    let mut lat = Vec::new();
    for i in 0..200 {
        let ro = format!("RO-L-{i}");
        let t = Instant::now();
        insert_job(&env.stack, &ro).await?;
        change(&mut rx, "flow", &ro).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    println!("BENCH latency_ms_p50 {:.1}", percentile(&lat, 0.5));
    println!("BENCH latency_ms_p99 {:.1}", percentile(&lat, 0.99));
    println!("BENCH latency_ms_max {:.1}", lat[lat.len() - 1]);
    m.destroy_all().await;
    env.shutdown().await;
    Ok(())
}
