//! Trouble that hits every request alike (the database gone, the hashing queue full), logged once per interval with a count.
//!
//! During an outage every request fails for the same reason; a line per request would bury the
//! log (a 20-second flood once wrote 182 identical lines). The first occurrence is logged at once,
//! then at most one line per interval says how many more there were.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// At most one line per kind of trouble in this interval.
const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of trouble: the last time it was logged and what happened since.
struct Window {
    logged_at: Instant,
    unlogged: u64,
}

static WINDOWS: LazyLock<Mutex<HashMap<&'static str, Window>>> = LazyLock::new(Mutex::default);

/// Whether this occurrence of `kind` is to be logged now, and how many were left unlogged before it.
fn admit(kind: &'static str, now: Instant) -> Option<u64> {
    let mut windows = WINDOWS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match windows.get_mut(kind) {
        Some(window) if now.duration_since(window.logged_at) < INTERVAL => {
            window.unlogged += 1;
            None
        }
        Some(window) => {
            let unlogged = window.unlogged;
            *window = Window { logged_at: now, unlogged: 0 };
            Some(unlogged)
        }
        None => {
            windows.insert(kind, Window { logged_at: now, unlogged: 0 });
            Some(0)
        }
    }
}

/// A request failed because the database did not answer (a WARN: it retries and recovers by itself).
pub fn database_unavailable(cause: &dyn std::fmt::Display) {
    if let Some(more) = admit("database_unavailable", Instant::now()) {
        tracing::warn!(
            error = %cause,
            since_last_line = more,
            "the database does not answer; requests get 503 database_unavailable until it does"
        );
    }
}

/// A password hash was refused because the hashing queue is full.
pub fn overloaded() {
    if let Some(more) = admit("overloaded", Instant::now()) {
        tracing::warn!(since_last_line = more, "password hashing is saturated; requests get 503 overloaded");
    }
}

/// This node could not refresh its revocation rules in time and refuses to validate from memory.
pub fn revocations_stale(stale_for: Duration) {
    if let Some(more) = admit("revocations_stale", Instant::now()) {
        tracing::warn!(
            stale_ms = u64::try_from(stale_for.as_millis()).unwrap_or(u64::MAX),
            since_last_line = more,
            "revocation rules are stale: token validation answers 503 until the database answers again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let start = Instant::now();
        assert_eq!(admit("test_kind", start), Some(0), "the first is logged");
        for i in 1..=181 {
            assert_eq!(admit("test_kind", start + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(admit("test_kind", start + INTERVAL), Some(181), "then one line says how many followed");
        assert_eq!(admit("other_kind", start), Some(0), "kinds are counted apart");
    }
}
