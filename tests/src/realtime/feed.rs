//! The change feed: one database connection owning a temporary wal2json slot, polled like
//! Realtime's `ReplicationPoller`, and the subscriptions it routes changes to.
//!
//! A subscription moves `PENDING` (joined, not checked) → `LIVE_UNANNOUNCED` (checked against the
//! catalog, taking part in polls) → `LIVE` (its `Subscribed to PostgreSQL` sent), or to `FAILED`
//! (its error sent). The announcement is sent only after a whole poll ran with the subscription
//! in it: a change committed after the client saw it is therefore read by a later poll, which
//! routes it to this subscription.

use super::auth::Claims;
use super::params::Binding;
use super::socket::{Outbox, system_frame};
use super::{Counters, Shared};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, Statement};

const PENDING: u8 = 0;
const LIVE_UNANNOUNCED: u8 = 1;
const LIVE: u8 = 2;
const FAILED: u8 = 3;
const REMOVED: u8 = 4;

/// `pg_temp` helpers made on the feed's connection.
const SESSION_SQL: &str = include_str!("session.sql");

/// One poll: drain the slot (wal2json format 2, as Realtime's `list_changes` asks for it), find
/// the subscriptions each change is visible to, and build the payload of those that have any.
const POLL_SQL: &str = "
with w2j as materialized (
  select x.n, x.data::jsonb as wal
  from pg_logical_slot_get_changes($1::text::name, null, $2::int4,
         'include-pk', 'true', 'include-transaction', 'false', 'include-timestamp', 'true',
         'include-type-oids', 'true', 'format-version', '2', 'actions', 'insert,update,delete')
       with ordinality as x(lsn, xid, data, n)
)
select m.ids, c.d ->> 'stand_in_error' as err, c.d::text as data
from w2j
cross join lateral (select pg_temp.rt_match(w2j.wal, $3::text::jsonb, $5::text) as ids) m
cross join lateral (
  select case when cardinality(m.ids) > 0 then pg_temp.rt_change(w2j.wal, $4::int4) end as d
) c
order by w2j.n";

const CHECK_SQL: &str =
    "select pg_temp.rt_check($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text)";

/// A joined channel with `postgres_changes`.
pub(crate) struct Subscription {
    uid: u64,
    topic: String,
    join_ref: Option<String>,
    bindings: Vec<Binding>,
    out: Outbox,
    state: AtomicU8,
    /// The channel token's role and claims (JSON), for row level security; replaced on refresh.
    auth: Mutex<(String, String)>,
}

impl Subscription {
    pub fn new(
        uid: u64,
        topic: String,
        join_ref: Option<String>,
        bindings: Vec<Binding>,
        out: Outbox,
        claims: &Claims,
    ) -> Subscription {
        Subscription {
            uid,
            topic,
            join_ref,
            bindings,
            out,
            state: AtomicU8::new(PENDING),
            auth: Mutex::new((claims.role.clone(), claims.all.to_string())),
        }
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn advance(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn system(&self, ok: bool, message: &str) {
        let frame = system_frame(
            self.out.vsn,
            &self.topic,
            self.join_ref.as_deref(),
            "postgres_changes",
            ok,
            message,
        );
        self.out.push(frame);
    }
}

/// Adds a subscription and wakes the poller to check it.
pub(crate) fn subscribe(shared: &Shared, sub: Subscription) {
    shared.subs.lock().insert(sub.uid, Arc::new(sub));
    shared.feed_wake.notify_one();
}

/// Removes the subscription of channel `uid`, if any; the poller sends it nothing more.
pub(crate) fn unsubscribe(shared: &Shared, uid: u64) {
    if let Some(sub) = shared.subs.lock().remove(&uid) {
        sub.state.store(REMOVED, Ordering::Release);
    }
}

/// After an accepted `access_token`, Realtime subscribes again and says so again; a failed
/// subscription is retried.
pub(crate) fn resubscribe(shared: &Shared, uid: u64, claims: &Claims) {
    let sub = shared.subs.lock().get(&uid).cloned();
    if let Some(sub) = sub {
        *sub.auth.lock() = (claims.role.clone(), claims.all.to_string());
        if !sub.advance(LIVE, LIVE_UNANNOUNCED) {
            sub.advance(FAILED, PENDING);
        }
        shared.feed_wake.notify_one();
    }
}

/// The feed's connection, slot and prepared statements.
pub(crate) struct FeedConn {
    client: Client,
    poll: Statement,
    check: Statement,
}

impl FeedConn {
    /// Connects, creates the session helpers and the temporary slot.
    pub async fn connect(config: &tokio_postgres::Config, shared: &Shared) -> Result<FeedConn> {
        let mut config = config.clone();
        config.application_name("collisionos_realtime_standin");
        config.connect_timeout(Duration::from_secs(10));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("connecting")?;
        shared.tracker.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "realtime stand-in: feed connection ended");
            }
        });
        client
            .batch_execute(SESSION_SQL)
            .await
            .context("creating the session helpers")?;
        client
            .execute(
                "select pg_create_logical_replication_slot($1::text::name, 'wal2json', true)",
                &[&shared.slot],
            )
            .await
            .with_context(|| format!("creating the replication slot {}", shared.slot))?;
        let poll = client
            .prepare(POLL_SQL)
            .await
            .context("preparing the poll")?;
        let check = client
            .prepare(CHECK_SQL)
            .await
            .context("preparing the check")?;
        Ok(FeedConn {
            client,
            poll,
            check,
        })
    }

    /// Checks a subscription's entries like Realtime's subscription insert: `Some(message)` when
    /// it cannot subscribe.
    async fn check(&self, sub: &Subscription, publication: Option<&str>) -> Result<Option<String>> {
        let role = sub.auth.lock().0.clone();
        for b in &sub.bindings {
            let f = b.filter.as_ref();
            let row = self
                .client
                .query_one(
                    &self.check,
                    &[
                        &b.schema,
                        &b.table,
                        &f.map(|f| f.column.as_str()),
                        &f.map(|f| f.op.as_str()),
                        &f.map(|f| f.value.as_str()),
                        &publication,
                        &role,
                    ],
                )
                .await?;
            let verdict: Option<String> = row.get(0);
            match verdict.as_deref() {
                None => {}
                Some("none") => {
                    return Ok(Some(format!(
                        "Unable to subscribe to changes with given parameters. Please check \
                         Realtime is enabled for the given connect parameters: [{}]",
                        b.describe()
                    )));
                }
                Some(other) => {
                    let exception = other.strip_prefix("exception:").unwrap_or(other);
                    return Ok(Some(format!(
                        "Unable to subscribe to changes with given parameters. An exception \
                         happened so please check your connect parameters: [{}]. Exception: {exception}",
                        b.describe()
                    )));
                }
            }
        }
        Ok(None)
    }

    /// One poll cycle; returns how many changes the slot gave.
    async fn cycle(&self, shared: &Shared) -> Result<usize> {
        let snapshot: Vec<Arc<Subscription>> = shared.subs.lock().values().cloned().collect();
        for sub in snapshot.iter().filter(|s| s.state() == PENDING) {
            match self.check(sub, shared.opts.publication.as_deref()).await? {
                None => {
                    sub.advance(PENDING, LIVE_UNANNOUNCED);
                }
                Some(message) => {
                    if sub.advance(PENDING, FAILED) {
                        sub.system(false, &message);
                    }
                }
            }
        }
        let live: Vec<&Arc<Subscription>> = snapshot
            .iter()
            .filter(|s| matches!(s.state(), LIVE_UNANNOUNCED | LIVE))
            .collect();
        // `k` in the query is an index into `keys`: (subscription, binding id).
        let mut keys: Vec<(usize, u32)> = Vec::new();
        let mut query_subs = Vec::new();
        for (i, sub) in live.iter().enumerate() {
            let (role, claims) = sub.auth.lock().clone();
            for b in &sub.bindings {
                let f = b.filter.as_ref();
                query_subs.push(json!({
                    "k": keys.len(),
                    "schema": b.schema,
                    "table": b.table,
                    "event": b.event,
                    "role": role,
                    "claims": claims,
                    "column": f.map(|f| &f.column),
                    "op": f.map(|f| &f.op),
                    "value": f.map(|f| &f.value),
                    "negate": f.is_some_and(|f| f.negate),
                }));
                keys.push((i, b.id));
            }
        }
        let query_subs = Value::Array(query_subs).to_string();
        let opts = &shared.opts;
        let rows = self
            .client
            .query(
                &self.poll,
                &[
                    &shared.slot,
                    &opts.max_changes_per_poll,
                    &query_subs,
                    &opts.max_record_bytes,
                    &opts.publication,
                ],
            )
            .await?;
        for row in &rows {
            let ks: Vec<i32> = row.get(0);
            if ks.is_empty() {
                continue;
            }
            if let Some(err) = row.get::<_, Option<String>>(1) {
                tracing::warn!(error = %err, "realtime stand-in: could not decode a change; skipped");
                continue;
            }
            let data: String = row.get(2);
            // Matched bindings grouped per subscription, in binding order.
            let mut per_sub: Vec<(usize, Vec<u32>)> = Vec::new();
            for k in ks {
                let Some(&(i, id)) = usize::try_from(k).ok().and_then(|k| keys.get(k)) else {
                    continue;
                };
                match per_sub.iter_mut().find(|(s, _)| *s == i) {
                    Some((_, ids)) => ids.push(id),
                    None => per_sub.push((i, vec![id])),
                }
            }
            for (i, ids) in per_sub {
                let sub = live[i];
                if sub.state() == REMOVED {
                    continue;
                }
                let payload = format!("{{\"ids\":{},\"data\":{data}}}", json!(ids));
                let frame = super::protocol::encode(
                    sub.out.vsn,
                    None,
                    None,
                    &sub.topic,
                    "postgres_changes",
                    &payload,
                );
                if sub.out.push(frame) {
                    Counters::bump(&shared.counters.changes_sent_total);
                }
            }
        }
        for sub in &live {
            if sub.advance(LIVE_UNANNOUNCED, LIVE) {
                sub.system(true, "Subscribed to PostgreSQL");
            }
        }
        Ok(rows.len())
    }

    async fn drop_slot(&self, slot: &str) {
        let dropped = self
            .client
            .execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1::text",
                &[&slot],
            )
            .await;
        if let Err(e) = dropped {
            tracing::warn!(error = %e, slot, "realtime stand-in: dropping the slot failed (it is temporary: it goes with the connection)");
        }
    }
}

/// The poller task: polls until cancelled, reconnecting with backoff when the database goes
/// away (the slot is recreated; subscriptions are announced again, as Realtime does when its
/// poller restarts), then drops the slot.
pub(crate) async fn run(shared: Arc<Shared>, config: tokio_postgres::Config, conn: FeedConn) {
    let mut conn = Some(conn);
    let mut backoff = Duration::from_millis(100);
    let cancel = shared.cancel.clone();
    loop {
        let Some(c) = conn.as_ref() else {
            let connected = tokio::select! {
                () = cancel.cancelled() => break,
                c = FeedConn::connect(&config, &shared) => c,
            };
            match connected {
                Ok(c) => {
                    Counters::bump(&shared.counters.feed_reconnects_total);
                    backoff = Duration::from_millis(100);
                    conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "realtime stand-in: change feed reconnect failed"
                    );
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        };
        let polled = tokio::select! {
            () = cancel.cancelled() => break,
            r = c.cycle(&shared) => r,
        };
        match polled {
            Ok(n) if n >= usize::try_from(shared.opts.max_changes_per_poll).unwrap_or(0) => {}
            Ok(_) => {
                let wait = if shared.subs.lock().is_empty() {
                    shared.opts.idle_poll_interval
                } else {
                    shared.opts.poll_interval
                };
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                    () = shared.feed_wake.notified() => {}
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "realtime stand-in: change feed lost its database"
                );
                conn = None;
                for sub in shared.subs.lock().values() {
                    sub.advance(LIVE, LIVE_UNANNOUNCED);
                }
            }
        }
    }
    if let Some(c) = conn {
        let slot = shared.slot.clone();
        if tokio::time::timeout(Duration::from_secs(5), c.drop_slot(&slot))
            .await
            .is_err()
        {
            tracing::warn!(slot, "realtime stand-in: dropping the slot timed out");
        }
    }
}
