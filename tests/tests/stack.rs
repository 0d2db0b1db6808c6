//! The local Supabase stack itself: migrations, roles and RLS as the app will meet them, REST
//! through the gateway, the gateway's counters and faults (in Rust and over HTTP), the Realtime
//! mount point, and that shutting down — or just dropping — a stack leaves nothing behind.

use anyhow::{Context, Result, ensure};
use collisionos_tests::stack::{GatewayOptions, RestFaults, RestStats, Stack, StackOptions};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// A request to `/rest/v1/{path}` with `apikey` and a bearer token, as supabase-js sends them.
fn rest(
    client: &reqwest::Client,
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, format!("{}/{path}", stack.rest_url()))
        .header("apikey", key)
        .bearer_auth(key)
}

async fn started() -> Result<Stack> {
    let t = Instant::now();
    let stack = Stack::start().await?;
    eprintln!("stack up in {} ms", t.elapsed().as_millis());
    Ok(stack)
}

#[tokio::test]
async fn migrations_roles_and_indexes_are_in_place() -> Result<()> {
    let stack = started().await?;

    let indexes = stack
        .sql(
            "select indexname, tablename from pg_indexes where schemaname = 'public'
             and indexname in ('idx_customers_email', 'idx_jobs_status', 'idx_parts_ro_id')
             order by indexname",
        )
        .await?;
    assert_eq!(
        indexes,
        vec![
            json!({"indexname": "idx_customers_email", "tablename": "customers"}),
            json!({"indexname": "idx_jobs_status", "tablename": "jobs"}),
            json!({"indexname": "idx_parts_ro_id", "tablename": "part_lines"}),
        ]
    );

    let roles = stack
        .sql(
            "select rolname, rolcanlogin, rolinherit, rolbypassrls,
                    pg_has_role('authenticator', oid, 'member') as authenticator_member
             from pg_roles
             where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')
             order by rolname",
        )
        .await?;
    let role = |name: &str| -> Value {
        roles
            .iter()
            .find(|r| r["rolname"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    for name in ["anon", "authenticated", "service_role"] {
        assert_eq!(role(name)["rolcanlogin"], false, "{name} must not log in");
        assert_eq!(role(name)["authenticator_member"], true, "{name} granted");
    }
    assert_eq!(role("service_role")["rolbypassrls"], true);
    assert_eq!(role("anon")["rolbypassrls"], false);
    assert_eq!(role("authenticator")["rolcanlogin"], true);
    assert_eq!(role("authenticator")["rolinherit"], false);

    let tables = stack
        .sql(
            "select c.relname, c.relrowsecurity, c.relreplident
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind = 'r' order by c.relname",
        )
        .await?;
    let names: Vec<&str> = tables
        .iter()
        .filter_map(|t| t["relname"].as_str())
        .collect();
    assert_eq!(
        names,
        ["customers", "jobs", "part_lines", "shops", "vehicles"]
    );
    assert!(tables.iter().all(|t| t["relrowsecurity"] == true));
    let jobs = tables.iter().find(|t| t["relname"] == "jobs").unwrap();
    assert_eq!(jobs["relreplident"], "f", "jobs is REPLICA IDENTITY FULL");

    let applied = stack
        .sql("select version, name from supabase_migrations.schema_migrations")
        .await?;
    assert_eq!(applied, vec![json!({"version": "0001", "name": "init"})]);

    // Running the migration again changes nothing and fails nothing (idempotent).
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../supabase/migrations/0001_init.sql"),
    )?;
    stack.sql(&sql).await?;
    let again = stack
        .sql("select count(*)::int as n from pg_policies where schemaname = 'public'")
        .await?;
    assert_eq!(again, vec![json!({"n": 6})]);

    // Constraints and the updated_at trigger.
    let bad = stack
        .sql("insert into jobs (ro_number, status) values ('RO-X', 'teleported')")
        .await;
    let err = bad.expect_err("unknown status is refused").to_string();
    assert!(err.contains("jobs_status_check"), "{err}");

    let job = stack
        .sql("insert into jobs (ro_number) values ('RO-T1') returning id, status, updated_at")
        .await?;
    assert_eq!(job[0]["status"], "estimate");
    let id = job[0]["id"].as_str().unwrap().to_string();
    let stamped = stack
        .sql(&format!(
            "update jobs set status = 'paint' where id = '{id}'
             returning updated_at > created_at as moved, (now() - updated_at) < interval '1 minute' as fresh"
        ))
        .await?;
    // now() is the transaction's start, so the stamp equals it exactly: compare to created_at
    // of an earlier transaction instead.
    assert_eq!(stamped, vec![json!({"moved": true, "fresh": true})]);
    let replayed = stack
        .sql(&format!(
            "update jobs set status = 'ready', updated_at = '2020-01-02T03:04:05Z'
             where id = '{id}' returning updated_at = '2020-01-02T03:04:05Z'::timestamptz as kept"
        ))
        .await?;
    assert_eq!(
        replayed,
        vec![json!({"kept": true})],
        "an explicit updated_at is an outbox replay and is kept"
    );

    // The cluster is ready for the Realtime stand-in: logical decoding with wal2json, and the
    // whole old row on job updates.
    assert_eq!(
        stack.sql("show wal_level").await?,
        vec![json!({"wal_level": "logical"})]
    );
    stack
        .sql("select pg_create_logical_replication_slot('stack_test', 'wal2json')")
        .await?;
    stack
        .sql(&format!(
            "update jobs set status = 'delivered' where id = '{id}'"
        ))
        .await?;
    let changes = stack
        .sql(
            "select data::jsonb as change from pg_logical_slot_get_changes('stack_test', null, null,
               'format-version', '2', 'include-types', '1')",
        )
        .await?;
    let update = changes
        .iter()
        .map(|c| &c["change"])
        .find(|c| c["action"] == "U" && c["table"] == "jobs")
        .context("an update of jobs decoded")?;
    let old_status = update["identity"]
        .as_array()
        .and_then(|cols| cols.iter().find(|c| c["name"] == "status"))
        .map(|c| c["value"].clone());
    assert_eq!(old_status, Some(json!("ready")), "old row in {update}");
    stack
        .sql("select pg_drop_replication_slot('stack_test')")
        .await?;

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sql_gives_typed_rows_and_runs_anything() -> Result<()> {
    let stack = started().await?;
    let rows = stack
        .sql(
            "select 1 as n, 2.50::numeric as price, 'x' as s, true as b, null::text as z,
                    '{\"a\": [1]}'::jsonb as j;",
        )
        .await?;
    assert_eq!(
        rows,
        vec![json!({"n": 1, "price": 2.50, "s": "x", "b": true, "z": null, "j": {"a": [1]}})]
    );
    assert_eq!(
        stack
            .sql("create table t (a int); insert into t values (1), (2)")
            .await?,
        Vec::<Value>::new()
    );
    assert_eq!(
        stack.sql("select a from t order by a desc").await?,
        vec![json!({"a": 2}), json!({"a": 1})]
    );
    assert_eq!(
        stack.sql("delete from t where a = 1 returning a").await?,
        vec![json!({"a": 1})]
    );
    let err = stack
        .sql("insert into customers (first_name) values ('only')")
        .await
        .expect_err("last_name is required")
        .to_string();
    assert!(err.contains("23502") && err.contains("last_name"), "{err}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rest_through_the_gateway_honours_keys_and_rls() -> Result<()> {
    let stack = started().await?;
    let client = http();
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // The backend's key: service_role bypasses RLS.
    let created = rest(
        &client,
        &stack,
        post.clone(),
        "customers",
        &stack.service_key,
    )
    .header("Prefer", "return=representation")
    .json(&json!({"first_name": "Ann", "last_name": "O'Neil", "email": "ann@example.com"}))
    .send()
    .await?;
    assert_eq!(created.status(), 201);
    let created: Vec<Value> = created.json().await?;
    let id = created[0]["id"].as_str().context("id")?.to_string();

    let seen: Vec<Value> = rest(
        &client,
        &stack,
        get.clone(),
        &format!("customers?id=eq.{id}&select=first_name,last_name"),
        &stack.service_key,
    )
    .send()
    .await?
    .error_for_status()?
    .json()
    .await?;
    assert_eq!(
        seen,
        vec![json!({"first_name": "Ann", "last_name": "O'Neil"})]
    );

    // anon: authenticated by its JWT, but RLS shows it no customer, lets it write none, and
    // lets it read the shop directory.
    let anon_customers = rest(&client, &stack, get.clone(), "customers", &stack.anon_key)
        .send()
        .await?;
    assert_eq!(anon_customers.status(), 200);
    assert_eq!(
        anon_customers.json::<Vec<Value>>().await?,
        Vec::<Value>::new()
    );
    let anon_write = rest(&client, &stack, post.clone(), "customers", &stack.anon_key)
        .json(&json!({"first_name": "Eve", "last_name": "Intruder"}))
        .send()
        .await?;
    assert!(
        matches!(anon_write.status().as_u16(), 401 | 403),
        "anon insert refused, got {}",
        anon_write.status()
    );
    let body: Value = anon_write.json().await?;
    assert_eq!(body["code"], "42501", "{body}");
    stack
        .sql("insert into shops (name) values ('Northside')")
        .await?;
    let shops: Vec<Value> = rest(
        &client,
        &stack,
        get.clone(),
        "shops?select=name",
        &stack.anon_key,
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(shops, vec![json!({"name": "Northside"})]);

    // A signed-in user (authenticated) works on customers, and the updated_at trigger fires for
    // that role too.
    let staff = stack.role_key("authenticated", Duration::from_secs(600));
    let patched = client
        .patch(format!("{}/customers?id=eq.{id}", stack.rest_url()))
        .header("apikey", &stack.anon_key)
        .bearer_auth(&staff)
        .header("Prefer", "return=representation")
        .json(&json!({"phone": "555-0100"}))
        .send()
        .await?;
    assert_eq!(patched.status(), 200);
    let patched: Vec<Value> = patched.json().await?;
    assert_eq!(patched[0]["phone"], "555-0100");
    assert_ne!(patched[0]["updated_at"], created[0]["updated_at"]);

    // Bad or expired JWTs are postrust's 401; a missing or unknown apikey is the gateway's.
    let bad = client
        .get(format!("{}/customers", stack.rest_url()))
        .header("apikey", &stack.anon_key)
        .bearer_auth("not.a.jwt")
        .send()
        .await?;
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.json::<Value>().await?["code"], "PGRST301");
    let forged = client
        .get(format!("{}/customers", stack.rest_url()))
        .header("apikey", &stack.anon_key)
        .bearer_auth(foreign_key())
        .send()
        .await?;
    assert_eq!(forged.status(), 401, "a key signed with another secret");
    let expired = stack.mint_jwt(&json!({"role": "service_role", "exp": 1_000_000_000}));
    let expired = client
        .get(format!("{}/customers", stack.rest_url()))
        .header("apikey", &stack.anon_key)
        .bearer_auth(expired)
        .send()
        .await?;
    assert_eq!(expired.status(), 401, "an expired key");
    let no_key = client
        .get(format!("{}/shops", stack.rest_url()))
        .send()
        .await?;
    assert_eq!(no_key.status(), 401);
    assert_eq!(
        no_key.json::<Value>().await?["message"],
        "No API key found in request"
    );
    let wrong_key = client
        .get(format!("{}/shops", stack.rest_url()))
        .header("apikey", "sb_publishable_nope")
        .send()
        .await?;
    assert_eq!(wrong_key.status(), 401);
    assert_eq!(
        wrong_key.json::<Value>().await?["message"],
        "Invalid API key"
    );

    // `apikey` in the query works and is not passed on as a filter on a column "apikey".
    let by_query: Vec<Value> = client
        .get(format!(
            "{}/shops?select=name&apikey={}",
            stack.rest_url(),
            stack.anon_key
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(by_query, vec![json!({"name": "Northside"})]);

    // The API's root answers, with and without the trailing slash.
    for root in ["", "/"] {
        let answer = client
            .get(format!("{}{root}", stack.rest_url()))
            .header("apikey", &stack.anon_key)
            .send()
            .await?;
        assert_eq!(answer.status(), 200, "GET /rest/v1{root}");
    }

    // Unknown table: PostgREST's 404 passes through the gateway untouched.
    let missing = rest(&client, &stack, get, "no_such_table", &stack.service_key)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await?["code"], "PGRST205");

    stack.shutdown().await;
    Ok(())
}

/// A key signed with some other project's secret.
fn foreign_key() -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(b"some-other-projects-secret-0123456789");
    jsonwebtoken::encode(
        &header,
        &json!({"role": "service_role", "exp": 4_000_000_000u64}),
        &key,
    )
    .expect("sign")
}

async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn gateway_counts_in_flight_and_injects_faults() -> Result<()> {
    let stack = started().await?;
    let client = http();
    let shops = |client: &reqwest::Client| {
        client
            .get(format!("{}/shops", stack.rest_url()))
            .header("apikey", &stack.service_key)
            .bearer_auth(&stack.service_key)
            .send()
    };
    assert_eq!(stack.rest_stats(), RestStats::default());

    // Held requests are in flight while held, and only then.
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(400),
        ..RestFaults::default()
    });
    let held: Vec<_> = (0..5).map(|_| tokio::spawn(shops(&client))).collect();
    wait_for(|| stack.rest_stats().inflight == 5, "5 requests in flight").await?;
    for answer in held {
        assert_eq!(answer.await??.status(), 200);
    }
    wait_for(|| stack.rest_stats().inflight == 0, "none in flight").await?;
    let stats = stack.rest_stats();
    assert_eq!(stats.inflight_max, 5);
    assert_eq!(stats.requests_total, 5);
    assert_eq!(stats.errors_injected, 0);

    // Every request failed: a 503 in PostgREST's shape, counted.
    stack.reset_rest_stats();
    assert_eq!(stack.rest_stats(), RestStats::default());
    stack.set_rest_faults(RestFaults {
        error_rate: 1.0,
        ..RestFaults::default()
    });
    let failed = shops(&client).await?;
    assert_eq!(failed.status(), 503);
    let body: Value = failed.json().await?;
    assert_eq!(body["code"], "PGRST001");
    assert!(body["message"].is_string());

    // Half of them, roughly (200 draws: outside 60..=140 is beyond 5 standard deviations).
    stack.set_rest_faults(RestFaults {
        error_rate: 0.5,
        ..RestFaults::default()
    });
    let mut unavailable = 0;
    for _ in 0..200 {
        match shops(&client).await?.status().as_u16() {
            503 => unavailable += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (60..=140).contains(&unavailable),
        "{unavailable} of 200 failed"
    );
    let stats = stack.rest_stats();
    assert_eq!(stats.requests_total, 201);
    assert_eq!(stats.errors_injected, 1 + unavailable);

    // Down: no answer at all, the connection just closes — a transport error for the client,
    // on a pooled keep-alive connection as on a fresh one.
    stack.set_rest_faults(RestFaults {
        down: true,
        ..RestFaults::default()
    });
    for _ in 0..2 {
        let refused = shops(&client).await;
        let err = refused.expect_err("no HTTP answer while down");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
        assert!(err.status().is_none());
    }
    stack.set_rest_faults(RestFaults::default());
    assert_eq!(shops(&client).await?.status(), 200, "healed");

    // The same controls over HTTP, for scripts.
    let set: Value = client
        .post(format!("{}/__stack/faults", stack.url))
        .json(&json!({"error_rate": 0.25, "delay_ms": 7}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        set,
        json!({"error_rate": 0.25, "delay_ms": 7, "down": false})
    );
    assert_eq!(
        stack.rest_faults(),
        RestFaults {
            error_rate: 0.25,
            delay: Duration::from_millis(7),
            down: false
        }
    );
    let refused = client
        .post(format!("{}/__stack/faults", stack.url))
        .json(&json!({"error_rate": 1.5}))
        .send()
        .await?;
    assert_eq!(refused.status(), 422);
    let refused = client
        .post(format!("{}/__stack/faults", stack.url))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        stack.rest_faults().error_rate,
        0.25,
        "bad bodies change nothing"
    );
    client
        .post(format!("{}/__stack/faults", stack.url))
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?;
    assert_eq!(stack.rest_faults(), RestFaults::default());

    let over_http: RestStats = client
        .get(format!("{}/__stack/stats", stack.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(over_http, stack.rest_stats());
    assert!(over_http.requests_total > 200);
    let reset: RestStats = client
        .post(format!("{}/__stack/stats/reset", stack.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(reset, RestStats::default());

    stack.shutdown().await;
    Ok(())
}

/// A stand-in for the Realtime router: echoes what path and query it was given, and WebSocket
/// text frames.
fn echo_router(tag: &'static str) -> axum::Router {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    axum::Router::new()
        .route(
            "/websocket",
            axum::routing::get(move |ws: WebSocketUpgrade| async move {
                ws.on_upgrade(move |mut socket| async move {
                    while let Some(Ok(Message::Text(text))) = socket.recv().await {
                        let reply = format!("{tag}:{}", text.as_str());
                        if socket.send(Message::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
        .fallback(move |uri: axum::http::Uri| async move { format!("{tag} {uri}") })
}

#[tokio::test]
async fn realtime_router_is_mounted_below_its_prefix() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        gateway: GatewayOptions {
            realtime: Some(echo_router("first")),
            ..GatewayOptions::default()
        },
        ..StackOptions::default()
    })
    .await?;
    let client = http();
    let seen = client
        .get(format!("{}/realtime/v1/api/tenants?x=1", stack.url))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(seen, "first /api/tenants?x=1");

    // Upgrades pass through the gateway to the mounted router.
    let ws_url = format!(
        "{}/realtime/v1/websocket?apikey={}&vsn=1.0.0",
        stack.url.replacen("http", "ws", 1),
        stack.anon_key
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await?;
    let reply = socket.next().await.context("a reply")??;
    assert_eq!(reply.into_text()?.as_str(), "first:ping");
    drop(socket);

    // REST faults leave Realtime alone, and Realtime traffic is not REST traffic.
    stack.set_rest_faults(RestFaults {
        down: true,
        ..RestFaults::default()
    });
    stack.mount_realtime(echo_router("second"));
    let seen = client
        .get(format!("{}/realtime/v1", stack.url))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(seen, "second /");
    assert_eq!(stack.rest_stats().requests_total, 0);

    stack.shutdown().await;
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Processes whose parent is `pid` (PostgreSQL's backends and auxiliaries).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid ..." — comm may hold spaces, so split after ')'.
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

struct Footprint {
    pids: Vec<u32>,
    dir: std::path::PathBuf,
}

fn footprint(stack: &Stack) -> Footprint {
    let (postmaster, postrust) = stack.pids();
    let mut pids = vec![postmaster, postrust];
    pids.extend(children_of(postmaster));
    Footprint {
        pids,
        dir: stack.dir().to_path_buf(),
    }
}

fn assert_gone(footprint: &Footprint) {
    // Backends we saw exit on their own after the postmaster; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while footprint.pids.iter().any(|p| process_exists(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &footprint.pids {
        assert!(!process_exists(*pid), "process {pid} still running");
    }
    assert!(
        !footprint.dir.exists(),
        "{} left behind",
        footprint.dir.display()
    );
}

#[tokio::test]
async fn shutdown_leaves_no_process_and_no_directory() -> Result<()> {
    let stack = started().await?;
    // A client connection makes a backend process to account for.
    let (client, connection) =
        tokio_postgres::connect(&stack.db_url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client.simple_query("select 1").await?;
    let url = stack.url.clone();
    let seen = footprint(&stack);
    assert!(
        seen.pids.len() >= 5,
        "postmaster, postrust and backends: {:?}",
        seen.pids
    );
    assert!(seen.dir.join("data").is_dir());

    stack.shutdown().await;
    assert_gone(&seen);
    let _ = connection.await;
    let after = http().get(format!("{url}/__stack/stats")).send().await;
    assert!(after.is_err(), "the gateway no longer answers");
    Ok(())
}

#[tokio::test]
async fn dropping_a_stack_stops_everything_too() -> Result<()> {
    let stack = started().await?;
    let seen = footprint(&stack);
    drop(stack);
    assert_gone(&seen);
    Ok(())
}
