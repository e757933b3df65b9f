//! Wall-clock time as Unix milliseconds, the unit every stored time uses; a leaf any layer may use.
//!
//! The domain reads time from a `Clock` it is given: the system's in production, one that tests
//! move forward instead of sleeping. What sits below the domain (keys, mail, the outbound calls)
//! and the audit log's timestamps read the system clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time the domain reads: the system clock, moved forward by whatever a test advanced it.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` for the system clock, which cannot be moved.
    advanced_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock, as production runs.
    pub fn system() -> Self {
        Self { advanced_ms: None }
    }

    /// A clock that starts at the system's time and that `advance` moves forward.
    pub fn adjustable() -> Self {
        Self { advanced_ms: Some(Arc::new(AtomicI64::new(0))) }
    }

    pub fn now_ms(&self) -> i64 {
        let advanced = self.advanced_ms.as_ref().map_or(0, |a| a.load(Ordering::Relaxed));
        now_ms().saturating_add(advanced)
    }

    /// Moves an adjustable clock (and every clone of it) forward; whether it moved (the system
    /// clock does not).
    #[must_use]
    pub fn advance(&self, by: Duration) -> bool {
        let Some(advanced) = &self.advanced_ms else { return false };
        advanced.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::Relaxed);
        true
    }
}

/// The system clock's time, for what sits below the domain.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// RFC 3339 rendering of a stored time, for APIs and logs.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A stored time as people read it: `2026-11-23 20:36 UTC`.
pub fn human(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_for_every_clone() {
        let clock = Clock::adjustable();
        let twin = clock.clone();
        let before = twin.now_ms();
        assert!(clock.advance(Duration::from_secs(3600)));
        assert!(!Clock::system().advance(Duration::from_secs(1)), "the system clock does not move");
        let after = twin.now_ms();
        assert!(after - before >= 3_600_000 && after - before < 3_660_000, "{before} → {after}");
        assert!((Clock::system().now_ms() - now_ms()).abs() < 1000);
    }
}
