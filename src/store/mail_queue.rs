//! Mail waiting for delivery, sealed, claimed by one sender at a time.

use async_trait::async_trait;

use super::StoreError;

/// A message waiting for delivery; `sealed` holds recipient and content, encrypted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMail {
    pub id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub sealed: Vec<u8>,
    pub key_id: String,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: i64,
}

#[async_trait]
pub trait MailQueueStore: Send + Sync + 'static {
    async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError>;
    /// Claims up to `limit` messages due at `now` for delivery by this node until `lock_until`.
    async fn claim_due_mail(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError>;
    async fn mail_delivered(&self, id: &str) -> Result<(), StoreError>;
    async fn mail_failed(&self, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError>;
    async fn mail_queue_depth(&self) -> Result<i64, StoreError>;
}

/// Implements `MailQueueStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_mail_queue_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::MailQueueStore for $store {
                async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO mail_queue (id, kind, user_id, sealed, key_id, created_at, next_attempt_at, attempts) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&mail.id)
                    .bind(&mail.kind)
                    .bind(&mail.user_id)
                    .bind(&mail.sealed)
                    .bind(&mail.key_id)
                    .bind(mail.created_at)
                    .bind(mail.next_attempt_at)
                    .bind(mail.attempts)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn claim_due_mail(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError> {
                    // The lock condition is repeated outside the sub-select so that, on PostgreSQL, a node
                    // that lost the race re-checks the row and skips it.
                    Ok(sqlx::query_as::<$db, QueuedMail>(
                        "UPDATE mail_queue SET locked_until = $1 \
                         WHERE id IN (SELECT id FROM mail_queue WHERE next_attempt_at <= $2 \
                                      AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT $3) \
                         AND (locked_until IS NULL OR locked_until < $2) \
                         RETURNING id, kind, user_id, sealed, key_id, created_at, next_attempt_at, attempts",
                    )
                    .bind(lock_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.writer)
                    .await?)
                }

                async fn mail_delivered(&self, id: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("DELETE FROM mail_queue WHERE id = $1").bind(id).execute(&self.writer).await?;
                    Ok(())
                }

                async fn mail_failed(&self, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                         locked_until = NULL WHERE id = $3",
                    )
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn mail_queue_depth(&self) -> Result<i64, StoreError> {
                    let (n,): (i64,) =
                        sqlx::query_as::<$db, (i64,)>("SELECT COUNT(*) FROM mail_queue").fetch_one(&self.reader).await?;
                    Ok(n)
                }
            }
        };
    };
}

pub(super) use impl_mail_queue_store;
