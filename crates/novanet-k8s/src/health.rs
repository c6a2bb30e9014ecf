//! Per-kind health of a source, for `status` output and metrics.
//!
//! Invariants: counters only grow; `synced` never goes back to false (a store that listed once keeps
//! serving its last contents through outages, by design). An error marks the kind degraded until
//! the next successful event, or until [`DEGRADED_HOLD`] passes without another error: kube-rs'
//! default backoff retries at most every 30 s and every failed retry is an error, so a persisting
//! outage keeps the kind degraded, while a watch that quietly resumed (no event to show for it)
//! heals on its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::kinds::ObjectKind;

/// How long one error keeps a kind degraded when nothing else happens.
pub const DEGRADED_HOLD: Duration = Duration::from_secs(60);

/// A snapshot of one kind's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindHealth {
    /// The kind.
    pub kind: ObjectKind,
    /// The store completed at least one full list (it never un-syncs).
    pub synced: bool,
    /// Objects in the store now.
    pub objects: usize,
    /// When the last event (apply, delete, list page) was received.
    pub last_event_at: Option<SystemTime>,
    /// When the last error was received.
    pub last_error_at: Option<SystemTime>,
    /// The last error's text.
    pub last_error: Option<String>,
    /// Errors since start.
    pub errors_total: u64,
    /// Errors since the last successful event.
    pub consecutive_errors: u64,
    /// Full lists (initial one included) since start.
    pub lists_total: u64,
}

/// The coarse state of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindState {
    /// No full list yet: the store is empty or partial; never act on absences.
    Syncing,
    /// Synced and no recent error.
    Healthy,
    /// Synced, but the source is failing; the store serves its last contents.
    Degraded,
}

impl KindHealth {
    /// The coarse state at `now` (see the module doc for the degraded rule).
    pub fn state(&self, now: SystemTime) -> KindState {
        if !self.synced {
            return KindState::Syncing;
        }
        let recent_error = match self.last_error_at {
            Some(at) if self.consecutive_errors > 0 => now
                .duration_since(at)
                .map(|age| age < DEGRADED_HOLD)
                .unwrap_or(true),
            _ => false,
        };
        if recent_error {
            KindState::Degraded
        } else {
            KindState::Healthy
        }
    }
}

#[derive(Debug)]
struct Counters {
    synced: bool,
    last_event_at: Option<SystemTime>,
    last_error_at: Option<SystemTime>,
    last_error: Option<String>,
    errors_total: u64,
    consecutive_errors: u64,
    lists_total: u64,
}

/// Shared, cheap-to-clone recorder of one kind's health.
#[derive(Debug, Clone)]
pub(crate) struct HealthCell {
    kind: ObjectKind,
    inner: Arc<Mutex<Counters>>,
}

impl HealthCell {
    pub(crate) fn new(kind: ObjectKind) -> Self {
        HealthCell {
            kind,
            inner: Arc::new(Mutex::new(Counters {
                synced: false,
                last_event_at: None,
                last_error_at: None,
                last_error: None,
                errors_total: 0,
                consecutive_errors: 0,
                lists_total: 0,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        // A panic while holding this lock cannot leave the counters inconsistent: keep going.
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn record_event(&self, list_done: bool) {
        self.with(|c| {
            c.last_event_at = Some(SystemTime::now());
            c.consecutive_errors = 0;
            if list_done {
                c.synced = true;
                c.lists_total += 1;
            }
        });
    }

    pub(crate) fn record_error(&self, error: String) {
        self.with(|c| {
            c.last_error_at = Some(SystemTime::now());
            c.last_error = Some(error);
            c.errors_total += 1;
            c.consecutive_errors += 1;
        });
    }

    pub(crate) fn snapshot(&self, objects: usize) -> KindHealth {
        self.with(|c| KindHealth {
            kind: self.kind,
            synced: c.synced,
            objects,
            last_event_at: c.last_event_at,
            last_error_at: c.last_error_at,
            last_error: c.last_error.clone(),
            errors_total: c.errors_total,
            consecutive_errors: c.consecutive_errors,
            lists_total: c.lists_total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_degrades_until_next_event() {
        let cell = HealthCell::new(ObjectKind::Pod);
        let now = SystemTime::now();
        assert_eq!(cell.snapshot(0).state(now), KindState::Syncing);
        cell.record_event(true);
        assert_eq!(
            cell.snapshot(0).state(SystemTime::now()),
            KindState::Healthy
        );
        cell.record_error("connection refused".into());
        let h = cell.snapshot(3);
        assert_eq!(h.state(SystemTime::now()), KindState::Degraded);
        assert_eq!((h.errors_total, h.consecutive_errors, h.objects), (1, 1, 3));
        assert_eq!(
            h.state(SystemTime::now() + DEGRADED_HOLD * 2),
            KindState::Healthy
        );
        cell.record_event(false);
        let h = cell.snapshot(3);
        assert_eq!(h.state(SystemTime::now()), KindState::Healthy);
        assert_eq!(
            (h.errors_total, h.consecutive_errors, h.lists_total),
            (1, 0, 1)
        );
    }
}
