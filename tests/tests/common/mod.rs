//! Shared by the backend's cross-component tests: start the real backend in-process against
//! the local stack (or local-only), and a small HTTP client for it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use collisionos::config::{Config, Layers};
use collisionos::{Backend, BackendHandle, StartOptions};
use collisionos_tests::stack::Stack;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct App {
    pub handle: BackendHandle,
    pub base: String,
    pub http: reqwest::Client,
    _data: tempfile::TempDir,
}

/// Starts the backend with `vars` (plus the stack's URL and keys when given).
pub async fn start(stack: Option<&Stack>, vars: &[(&str, &str)]) -> App {
    let data = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert(
        "COLLISIONOS_DATA_DIR".into(),
        data.path().display().to_string(),
    );
    env.insert("COLLISIONOS_API_TOKEN".into(), TOKEN.into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    if let Some(s) = stack {
        env.insert("SUPABASE_URL".into(), s.url.clone());
        env.insert("SUPABASE_ANON_KEY".into(), s.anon_key.clone());
        env.insert("SUPABASE_SERVICE_ROLE_KEY".into(), s.service_key.clone());
    }
    for (k, v) in vars {
        env.insert((*k).into(), (*v).into());
    }
    let config = Config::from_layers(&Layers {
        env,
        ..Layers::default()
    })
    .expect("test configuration is valid");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = Backend::start(
        config,
        StartOptions {
            listener: Some(listener),
            ui_dir: None,
            extra_children: false,
        },
    )
    .await
    .expect("backend starts");
    let base = format!("http://{}", handle.addr());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    App {
        handle,
        base,
        http,
        _data: data,
    }
}

impl App {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn pool(&self) -> serde_json::Value {
        self.json("/api/health/connections").await["connectionPool"].clone()
    }

    /// Waits (bounded) until every lease is back: nothing active, nothing waiting.
    pub async fn leases_back(&self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.pool().await;
            if p["active"] == 0 && p["waiting"] == 0 {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leases not returned: {p}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The stack, or a clear failure (the README's test command installs what it needs).
pub async fn stack() -> Stack {
    Stack::start()
        .await
        .expect("the local Supabase stack starts (scripts/test.sh installs PostgreSQL 15 and postrust-server)")
}
