//! The Realtime stand-in held to the official client: `tests/conformance/run.mjs` runs
//! `@supabase/realtime-js` (Node, `transport: ws`) against the local stack's gateway, subscribes
//! to `public.jobs`, writes a job through PostgREST, and prints what its callbacks received as
//! JSON lines; this test checks those lines, for both serializers. Our own Rust client,
//! subscribed to the same table over the same serializer at the same time, must receive the
//! same changes.
//!
//! Needs `npm ci` in `tests/conformance` (the test script does it). Without `node_modules` the
//! test is skipped with a message, except under `CI`, where it must run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use collisionos_supabase::realtime::{
    ChangeEvent, ChannelEvent, ChannelOptions, ClientConfig, PostgresChanges, RealtimeClient,
    Serializer, StaticToken,
};
use collisionos_tests::realtime::StandIn;
use collisionos_tests::stack::Stack;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// `false` (and a message) when the Node project is not installed outside CI.
fn node_project_ready() -> Result<bool> {
    let modules = conformance_dir().join("node_modules/@supabase/realtime-js");
    if modules.is_dir() {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!(
            "{} is missing under CI: run `npm ci` in tests/conformance",
            modules.display()
        );
    }
    eprintln!(
        "SKIPPED: realtime-js conformance needs `npm ci` in {} (Node 20); CI runs it",
        conformance_dir().display()
    );
    Ok(false)
}

/// Runs the script and returns its JSON lines.
async fn run_script(stack: &Stack, vsn: &str, job_id: &str) -> Result<Vec<Value>> {
    let child = tokio::process::Command::new("node")
        .arg("run.mjs")
        .current_dir(conformance_dir())
        .env("SUPABASE_URL", &stack.url)
        .env("SUPABASE_ANON_KEY", &stack.anon_key)
        .env("SUPABASE_SERVICE_ROLE_KEY", &stack.service_key)
        .env("REALTIME_VSN", vsn)
        .env("JOB_ID", job_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting `node` (Node 20 must be on PATH)")?;
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .context("run.mjs did not finish in 90 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect::<Result<_>>()?;
    ensure!(
        out.status.success(),
        "run.mjs failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(lines)
}

fn changes<'a>(lines: &'a [Value], binding: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "change" && l["binding"] == binding)
        .collect()
}

async fn conformance(vsn: &str) -> Result<()> {
    if !node_project_ready()? {
        return Ok(());
    }
    let stack = Stack::start().await?;
    let rt = StandIn::start(&stack.db_url, &stack.jwt_secret).await?;
    stack.mount_realtime(rt.router());

    // Our client first, subscribed and ready before realtime-js writes anything.
    let mut config = ClientConfig::for_project(&stack.url.parse()?, &stack.anon_key)?;
    config.serializer = if vsn == "1.0.0" {
        Serializer::V1
    } else {
        Serializer::V2
    };
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let ours = RealtimeClient::start(
        config,
        Arc::new(StaticToken::new(Some(&stack.service_key))),
        &tracker,
        cancel.clone(),
    );
    let mut channel = ours
        .channel(
            "ours",
            ChannelOptions {
                postgres_changes: vec![PostgresChanges {
                    event: ChangeEvent::All,
                    schema: "public".into(),
                    table: Some("jobs".into()),
                    filter: None,
                }],
                private: false,
            },
        )
        .await?;
    ensure!(
        tokio::time::timeout(Duration::from_secs(30), channel.wait_subscribed()).await?,
        "our client did not subscribe"
    );
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(60), channel.next()).await {
                Ok(Some(ChannelEvent::Change(c))) => got.push(c),
                Ok(Some(ChannelEvent::Status(_))) => {}
                _ => break,
            }
        }
        (got, channel)
    });

    let job_id = "8c1c3e4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
    let lines = run_script(&stack, vsn, job_id).await?;
    for l in &lines {
        eprintln!("{l}");
    }
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    // SUBSCRIBED (the join reply) first, then the feed's readiness, then the changes.
    assert_eq!(kinds.first(), Some(&"status"), "{lines:#?}");
    assert_eq!(lines[0]["status"], "SUBSCRIBED");
    assert_eq!(
        lines[1],
        json!({"kind": "system", "status": "ok", "message": "Subscribed to PostgreSQL",
               "extension": "postgres_changes"})
    );
    assert_eq!(kinds.last(), Some(&"done"));

    let all = changes(&lines, "all");
    let types: Vec<&str> = all.iter().filter_map(|c| c["eventType"].as_str()).collect();
    assert_eq!(types, ["INSERT", "UPDATE", "DELETE"], "{lines:#?}");
    for c in &all {
        assert_eq!(
            (c["schema"].as_str(), c["table"].as_str()),
            (Some("public"), Some("jobs"))
        );
        assert_eq!(c["errors"], Value::Null);
        let ts = c["commit_timestamp"].as_str().unwrap_or("");
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    }
    let (ins, upd, del) = (all[0], all[1], all[2]);
    // realtime-js converts values by the column types the server sent.
    assert_eq!(ins["new"]["id"], job_id);
    assert_eq!(ins["new"]["ro_number"], "RO-8c1c3e4a");
    assert_eq!(ins["new"]["status"], "estimate");
    assert_eq!(ins["new"]["estimate_total"], 0);
    assert_eq!(ins["old"], json!({}));
    assert_eq!(upd["new"]["status"], "approved");
    // jobs is REPLICA IDENTITY FULL: the whole old row.
    assert_eq!(upd["old"]["status"], "estimate");
    assert_eq!(upd["old"]["ro_number"], "RO-8c1c3e4a");
    assert_eq!(del["new"], json!({}));
    // jobs has row level security: Realtime sends only the key of a deleted row.
    assert_eq!(del["old"], json!({"id": job_id}));

    // The filtered binding (UPDATE, id=eq.<job>) got the update only.
    let filtered = changes(&lines, "filtered");
    assert_eq!(filtered.len(), 1, "{lines:#?}");
    assert_eq!(filtered[0]["eventType"], "UPDATE");
    assert_eq!(filtered[0]["new"], upd["new"]);

    // Ours received the same three changes: same types, same rows, same timestamps.
    let (got, channel) = collector.await?;
    let our_types: Vec<&str> = got.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(our_types, types, "ours: {got:#?}");
    for (o, js) in got.iter().zip(&all) {
        assert_eq!(
            o.commit_timestamp,
            js["commit_timestamp"].as_str().unwrap_or("")
        );
        assert_eq!((o.schema.as_str(), o.table.as_str()), ("public", "jobs"));
        let field = |row: &Option<Value>, k: &str| {
            row.as_ref().map(|r| r[k].clone()).unwrap_or(Value::Null)
        };
        for k in ["id", "ro_number", "status"] {
            let js_new = js["new"].get(k).cloned().unwrap_or(Value::Null);
            let js_old = js["old"].get(k).cloned().unwrap_or(Value::Null);
            assert_eq!(field(&o.record, k), js_new, "{k} of {} record", o.kind);
            assert_eq!(
                field(&o.old_record, k),
                js_old,
                "{k} of {} old_record",
                o.kind
            );
        }
    }
    channel.leave().await;
    ours.close().await;
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await?;

    // Both clients left and disconnected: nothing is left on the server.
    let done = lines.last().context("a done line")?;
    assert_eq!(done["removed"], "ok");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.sockets() != 0 || rt.joined_channels() != 0 {
        ensure!(Instant::now() < deadline, "left behind: {:?}", rt.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = rt.stats();
    assert_eq!(
        (
            stats.joins_total,
            stats.leaves_total,
            stats.changes_sent_total
        ),
        (2, 2, 6)
    );
    rt.shutdown().await;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn realtime_js_receives_the_changes_v2() -> Result<()> {
    conformance("2.0.0").await
}

#[tokio::test]
async fn realtime_js_receives_the_changes_v1() -> Result<()> {
    conformance("1.0.0").await
}
