//! The backend's HTTP API against the real local stack: health shapes, customers through the
//! pool, bad input, the pool's bound under load and faults, timeouts, outages, shutdown.

mod common;

use std::time::{Duration, Instant};

use collisionos_tests::stack::RestFaults;
use common::{App, TOKEN, stack, start};
use futures::future::join_all;
use serde_json::{Value, json};

fn mb_string(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with("MB") && s[..s.len() - 2].parse::<u64>().is_ok())
}

#[tokio::test]
async fn health_shapes_in_local_only_mode() {
    let app = start(None, &[]).await;
    let h = app.json("/api/health").await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["supabase"]["configured"], false);
    assert!(h["version"].is_string() && h["uptime_s"].is_u64());

    let c = app.json("/api/health/connections").await;
    for k in ["heapUsed", "heapTotal", "rss", "external"] {
        assert!(
            mb_string(&c["memory"][k]),
            "memory.{k} = {}",
            c["memory"][k]
        );
    }
    assert!(c["memory"]["bytes"]["rss"].as_u64().unwrap() > 1_000_000);
    assert_eq!(c["connectionPool"]["totalCapacity"], 10);
    for k in ["poolSize", "activeConnections", "waitingRequests"] {
        assert!(c["connectionPool"][k].is_u64(), "{k}");
    }
    for k in ["total", "active", "expiringSoon", "persistent", "capacity"] {
        assert!(c["subscriptions"][k].is_u64(), "subscriptions.{k} in {c}");
    }
    assert_eq!(c["subscriptions"]["capacity"], 100);
    assert!(c["uptime"].as_str().unwrap().ends_with(" minutes"));
    assert!(c["timestamp"].as_str().unwrap().contains('T'));

    let m = app.json("/api/health/memory").await;
    assert_eq!(m["thresholds"]["warning_mb"], 400);
    assert_eq!(m["thresholds"]["critical_mb"], 500);
    assert!(m["history"].is_array() && m.get("leak").is_some());

    // The monitor samples every second; the ring fills the charts.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let s = app.json("/api/health/samples?since=0").await;
    let samples = s["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{s}");
    assert_eq!(samples[0]["upstream"]["state"], "not_configured");

    let metrics = app.metrics().await;
    for name in [
        "collisionos_process_resident_memory_bytes",
        "collisionos_http_requests_total",
        "collisionos_http_request_duration_seconds_bucket",
        "collisionos_subscriptions_total",
        "collisionos_upstream_up -1",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let app = start(None, &[]).await;
    let check = |res: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(res.status().as_u16(), status, "{code}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["error"].is_string() && body.get("details").is_some(),
            "{body}"
        );
    };
    check(app.get("/api/nope").send().await.unwrap(), 404, "not_found").await;
    check(
        app.http
            .get(format!("{}/api/customers", app.base))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    check(
        app.http
            .get(format!("{}/api/customers", app.base))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // DNS rebinding: a foreign Host is refused even on loopback.
    check(
        app.http
            .get(format!("{}/api/health", app.base))
            .header("Host", "evil.example:3002")
            .send()
            .await
            .unwrap(),
        403,
        "host_not_allowed",
    )
    .await;
    check(
        app.get("/api/customers").send().await.unwrap(),
        503,
        "upstream_not_configured",
    )
    .await;
    check(
        app.http
            .delete(format!("{}/api/health", app.base))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    check(
        app.get("/api/health/samples?since=yesterday")
            .send()
            .await
            .unwrap(),
        400,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn customers_round_trip_through_the_pool_with_validation() {
    let stack = stack().await;
    let app = start(Some(&stack), &[]).await;

    let id = "6d1f5d7e-8f3c-4f0e-9a43-2b1e0c9d7a11";
    let body = json!({"id": id, "first_name": "Ana", "last_name": "O'Brien, (Jr.) *%", "email": "ana@example.com", "phone": "+1 555 0100"});
    for _ in 0..2 {
        // A retried POST with the same client-generated id lands once.
        let res = app.post("/api/customers").json(&body).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let row: Value = res.json().await.unwrap();
        assert_eq!(row["id"], id);
    }
    let rows = stack
        .sql(&format!(
            "select count(*)::int as n from customers where id = '{id}'"
        ))
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], 1);
    let decoy =
        json!({"first_name": "Ana", "last_name": "O'Brien, (Jr.) *", "email": "ana2@example.com"});
    assert_eq!(
        app.post("/api/customers")
            .json(&decoy)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    let one = app.json(&format!("/api/customers/{id}")).await;
    assert_eq!(one["last_name"], "O'Brien, (Jr.) *%");

    // Search text is matched literally: `*%` is not a wildcard here.
    let found = app
        .get("/api/customers")
        .query(&[("search", "(Jr.) *%"), ("limit", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["data"][0]["id"], id);
    let by_email = app.json("/api/customers?search=ana2%40example").await;
    assert_eq!(by_email["total"], 1, "{by_email}");
    let page = app.json("/api/customers?limit=1&offset=1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["total"].as_u64().unwrap() >= 2);

    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(app.get("/api/customers/not-a-uuid").send().await.unwrap()),
        400
    );
    assert_eq!(
        status(
            app.get("/api/customers/00000000-0000-4000-8000-000000000000")
                .send()
                .await
                .unwrap()
        ),
        404
    );
    let bad = |body: &'static str| {
        app.post("/api/customers")
            .header("Content-Type", "application/json")
            .body(body)
    };
    let r = bad("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "malformed_json");
    let r = bad(r#"{"first_name": 7, "last_name": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["details"]["field"], "first_name", "{e}");
    let r = bad(r#"{"first_name": "a", "last_name": "b", "admin": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = bad(r#"{"first_name": "a", "last_name": "b", "email": "nope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["details"]["field"],
        "email"
    );
    let r = bad(r#"{"first_name": "", "last_name": "b"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let huge = format!(
        r#"{{"first_name": "{}", "last_name": "b"}}"#,
        "x".repeat(2 << 20)
    );
    let r = app
        .post("/api/customers")
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = app
        .post("/api/customers")
        .body("first_name=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        status(app.get("/api/customers?limit=0").send().await.unwrap()),
        400
    );
    assert_eq!(
        status(app.get("/api/customers?limit=abc").send().await.unwrap()),
        400
    );
    // Nothing half-written: only the two valid customers exist.
    let rows = stack
        .sql("select count(*)::int as n from customers")
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], 2);
    app.leases_back().await;
}

/// Fires `n` concurrent list requests and returns their statuses.
async fn burst(app: &App, n: usize) -> Vec<u16> {
    let futs = (0..n).map(|_| async {
        app.get("/api/customers?limit=1")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    join_all(futs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_never_exceed_the_pool_upstream() {
    let stack = stack().await;
    let app = start(
        Some(&stack),
        &[
            ("SUPABASE_POOL_MAX", "10"),
            ("SUPABASE_POOL_ACQUIRE_TIMEOUT", "120000"),
        ],
    )
    .await;
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(10),
        ..RestFaults::default()
    });
    stack.reset_rest_stats();
    let statuses = burst(&app, 1000).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    let st = stack.rest_stats();
    assert!(
        st.inflight_max <= 10,
        "server saw {} in flight",
        st.inflight_max
    );
    assert!(
        st.inflight_max >= 5,
        "the pool was not used concurrently: {}",
        st.inflight_max
    );
    assert!(st.requests_total >= 1000);
    let p = app.leases_back().await;
    assert!(p["acquired_total"].as_u64().unwrap() >= 1000);
    assert!(p["size"].as_u64().unwrap() <= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_disconnecting_clients_return_every_lease() {
    let stack = stack().await;
    let app = start(
        Some(&stack),
        &[
            ("SUPABASE_POOL_MAX", "10"),
            ("SUPABASE_POOL_ACQUIRE_TIMEOUT", "120000"),
        ],
    )
    .await;
    stack.set_rest_faults(RestFaults {
        error_rate: 0.1,
        delay: Duration::from_millis(5),
        ..RestFaults::default()
    });
    stack.reset_rest_stats();
    let statuses = burst(&app, 1000).await;
    let errors = statuses.iter().filter(|s| **s != 200).count();
    assert!(
        errors > 20 && errors < 300,
        "{errors} errors with a 10% fault rate"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 502 | 503)),
        "{statuses:?}"
    );
    assert!(stack.rest_stats().inflight_max <= 10);
    let p = app.leases_back().await;
    assert!(
        p["upstream_errors_total"].as_u64().unwrap() >= errors as u64 / 2,
        "{p}"
    );

    // Clients that go away mid-request: their request futures are dropped server-side.
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(300),
        ..RestFaults::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    let futs = (0..200).map(|_| {
        impatient
            .get(format!("{}/api/customers?limit=1", app.base))
            .bearer_auth(TOKEN)
            .send()
    });
    let results = join_all(futs).await;
    assert!(
        results.iter().all(|r| r.is_err()),
        "clients should have timed out"
    );
    stack.set_rest_faults(RestFaults::default());
    app.leases_back().await;
    assert!(stack.rest_stats().inflight_max <= 10);
    // The pool still serves.
    assert_eq!(burst(&app, 20).await, vec![200; 20]);
}

async fn handler_bug() -> Result<(), collisionos_supabase::rest::RestError> {
    panic!("handler bug while holding a lease")
}

#[tokio::test]
async fn a_panicking_handler_returns_its_lease() {
    let stack = stack().await;
    let app = start(Some(&stack), &[("SUPABASE_POOL_MAX", "2")]).await;
    let upstream = app.handle.upstream().unwrap().clone();
    for _ in 0..10 {
        let u = upstream.clone();
        let joined = tokio::spawn(async move {
            u.run(|c| async move {
                let _ = c.ping().await;
                handler_bug().await
            })
            .await
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
    }
    let p = app.leases_back().await;
    assert!(p["size"].as_u64().unwrap() <= 2);
    assert_eq!(burst(&app, 4).await, vec![200; 4]);
}

#[tokio::test]
async fn acquire_timeout_answers_503_instead_of_hanging() {
    let stack = stack().await;
    let app = start(
        Some(&stack),
        &[
            ("SUPABASE_POOL_MAX", "1"),
            ("SUPABASE_POOL_MIN", "1"),
            ("SUPABASE_POOL_ACQUIRE_TIMEOUT", "300"),
        ],
    )
    .await;
    // One quick request first: the start-up probe and warm-up are done and the next probe is
    // seconds away, so the one lease is free for `slow`.
    assert_eq!(
        app.get("/api/customers?limit=1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_secs(3),
        ..RestFaults::default()
    });
    let slow = app.get("/api/customers?limit=1").send();
    let started = Instant::now();
    let waiting = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.get("/api/customers?limit=1").send().await.unwrap()
    };
    let (slow, res) = tokio::join!(slow, waiting);
    let elapsed = started.elapsed();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "pool_timeout");
    assert_eq!(slow.unwrap().status(), 200);
    // The waiter was answered at its timeout, not when the upstream finally freed the lease.
    assert!(elapsed >= Duration::from_millis(300));
    let p = app.leases_back().await;
    assert!(p["timeouts_total"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn an_upstream_outage_is_503_and_health_says_offline_then_recovers() {
    let stack = stack().await;
    let app = start(Some(&stack), &[]).await;
    assert_eq!(
        app.get("/api/customers").send().await.unwrap().status(),
        200
    );
    stack.set_rest_faults(RestFaults {
        down: true,
        ..RestFaults::default()
    });
    let r = app.get("/api/customers").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "upstream_unavailable"
    );
    let h = app.json("/api/health").await;
    assert_eq!(h["status"], "offline", "{h}");
    assert_eq!(h["supabase"]["reachable"], false);
    assert!(h["supabase"]["offline_since"].is_u64());
    stack.set_rest_faults(RestFaults::default());
    assert_eq!(
        app.get("/api/customers").send().await.unwrap().status(),
        200
    );
    assert_eq!(app.json("/api/health").await["supabase"]["reachable"], true);
    let alerts = app.json("/api/alerts").await;
    let levels: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["level"].as_str())
        .collect();
    let offline = levels
        .iter()
        .position(|l| *l == "offline")
        .expect("an offline alert");
    let online = levels
        .iter()
        .rposition(|l| *l == "online")
        .expect("an online alert");
    assert!(offline < online, "{levels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_finishes_in_flight_requests() {
    let stack = stack().await;
    let mut app = start(Some(&stack), &[]).await;
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(200),
        ..RestFaults::default()
    });
    let in_flight: Vec<_> = (0..30)
        .map(|_| {
            let req = app.get("/api/customers?limit=1");
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Let them reach the server before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = app.handle.shutdown(Duration::from_secs(15)).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(app.handle.tasks(), 0, "tasks left running");
    let mut ok = 0;
    for h in in_flight {
        match h.await.unwrap() {
            Ok(200) => ok += 1,
            // Queued behind the pool when it closed: a clear 503, never a hang.
            Ok(503) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(ok >= 10, "only {ok} in-flight requests finished");
    // No longer listening.
    assert!(
        app.http
            .get(format!("{}/api/health", app.base))
            .send()
            .await
            .is_err()
    );
}
