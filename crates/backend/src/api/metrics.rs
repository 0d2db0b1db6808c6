//! HTTP request metrics and the Prometheus text rendering of `/metrics`.
//!
//! Labels are the matched route template (never the raw path), the method and the status, so
//! the map is bounded by routes × methods × statuses; unmatched paths share one label.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct RouteLatency {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

#[derive(Default)]
struct Inner {
    requests: HashMap<(String, String, u16), u64>,
    latency: HashMap<String, RouteLatency>,
}

/// Counters and histograms of the HTTP layer.
#[derive(Default)]
pub struct HttpMetrics {
    inner: Mutex<Inner>,
}

/// At most this many distinct label sets; beyond it everything counts as `other` (defence in
/// depth: route templates are finite, but a bug must not turn this into a leak).
const MAX_SERIES: usize = 512;

impl HttpMetrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.inner.lock();
        let full = inner.requests.len() >= MAX_SERIES;
        let key = (method.to_string(), route.to_string(), status);
        if let Some(n) = inner.requests.get_mut(&key) {
            *n += 1;
        } else if full {
            *inner
                .requests
                .entry(("other".into(), "other".into(), 0))
                .or_default() += 1;
        } else {
            inner.requests.insert(key, 1);
        }
        let lat_full = inner.latency.len() >= MAX_SERIES;
        let lat = if inner.latency.contains_key(route) || !lat_full {
            inner.latency.entry(route.to_string()).or_default()
        } else {
            inner.latency.entry("other".into()).or_default()
        };
        lat.count += 1;
        lat.sum_secs += secs;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                lat.buckets[i] += 1;
            }
        }
    }

    /// Appends this layer's series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let inner = self.inner.lock();
        out.push_str(
            "# HELP collisionos_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE collisionos_http_requests_total counter\n");
        let mut reqs: Vec<_> = inner.requests.iter().collect();
        reqs.sort();
        for ((method, route, status), n) in reqs {
            let _ = writeln!(
                out,
                "collisionos_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        out.push_str(
            "# HELP collisionos_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE collisionos_http_request_duration_seconds histogram\n");
        let mut lats: Vec<_> = inner.latency.iter().collect();
        lats.sort_by(|a, b| a.0.cmp(b.0));
        for (route, l) in lats {
            let r = escape(route);
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "collisionos_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{bound}\"}} {}",
                    l.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "collisionos_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(
                out,
                "collisionos_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                l.sum_secs
            );
            let _ = writeln!(
                out,
                "collisionos_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                l.count
            );
        }
    }
}

/// Escapes a Prometheus label value.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one gauge or counter with its HELP/TYPE header.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_bounded_and_rendered() {
        let m = HttpMetrics::default();
        for i in 0..(MAX_SERIES + 50) {
            m.record("GET", &format!("/r{i}"), 200, Duration::from_millis(2));
        }
        let mut out = String::new();
        m.render(&mut out);
        let series = out
            .lines()
            .filter(|l| l.starts_with("collisionos_http_requests_total{"))
            .count();
        assert!(series <= MAX_SERIES + 1, "{series}");
        assert!(out.contains("route=\"other\""));
        assert!(out.contains("le=\"0.0025\"} 1"));
    }
}
