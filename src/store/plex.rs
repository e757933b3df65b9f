//! The plex.tv-compatible surface: numeric account ids, PINs, device keys, and what devices say they provide.

use async_trait::async_trait;

use super::StoreError;

/// A device's registered public key (plex.tv's JWT scheme) and the token it is anchored to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceKeyRecord {
    pub kid: String,
    pub user_id: String,
    pub device_id: String,
    /// The public JWK, as JSON.
    pub jwk: String,
    /// The digest of the newest token issued with (or for) this key.
    pub anchor_digest: Vec<u8>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A PIN a plex.tv-style device shows while its person approves it; the code only as a keyed digest.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlexPinRecord {
    pub id: i64,
    pub code_digest: Vec<u8>,
    pub digest_key_id: String,
    pub strong: i64,
    pub client_identifier: String,
    pub product: String,
    pub platform: String,
    pub device_name: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// Who approved it, and when.
    pub user_id: Option<String>,
    pub approved_at: Option<i64>,
    /// When the device collected its token.
    pub used_at: Option<i64>,
}

/// A claim token: its owner's account, the code only as a keyed digest.
#[derive(Debug, Clone)]
pub struct PlexClaimRecord {
    pub code_digest: Vec<u8>,
    pub digest_key_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait PlexStore: Send + Sync + 'static {
    /// Records what a device provides (from its `X-Plex-Provides` header).
    async fn set_device_provides(&self, device_id: &str, provides: &str) -> Result<(), StoreError>;
    /// Replaces the addresses a device published.
    async fn set_device_connections(&self, device_id: &str, connections: &str) -> Result<(), StoreError>;
    /// The account's stable integer id, handed out on first use.
    async fn numeric_user_id(&self, user_id: &str) -> Result<i64, StoreError>;
    /// Registers (or re-registers, for the same account) a device key; false if another account
    /// holds that key id.
    async fn register_device_key(&self, key: &DeviceKeyRecord) -> Result<bool, StoreError>;
    /// The account's registered device keys, newest first.
    async fn device_keys_of(&self, user_id: &str) -> Result<Vec<DeviceKeyRecord>, StoreError>;
    /// Forgets one of the account's device keys; false when it has no such key.
    async fn remove_device_key(&self, user_id: &str, kid: &str) -> Result<bool, StoreError>;
    async fn device_key(&self, kid: &str) -> Result<Option<DeviceKeyRecord>, StoreError>;
    /// Moves a key's anchor to a newer token; false if the anchor changed meanwhile.
    async fn move_device_key_anchor(&self, kid: &str, from: &[u8], to: &[u8], at: i64) -> Result<bool, StoreError>;
    /// Stores a new PIN; a code another live PIN has is a conflict.
    async fn create_plex_pin(&self, pin: &PlexPinRecord) -> Result<(), StoreError>;
    async fn plex_pin(&self, id: i64) -> Result<Option<PlexPinRecord>, StoreError>;
    /// The unexpired, unapproved PIN with this code digest.
    async fn plex_pin_by_code(&self, digest: &[u8], now: i64) -> Result<Option<PlexPinRecord>, StoreError>;
    /// Records the approval; false if the PIN was approved already or has expired.
    async fn approve_plex_pin(&self, id: i64, user_id: &str, at: i64) -> Result<bool, StoreError>;
    /// Spends an approved PIN as its device collects the token; false if it was collected before.
    async fn use_plex_pin(&self, id: i64, at: i64) -> Result<bool, StoreError>;
    async fn create_plex_claim(&self, claim: &PlexClaimRecord) -> Result<(), StoreError>;
    /// Spends the unused, unexpired claim with this code digest, atomically; its owner's account id.
    async fn take_plex_claim(&self, digest: &[u8], now: i64) -> Result<Option<String>, StoreError>;
    /// The account's webhook URLs as a JSON array (none stored: `None`).
    async fn plex_webhooks(&self, user_id: &str) -> Result<Option<String>, StoreError>;
    async fn set_plex_webhooks(&self, user_id: &str, urls: &str, at: i64) -> Result<(), StoreError>;
}

/// Implements `PlexStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_plex_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::PlexStore for $store {
                async fn set_device_provides(&self, device_id: &str, provides: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE devices SET provides = $1 WHERE id = $2")
                        .bind(provides)
                        .bind(device_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn set_device_connections(&self, device_id: &str, connections: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE devices SET connections = $1 WHERE id = $2")
                        .bind(connections)
                        .bind(device_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn numeric_user_id(&self, user_id: &str) -> Result<i64, StoreError> {
                    sqlx::query::<$db>("INSERT INTO numeric_user_ids (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>("SELECT id FROM numeric_user_ids WHERE user_id = $1")
                        .bind(user_id)
                        .fetch_one(&self.writer)
                        .await?;
                    Ok(id)
                }

                async fn register_device_key(&self, key: &DeviceKeyRecord) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "INSERT INTO device_keys (kid, user_id, device_id, jwk, anchor_digest, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (kid) DO UPDATE SET device_id = excluded.device_id, jwk = excluded.jwk, \
                         anchor_digest = excluded.anchor_digest, created_at = excluded.created_at \
                         WHERE device_keys.user_id = excluded.user_id",
                    )
                    .bind(&key.kid)
                    .bind(&key.user_id)
                    .bind(&key.device_id)
                    .bind(&key.jwk)
                    .bind(&key.anchor_digest)
                    .bind(key.created_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn device_keys_of(&self, user_id: &str) -> Result<Vec<DeviceKeyRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, DeviceKeyRecord>(
                        "SELECT kid, user_id, device_id, jwk, anchor_digest, created_at, last_used_at FROM device_keys \
                         WHERE user_id = $1 ORDER BY created_at DESC",
                    )
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn remove_device_key(&self, user_id: &str, kid: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM device_keys WHERE user_id = $1 AND kid = $2")
                        .bind(user_id)
                        .bind(kid)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn device_key(&self, kid: &str) -> Result<Option<DeviceKeyRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, DeviceKeyRecord>(
                        "SELECT kid, user_id, device_id, jwk, anchor_digest, created_at, last_used_at FROM device_keys \
                         WHERE kid = $1",
                    )
                    .bind(kid)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn move_device_key_anchor(&self, kid: &str, from: &[u8], to: &[u8], at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE device_keys SET anchor_digest = $1, last_used_at = $2 WHERE kid = $3 AND anchor_digest = $4",
                    )
                    .bind(to)
                    .bind(at)
                    .bind(kid)
                    .bind(from)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn create_plex_pin(&self, pin: &PlexPinRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO plex_pins (id, code_digest, digest_key_id, strong, client_identifier, product, \
                         platform, device_name, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(pin.id)
                    .bind(&pin.code_digest)
                    .bind(&pin.digest_key_id)
                    .bind(pin.strong)
                    .bind(&pin.client_identifier)
                    .bind(&pin.product)
                    .bind(&pin.platform)
                    .bind(&pin.device_name)
                    .bind(pin.created_at)
                    .bind(pin.expires_at)
                    .execute(&self.writer)
                    .await
                    .map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn plex_pin(&self, id: i64) -> Result<Option<PlexPinRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, PlexPinRecord>(concat!(plex_pin_select!(), " WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn plex_pin_by_code(&self, digest: &[u8], now: i64) -> Result<Option<PlexPinRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, PlexPinRecord>(concat!(
                        plex_pin_select!(),
                        " WHERE code_digest = $1 AND expires_at > $2 AND approved_at IS NULL"
                    ))
                    .bind(digest)
                    .bind(now)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn approve_plex_pin(&self, id: i64, user_id: &str, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE plex_pins SET user_id = $1, approved_at = $2 \
                         WHERE id = $3 AND approved_at IS NULL AND expires_at > $2",
                    )
                    .bind(user_id)
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn use_plex_pin(&self, id: i64, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE plex_pins SET used_at = $1 WHERE id = $2 AND approved_at IS NOT NULL AND used_at IS NULL",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn create_plex_claim(&self, claim: &PlexClaimRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO plex_claims (code_digest, digest_key_id, user_id, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&claim.code_digest)
                    .bind(&claim.digest_key_id)
                    .bind(&claim.user_id)
                    .bind(claim.created_at)
                    .bind(claim.expires_at)
                    .execute(&self.writer)
                    .await
                    .map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn take_plex_claim(&self, digest: &[u8], now: i64) -> Result<Option<String>, StoreError> {
                    let taken: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "UPDATE plex_claims SET used_at = $1 \
                         WHERE code_digest = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                    )
                    .bind(now)
                    .bind(digest)
                    .fetch_optional(&self.writer)
                    .await?;
                    Ok(taken.map(|(user_id,)| user_id))
                }

                async fn plex_webhooks(&self, user_id: &str) -> Result<Option<String>, StoreError> {
                    let urls: Option<(String,)> =
                        sqlx::query_as::<$db, (String,)>("SELECT urls FROM plex_webhooks WHERE user_id = $1")
                            .bind(user_id)
                            .fetch_optional(&self.reader)
                            .await?;
                    Ok(urls.map(|(urls,)| urls))
                }

                async fn set_plex_webhooks(&self, user_id: &str, urls: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO plex_webhooks (user_id, urls, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET urls = excluded.urls, updated_at = excluded.updated_at",
                    )
                    .bind(user_id)
                    .bind(urls)
                    .bind(at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use impl_plex_store;
