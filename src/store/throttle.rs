//! Failure counters with back-off for everything that can be guessed.

use async_trait::async_trait;

use super::StoreError;

/// A throttle's failure counter as it stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThrottleRecord {
    pub key: String,
    /// Attempts counted, including those still being checked.
    pub failures: i64,
    pub last_failure_at: i64,
    pub blocked_until: i64,
}

/// One attempt to count against a throttle key (Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleStep {
    pub now: i64,
    pub forget_before: i64,
    /// Attempts allowed before the first block; the attempt that reaches it holds the key.
    pub free: i64,
    /// How long such an attempt holds the key while it is being checked; settling it as a
    /// failure replaces the hold with the back-off, anything else lifts it.
    pub hold_until: i64,
}

#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    async fn throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError>;
    /// Counts one attempt against `key` unless it is blocked at `step.now`; an attempt at or past
    /// the free ones holds the key until `step.hold_until` in the same statement, so concurrent
    /// attempts can never all pass before the first block is written. Returns the count, or `None`
    /// when the key was blocked (nothing is counted then). A counter whose last attempt came before
    /// `step.forget_before` starts again from one.
    async fn throttle_reserve(&self, key: &str, step: &ThrottleStep) -> Result<Option<i64>, StoreError>;
    /// Settles the attempt counted last as a failure; `blocked_until` replaces its hold.
    async fn throttle_failed(&self, key: &str, at: i64, blocked_until: Option<i64>) -> Result<(), StoreError>;
    /// Gives back one counted attempt that was not a wrong guess, lifting its hold if it set one.
    async fn throttle_refund(&self, key: &str, held: bool) -> Result<(), StoreError>;
    async fn throttle_clear(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes every counter whose key ends with one of `suffixes` (all purposes of one subject);
    /// how many.
    async fn throttle_clear_subjects(&self, suffixes: &[String]) -> Result<u64, StoreError>;
    /// How many keys starting with `prefix` had a settled failure since `since`, and their counted
    /// attempts in all.
    async fn throttles_failing(&self, prefix: &str, since: i64) -> Result<(i64, i64), StoreError>;
    /// Drops counters neither failing nor blocking since `before`.
    async fn purge_throttles(&self, before: i64) -> Result<u64, StoreError>;
}

/// Implements `ThrottleStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_throttle_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::ThrottleStore for $store {
                async fn throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, ThrottleRecord>(
                        "SELECT key, failures, last_failure_at, blocked_until FROM throttles WHERE key = $1",
                    )
                    .bind(key)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn throttle_reserve(&self, key: &str, step: &ThrottleStep) -> Result<Option<i64>, StoreError> {
                    // One statement counts, tests and holds, so concurrent attempts queue on the row and
                    // none passes a hold another has just set. SET expressions all read the row as it
                    // was, hence the count spelled out twice; the casts type the parameters for PostgreSQL.
                    let counted: Option<(i64,)> = sqlx::query_as::<$db, (i64,)>(
                        "INSERT INTO throttles (key, failures, last_failure_at, blocked_until) \
                         VALUES ($1, 1, $2, CASE WHEN 1 >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) ELSE 0 END) \
                         ON CONFLICT (key) DO UPDATE SET \
                         failures = CASE WHEN throttles.last_failure_at < $3 THEN 1 ELSE throttles.failures + 1 END, \
                         blocked_until = CASE \
                             WHEN (CASE WHEN throttles.last_failure_at < $3 THEN 1 ELSE throttles.failures + 1 END) \
                                  >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) \
                             ELSE 0 END, \
                         last_failure_at = $2 \
                         WHERE throttles.blocked_until <= $2 \
                         RETURNING failures",
                    )
                    .bind(key)
                    .bind(step.now)
                    .bind(step.forget_before)
                    .bind(step.free)
                    .bind(step.hold_until)
                    .fetch_optional(&self.writer)
                    .await?;
                    Ok(counted.map(|(n,)| n))
                }

                async fn throttle_failed(&self, key: &str, at: i64, blocked_until: Option<i64>) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "UPDATE throttles SET failed_at = $1, \
                         blocked_until = COALESCE(CAST($2 AS BIGINT), blocked_until) WHERE key = $3",
                    )
                    .bind(at)
                    .bind(blocked_until)
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn throttle_refund(&self, key: &str, held: bool) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "UPDATE throttles SET failures = failures - 1, \
                         blocked_until = CASE WHEN CAST($1 AS BIGINT) = 1 THEN 0 ELSE blocked_until END \
                         WHERE key = $2 AND failures > 0",
                    )
                    .bind(i64::from(held))
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn throttle_clear(&self, key: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("DELETE FROM throttles WHERE key = $1").bind(key).execute(&self.writer).await?;
                    Ok(())
                }

                async fn throttle_clear_subjects(&self, suffixes: &[String]) -> Result<u64, StoreError> {
                    let mut cleared = 0;
                    for suffix in suffixes {
                        // The suffix is matched literally: ids hold no LIKE wildcards, and `_` is escaped.
                        let pattern = format!("%{}", suffix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                        cleared += sqlx::query::<$db>("DELETE FROM throttles WHERE key LIKE $1 ESCAPE '\\'")
                            .bind(pattern)
                            .execute(&self.writer)
                            .await?
                            .rows_affected();
                    }
                    Ok(cleared)
                }

                async fn throttles_failing(&self, prefix: &str, since: i64) -> Result<(i64, i64), StoreError> {
                    let counted: (i64, Option<i64>) = sqlx::query_as::<$db, (i64, Option<i64>)>(
                        "SELECT COUNT(*), CAST(SUM(failures) AS BIGINT) FROM throttles \
                         WHERE key LIKE $1 AND failed_at >= $2",
                    )
                    .bind(format!("{prefix}%"))
                    .bind(since)
                    .fetch_one(&self.reader)
                    .await?;
                    Ok((counted.0, counted.1.unwrap_or(0)))
                }

                async fn purge_throttles(&self, before: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM throttles WHERE last_failure_at < $1 AND blocked_until < $1")
                        .bind(before)
                        .execute(&self.maintenance)
                        .await?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(super) use impl_throttle_store;
