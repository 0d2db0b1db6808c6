//! Faults on demand, for recovery tests: a cloneable [`Faults`] handle, and the same over HTTP
//! (`POST /__faults`, JSON [`FaultRequest`]) for scripts; `GET /__stats` gives the counters.

use super::{Shared, Stats};
use axum::Json;
use axum::extract::State;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The switches the sockets consult.
#[derive(Default)]
pub(crate) struct FaultState {
    stall_heartbeats: AtomicBool,
    fail_joins: AtomicU32,
    refuse_until: Mutex<Option<Instant>>,
}

impl FaultState {
    pub fn heartbeats_stalled(&self) -> bool {
        self.stall_heartbeats.load(Ordering::Relaxed)
    }

    /// Consumes one planned join failure, if any.
    pub fn take_join_failure(&self) -> bool {
        self.fail_joins
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn refusing(&self) -> bool {
        let mut until = self.refuse_until.lock();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }
}

/// Injects faults into a running stand-in.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new(shared: Arc<Shared>) -> Faults {
        Faults { shared }
    }

    /// Drops every open socket now, without a close frame (a lost connection: the client sees
    /// an abnormal close). Returns how many.
    pub fn drop_sockets(&self) -> usize {
        let sockets = self.shared.sockets_snapshot();
        for s in &sockets {
            s.drop_now();
        }
        sockets.len()
    }

    /// While `true`, heartbeats are received (and counted) but never answered.
    pub fn stall_heartbeats(&self, stalled: bool) {
        self.shared
            .faults
            .stall_heartbeats
            .store(stalled, Ordering::Relaxed);
    }

    /// Refuses the next `n` joins with `{status:"error", response:{reason: JOIN_FAULT_REASON}}`,
    /// which realtime-js reports as `CHANNEL_ERROR`.
    pub fn fail_next_joins(&self, n: u32) {
        self.shared.faults.fail_joins.store(n, Ordering::Relaxed);
    }

    /// Sends `phx_close` to the joined channels on `topic` (e.g. `realtime:jobs`), or to every
    /// channel when `None`, and forgets them. Returns how many.
    pub fn close_channels(&self, topic: Option<&str>) -> usize {
        let shared = &self.shared;
        shared
            .sockets_snapshot()
            .iter()
            .map(|s| s.end_channels(shared, topic, false))
            .sum()
    }

    /// Crashes the joined channels on `topic`, or every channel when `None`: `phx_error`
    /// `{reason:"channel_crash"}` (Phoenix's report of a dead channel process), after which
    /// realtime-js rejoins. Returns how many.
    pub fn crash_channels(&self, topic: Option<&str>) -> usize {
        let shared = &self.shared;
        shared
            .sockets_snapshot()
            .iter()
            .map(|s| s.end_channels(shared, topic, true))
            .sum()
    }

    /// Ends every joined channel as an expired token does: `system`
    /// `{extension:"system", status:"error", message:"Token has expired 0 seconds ago"}`, then
    /// `phx_close`. Returns how many.
    pub fn expire_tokens(&self) -> usize {
        let shared = &self.shared;
        shared
            .sockets_snapshot()
            .iter()
            .map(|s| s.expire_all(shared))
            .sum()
    }

    /// Answers new handshakes with HTTP 503 `{error}` for `duration` (open sockets stay).
    pub fn refuse_sockets(&self, duration: Duration) {
        *self.shared.faults.refuse_until.lock() = Some(Instant::now() + duration);
    }

    /// Clears the standing faults (stalled heartbeats, planned join failures, refusal).
    pub fn reset(&self) {
        let f = &self.shared.faults;
        f.stall_heartbeats.store(false, Ordering::Relaxed);
        f.fail_joins.store(0, Ordering::Relaxed);
        *f.refuse_until.lock() = None;
    }

    /// Applies one request; returns how many sockets or channels it touched (0 for switches).
    pub fn apply(&self, request: &FaultRequest) -> usize {
        match request {
            FaultRequest::DropSockets => self.drop_sockets(),
            FaultRequest::StallHeartbeats { on } => {
                self.stall_heartbeats(*on);
                0
            }
            FaultRequest::FailJoins { count } => {
                self.fail_next_joins(*count);
                0
            }
            FaultRequest::CloseChannels { topic } => self.close_channels(topic.as_deref()),
            FaultRequest::CrashChannels { topic } => self.crash_channels(topic.as_deref()),
            FaultRequest::ExpireTokens => self.expire_tokens(),
            FaultRequest::RefuseSockets { ms } => {
                self.refuse_sockets(Duration::from_millis(*ms));
                0
            }
            FaultRequest::Reset => {
                self.reset();
                0
            }
        }
    }
}

/// The body of `POST /__faults`, e.g. `{"action":"fail_joins","count":3}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRequest {
    /// [`Faults::drop_sockets`].
    DropSockets,
    /// [`Faults::stall_heartbeats`]; `on` defaults to `true`.
    StallHeartbeats {
        #[serde(default = "yes")]
        on: bool,
    },
    /// [`Faults::fail_next_joins`].
    FailJoins { count: u32 },
    /// [`Faults::close_channels`]; no `topic` = all.
    CloseChannels {
        #[serde(default)]
        topic: Option<String>,
    },
    /// [`Faults::crash_channels`]; no `topic` = all.
    CrashChannels {
        #[serde(default)]
        topic: Option<String>,
    },
    /// [`Faults::expire_tokens`].
    ExpireTokens,
    /// [`Faults::refuse_sockets`] for `ms` milliseconds.
    RefuseSockets { ms: u64 },
    /// [`Faults::reset`].
    Reset,
}

fn yes() -> bool {
    true
}

pub(crate) async fn http(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<FaultRequest>,
) -> Json<Value> {
    let affected = Faults::new(shared).apply(&request);
    Json(json!({ "ok": true, "affected": affected }))
}

pub(crate) async fn http_stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let parse = |s: &str| serde_json::from_str::<FaultRequest>(s).unwrap();
        assert_eq!(
            parse(r#"{"action":"drop_sockets"}"#),
            FaultRequest::DropSockets
        );
        assert_eq!(
            parse(r#"{"action":"stall_heartbeats"}"#),
            FaultRequest::StallHeartbeats { on: true }
        );
        assert_eq!(
            parse(r#"{"action":"fail_joins","count":2}"#),
            FaultRequest::FailJoins { count: 2 }
        );
        assert_eq!(
            parse(r#"{"action":"close_channels","topic":"realtime:a"}"#),
            FaultRequest::CloseChannels {
                topic: Some("realtime:a".into())
            }
        );
        assert_eq!(
            parse(r#"{"action":"refuse_sockets","ms":50}"#),
            FaultRequest::RefuseSockets { ms: 50 }
        );
        assert_eq!(
            parse(r#"{"action":"crash_channels"}"#),
            FaultRequest::CrashChannels { topic: None }
        );
        assert!(serde_json::from_str::<FaultRequest>(r#"{"action":"explode"}"#).is_err());
    }

    #[test]
    fn join_failures_count_down() {
        let f = FaultState::default();
        f.fail_joins.store(2, Ordering::Relaxed);
        assert!(f.take_join_failure());
        assert!(f.take_join_failure());
        assert!(!f.take_join_failure());
    }
}
