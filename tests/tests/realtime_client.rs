//! `collisionos_supabase::realtime` against the Realtime stand-in behind the stack's gateway:
//! real sockets, real Postgres changes, injected faults. Waits are bounded by a generous guard
//! (a hang fails the test); assertions are on counts and contents, never on durations.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use collisionos_supabase::realtime::{
    ChangeEvent, Channel, ChannelEvent, ChannelOptions, ChannelStatus, ClientConfig, EndReason,
    PostgresChanges, RealtimeClient, Serializer, TokenProvider,
};
use collisionos_tests::realtime::StandIn;
use collisionos_tests::stack::Stack;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest any single wait may take before the test fails as hung.
const GUARD: Duration = Duration::from_secs(60);

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

struct Env {
    stack: Stack,
    rt: StandIn,
}

async fn env() -> Result<Env> {
    let stack = Stack::start().await.context("starting the stack")?;
    let rt = StandIn::start(&stack.db_url, &stack.jwt_secret).await?;
    stack.mount_realtime(rt.router());
    Ok(Env { stack, rt })
}

impl Env {
    /// A provider minting a fresh service-role JWT on every call (never a stored copy).
    fn tokens(&self) -> Arc<dyn TokenProvider> {
        let secret = self.stack.jwt_secret.clone();
        Arc::new(move || Some(mint(&secret, 3600)))
    }

    fn config(&self, serializer: Serializer) -> ClientConfig {
        let mut c =
            ClientConfig::for_project(&self.stack.url.parse().unwrap(), &self.stack.anon_key)
                .unwrap();
        c.serializer = serializer;
        c.reconnect_backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
        c.rejoin_backoff = vec![Duration::from_millis(50)];
        c
    }

    fn client(&self, config: ClientConfig) -> (RealtimeClient, TaskTracker, CancellationToken) {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let client = RealtimeClient::start(config, self.tokens(), &tracker, cancel.clone());
        (client, tracker, cancel)
    }

    async fn insert_job(&self, ro: &str) -> Result<()> {
        self.stack
            .sql(&format!(
                "insert into public.jobs (ro_number) values ('{ro}')"
            ))
            .await?;
        Ok(())
    }

    async fn shutdown(self) {
        self.rt.shutdown().await;
        self.stack.shutdown().await;
    }
}

fn mint(secret: &str, lifetime_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"role": "service_role", "iss": "supabase", "iat": now, "exp": now + lifetime_s}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn jobs() -> ChannelOptions {
    ChannelOptions {
        postgres_changes: vec![PostgresChanges {
            event: ChangeEvent::All,
            schema: "public".into(),
            table: Some("jobs".into()),
            filter: None,
        }],
        private: false,
    }
}

async fn subscribed(ch: &mut Channel) -> Result<()> {
    guard("SUBSCRIBED", async {
        loop {
            match ch.next().await {
                Some(ChannelEvent::Status(ChannelStatus::Subscribed)) => return Ok(()),
                Some(ChannelEvent::Status(s)) if s.is_terminal() => {
                    return Err(anyhow!("ended: {s:?}"));
                }
                Some(_) => {}
                None => return Err(anyhow!("channel over")),
            }
        }
    })
    .await?
}

/// The next change whose record has `ro_number == ro` (other rows are skipped).
async fn change_for(ch: &mut Channel, ro: &str) -> Result<collisionos_supabase::realtime::Change> {
    guard("a change", async {
        loop {
            match ch.next().await {
                Some(ChannelEvent::Change(c))
                    if c.record.as_ref().and_then(|r| r["ro_number"].as_str()) == Some(ro) =>
                {
                    return Ok(c);
                }
                Some(ChannelEvent::Status(s)) if s.is_terminal() => {
                    return Err(anyhow!("ended: {s:?}"));
                }
                Some(_) => {}
                None => return Err(anyhow!("channel over")),
            }
        }
    })
    .await?
}

async fn changes_flow(serializer: Serializer) -> Result<()> {
    let env = env().await?;
    let (client, tracker, cancel) = env.client(env.config(serializer));
    let mut ch = client.channel("jobs", jobs()).await?;
    subscribed(&mut ch).await?;
    assert_eq!(env.rt.joined_channels(), 1);
    let join = env.rt.last_join("realtime:jobs").context("a join")?;
    assert_eq!(
        join["config"]["postgres_changes"],
        json!([{"event": "*", "schema": "public", "table": "jobs"}])
    );
    assert!(join["access_token"].is_string());

    env.insert_job("RO-flow-1").await?;
    let c = change_for(&mut ch, "RO-flow-1").await?;
    assert_eq!(
        (c.schema.as_str(), c.table.as_str(), c.kind.as_str()),
        ("public", "jobs", "INSERT")
    );
    assert_eq!(c.record.as_ref().unwrap()["status"], "estimate");
    env.stack
        .sql("update public.jobs set status = 'approved' where ro_number = 'RO-flow-1'")
        .await?;
    let c = change_for(&mut ch, "RO-flow-1").await?;
    assert_eq!(c.kind, "UPDATE");
    assert_eq!(c.old_record.as_ref().unwrap()["status"], "estimate");

    cancel.cancel();
    tracker.close();
    guard("the client to stop", tracker.wait()).await?;
    eventually("the socket to close", || env.rt.sockets() == 0).await?;
    assert_eq!(env.rt.joined_channels(), 0);
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_changes_arrive_with_serializer_2() -> Result<()> {
    changes_flow(Serializer::V2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_changes_arrive_with_serializer_1() -> Result<()> {
    changes_flow(Serializer::V1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_share_one_socket_and_close_leaves_them_all() -> Result<()> {
    let env = env().await?;
    let (client, _tracker, _cancel) = env.client(env.config(Serializer::V2));
    let mut chans = Vec::new();
    for n in 0..20 {
        chans.push(client.channel(&format!("c{n}"), jobs()).await?);
    }
    for ch in &mut chans {
        subscribed(ch).await?;
    }
    assert_eq!((env.rt.sockets(), env.rt.joined_channels()), (1, 20));
    client.close().await;
    eventually("every leave and the close", || {
        env.rt.sockets() == 0 && env.rt.joined_channels() == 0
    })
    .await?;
    assert_eq!(env.rt.leaves_total(), 20);
    assert_eq!(client.stats().leaves_sent_total, 20);
    for ch in &mut chans {
        let Some(ChannelEvent::Status(s)) = ch.next().await else {
            return Err(anyhow!("a status"));
        };
        assert_eq!(
            s,
            ChannelStatus::Ended {
                end: EndReason::ClientClosed
            }
        );
    }
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_replaced_and_every_channel_rejoins() -> Result<()> {
    let env = env().await?;
    let (client, _tracker, _cancel) = env.client(env.config(Serializer::V2));
    let mut a = client.channel("a", jobs()).await?;
    let mut b = client.channel("b", jobs()).await?;
    subscribed(&mut a).await?;
    subscribed(&mut b).await?;
    let joins_before = env.rt.joins_total();
    assert_eq!(env.rt.faults().drop_sockets(), 1);
    subscribed(&mut a).await?;
    subscribed(&mut b).await?;
    assert_eq!(env.rt.joins_total(), joins_before + 2);
    assert_eq!((env.rt.sockets(), env.rt.joined_channels()), (1, 2));
    env.insert_job("RO-after-drop").await?;
    change_for(&mut a, "RO-after-drop").await?;
    change_for(&mut b, "RO-after-drop").await?;
    let s = client.stats();
    assert_eq!((s.connects_total, s.socket_losses_total), (2, 1));
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_heartbeat_is_detected_and_the_socket_replaced() -> Result<()> {
    let env = env().await?;
    let mut config = env.config(Serializer::V2);
    config.heartbeat_interval = Duration::from_millis(200);
    let (client, _tracker, _cancel) = env.client(config);
    let mut a = client.channel("a", jobs()).await?;
    subscribed(&mut a).await?;
    env.rt.faults().stall_heartbeats(true);
    guard("the socket to be declared dead", async {
        loop {
            if let Some(ChannelEvent::Status(ChannelStatus::Errored { .. })) = a.next().await {
                return;
            }
        }
    })
    .await?;
    assert!(client.stats().heartbeat_timeouts_total >= 1);
    env.rt.faults().stall_heartbeats(false);
    subscribed(&mut a).await?;
    env.insert_job("RO-after-stall").await?;
    change_for(&mut a, "RO-after-stall").await?;
    eventually("the dead socket to be gone", || env.rt.sockets() == 1).await?;
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_endings_are_handed_back_to_the_owner() -> Result<()> {
    let env = env().await?;
    let (client, _tracker, _cancel) = env.client(env.config(Serializer::V2));
    let mut a = client.channel("a", jobs()).await?;
    subscribed(&mut a).await?;
    assert_eq!(env.rt.faults().expire_tokens(), 1);
    let end = guard("the end", async {
        loop {
            if let Some(ChannelEvent::Status(s)) = a.next().await
                && s.is_terminal()
            {
                return s;
            }
        }
    })
    .await?;
    let ChannelStatus::Ended {
        end: EndReason::SystemError(msg),
    } = end
    else {
        return Err(anyhow!("expected a system error, got {end:?}"));
    };
    assert!(msg.contains("Token has expired"), "{msg}");
    // The owner recreates it: the join carries the provider's current token and works.
    let mut a = client.channel("a", jobs()).await?;
    subscribed(&mut a).await?;

    env.rt.faults().fail_next_joins(1);
    let mut b = client.channel("b", jobs()).await?;
    let s = guard("the refusal", async {
        loop {
            if let Some(ChannelEvent::Status(s)) = b.next().await
                && s.is_terminal()
            {
                return s;
            }
        }
    })
    .await?;
    assert_eq!(s.subscribe_status(), "CHANNEL_ERROR");
    assert_eq!(env.rt.faults().close_channels(Some("realtime:a")), 1);
    let s = guard("the close", async {
        loop {
            if let Some(ChannelEvent::Status(s)) = a.next().await
                && s.is_terminal()
            {
                return s;
            }
        }
    })
    .await?;
    assert_eq!(
        s,
        ChannelStatus::Ended {
            end: EndReason::ServerClosed
        }
    );
    assert_eq!(client.stats().channels, 0);
    env.shutdown().await;
    Ok(())
}
