//! Desktop notifications for the backend's alerts: which alerts become a notification, and at
//! most one per kind per [`MIN_INTERVAL`] so a flapping threshold or link cannot flood the
//! desktop. The alerts themselves (thresholds, hysteresis, leak detection) are the backend's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use collisionos::events::{Alert, AlertLevel};

/// At most one notification of a kind in this window.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What a notification is about; the rate limit is per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    MemoryWarning,
    MemoryCritical,
    MemoryLeak,
    Offline,
    Online,
}

impl Kind {
    /// The kinds of alert the desktop notifies about; the rest only show in the UI.
    pub fn of(level: AlertLevel) -> Option<Kind> {
        match level {
            AlertLevel::Warning => Some(Kind::MemoryWarning),
            AlertLevel::Critical => Some(Kind::MemoryCritical),
            AlertLevel::Leak => Some(Kind::MemoryLeak),
            AlertLevel::Offline => Some(Kind::Offline),
            AlertLevel::Online => Some(Kind::Online),
            AlertLevel::SubscriptionFailed => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::MemoryWarning => "Memory use is high",
            Kind::MemoryCritical => "Memory use is critical",
            Kind::MemoryLeak => "Memory keeps growing",
            Kind::Offline => "Supabase is unreachable: working offline",
            Kind::Online => "Supabase is back: syncing",
        }
    }
}

/// Remembers when each kind was last shown. Holds one entry per [`Kind`] at most.
#[derive(Debug, Default)]
pub struct RateLimit {
    last: HashMap<Kind, Instant>,
}

impl RateLimit {
    /// Whether a notification of `kind` may be shown at `now`; if so it counts as shown.
    pub fn allow(&mut self, kind: Kind, now: Instant) -> bool {
        match self.last.get(&kind) {
            Some(&at) if now.saturating_duration_since(at) < MIN_INTERVAL => false,
            _ => {
                self.last.insert(kind, now);
                true
            }
        }
    }
}

/// A notification ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: Kind,
    pub title: &'static str,
    pub body: String,
}

/// The notification for `alert`, if its kind notifies and the rate limit lets it through.
pub fn notice(limit: &mut RateLimit, alert: &Alert, now: Instant) -> Option<Notice> {
    let kind = Kind::of(alert.level)?;
    limit.allow(kind, now).then(|| Notice {
        kind,
        title: kind.title(),
        body: alert.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(level: AlertLevel) -> Alert {
        Alert {
            ts: 0,
            level,
            message: format!("{level:?} happened"),
            value: Some(420.0),
        }
    }

    #[test]
    fn one_notification_per_kind_per_window() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let first = notice(&mut limit, &alert(AlertLevel::Warning), t0).unwrap();
        assert_eq!(first.kind, Kind::MemoryWarning);
        assert_eq!(first.body, "Warning happened");
        // Same kind inside the window: dropped; another kind: shown.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(notice(&mut limit, &alert(AlertLevel::Warning), t1), None);
        assert!(notice(&mut limit, &alert(AlertLevel::Critical), t1).is_some());
        // Just before the window ends: still dropped; at its end: shown again.
        let t2 = t0 + MIN_INTERVAL - Duration::from_millis(1);
        assert_eq!(notice(&mut limit, &alert(AlertLevel::Warning), t2), None);
        assert!(notice(&mut limit, &alert(AlertLevel::Warning), t0 + MIN_INTERVAL).is_some());
    }

    #[test]
    fn a_dropped_notification_does_not_extend_the_window() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        assert!(limit.allow(Kind::Offline, t0));
        assert!(!limit.allow(Kind::Offline, t0 + Duration::from_secs(200)));
        assert!(limit.allow(Kind::Offline, t0 + Duration::from_secs(300)));
    }

    #[test]
    fn offline_and_online_are_separate_kinds() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        assert!(notice(&mut limit, &alert(AlertLevel::Offline), t0).is_some());
        let back = notice(&mut limit, &alert(AlertLevel::Online), t0).unwrap();
        assert_eq!(back.title, "Supabase is back: syncing");
    }

    #[test]
    fn failed_subscriptions_only_show_in_the_ui() {
        let mut limit = RateLimit::default();
        let now = Instant::now();
        assert_eq!(
            notice(&mut limit, &alert(AlertLevel::SubscriptionFailed), now),
            None
        );
    }
}
