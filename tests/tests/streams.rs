//! The UI's event stream against the real stack and Realtime stand-in: samples and row changes
//! arrive; a stream's own subscription lives exactly as long as the stream; the stream cap; a
//! client that goes away leaves nothing behind.

mod common;

use std::time::Duration;

use collisionos_tests::realtime::StandIn;
use common::{App, stack, start};
use serde_json::Value;

/// Reads SSE frames until `want` returns true for one (event name, data), or the deadline.
async fn read_until(
    res: &mut reqwest::Response,
    mut want: impl FnMut(&str, &Value) -> bool,
) -> Option<(String, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .ok()?
            .ok()??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut name = "";
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if let Ok(v) = serde_json::from_str::<Value>(&data)
                && want(name, &v)
            {
                return Some((name.to_string(), v));
            }
        }
    }
}

async fn open_metric(app: &App, name: &str) -> f64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing"))
}

async fn eventually(mut ok: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_subscription_lives_and_dies_with_the_stream() {
    let stack = stack().await;
    let realtime = StandIn::start(&stack.db_url, &stack.jwt_secret)
        .await
        .unwrap();
    stack.mount_realtime(realtime.router());
    let app = start(Some(&stack), &[]).await;
    // The memo's persistent jobs subscription comes up with the backend.
    eventually(
        async || realtime.joined_channels() == 1,
        "jobs_subscription joined",
    )
    .await;

    let mut res = app
        .get("/api/events?table=customers&event=INSERT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, first) = read_until(&mut res, |n, _| n == "sample")
        .await
        .expect("a sample first");
    assert!(first["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    let subs = app.json("/api/subscriptions").await;
    let ours: Vec<&Value> = subs["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().unwrap().starts_with("stream-"))
        .collect();
    assert_eq!(ours.len(), 1, "{subs}");
    assert_eq!(ours[0]["table"], "customers");
    read_until(&mut res, |n, v| {
        n == "subscription"
            && v["state"] == "subscribed"
            && v["id"].as_str().unwrap().starts_with("stream-")
    })
    .await
    .expect("the stream's subscription becomes subscribed");

    stack
        .sql("insert into customers (first_name, last_name) values ('Stream', 'Change')")
        .await
        .unwrap();
    let (_, change) = read_until(&mut res, |n, v| n == "change" && v["table"] == "customers")
        .await
        .expect("the insert arrives on the stream");
    assert_eq!(change["type"], "INSERT");
    assert_eq!(change["record"]["last_name"], "Change");
    assert_eq!(realtime.joined_channels(), 2);

    // The client goes away: stream, bus reader, permit and subscription all go.
    drop(res);
    eventually(
        async || {
            app.json("/api/subscriptions").await["subscriptions"]
                .as_array()
                .unwrap()
                .len()
                == 1
        },
        "the stream's subscription destroyed",
    )
    .await;
    eventually(async || realtime.joined_channels() == 1, "its channel left").await;
    eventually(
        async || open_metric(&app, "collisionos_event_streams_open").await == 0.0,
        "the stream permit back",
    )
    .await;
    realtime.shutdown().await;
}

#[tokio::test]
async fn streams_are_capped_and_release_their_permit() {
    let app = start(None, &[("MAX_EVENT_STREAMS", "2")]).await;
    let receivers_before = open_metric(&app, "collisionos_bus_receivers").await;
    let a = app.get("/api/events").send().await.unwrap();
    let b = app.get("/api/events").send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = app.get("/api/events").send().await.unwrap();
    assert_eq!(c.status(), 503);
    assert!(c.headers().get("retry-after").is_some());
    assert_eq!(c.json::<Value>().await.unwrap()["code"], "too_many_streams");
    assert_eq!(
        open_metric(&app, "collisionos_event_streams_open").await,
        2.0
    );
    drop((a, b));
    eventually(
        async || open_metric(&app, "collisionos_event_streams_open").await == 0.0,
        "permits back",
    )
    .await;
    eventually(
        async || open_metric(&app, "collisionos_bus_receivers").await == receivers_before,
        "bus readers gone",
    )
    .await;
    // A stream's subscription needs Supabase: a clear error, and nothing held.
    let r = app.get("/api/events?table=jobs").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "realtime_not_configured"
    );
    assert_eq!(
        open_metric(&app, "collisionos_event_streams_open").await,
        0.0
    );
}
