//! What the main window's webview is told and allowed: the API address and token (to the app's
//! own pages only), the content security policy for the port actually bound, and navigation
//! kept on the bundled UI so the token never reaches another page.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tauri::Url;
use tauri::utils::config::{Csp, CspDirectiveSources};

/// Where the webview reaches the backend: a loopback address even when it listens on all.
pub fn api_base(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Whether `url` is the bundled UI (`tauri://localhost` on Linux and macOS,
/// `http(s)://tauri.localhost` on Windows).
pub fn is_app_url(url: &Url) -> bool {
    match url.scheme() {
        "tauri" => url.host_str() == Some("localhost"),
        "http" | "https" => url.host_str() == Some("tauri.localhost"),
        _ => false,
    }
}

/// Runs before the page's own scripts in the main window: hands over the API address and token
/// as read-only globals, and only on the app's own origin and top frame.
///
/// It also repairs `navigator.language` under a C/POSIX locale: WebKitGTK then reports "C",
/// which is no language tag, and `Intl` (uPlot formats numbers with it when it loads) throws
/// a `RangeError` that leaves the window blank.
pub fn init_script(api: &str, token: &str) -> String {
    // serde_json writes valid JS string literals (quotes, backslashes, U+2028 escaped).
    let api = serde_json::Value::from(api);
    let token = serde_json::Value::from(token);
    format!(
        r#"(function () {{
  var ours = location.protocol === "tauri:" || location.hostname === "tauri.localhost";
  if (!ours || window.top !== window.self) return;
  Object.defineProperty(window, "__COLLISIONOS_API__", {{ value: {api} }});
  Object.defineProperty(window, "__COLLISIONOS_TOKEN__", {{ value: {token} }});
  try {{
    new Intl.NumberFormat(navigator.language);
  }} catch (e) {{
    Object.defineProperty(Navigator.prototype, "language", {{ get: function () {{ return "en-US"; }} }});
    Object.defineProperty(Navigator.prototype, "languages", {{ get: function () {{ return ["en-US"]; }} }});
  }}
}})();"#
    )
}

/// Draws the page without OpenGL compositing (`COLLISIONOS_GPU_COMPOSITING=false`, the
/// default): see `settings::GPU_COMPOSITING` for why. Runs on the main thread right after the
/// window is created, before the page has laid anything out.
#[cfg(target_os = "linux")]
pub fn software_compositing(webview: tauri::webview::PlatformWebview) {
    use webkit2gtk::{HardwareAccelerationPolicy, SettingsExt, WebViewExt};
    match WebViewExt::settings(&webview.inner()) {
        Some(settings) => {
            settings.set_hardware_acceleration_policy(HardwareAccelerationPolicy::Never)
        }
        None => tracing::warn!("the webview has no settings; compositing left as it is"),
    }
}

/// The configured policy with `connect-src` narrowed to the backend's real port: loopback
/// origins for other ports are dropped, everything else in the directive is kept.
pub fn csp_for(configured: Option<Csp>, api: &str) -> Csp {
    let mut map: HashMap<String, CspDirectiveSources> = match configured {
        Some(csp) => csp.into(),
        None => HashMap::from([(
            "default-src".to_string(),
            CspDirectiveSources::List(vec!["'self'".into()]),
        )]),
    };
    let port = api.rsplit(':').next().unwrap_or_default();
    let mut sources: Vec<String> = match map.remove("connect-src") {
        Some(CspDirectiveSources::Inline(s)) => s.split_whitespace().map(String::from).collect(),
        Some(CspDirectiveSources::List(l)) => l,
        None => vec![
            "'self'".into(),
            "ipc:".into(),
            "http://ipc.localhost".into(),
        ],
    };
    sources.retain(|s| !is_loopback_origin(s));
    sources.push(api.to_string());
    let localhost = format!("http://localhost:{port}");
    if api != localhost {
        sources.push(localhost);
    }
    map.insert(
        "connect-src".to_string(),
        CspDirectiveSources::List(sources),
    );
    Csp::DirectiveMap(map)
}

fn is_loopback_origin(source: &str) -> bool {
    let rest = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"));
    rest.is_some_and(|r| {
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| r == *h || r.starts_with(&format!("{h}:")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_src(csp: &Csp) -> Vec<String> {
        let map: HashMap<String, CspDirectiveSources> = csp.clone().into();
        match map.get("connect-src") {
            Some(CspDirectiveSources::List(l)) => l.clone(),
            other => panic!("connect-src: {other:?}"),
        }
    }

    #[test]
    fn the_api_is_always_reached_on_loopback() {
        assert_eq!(
            api_base("127.0.0.1:3002".parse().unwrap()),
            "http://127.0.0.1:3002"
        );
        assert_eq!(
            api_base("0.0.0.0:4100".parse().unwrap()),
            "http://127.0.0.1:4100"
        );
        assert_eq!(api_base("[::1]:3002".parse().unwrap()), "http://[::1]:3002");
    }

    #[test]
    fn only_the_bundled_ui_counts_as_the_app() {
        for ok in [
            "tauri://localhost/",
            "tauri://localhost/index.html",
            "http://tauri.localhost/",
        ] {
            assert!(is_app_url(&Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "https://example.com/",
            "http://127.0.0.1:3002/",
            "tauri://evil/",
            "http://tauri.localhost.example.com/",
            "file:///etc/passwd",
        ] {
            assert!(!is_app_url(&Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn the_script_escapes_what_it_embeds() {
        let s = init_script("http://127.0.0.1:3002", "abc\"</script>\\");
        assert!(s.contains(r#"{ value: "http://127.0.0.1:3002" }"#), "{s}");
        assert!(s.contains(r#"{ value: "abc\"</script>\\" }"#), "{s}");
        assert!(s.contains(r#"location.protocol === "tauri:""#));
        assert!(s.contains("new Intl.NumberFormat(navigator.language)"));
    }

    #[test]
    fn connect_src_follows_the_bound_port_and_keeps_the_rest() {
        let configured = Csp::Policy(
            "default-src 'self'; connect-src 'self' ipc: http://ipc.localhost \
             http://127.0.0.1:3002 http://localhost:3002; img-src 'self' data:"
                .into(),
        );
        let csp = csp_for(Some(configured), "http://127.0.0.1:41234");
        assert_eq!(
            connect_src(&csp),
            [
                "'self'",
                "ipc:",
                "http://ipc.localhost",
                "http://127.0.0.1:41234",
                "http://localhost:41234"
            ]
        );
        let text = csp.to_string();
        assert!(text.contains("img-src 'self' data:"), "{text}");
        assert!(!text.contains("3002"), "{text}");
    }

    #[test]
    fn without_a_configured_policy_one_is_made() {
        let csp = csp_for(None, "http://127.0.0.1:3002");
        assert!(connect_src(&csp).contains(&"http://127.0.0.1:3002".to_string()));
        assert!(csp.to_string().contains("default-src 'self'"));
    }
}
