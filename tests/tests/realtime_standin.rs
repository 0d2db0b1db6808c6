//! The Realtime stand-in over a raw WebSocket client, against the real local stack's PostgreSQL
//! (wal_level=logical, wal2json): the Phoenix protocol in both serializers, changes made with
//! SQL, filter routing, token rules, bounds and every fault.
//!
//! Each test starts its own stack and stand-in. Waits are for events (a frame, a counter), each
//! bounded by a deadline; none is a timed sleep standing in for an assertion.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use collisionos_tests::realtime::{JOIN_FAULT_REASON, Options, StandIn, Vsn};
use collisionos_tests::stack::Stack;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(15);

/// Tables of the tests' own, published like the app's tables.
const SCHEMA: &str = "
create table public.rt_items (
  id bigint primary key,
  n int,
  label text,
  price numeric(10, 2),
  meta jsonb,
  flag boolean,
  at timestamptz default now()
);
create table public.rt_marks (id bigint primary key);
create table public.rt_hidden (id bigint primary key);
alter publication supabase_realtime add table public.rt_items, public.rt_marks;
";

struct Harness {
    stack: Stack,
    rt: StandIn,
    addr: std::net::SocketAddr,
}

impl Harness {
    async fn new() -> Result<Harness> {
        Harness::with(Options::default()).await
    }

    async fn with(options: Options) -> Result<Harness> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "collisionos_tests=info".into()),
            )
            .try_init();
        let stack = Stack::start().await.context("starting the stack")?;
        stack.sql(SCHEMA).await?;
        let rt = StandIn::start_with(&stack.db_url, &stack.jwt_secret, options).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = rt.serve(listener)?;
        Ok(Harness { stack, rt, addr })
    }

    fn url(&self, key: &str, vsn: &str) -> String {
        format!(
            "ws://{}/realtime/v1/websocket?apikey={key}&vsn={vsn}",
            self.addr
        )
    }

    async fn client(&self, vsn: Vsn) -> Result<Client> {
        Client::connect(&self.url(&self.stack.service_key, vsn_str(vsn)), vsn).await
    }

    async fn shutdown(self) {
        self.rt.shutdown().await;
        self.stack.shutdown().await;
    }
}

fn vsn_str(vsn: Vsn) -> &'static str {
    match vsn {
        Vsn::V1 => "1.0.0",
        Vsn::V2 => "2.0.0",
    }
}

/// One decoded frame, whatever the serializer.
#[derive(Debug, Clone)]
struct Msg {
    join_ref: Option<String>,
    ref_: Option<String>,
    topic: String,
    event: String,
    payload: Value,
    /// The frame as received.
    raw: Value,
}

impl Msg {
    fn status(&self) -> &str {
        self.payload["status"].as_str().unwrap_or("")
    }
}

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    vsn: Vsn,
    next_ref: u64,
}

impl Client {
    async fn connect(url: &str, vsn: Vsn) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client {
            ws,
            vsn,
            next_ref: 0,
        })
    }

    /// Sends a message and returns its ref.
    async fn send(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Result<String> {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let frame = match self.vsn {
            Vsn::V2 => json!([join_ref, r, topic, event, payload]),
            Vsn::V1 => {
                json!({"topic": topic, "event": event, "payload": payload, "ref": r, "join_ref": join_ref})
            }
        };
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(r)
    }

    async fn recv(&mut self) -> Result<Msg> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("no frame within the deadline")?;
            let text = match frame {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected frame {other:?}"),
                Some(Err(e)) => bail!("socket error: {e}"),
                None => bail!("socket closed"),
            };
            let raw: Value = serde_json::from_str(&text)?;
            let msg = match self.vsn {
                Vsn::V2 => {
                    let a = raw.as_array().context("V2 frames are arrays")?;
                    ensure!(a.len() == 5, "V2 frame of {} elements", a.len());
                    Msg {
                        join_ref: opt_str(&a[0]),
                        ref_: opt_str(&a[1]),
                        topic: a[2].as_str().context("topic")?.to_owned(),
                        event: a[3].as_str().context("event")?.to_owned(),
                        payload: a[4].clone(),
                        raw: raw.clone(),
                    }
                }
                Vsn::V1 => {
                    ensure!(raw.is_object(), "V1 frames are objects: {raw}");
                    Msg {
                        join_ref: opt_str(&raw["join_ref"]),
                        ref_: opt_str(&raw["ref"]),
                        topic: raw["topic"].as_str().context("topic")?.to_owned(),
                        event: raw["event"].as_str().context("event")?.to_owned(),
                        payload: raw["payload"].clone(),
                        raw: raw.clone(),
                    }
                }
            };
            return Ok(msg);
        }
    }

    /// The next frame matching `want`; frames before it are returned too, in order.
    async fn recv_until(&mut self, want: impl Fn(&Msg) -> bool) -> Result<(Msg, Vec<Msg>)> {
        let mut skipped = Vec::new();
        loop {
            let m = self.recv().await?;
            if want(&m) {
                return Ok((m, skipped));
            }
            skipped.push(m);
        }
    }

    async fn reply_to(&mut self, r: &str) -> Result<Msg> {
        let r = r.to_owned();
        Ok(self
            .recv_until(move |m| m.event == "phx_reply" && m.ref_.as_deref() == Some(r.as_str()))
            .await?
            .0)
    }

    /// Joins `topic` and returns (join_ref, reply).
    async fn join(&mut self, topic: &str, payload: Value) -> Result<(String, Msg)> {
        let join_ref = (self.next_ref + 1).to_string();
        let r = self
            .send(Some(&join_ref), topic, "phx_join", payload)
            .await?;
        ensure!(r == join_ref);
        let reply = self.reply_to(&r).await?;
        Ok((join_ref, reply))
    }

    /// Joins with `postgres_changes` entries and waits for `Subscribed to PostgreSQL`; returns
    /// (join_ref, the reply's ids).
    async fn subscribe(&mut self, topic: &str, changes: Value) -> Result<(String, Vec<u64>)> {
        let (join_ref, reply) = self.join(topic, join_payload(changes, None)).await?;
        ensure!(reply.status() == "ok", "join refused: {}", reply.payload);
        let ids = reply.payload["response"]["postgres_changes"]
            .as_array()
            .context("postgres_changes in the reply")?
            .iter()
            .map(|e| e["id"].as_u64().context("numeric id"))
            .collect::<Result<Vec<_>>>()?;
        let t = topic.to_owned();
        let (sys, _) = self
            .recv_until(move |m| m.topic == t && m.event == "system")
            .await?;
        ensure!(
            sys.payload["status"] == "ok" && sys.payload["message"] == "Subscribed to PostgreSQL",
            "not subscribed: {}",
            sys.payload
        );
        Ok((join_ref, ids))
    }

    /// The next `postgres_changes` on `topic`.
    async fn change(&mut self, topic: &str) -> Result<Msg> {
        let t = topic.to_owned();
        Ok(self
            .recv_until(move |m| m.topic == t && m.event == "postgres_changes")
            .await?
            .0)
    }
}

/// A join payload as realtime-js 2.x sends it.
fn join_payload(changes: Value, access_token: Option<&str>) -> Value {
    let mut p = json!({
        "config": {
            "broadcast": {"ack": false, "self": false},
            "presence": {"key": "", "enabled": false},
            "postgres_changes": changes,
            "private": false
        }
    });
    if let Some(t) = access_token {
        p["access_token"] = json!(t);
    }
    p
}

async fn eventually(what: &str, check: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A handshake's refusal: (status, body).
async fn refused(url: &str) -> Result<(u16, Value)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => bail!("handshake accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Ok((resp.status().as_u16(), serde_json::from_slice(&body)?))
        }
        Err(e) => bail!("unexpected handshake error: {e}"),
    }
}

#[tokio::test]
async fn handshake_checks_the_key_and_the_serializer() -> Result<()> {
    let h = Harness::new().await?;
    let base = format!("ws://{}/realtime/v1/websocket", h.addr);
    let (s, body) = refused(&format!("{base}?vsn=2.0.0")).await?;
    assert_eq!((s, body), (401, json!({"error": "API key is missing"})));
    let (s, body) = refused(&format!("{base}?vsn=2.0.0&apikey=nonsense")).await?;
    assert_eq!(
        (s, body),
        (
            401,
            json!({"error": "The token provided is not a valid JWT"})
        )
    );
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"role": "anon", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-projects-secret-000000"),
    )?;
    let (s, body) = refused(&h.url(&foreign, "2.0.0")).await?;
    assert_eq!(
        (s, body),
        (401, json!({"error": "Failed to validate JWT signature"}))
    );
    let expired = h.stack.mint_jwt(&json!({"role": "anon", "exp": 1_000_000}));
    let (s, body) = refused(&h.url(&expired, "2.0.0")).await?;
    assert_eq!((s, body), (401, json!({"error": "Token has expired"})));
    let no_role = h.stack.mint_jwt(&json!({"exp": 4_000_000_000u64}));
    let (s, _) = refused(&h.url(&no_role, "2.0.0")).await?;
    assert_eq!(s, 401);
    let (s, _) = refused(&h.url(&h.stack.anon_key, "3.0.0")).await?;
    assert_eq!(s, 403);
    // Also served at self-hosted Realtime's path; the key may come as a header.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/socket/websocket?vsn=1.0.0",
        h.addr
    ))?;
    req.headers_mut()
        .insert("x-api-key", h.stack.anon_key.parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    eventually("one socket", || h.rt.sockets() == 1).await?;
    drop(ws);
    eventually("no socket", || h.rt.sockets() == 0).await?;
    h.shutdown().await;
    Ok(())
}

async fn join_leave_heartbeat(vsn: Vsn) -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(vsn).await?;

    let r = c.send(None, "phoenix", "heartbeat", json!({})).await?;
    let hb = c.reply_to(&r).await?;
    assert_eq!((hb.topic.as_str(), hb.status()), ("phoenix", "ok"));
    assert_eq!(hb.payload["response"], json!({}));
    assert_eq!(h.rt.heartbeats_total(), 1);

    let changes = json!([{"event": "INSERT", "schema": "public", "table": "rt_items"}]);
    let payload = join_payload(changes.clone(), None);
    let (join_ref, reply) = c.join("realtime:room", payload.clone()).await?;
    assert_eq!(reply.status(), "ok", "{}", reply.payload);
    let entries = &reply.payload["response"]["postgres_changes"];
    assert_eq!(entries.as_array().map(Vec::len), Some(1));
    let entry = &entries[0];
    assert!(entry["id"].is_u64(), "{entry}");
    // The entry comes back as sent (no `filter: null` added), plus its id.
    let mut expected = changes[0].clone();
    expected["id"] = entry["id"].clone();
    assert_eq!(entry, &expected);
    match vsn {
        Vsn::V2 => assert_eq!(reply.join_ref.as_deref(), Some(join_ref.as_str())),
        // Phoenix's V1 encoder writes topic, event, payload and ref only.
        Vsn::V1 => assert!(reply.raw.get("join_ref").is_none(), "{}", reply.raw),
    }

    let (sys, _) = c.recv_until(|m| m.event == "system").await?;
    assert_eq!(
        sys.payload,
        json!({"extension": "postgres_changes", "status": "ok",
               "message": "Subscribed to PostgreSQL", "channel": "room"})
    );
    assert_eq!(sys.topic, "realtime:room");
    if vsn == Vsn::V2 {
        assert_eq!(sys.join_ref.as_deref(), Some(join_ref.as_str()));
    }
    assert_eq!(h.rt.joined_channels(), 1);
    assert_eq!(h.rt.joins_total(), 1);
    assert_eq!(h.rt.last_join("realtime:room"), Some(payload));

    h.stack
        .sql("insert into rt_items (id, n) values (1, 10)")
        .await?;
    let ch = c.change("realtime:room").await?;
    assert_eq!(ch.ref_, None);
    assert_eq!(ch.payload["ids"], json!([entry["id"]]));
    assert_eq!(ch.payload["data"]["record"]["n"], 10);

    let r = c
        .send(Some(&join_ref), "realtime:room", "phx_leave", json!({}))
        .await?;
    let left = c.reply_to(&r).await?;
    assert_eq!(
        (left.status(), &left.payload["response"]),
        ("ok", &json!({}))
    );
    let (close, _) = c.recv_until(|m| m.event == "phx_close").await?;
    assert_eq!(close.topic, "realtime:room");
    assert_eq!(close.ref_.as_deref(), Some(join_ref.as_str()));
    assert_eq!(h.rt.joined_channels(), 0);
    assert_eq!(h.rt.leaves_total(), 1);
    assert_eq!(h.rt.stats().subscriptions, 0);

    // Nothing is routed to a channel that left; a leave of an unknown topic is answered ok.
    let r = c
        .send(None, "realtime:never", "phx_leave", json!({}))
        .await?;
    assert_eq!(c.reply_to(&r).await?.status(), "ok");
    let r = c
        .send(None, "realtime:never", "broadcast", json!({}))
        .await?;
    let unmatched = c.reply_to(&r).await?;
    assert_eq!(unmatched.status(), "error");
    assert_eq!(unmatched.payload["response"]["reason"], "unmatched topic");

    drop(c);
    eventually("the socket to go", || h.rt.sockets() == 0).await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn join_leave_heartbeat_v1() -> Result<()> {
    join_leave_heartbeat(Vsn::V1).await
}

#[tokio::test]
async fn join_leave_heartbeat_v2() -> Result<()> {
    join_leave_heartbeat(Vsn::V2).await
}

#[tokio::test]
async fn ids_collapse_for_identical_filters() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let a = json!({"event": "*", "schema": "public", "table": "rt_items", "filter": "n=eq.1"});
    let b = json!({"event": "*", "schema": "public", "table": "rt_items", "filter": "n=eq.2"});
    let (_, ids) = c.subscribe("realtime:one", json!([a, a, b])).await?;
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    // Key order does not matter; another channel gets the same id for the same filter.
    let a_reordered =
        json!({"filter": "n=eq.1", "table": "rt_items", "schema": "public", "event": "*"});
    let (_, ids2) = c.subscribe("realtime:two", json!([a_reordered])).await?;
    assert_eq!(ids2, vec![ids[0]]);

    h.stack
        .sql("insert into rt_items (id, n) values (1, 1)")
        .await?;
    let (m1, _) = c.recv_until(|m| m.event == "postgres_changes").await?;
    let (m2, _) = c.recv_until(|m| m.event == "postgres_changes").await?;
    let mut got = [
        (m1.topic.clone(), m1.payload["ids"].clone()),
        (m2.topic, m2.payload["ids"].clone()),
    ];
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got[0], ("realtime:one".to_owned(), json!([ids[0], ids[0]])));
    assert_eq!(got[1], ("realtime:two".to_owned(), json!([ids[0]])));
    h.shutdown().await;
    Ok(())
}

fn is_iso_ms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && s.chars().filter(char::is_ascii_digit).count() == 17
}

#[tokio::test]
async fn changes_from_sql_arrive_as_realtime_sends_them() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let (_, ids) = c
        .subscribe(
            "realtime:items",
            json!([{"event": "*", "schema": "public", "table": "rt_items"}]),
        )
        .await?;
    h.stack
        .sql(
            "insert into rt_items (id, n, label, price, meta, flag)
             values (7, 42, 'it''s \"x\"', 12.50, '{\"a\": [1, 2]}', true)",
        )
        .await?;
    h.stack
        .sql("update rt_items set n = 43 where id = 7")
        .await?;
    h.stack.sql("delete from rt_items where id = 7").await?;

    let ins = c.change("realtime:items").await?;
    assert_eq!(ins.payload["ids"], json!(ids));
    let d = &ins.payload["data"];
    assert_eq!(
        (
            d["schema"].as_str(),
            d["table"].as_str(),
            d["type"].as_str()
        ),
        (Some("public"), Some("rt_items"), Some("INSERT"))
    );
    assert_eq!(d["errors"], Value::Null);
    assert!(d.get("old_record").is_none(), "{d}");
    assert!(
        is_iso_ms(d["commit_timestamp"].as_str().unwrap_or("")),
        "{}",
        d["commit_timestamp"]
    );
    let record = &d["record"];
    assert_eq!(record["id"], 7);
    assert_eq!(record["n"], 42);
    assert_eq!(record["label"], "it's \"x\"");
    assert_eq!(record["price"].as_f64(), Some(12.5));
    assert_eq!(record["meta"], json!({"a": [1, 2]}));
    assert_eq!(record["flag"], true);
    assert!(
        record["at"].as_str().is_some_and(|s| s.contains('T')),
        "{record}"
    );
    let cols: Vec<(String, String)> = d["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = [
        ("id", "int8"),
        ("n", "int4"),
        ("label", "text"),
        ("price", "numeric"),
        ("meta", "jsonb"),
        ("flag", "bool"),
        ("at", "timestamptz"),
    ];
    assert_eq!(
        cols,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );

    let upd = c.change("realtime:items").await?;
    let d = &upd.payload["data"];
    assert_eq!(d["type"], "UPDATE");
    assert_eq!(d["record"]["n"], 43);
    // Default replica identity: the old row is the primary key only.
    assert_eq!(d["old_record"], json!({"id": 7}));

    let del = c.change("realtime:items").await?;
    let d = &del.payload["data"];
    assert_eq!(d["type"], "DELETE");
    assert!(d.get("record").is_none(), "{d}");
    assert_eq!(d["old_record"], json!({"id": 7}));
    assert_eq!(h.rt.changes_sent_total(), 3);

    // The app's jobs table: REPLICA IDENTITY FULL and row level security (the service key
    // passes it). Updates carry the whole old row; deletes only the key, as Realtime cuts
    // them on RLS tables.
    let (_, _) = c
        .subscribe(
            "realtime:jobs",
            json!([{"event": "*", "schema": "public", "table": "jobs"}]),
        )
        .await?;
    let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
    h.stack
        .sql(&format!(
            "insert into jobs (id, ro_number) values ('{id}', 'RO-1')"
        ))
        .await?;
    h.stack
        .sql(&format!(
            "update jobs set status = 'approved' where id = '{id}'"
        ))
        .await?;
    let ins = c.change("realtime:jobs").await?;
    assert_eq!(ins.payload["data"]["record"]["status"], "estimate");
    assert_eq!(
        ins.payload["data"]["record"]["estimate_total"].as_f64(),
        Some(0.0)
    );
    let upd = c.change("realtime:jobs").await?;
    assert_eq!(upd.payload["data"]["record"]["status"], "approved");
    assert_eq!(upd.payload["data"]["old_record"]["status"], "estimate");
    assert_eq!(upd.payload["data"]["old_record"]["ro_number"], "RO-1");
    h.stack
        .sql(&format!("delete from jobs where id = '{id}'"))
        .await?;
    let del = c.change("realtime:jobs").await?;
    assert_eq!(del.payload["data"]["old_record"], json!({"id": id}));
    h.shutdown().await;
    Ok(())
}

/// Collects `postgres_changes` per topic until the sentinel row (a `rt_marks` insert, which the
/// `realtime:mark` channel sees) arrives: everything committed before it has been routed by then.
async fn collect_until_mark(
    c: &mut Client,
) -> Result<std::collections::BTreeMap<String, Vec<Value>>> {
    let (_, before) = c
        .recv_until(|m| m.topic == "realtime:mark" && m.event == "postgres_changes")
        .await?;
    let mut out = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for m in before.into_iter().filter(|m| m.event == "postgres_changes") {
        let d = &m.payload["data"];
        let row = if d["type"] == "DELETE" {
            &d["old_record"]
        } else {
            &d["record"]
        };
        out.entry(m.topic.clone())
            .or_default()
            .push(json!([d["type"], row["id"]]));
    }
    Ok(out)
}

#[tokio::test]
async fn filters_route_changes() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let entry = |filter: &str| json!([{"event": "*", "schema": "public", "table": "rt_items", "filter": filter}]);
    let cases = [
        ("eq", "n=eq.1"),
        ("neq", "n=neq.1"),
        ("lt", "n=lt.2"),
        ("lte", "n=lte.2"),
        ("gt", "n=gt.2"),
        ("gte", "n=gte.2"),
        ("in", "label=in.(a,\"b,c\")"),
        ("not", "n=not.eq.1"),
        ("price", "price=gt.9.5"),
        ("delete_by_id", "id=eq.3"),
    ];
    for (name, filter) in cases {
        c.subscribe(&format!("realtime:{name}"), entry(filter))
            .await?;
    }
    c.subscribe(
        "realtime:inserts",
        json!([{"event": "INSERT", "schema": "public", "table": "rt_items"}]),
    )
    .await?;
    c.subscribe(
        "realtime:mark",
        json!([{"event": "INSERT", "schema": "public", "table": "rt_marks"}]),
    )
    .await?;
    h.stack
        .sql(
            "insert into rt_items (id, n, label, price) values
               (1, 1, 'a', 1.00), (2, 2, 'b,c', 10.00), (3, 3, 'z', 9.50)",
        )
        .await?;
    h.stack.sql("delete from rt_items where id = 3").await?;
    h.stack.sql("insert into rt_marks values (1)").await?;
    let got = collect_until_mark(&mut c).await?;
    let ins = |ids: &[i64]| ids.iter().map(|i| json!(["INSERT", i])).collect::<Vec<_>>();
    let expect = |topic: &str, rows: Vec<Value>| {
        assert_eq!(
            got.get(&format!("realtime:{topic}"))
                .cloned()
                .unwrap_or_default(),
            rows,
            "{topic}"
        );
    };
    expect("eq", ins(&[1]));
    expect("neq", ins(&[2, 3]));
    expect("lt", ins(&[1]));
    expect("lte", ins(&[1, 2]));
    expect("gt", ins(&[3]));
    expect("gte", ins(&[2, 3]));
    expect("in", ins(&[1, 2]));
    expect("not", ins(&[2, 3]));
    // Compared as numeric(10,2), not as text ("10.00" < "9.5" as strings).
    expect("price", ins(&[2]));
    // A DELETE is matched on its old row, which under the default replica identity is the key.
    expect(
        "delete_by_id",
        vec![json!(["INSERT", 3]), json!(["DELETE", 3])],
    );
    expect("inserts", ins(&[1, 2, 3]));
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_subscriptions_get_realtimes_system_errors() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let cases = [
        (
            json!({"event": "*", "schema": "public", "table": "rt_items", "filter": "n=like.1"}),
            "Error parsing `filter` params: [\"like\", \"1\"]",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "rt_items", "filter": "nope=eq.1"}),
            "Exception: invalid column for filter nope",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "rt_items", "filter": "n=eq.abc"}),
            "Exception: invalid input syntax for type integer: \"abc\"",
        ),
        (
            json!({"event": "*", "schema": "public", "table": "rt_items",
                "filter": format!("n=in.({})", (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(","))}),
            "Exception: too many values for `in` filter. Maximum 100",
        ),
        // Not in the supabase_realtime publication.
        (
            json!({"event": "*", "schema": "public", "table": "rt_hidden"}),
            "Please check Realtime is enabled for the given connect parameters",
        ),
        (json!({"event": "*"}), "No subscription params provided."),
    ];
    for (i, (entry, text)) in cases.iter().enumerate() {
        let topic = format!("realtime:bad{i}");
        let (_, reply) = c.join(&topic, join_payload(json!([entry]), None)).await?;
        // The join itself succeeds (ids included); the failure comes as a system message.
        assert_eq!(reply.status(), "ok", "{}", reply.payload);
        let t = topic.clone();
        let (sys, _) = c
            .recv_until(move |m| m.topic == t && m.event == "system")
            .await?;
        assert_eq!(sys.payload["status"], "error", "{}", sys.payload);
        assert_eq!(sys.payload["extension"], "postgres_changes");
        let message = sys.payload["message"].as_str().unwrap_or("");
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    // Still joined (as on Realtime), but nothing is routed to them.
    assert_eq!(h.rt.joined_channels(), cases.len());
    h.stack
        .sql("insert into rt_items (id, n) values (1, 1)")
        .await?;
    c.subscribe(
        "realtime:mark",
        json!([{"event": "INSERT", "schema": "public", "table": "rt_marks"}]),
    )
    .await?;
    h.stack
        .sql("insert into rt_hidden values (1); insert into rt_marks values (1)")
        .await?;
    assert!(collect_until_mark(&mut c).await?.is_empty());
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn row_level_security_decides_per_token() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let jobs = json!({"event": "*", "schema": "public", "table": "jobs"});
    let marks = json!({"event": "INSERT", "schema": "public", "table": "rt_marks"});
    // anon has no policy on jobs; authenticated staff have one; service_role bypasses RLS.
    for (name, key) in [
        ("anon", h.stack.anon_key.clone()),
        (
            "staff",
            h.stack.role_key("authenticated", Duration::from_secs(3600)),
        ),
        ("service", h.stack.service_key.clone()),
    ] {
        let topic = format!("realtime:{name}");
        let (_, reply) = c
            .join(&topic, join_payload(json!([jobs]), Some(&key)))
            .await?;
        assert_eq!(reply.status(), "ok");
        let t = topic.clone();
        let (sys, _) = c
            .recv_until(move |m| m.topic == t && m.event == "system")
            .await?;
        assert_eq!(sys.payload["status"], "ok", "{}", sys.payload);
    }
    c.subscribe("realtime:mark", json!([marks])).await?;
    h.stack
        .sql("insert into jobs (id, ro_number) values ('6f9619ff-8b86-d011-b42d-00c04fc964ff', 'RO-9')")
        .await?;
    h.stack.sql("insert into rt_marks values (1)").await?;
    let got = collect_until_mark(&mut c).await?;
    let seen: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(seen, ["realtime:service", "realtime:staff"]);
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tokens_expire_refresh_and_are_checked_at_join() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let items = json!([{"event": "*", "schema": "public", "table": "rt_items"}]);

    let expired = h.stack.mint_jwt(&json!({"role": "anon", "exp": 1_000_000}));
    let (_, reply) = c
        .join("realtime:a", join_payload(items.clone(), Some(&expired)))
        .await?;
    assert_eq!(reply.status(), "error");
    let reason = reply.payload["response"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("InvalidJWTToken: Token has expired "),
        "{reason}"
    );

    // A refresh with a good token is silent and subscribes again.
    let (join_ref, _) = c.subscribe("realtime:a", items.clone()).await?;
    let fresh = h.stack.role_key("service_role", Duration::from_secs(3600));
    c.send(
        Some(&join_ref),
        "realtime:a",
        "access_token",
        json!({"access_token": fresh}),
    )
    .await?;
    let (sys, skipped) = c.recv_until(|m| m.event == "system").await?;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(sys.payload["message"], "Subscribed to PostgreSQL");

    // A token that runs out while joined ends the channel: system error, then phx_close.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let short = h
        .stack
        .mint_jwt(&json!({"role": "service_role", "exp": now + 2}));
    c.send(
        Some(&join_ref),
        "realtime:a",
        "access_token",
        json!({"access_token": short}),
    )
    .await?;
    let (sys, _) = c
        .recv_until(|m| m.event == "system" && m.payload["status"] == "error")
        .await?;
    assert_eq!(sys.payload["extension"], "system");
    assert_eq!(sys.payload["channel"], "a");
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Token has expired"),
        "{}",
        sys.payload
    );
    let close = c.recv().await?;
    assert_eq!(
        (close.event.as_str(), close.join_ref.as_deref()),
        ("phx_close", Some(join_ref.as_str()))
    );
    assert_eq!(h.rt.joined_channels(), 0);

    // A refresh with an expired token ends the channel at once.
    let (join_ref, _) = c.subscribe("realtime:b", items).await?;
    c.send(
        Some(&join_ref),
        "realtime:b",
        "access_token",
        json!({"access_token": expired}),
    )
    .await?;
    let sys = c.recv().await?;
    assert_eq!(sys.event, "system");
    assert!(
        sys.payload["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Token has expired")
    );
    assert_eq!(c.recv().await?.event, "phx_close");
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn channel_cap_duplicate_joins_and_rejoins() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    for i in 0..100 {
        let (_, reply) = c
            .join(&format!("realtime:c{i}"), join_payload(json!([]), None))
            .await?;
        assert_eq!(reply.status(), "ok");
    }
    let (_, reply) = c
        .join("realtime:c100", join_payload(json!([]), None))
        .await?;
    assert_eq!(reply.status(), "error");
    assert_eq!(
        reply.payload["response"]["reason"],
        "ChannelRateLimitReached: Too many channels"
    );
    assert_eq!(h.rt.joined_channels(), 100);
    assert_eq!(h.rt.faults().close_channels(None), 100);
    assert_eq!(h.rt.joined_channels(), 0);

    // Joining a joined topic again closes the first join, then answers the second.
    let items = json!([{"event": "*", "schema": "public", "table": "rt_items"}]);
    let (first, _) = c.subscribe("realtime:dup", items.clone()).await?;
    let (second, reply) = c
        .join("realtime:dup", join_payload(items.clone(), None))
        .await?;
    assert_eq!(reply.status(), "ok");
    // The close of the first join came before the reply.
    h.stack.sql("insert into rt_items (id) values (1)").await?;
    let (ch, skipped) = c.recv_until(|m| m.event == "postgres_changes").await?;
    assert!(skipped.iter().any(|m| m.event == "system"));
    assert_eq!(ch.topic, "realtime:dup");
    assert_ne!(first, second);
    assert_eq!(h.rt.joined_channels(), 1);
    assert_eq!(
        h.rt.last_join("realtime:dup"),
        Some(join_payload(items, None))
    );
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn faults_drop_stall_fail_close_expire_refuse() -> Result<()> {
    let h = Harness::new().await?;
    let faults = h.rt.faults();
    let items = json!([{"event": "*", "schema": "public", "table": "rt_items"}]);

    // Stalled heartbeats are counted, never answered.
    let mut c = h.client(Vsn::V2).await?;
    faults.stall_heartbeats(true);
    let stalled = c.send(None, "phoenix", "heartbeat", json!({})).await?;
    eventually("the heartbeat", || h.rt.heartbeats_total() == 1).await?;
    faults.stall_heartbeats(false);
    let answered = c.send(None, "phoenix", "heartbeat", json!({})).await?;
    let first = c.recv().await?;
    assert_eq!(
        first.ref_.as_deref(),
        Some(answered.as_str()),
        "the stalled {stalled} was answered"
    );

    // The next N joins fail as CHANNEL_ERROR does.
    faults.fail_next_joins(2);
    for _ in 0..2 {
        let (_, reply) = c
            .join("realtime:f", join_payload(items.clone(), None))
            .await?;
        assert_eq!(reply.status(), "error");
        assert_eq!(reply.payload["response"]["reason"], JOIN_FAULT_REASON);
    }
    let (join_ref, _) = c.subscribe("realtime:f", items.clone()).await?;
    assert_eq!(h.rt.stats().join_errors_total, 2);

    // phx_close to one topic.
    c.subscribe("realtime:g", items.clone()).await?;
    assert_eq!(faults.close_channels(Some("realtime:f")), 1);
    let close = c.recv().await?;
    assert_eq!(
        (close.topic.as_str(), close.event.as_str()),
        ("realtime:f", "phx_close")
    );
    assert_eq!(close.join_ref.as_deref(), Some(join_ref.as_str()));
    assert_eq!(h.rt.joined_channels(), 1);

    // A crashed channel: phx_error, and the client may rejoin it.
    let (crashed_ref, _) = c.subscribe("realtime:k", items.clone()).await?;
    assert_eq!(faults.crash_channels(Some("realtime:k")), 1);
    let err = c.recv().await?;
    assert_eq!(
        (err.topic.as_str(), err.event.as_str()),
        ("realtime:k", "phx_error")
    );
    assert_eq!(err.payload, json!({"reason": "channel_crash"}));
    assert_eq!(err.join_ref.as_deref(), Some(crashed_ref.as_str()));
    assert_eq!(h.rt.joined_channels(), 1);

    // Expired tokens end every channel.
    assert_eq!(faults.expire_tokens(), 1);
    let sys = c.recv().await?;
    assert_eq!(
        sys.payload,
        json!({"extension": "system", "status": "error", "message": "Token has expired 0 seconds ago", "channel": "g"})
    );
    assert_eq!(c.recv().await?.event, "phx_close");
    assert_eq!(h.rt.joined_channels(), 0);

    // Drop every socket: no close frame, the stream just ends.
    c.subscribe("realtime:h", items.clone()).await?;
    assert_eq!(faults.drop_sockets(), 1);
    match tokio::time::timeout(WAIT, c.ws.next()).await? {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => bail!("expected a dropped socket, got {m:?}"),
    }
    eventually("no sockets", || {
        h.rt.sockets() == 0 && h.rt.joined_channels() == 0
    })
    .await?;
    assert_eq!(h.rt.stats().subscriptions, 0);

    // Refuse new sockets for a while: 503, then accepted again once it passed.
    faults.refuse_sockets(Duration::from_millis(300));
    let url = h.url(&h.stack.service_key, "2.0.0");
    let (status, body) = refused(&url).await?;
    assert_eq!(status, 503);
    assert!(body["error"].is_string());
    let deadline = Instant::now() + WAIT;
    loop {
        if Client::connect(&url, Vsn::V2).await.is_ok() {
            break;
        }
        ensure!(Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same over HTTP, for scripts.
    let http = reqwest::Client::new();
    let base = format!("http://{}/realtime/v1", h.addr);
    let resp: Value = http
        .post(format!("{base}/__faults"))
        .json(&json!({"action": "fail_joins", "count": 1}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(resp["ok"], true);
    let mut c = h.client(Vsn::V1).await?;
    let (_, reply) = c.join("realtime:x", join_payload(json!([]), None)).await?;
    assert_eq!(reply.status(), "error");
    let (_, reply) = c.join("realtime:x", join_payload(json!([]), None)).await?;
    assert_eq!(reply.status(), "ok");
    let resp: Value = http
        .post(format!("{base}/__faults"))
        .json(&json!({"action": "close_channels"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(resp["affected"], 1);
    assert_eq!(c.recv().await?.event, "phx_close");
    let stats: Value = http
        .get(format!("{base}/__stats"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stats["joined_channels"], 0);
    assert_eq!(stats["sockets"], 1);
    let bad = http
        .post(format!("{base}/__faults"))
        .json(&json!({"action": "explode"}))
        .send()
        .await?;
    assert!(bad.status().is_client_error());
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped() -> Result<()> {
    let options = Options {
        outbound_queue: 8,
        ..Options::default()
    };
    let h = Harness::with(options).await?;
    // A small receive buffer, so the kernel does not absorb megabytes for the client.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(h.addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(
        h.url(&h.stack.service_key, "2.0.0"),
        MaybeTlsStream::Plain(tcp),
    )
    .await?;
    let mut c = Client {
        ws,
        vsn: Vsn::V2,
        next_ref: 0,
    };
    c.subscribe(
        "realtime:flood",
        json!([{"event": "*", "schema": "public", "table": "rt_items"}]),
    )
    .await?;
    // ~10 MB of changes for a client that reads nothing more.
    h.stack
        .sql("insert into rt_items (id, label) select g, repeat('x', 20000) from generate_series(1, 500) g")
        .await?;
    eventually("the slow client to be dropped", || {
        h.rt.slow_disconnects_total() == 1
    })
    .await?;
    eventually("no sockets", || h.rt.sockets() == 0).await?;
    assert_eq!(h.rt.joined_channels(), 0);
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn frames_above_the_limit_close_the_socket() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    let big = format!(
        r#"[null,"1","phoenix","heartbeat",{{"pad":"{}"}}]"#,
        "x".repeat(5_000_000)
    );
    // The server may close while the frame is still being written.
    let sent = c.ws.send(Message::Text(big.into())).await;
    while sent.is_ok() {
        match tokio::time::timeout(WAIT, c.ws.next()).await? {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(t))) => bail!("answered an oversized frame: {t}"),
            Some(Ok(_)) => {}
        }
    }
    eventually("no sockets", || h.rt.sockets() == 0).await?;
    assert_eq!(h.rt.heartbeats_total(), 0);
    // Just below the limit is fine.
    let mut c = h.client(Vsn::V2).await?;
    let pad = 5_000_000 - 64;
    let ok = format!(
        r#"[null,"1","phoenix","heartbeat",{{"pad":"{}"}}]"#,
        "x".repeat(pad)
    );
    c.ws.send(Message::Text(ok.into())).await?;
    assert_eq!(c.reply_to("1").await?.status(), "ok");
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_feed_survives_losing_its_connection() -> Result<()> {
    let h = Harness::new().await?;
    let mut c = h.client(Vsn::V2).await?;
    c.subscribe(
        "realtime:items",
        json!([{"event": "INSERT", "schema": "public", "table": "rt_items"}]),
    )
    .await?;
    h.stack
        .sql("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'collisionos_realtime_standin'")
        .await?;
    // Realtime announces the subscription again once its poller is back.
    let (sys, _) = c.recv_until(|m| m.event == "system").await?;
    assert_eq!(sys.payload["message"], "Subscribed to PostgreSQL");
    assert_eq!(h.rt.stats().feed_reconnects_total, 1);
    h.stack
        .sql("insert into rt_items (id, n) values (5, 5)")
        .await?;
    assert_eq!(
        c.change("realtime:items").await?.payload["data"]["record"]["n"],
        5
    );
    h.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_and_drop_leave_no_slot_behind() -> Result<()> {
    let h = Harness::new().await?;
    let slots = |name: String| {
        let stack = &h.stack;
        async move {
            let rows = stack
                .sql(&format!(
                    "select slot_name from pg_replication_slots where slot_name = '{name}'"
                ))
                .await?;
            anyhow::Ok(rows.len())
        }
    };
    let name = h.rt.slot_name().to_owned();
    assert_eq!(slots(name.clone()).await?, 1);
    let mut c = h.client(Vsn::V2).await?;
    c.subscribe(
        "realtime:items",
        json!([{"event": "*", "schema": "public", "table": "rt_items"}]),
    )
    .await?;
    h.rt.shutdown().await;
    assert_eq!(slots(name).await?, 0, "shutdown drops the slot");
    assert_eq!(h.rt.sockets(), 0);
    match tokio::time::timeout(WAIT, c.ws.next()).await? {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => bail!("socket still open after shutdown: {m:?}"),
    }

    // Dropped without shutdown: the tasks are cancelled and the temporary slot goes with the
    // connection.
    let other = StandIn::start(&h.stack.db_url, &h.stack.jwt_secret).await?;
    let name = other.slot_name().to_owned();
    assert_eq!(slots(name.clone()).await?, 1);
    drop(other);
    let deadline = Instant::now() + WAIT;
    while slots(name.clone()).await? != 0 {
        ensure!(
            Instant::now() < deadline,
            "slot {name} left behind after drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stack.shutdown().await;
    Ok(())
}
