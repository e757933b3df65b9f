//! The OpenID Connect provider: clients, consents, authorization and device codes, and the back-channel logouts owed to clients.

use async_trait::async_trait;

use super::{SessionStart, StoreError};

/// An OAuth client as stored: its secret only as a keyed digest.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub secret_digest: Option<Vec<u8>>,
    pub secret_key_id: Option<String>,
    /// A JSON array of exact redirect URIs.
    pub redirect_uris: String,
    pub backchannel_logout_uri: Option<String>,
    /// Where Security Event Tokens about its accounts are pushed (RFC 8935), if anywhere.
    pub security_event_uri: Option<String>,
    pub first_party: i64,
    pub created_at: i64,
    pub secret_rotated_at: Option<i64>,
    /// `ES256` or `EdDSA`: how this client's ID tokens are signed.
    pub id_token_alg: String,
    /// The public keys (a JWKS, as JSON) of a client that authenticates with `private_key_jwt`.
    pub jwks: Option<String>,
}

/// What an OAuth session was granted: by whom, what, and when the user authenticated.
#[derive(Debug, Clone)]
pub struct OAuthGrant {
    pub client_id: String,
    pub scope: String,
    /// When the user last authenticated before approving (Unix ms): the ID token's `auth_time`.
    pub auth_time: i64,
}

/// An authorization code as stored: its keyed digest and the request the user approved, as JSON.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OAuthCodeRecord {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub client_id: String,
    pub user_id: String,
    pub grant_json: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The session the code's exchange started.
    pub session_id: Option<String>,
}

/// A device authorization (RFC 8628): its device code and user code as keyed digests.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceCodeRecord {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub user_code_digest: Vec<u8>,
    pub client_id: String,
    pub scope: String,
    pub device_name: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    /// `pending`, `approved`, `denied` or `used`.
    pub status: String,
    pub user_id: Option<String>,
    pub auth_time: Option<i64>,
    pub session_id: Option<String>,
}

/// An ended OAuth session whose client is to be told (OpenID Connect Back-Channel Logout).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogoutJob {
    pub session_id: String,
    pub client_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub attempts: i64,
    /// `logout` (a session ended) or `account_purged` (the account was erased).
    pub event: String,
}

#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    /// Spends an authorization code and starts the session it grants, in one transaction; `None`
    /// (and nothing written) if the code was spent first.
    async fn redeem_oauth_code(
        &self,
        digest: &[u8],
        at: i64,
        start: &SessionStart,
    ) -> Result<Option<String>, StoreError>;
    async fn create_oauth_code(&self, code: &OAuthCodeRecord) -> Result<(), StoreError>;
    async fn oauth_code(&self, digest: &[u8]) -> Result<Option<OAuthCodeRecord>, StoreError>;
    async fn create_device_code(&self, code: &DeviceCodeRecord) -> Result<(), StoreError>;
    async fn device_code(&self, digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError>;
    async fn device_code_by_user_code(&self, user_code_digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError>;
    /// Approves (with the person and when they authenticated) or denies a pending, unexpired
    /// authorization; false if it was no longer pending.
    async fn decide_device_code(
        &self,
        digest: &[u8],
        approval: Option<(&str, i64)>,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Records a poll and the interval the device must keep from now on.
    async fn device_code_polled(&self, digest: &[u8], at: i64, interval_secs: i64) -> Result<(), StoreError>;
    /// Marks an approved authorization used and starts its session, in one transaction; `None`
    /// (and nothing written) if it was not approved or already used.
    async fn redeem_device_code(&self, digest: &[u8], start: &SessionStart) -> Result<Option<String>, StoreError>;
    /// Every client the user allowed: `(client_id, scope, granted_at)`, newest first.
    async fn consents_of(&self, user_id: &str) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Forgets what the user allowed a client; false if nothing was allowed.
    async fn remove_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError>;
    /// The scope a user already allowed a client, if any.
    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError>;
    async fn save_consent(&self, user_id: &str, client_id: &str, scope: &str, at: i64) -> Result<(), StoreError>;
    /// Claims up to `limit` back-channel logouts due at `now` for this node until `lock_until`.
    async fn claim_due_logouts(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<LogoutJob>, StoreError>;
    /// Marks a notice done (delivered or given up); it is kept a while so it is not queued again.
    async fn logout_delivered(&self, session_id: &str, at: i64) -> Result<(), StoreError>;
    async fn logout_failed(&self, session_id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError>;
    /// Ends a session on its own, not by a rule (a replayed refresh token or authorization code, an
    /// app's access removed) and, if its OAuth client wants to hear of it, queues the back-channel
    /// logout in the same transaction.
    async fn end_session_and_tell(&self, session_id: &str, at: i64) -> Result<(), StoreError>;
    /// Registers an OAuth client; `Conflict` if its id is taken.
    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// Accepts a client assertion's `jti` once (until it expires); false if it was seen before.
    async fn use_client_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Registers a client, or replaces an existing one's settings and secret (configured clients).
    async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// False if there is no such client.
    async fn remove_client(&self, id: &str) -> Result<bool, StoreError>;
    /// Replaces a confidential client's secret digest; false if there is no such client.
    async fn set_client_secret(&self, id: &str, digest: &[u8], key_id: &str, at: i64) -> Result<bool, StoreError>;
}

/// Implements `OAuthStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_oauth_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::OAuthStore for $store {
                async fn redeem_oauth_code(
                    &self,
                    digest: &[u8],
                    at: i64,
                    start: &SessionStart,
                ) -> Result<Option<String>, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let spent = sqlx::query::<$db>(
                        "UPDATE oauth_codes SET used_at = $1, session_id = $2 WHERE digest = $3 AND used_at IS NULL",
                    )
                    .bind(at)
                    .bind(&start.session_id)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
                    if spent.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let device_id = insert_session_start!($db, &mut tx, start);
                    tx.commit().await?;
                    Ok(Some(device_id))
                }

                async fn create_oauth_code(&self, code: &OAuthCodeRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO oauth_codes (digest, digest_key_id, client_id, user_id, grant_json, created_at, \
                         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&code.digest)
                    .bind(&code.digest_key_id)
                    .bind(&code.client_id)
                    .bind(&code.user_id)
                    .bind(&code.grant_json)
                    .bind(code.created_at)
                    .bind(code.expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn oauth_code(&self, digest: &[u8]) -> Result<Option<OAuthCodeRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, OAuthCodeRecord>(
                        "SELECT digest, digest_key_id, client_id, user_id, grant_json, created_at, expires_at, used_at, \
                         session_id FROM oauth_codes WHERE digest = $1",
                    )
                    .bind(digest)
                    .fetch_optional(&self.writer)
                    .await?)
                }

                async fn create_device_code(&self, code: &DeviceCodeRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO oauth_device_codes (digest, digest_key_id, user_code_digest, client_id, scope, \
                         device_name, created_at, expires_at, interval_secs, status) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')",
                    )
                    .bind(&code.digest)
                    .bind(&code.digest_key_id)
                    .bind(&code.user_code_digest)
                    .bind(&code.client_id)
                    .bind(&code.scope)
                    .bind(&code.device_name)
                    .bind(code.created_at)
                    .bind(code.expires_at)
                    .bind(code.interval_secs)
                    .execute(&self.writer)
                    .await
                    .map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn device_code(&self, digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, DeviceCodeRecord>(concat!(device_code_select!(), " WHERE digest = $1"))
                        .bind(digest)
                        .fetch_optional(&self.writer)
                        .await?)
                }

                async fn device_code_by_user_code(&self, user_code_digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, DeviceCodeRecord>(concat!(device_code_select!(), " WHERE user_code_digest = $1"))
                        .bind(user_code_digest)
                        .fetch_optional(&self.writer)
                        .await?)
                }

                async fn decide_device_code(
                    &self,
                    digest: &[u8],
                    approval: Option<(&str, i64)>,
                    at: i64,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE oauth_device_codes SET status = $1, user_id = $2, auth_time = $3 \
                         WHERE digest = $4 AND status = 'pending' AND expires_at > $5",
                    )
                    .bind(if approval.is_some() { "approved" } else { "denied" })
                    .bind(approval.map(|(user_id, _)| user_id))
                    .bind(approval.map(|(_, auth_time)| auth_time))
                    .bind(digest)
                    .bind(at)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn device_code_polled(&self, digest: &[u8], at: i64, interval_secs: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE oauth_device_codes SET last_polled_at = $1, interval_secs = $2 WHERE digest = $3")
                        .bind(at)
                        .bind(interval_secs)
                        .bind(digest)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn redeem_device_code(&self, digest: &[u8], start: &SessionStart) -> Result<Option<String>, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let spent = sqlx::query::<$db>(
                        "UPDATE oauth_device_codes SET status = 'used', session_id = $1 WHERE digest = $2 AND status = 'approved'",
                    )
                    .bind(&start.session_id)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
                    if spent.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let device_id = insert_session_start!($db, &mut tx, start);
                    tx.commit().await?;
                    Ok(Some(device_id))
                }

                async fn consents_of(&self, user_id: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
                    Ok(sqlx::query_as::<$db, (String, String, i64)>(
                        "SELECT client_id, scope, granted_at FROM oauth_consents WHERE user_id = $1 ORDER BY granted_at DESC",
                    )
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn remove_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                        .bind(user_id)
                        .bind(client_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError> {
                    let row: Option<(String,)> =
                        sqlx::query_as::<$db, (String,)>("SELECT scope FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                            .bind(user_id)
                            .bind(client_id)
                            .fetch_optional(&self.reader)
                            .await?;
                    Ok(row.map(|(scope,)| scope))
                }

                async fn save_consent(&self, user_id: &str, client_id: &str, scope: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO oauth_consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                    )
                    .bind(user_id)
                    .bind(client_id)
                    .bind(scope)
                    .bind(at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn claim_due_logouts(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<LogoutJob>, StoreError> {
                    Ok(sqlx::query_as::<$db, LogoutJob>(
                        "UPDATE backchannel_logouts SET locked_until = $1 \
                         WHERE session_id IN (SELECT session_id FROM backchannel_logouts WHERE delivered_at IS NULL \
                                      AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
                                      ORDER BY next_attempt_at LIMIT $3) \
                         AND (locked_until IS NULL OR locked_until < $2) \
                         RETURNING session_id, client_id, user_id, created_at, attempts, event",
                    )
                    .bind(lock_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.writer)
                    .await?)
                }

                async fn logout_delivered(&self, session_id: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE backchannel_logouts SET delivered_at = $1, locked_until = NULL WHERE session_id = $2")
                        .bind(at)
                        .bind(session_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn logout_failed(&self, session_id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "UPDATE backchannel_logouts SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                         locked_until = NULL WHERE session_id = $3",
                    )
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(session_id)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn end_session_and_tell(&self, session_id: &str, at: i64) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(at)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query::<$db>(
                        "INSERT INTO backchannel_logouts (session_id, client_id, user_id, created_at, next_attempt_at) \
                         SELECT s.id, s.client_id, s.user_id, $1, $1 FROM sessions s JOIN oauth_clients c ON c.id = s.client_id \
                         WHERE s.id = $2 AND c.backchannel_logout_uri IS NOT NULL ON CONFLICT (session_id) DO NOTHING",
                    )
                    .bind(at)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
                    insert_client!($db, &self.writer, client, "").map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn use_client_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (client_id, jti) DO NOTHING",
                    )
                    .bind(client_id)
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
                    insert_client!(
                        $db,
                        &self.writer,
                        client,
                        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
                         secret_digest = excluded.secret_digest, secret_key_id = excluded.secret_key_id, \
                         redirect_uris = excluded.redirect_uris, backchannel_logout_uri = excluded.backchannel_logout_uri, \
                         security_event_uri = excluded.security_event_uri, \
                         first_party = excluded.first_party, id_token_alg = excluded.id_token_alg"
                    )?;
                    Ok(())
                }

                async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, ClientRecord>(concat!(client_select!(), " WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, ClientRecord>(concat!(client_select!(), " ORDER BY id"))
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM oauth_clients WHERE id = $1").bind(id).execute(&self.writer).await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn set_client_secret(&self, id: &str, digest: &[u8], key_id: &str, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE oauth_clients SET secret_digest = $1, secret_key_id = $2, secret_rotated_at = $3 \
                         WHERE id = $4 AND kind = 'confidential'",
                    )
                    .bind(digest)
                    .bind(key_id)
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }
            }
        };
    };
}

pub(super) use impl_oauth_store;
