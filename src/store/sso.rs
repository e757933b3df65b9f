//! Sign-in through upstream providers: trips to a provider and back, pending links, and linked identities.

use async_trait::async_trait;

use super::{NewUser, StoreError};

/// An upstream account linked to a keywarden account; the subject only as a keyed blind index.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoIdentityRecord {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub subject_index: Vec<u8>,
    pub subject_index_key_id: String,
    /// What the provider calls this account (its email), sealed, for the owner's eyes on /security.
    pub label_sealed: Option<Vec<u8>>,
    pub label_key_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A trip to an upstream provider and back, keyed by the digest of its `state`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoFlowRecord {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub provider: String,
    /// `signin`, `link` or `reauth`.
    pub purpose: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub next: String,
    pub verifier_sealed: Vec<u8>,
    pub verifier_key_id: String,
    pub nonce_digest: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An upstream account not linked yet, waiting for its person to create or choose an account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoPendingRecord {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub provider: String,
    pub claims_sealed: Vec<u8>,
    pub claims_key_id: String,
    pub next: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait SsoStore: Send + Sync + 'static {
    async fn create_sso_flow(&self, flow: &SsoFlowRecord) -> Result<(), StoreError>;
    /// Spends a trip to a provider: returns it once, while it has not expired.
    async fn take_sso_flow(&self, digest: &[u8], now: i64) -> Result<Option<SsoFlowRecord>, StoreError>;
    async fn create_sso_pending(&self, pending: &SsoPendingRecord) -> Result<(), StoreError>;
    /// An unlinked upstream account still waiting (unused, unexpired).
    async fn sso_pending(&self, digest: &[u8], now: i64) -> Result<Option<SsoPendingRecord>, StoreError>;
    /// Spends it; false if it was already used or has expired.
    async fn consume_sso_pending(&self, digest: &[u8], now: i64) -> Result<bool, StoreError>;
    async fn sso_identity(&self, provider: &str, subject_index: &[u8])
        -> Result<Option<SsoIdentityRecord>, StoreError>;
    async fn sso_identities_of(&self, user_id: &str) -> Result<Vec<SsoIdentityRecord>, StoreError>;
    /// Links an upstream account; one already linked to any account is a conflict.
    async fn link_sso_identity(&self, identity: &SsoIdentityRecord) -> Result<(), StoreError>;
    /// Creates an account and links its upstream account in one transaction.
    async fn create_user_with_identity(&self, user: &NewUser, identity: &SsoIdentityRecord) -> Result<(), StoreError>;
    /// Unlinks an upstream account unless it is the account's last way to sign in (no password,
    /// no passkey, no other provider); false if nothing was removed.
    async fn unlink_sso_identity(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    async fn sso_identity_used(&self, id: &str, at: i64) -> Result<(), StoreError>;
}

/// Implements `SsoStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_sso_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::SsoStore for $store {
                async fn create_sso_flow(&self, flow: &SsoFlowRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO sso_flows (digest, digest_key_id, provider, purpose, user_id, session_id, next, \
                         verifier_sealed, verifier_key_id, nonce_digest, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(&flow.digest)
                    .bind(&flow.digest_key_id)
                    .bind(&flow.provider)
                    .bind(&flow.purpose)
                    .bind(&flow.user_id)
                    .bind(&flow.session_id)
                    .bind(&flow.next)
                    .bind(&flow.verifier_sealed)
                    .bind(&flow.verifier_key_id)
                    .bind(&flow.nonce_digest)
                    .bind(flow.created_at)
                    .bind(flow.expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn take_sso_flow(&self, digest: &[u8], now: i64) -> Result<Option<SsoFlowRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, SsoFlowRecord>(
                        "UPDATE sso_flows SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1 \
                         RETURNING digest, digest_key_id, provider, purpose, user_id, session_id, next, verifier_sealed, \
                         verifier_key_id, nonce_digest, created_at, expires_at",
                    )
                    .bind(now)
                    .bind(digest)
                    .fetch_optional(&self.writer)
                    .await?)
                }

                async fn create_sso_pending(&self, pending: &SsoPendingRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO sso_pending (digest, digest_key_id, provider, claims_sealed, claims_key_id, next, \
                         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&pending.digest)
                    .bind(&pending.digest_key_id)
                    .bind(&pending.provider)
                    .bind(&pending.claims_sealed)
                    .bind(&pending.claims_key_id)
                    .bind(&pending.next)
                    .bind(pending.created_at)
                    .bind(pending.expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn sso_pending(&self, digest: &[u8], now: i64) -> Result<Option<SsoPendingRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, SsoPendingRecord>(
                        "SELECT digest, digest_key_id, provider, claims_sealed, claims_key_id, next, created_at, expires_at \
                         FROM sso_pending WHERE digest = $1 AND used_at IS NULL AND expires_at > $2",
                    )
                    .bind(digest)
                    .bind(now)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn consume_sso_pending(&self, digest: &[u8], now: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE sso_pending SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1",
                    )
                    .bind(now)
                    .bind(digest)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn sso_identity(
                    &self,
                    provider: &str,
                    subject_index: &[u8],
                ) -> Result<Option<SsoIdentityRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, SsoIdentityRecord>(concat!(
                        sso_identity_select!(),
                        " WHERE provider = $1 AND subject_index = $2"
                    ))
                    .bind(provider)
                    .bind(subject_index)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn sso_identities_of(&self, user_id: &str) -> Result<Vec<SsoIdentityRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, SsoIdentityRecord>(concat!(
                        sso_identity_select!(),
                        " WHERE user_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn link_sso_identity(&self, identity: &SsoIdentityRecord) -> Result<(), StoreError> {
                    insert_sso_identity!($db, &self.writer, identity).map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn create_user_with_identity(
                    &self,
                    user: &NewUser,
                    identity: &SsoIdentityRecord,
                ) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    insert_user!($db, &mut *tx, user).map_err($crate::store::conflict_or_database)?;
                    insert_sso_identity!($db, &mut *tx, identity).map_err($crate::store::conflict_or_database)?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn unlink_sso_identity(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "DELETE FROM sso_identities WHERE id = $1 AND user_id = $2 \
                         AND (EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash <> '') \
                              OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $2) \
                              OR EXISTS (SELECT 1 FROM sso_identities WHERE user_id = $2 AND id <> $1))",
                    )
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn sso_identity_used(&self, id: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE sso_identities SET last_used_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use impl_sso_store;
