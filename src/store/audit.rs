//! The chained audit log and the alert states that keep an alert from repeating.

use async_trait::async_trait;

use super::StoreError;

/// A security event to append to the audit log. `details` is JSON and never holds a secret or an email.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub user_id: Option<String>,
    pub address: Option<String>,
    pub details: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub user_id: Option<String>,
    pub address: Option<String>,
    pub details: String,
    pub key_id: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Computes an audit event's MAC over the previous event's MAC; the domain holds the key.
pub trait AuditSealer: Send + Sync {
    fn key_id(&self) -> String;
    fn seal(&self, key_id: &str, prev_hash: &[u8], seq: i64, event: &NewAuditEvent) -> Vec<u8>;
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends one event to the audit log; returns its sequence number.
    async fn append_audit(&self, event: &NewAuditEvent, sealer: &dyn AuditSealer) -> Result<i64, StoreError>;
    /// Up to `limit` events after `seq`, in order.
    async fn audit_events_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The newest `limit` events of one account, newest first.
    async fn audit_events_of(&self, user_id: &str, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The sequence number and MAC of the last event appended.
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError>;
    /// Raises the state `kind` until `until` unless it is already raised at `now`; true when this
    /// call raised it, so that of many nodes exactly one sends the alert.
    async fn raise_alert_state(&self, kind: &str, now: i64, until: i64) -> Result<bool, StoreError>;
    /// Keeps a raised state up for longer (never shortens it).
    async fn extend_alert_state(&self, kind: &str, until: i64) -> Result<(), StoreError>;
    async fn alert_state_until(&self, kind: &str) -> Result<Option<i64>, StoreError>;
    /// Drops alert states (a surge's hold, a sign-in code's mailing window) that ended before `before`.
    async fn purge_alert_states(&self, before: i64) -> Result<u64, StoreError>;
}

/// Implements `AuditStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_audit_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::AuditStore for $store {
                async fn append_audit(&self, event: &NewAuditEvent, sealer: &dyn AuditSealer) -> Result<i64, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let seq = append_audit!($db, &mut *tx, event, sealer);
                    tx.commit().await?;
                    Ok(seq)
                }

                async fn audit_events_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, AuditRecord>(concat!(audit_select!(), " WHERE seq > $1 ORDER BY seq LIMIT $2"))
                        .bind(seq)
                        .bind(limit)
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn audit_events_of(&self, user_id: &str, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, AuditRecord>(concat!(
                        audit_select!(),
                        " WHERE user_id = $1 ORDER BY seq DESC LIMIT $2"
                    ))
                    .bind(user_id)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
                    Ok(sqlx::query_as::<$db, (i64, Vec<u8>)>("SELECT seq, hash FROM audit_head WHERE id = 1")
                        .fetch_one(&self.reader)
                        .await?)
                }

                async fn raise_alert_state(&self, kind: &str, now: i64, until: i64) -> Result<bool, StoreError> {
                    let raised: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "INSERT INTO alert_states (kind, raised_at, until) VALUES ($1, $2, $3) \
                         ON CONFLICT (kind) DO UPDATE SET raised_at = excluded.raised_at, until = excluded.until \
                         WHERE alert_states.until < excluded.raised_at \
                         RETURNING kind",
                    )
                    .bind(kind)
                    .bind(now)
                    .bind(until)
                    .fetch_optional(&self.writer)
                    .await?;
                    Ok(raised.is_some())
                }

                async fn extend_alert_state(&self, kind: &str, until: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE alert_states SET until = $2 WHERE kind = $1 AND until < $2")
                        .bind(kind)
                        .bind(until)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn alert_state_until(&self, kind: &str) -> Result<Option<i64>, StoreError> {
                    let until: Option<(i64,)> =
                        sqlx::query_as::<$db, (i64,)>("SELECT until FROM alert_states WHERE kind = $1")
                            .bind(kind)
                            .fetch_optional(&self.reader)
                            .await?;
                    Ok(until.map(|(u,)| u))
                }

                async fn purge_alert_states(&self, before: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM alert_states WHERE until < $1")
                        .bind(before)
                        .execute(&self.maintenance)
                        .await?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(super) use impl_audit_store;
