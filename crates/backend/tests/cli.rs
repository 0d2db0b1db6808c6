//! The `collisionos` binary as a user runs it: configuration errors, `config`, start, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_collisionos"));
    // A clean environment: only what the test sets, plus PATH/HOME for the OS.
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default());
    c
}

#[test]
fn malformed_values_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("PORT", "eighty"),
        ("SUPABASE_POOL_MAX", "0"),
        ("MEMORY_CHECK_INTERVAL", "soon"),
        ("BIND", "everywhere"),
        ("SYNC_ENABLED", "perhaps"),
    ] {
        let out = bin()
            .current_dir(dir.path())
            .env("COLLISIONOS_DATA_DIR", dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains("expected"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_malformed_dotenv_value_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "SUPABASE_POOL_MIN=many\n").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SUPABASE_POOL_MIN") && err.contains(".env"),
        "{err}"
    );
}

#[test]
fn config_prints_every_variable_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .env("SUPABASE_URL", "https://demo.example")
        .env("SUPABASE_ANON_KEY", "anon-key-do-not-print")
        .env("SUPABASE_SERVICE_ROLE_KEY", "service-key-do-not-print")
        .env("SUPABASE_POOL_MAX", "12")
        .arg("config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for var in collisionos::config::VARIABLES {
        assert!(text.contains(var), "{var} missing from:\n{text}");
    }
    assert!(!text.contains("do-not-print"), "{text}");
    assert!(
        text.contains("12") && text.contains("environment"),
        "{text}"
    );
}

#[test]
fn starts_headless_serves_health_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .current_dir(dir.path())
        .env("PORT", "0")
        .env("COLLISIONOS_DATA_DIR", dir.path())
        .arg("--headless")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let base = url.split("/?token=").next().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{base}/api/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["status"], "ok");
    assert_eq!(body["supabase"]["configured"], false);
    // The token file is private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("api-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "token file mode {mode:o}");
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
