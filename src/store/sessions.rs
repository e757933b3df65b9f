//! Sessions, their devices and tokens, and the revocation rules and invalidations that end them.

use async_trait::async_trait;

use super::{AuditSealer, NewAuditEvent, OAuthGrant, StoreError};

/// The client instance a sign-in comes from, as the client describes itself.
#[derive(Debug, Clone)]
pub struct DeviceSighting {
    pub user_id: String,
    pub client_identifier: String,
    pub product: String,
    pub platform: String,
    pub name: String,
    pub address: Option<String>,
    pub seen_at: i64,
}

/// A token as stored: its keyed digest, never the token itself.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub kind: &'static str,
    pub session_id: String,
    pub user_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Everything one sign-in writes, in one transaction: the device, the session and its first tokens.
#[derive(Debug, Clone)]
pub struct SessionStart {
    pub session_id: String,
    pub new_device_id: String,
    pub device: DeviceSighting,
    pub channel: String,
    /// Thumbprint of the DPoP key every token of the session is bound to.
    pub dpop_jkt: Option<String>,
    /// The session may only enrol a second factor until the account has one (`mfa.require`).
    pub enrolment_only: bool,
    /// What the sign-in proved, for fresh authentication.
    pub verified: Verified,
    /// Set when an OAuth client receives the session's tokens.
    pub grant: Option<OAuthGrant>,
    pub tokens: Vec<NewToken>,
}

/// What a session last proved of its person, and when (Unix ms; 0 for never): sensitive actions
/// need a recent proof, and on an account with a second factor, one that included it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    pub at: i64,
    pub second_factor: bool,
}

/// A session that replaces one killed by a recoverable revocation, on the same device and key.
#[derive(Debug, Clone)]
pub struct SessionRecovery {
    pub old_session_id: String,
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub channel: String,
    pub dpop_jkt: String,
    pub at: i64,
    /// Carried over from the old session: a recovery does not lift the enrolment restriction.
    pub enrolment_only: bool,
    pub tokens: Vec<NewToken>,
}

/// A stored token joined with the state of its session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRecord {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub kind: String,
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub channel: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub session_revoked_at: Option<i64>,
    pub dpop_jkt: Option<String>,
    /// When the session last proved its person (Unix ms), and whether with a second factor.
    pub verified_at: i64,
    pub verified_second_factor: i64,
    /// 1 while the session may only enrol a second factor.
    pub enrolment_only: i64,
    /// The OAuth client the session's tokens were issued to, with the granted scope.
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub auth_time: Option<i64>,
    /// When the session began: revocation rules judge every token of a session by it.
    pub session_started_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: String,
    pub client_identifier: String,
    pub product: String,
    pub platform: String,
    pub name: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    pub last_address: Option<String>,
    pub signed_out_at: Option<i64>,
    /// What a plex.tv-style device provides (`server`, `player`, …), comma-separated.
    pub provides: String,
    /// The addresses a media server published, as a JSON array of URIs.
    pub connections: String,
}

/// A session that has not been ended individually (revocation rules may still cover it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub channel: String,
    pub created_at: i64,
    /// When the session last received tokens (sign-in or refresh).
    pub last_used_at: i64,
}

/// A revocation rule as written; see `domain::revocation`.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub scope_kind: String,
    pub scope_value: String,
    pub except_session: Option<String>,
    pub not_before: i64,
    pub recoverable: bool,
    pub reason: String,
    pub actor: String,
    pub created_at: i64,
}

/// One entry of the invalidation log: a session (`kind = "session"`) or an account (`"user"`) that
/// caches may no longer believe, written by database triggers.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InvalidationRecord {
    pub seq: i64,
    pub kind: String,
    pub id: String,
    pub at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRecord {
    pub seq: i64,
    pub scope_kind: String,
    pub scope_value: String,
    pub except_session: Option<String>,
    pub not_before: i64,
    pub recoverable: i64,
    pub reason: String,
    pub actor: String,
    pub created_at: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records the device (new or seen before), the session and its tokens; returns the device id.
    async fn start_session(&self, start: &SessionStart) -> Result<String, StoreError>;
    /// Ends the old session and starts its replacement, once: false if the old one was already ended.
    async fn recover_session(&self, recovery: &SessionRecovery) -> Result<bool, StoreError>;
    async fn token_by_digest(&self, digest: &[u8]) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a refresh token rotated and stores its successors, only if nobody rotated it first.
    async fn rotate_refresh_token(&self, digest: &[u8], now: i64, successors: &[NewToken]) -> Result<bool, StoreError>;
    async fn add_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError>;
    /// Moves a token's expiry forward to `expires_at` (never back) and marks its session used at
    /// `now`; false when the token was already extended as far.
    async fn extend_token(&self, digest: &[u8], expires_at: i64, now: i64) -> Result<bool, StoreError>;
    /// Ends a session: every token of it is dead from this instant. One row is written.
    async fn revoke_session(&self, session_id: &str, now: i64) -> Result<(), StoreError>;
    /// Lists the account's devices, signed out or not.
    async fn devices_of(&self, user_id: &str) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Lists the account's sessions that were not ended one by one.
    async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// Marks a device of this user signed out and stores the rule that kills its tokens, with its
    /// audit event, in one transaction. False if the user has no such device.
    async fn sign_out_device(
        &self,
        user_id: &str,
        device_id: &str,
        rule: &NewRule,
        event: &NewAuditEvent,
        sealer: &dyn AuditSealer,
    ) -> Result<bool, StoreError>;
    /// Stores a revocation rule and its audit event in one transaction; returns the rule's sequence number.
    async fn add_revocation_rule(
        &self,
        rule: &NewRule,
        event: &NewAuditEvent,
        sealer: &dyn AuditSealer,
    ) -> Result<i64, StoreError>;
    /// Rules with a sequence number above `seq`, in order.
    async fn revocation_rules_after(&self, seq: i64) -> Result<Vec<RuleRecord>, StoreError>;
    /// Entries of the invalidation log with a sequence number above `seq`, or written (by the
    /// database's clock) at or after `at`, in order: rows may commit out of sequence order.
    async fn invalidations_after(&self, seq: i64, at: i64) -> Result<Vec<InvalidationRecord>, StoreError>;
    /// Drops invalidation log entries written before `before`; returns how many.
    async fn purge_invalidations(&self, before: i64) -> Result<u64, StoreError>;
    /// Drops revocation rules that no longer change any answer: those another rule of the same
    /// scope covers (a later or equal cut-off, sparing nothing or the same session, no more
    /// forgiving), and those older than `settled_before` that no unexpired stored token at `now`
    /// falls under. Every node's cache stays correct without them (it holds the strongest rules).
    async fn purge_revocation_rules(&self, now: i64, settled_before: i64) -> Result<u64, StoreError>;
    /// Records that the session just proved something (a step-up).
    async fn mark_session_verified(&self, session_id: &str, verified: Verified) -> Result<(), StoreError>;
}

/// Implements `SessionStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_session_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::SessionStore for $store {
                async fn start_session(&self, start: &SessionStart) -> Result<String, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let device_id = insert_session_start!($db, &mut tx, start);
                    tx.commit().await?;
                    Ok(device_id)
                }

                async fn recover_session(&self, recovery: &SessionRecovery) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let ended = sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(recovery.at)
                        .bind(&recovery.old_session_id)
                        .execute(&mut *tx)
                        .await?;
                    if ended.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    // The replacement keeps what the old session was granted: an OAuth client's session stays one.
                    sqlx::query::<$db>(
                        "INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at, dpop_jkt, \
                         enrolment_only, client_id, scope, auth_time) \
                         SELECT $1, $2, $3, $4, $5, $5, $6, $7, client_id, scope, auth_time FROM sessions WHERE id = $8",
                    )
                    .bind(&recovery.session_id)
                    .bind(&recovery.user_id)
                    .bind(&recovery.device_id)
                    .bind(&recovery.channel)
                    .bind(recovery.at)
                    .bind(&recovery.dpop_jkt)
                    .bind(i64::from(recovery.enrolment_only))
                    .bind(&recovery.old_session_id)
                    .execute(&mut *tx)
                    .await?;
                    for token in &recovery.tokens {
                        insert_token!($db, &mut *tx, token);
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn token_by_digest(&self, digest: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, TokenRecord>(
                        "SELECT t.digest, t.digest_key_id, t.kind, t.session_id, t.user_id, s.device_id, s.channel, \
                         t.issued_at, t.expires_at, t.rotated_at, s.revoked_at AS session_revoked_at, s.dpop_jkt, \
                         s.verified_at, s.verified_second_factor, s.enrolment_only, s.client_id, s.scope, s.auth_time, \
                         s.created_at AS session_started_at \
                         FROM tokens t JOIN sessions s ON s.id = t.session_id WHERE t.digest = $1",
                    )
                    .bind(digest)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn rotate_refresh_token(
                    &self,
                    digest: &[u8],
                    now: i64,
                    successors: &[NewToken],
                ) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let marked =
                        sqlx::query::<$db>("UPDATE tokens SET rotated_at = $1 WHERE digest = $2 AND rotated_at IS NULL")
                            .bind(now)
                            .bind(digest)
                            .execute(&mut *tx)
                            .await?;
                    if marked.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    for token in successors {
                        insert_token!($db, &mut *tx, token);
                    }
                    if let Some(first) = successors.first() {
                        sqlx::query::<$db>("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                            .bind(now)
                            .bind(&first.session_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn extend_token(&self, digest: &[u8], expires_at: i64, now: i64) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let moved: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "UPDATE tokens SET expires_at = $1 WHERE digest = $2 AND expires_at < $1 RETURNING session_id",
                    )
                    .bind(expires_at)
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((session_id,)) = moved else {
                        tx.rollback().await?;
                        return Ok(false);
                    };
                    sqlx::query::<$db>("UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND last_used_at < $1")
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn add_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    for token in tokens {
                        insert_token!($db, &mut *tx, token);
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn revoke_session(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(now)
                        .bind(session_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn devices_of(&self, user_id: &str) -> Result<Vec<DeviceRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, DeviceRecord>(
                        "SELECT id, user_id, client_identifier, product, platform, name, first_seen_at, last_seen_at, \
                         last_address, signed_out_at, provides, connections FROM devices WHERE user_id = $1 \
                         ORDER BY last_seen_at DESC",
                    )
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, SessionRecord>(
                        "SELECT id, user_id, device_id, channel, created_at, last_used_at FROM sessions \
                         WHERE user_id = $1 AND revoked_at IS NULL",
                    )
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn sign_out_device(
                    &self,
                    user_id: &str,
                    device_id: &str,
                    rule: &NewRule,
                    event: &NewAuditEvent,
                    sealer: &dyn AuditSealer,
                ) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let marked = sqlx::query::<$db>("UPDATE devices SET signed_out_at = $1 WHERE id = $2 AND user_id = $3")
                        .bind(rule.created_at)
                        .bind(device_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    if marked.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    insert_rule!($db, &mut *tx, rule);
                    append_audit!($db, &mut *tx, event, sealer);
                    tx.commit().await?;
                    Ok(true)
                }

                async fn add_revocation_rule(
                    &self,
                    rule: &NewRule,
                    event: &NewAuditEvent,
                    sealer: &dyn AuditSealer,
                ) -> Result<i64, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let seq = insert_rule!($db, &mut *tx, rule);
                    append_audit!($db, &mut *tx, event, sealer);
                    tx.commit().await?;
                    Ok(seq)
                }

                async fn revocation_rules_after(&self, seq: i64) -> Result<Vec<RuleRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, RuleRecord>(
                        "SELECT seq, scope_kind, scope_value, except_session, not_before, recoverable, reason, actor, \
                         created_at FROM revocation_rules WHERE seq > $1 ORDER BY seq",
                    )
                    .bind(seq)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn invalidations_after(&self, seq: i64, at: i64) -> Result<Vec<InvalidationRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, InvalidationRecord>(
                        "SELECT seq, kind, id, at FROM cache_invalidations WHERE seq > $1 OR at >= $2 ORDER BY seq",
                    )
                    .bind(seq)
                    .bind(at)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn purge_invalidations(&self, before: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query::<$db>("DELETE FROM cache_invalidations WHERE at < $1")
                        .bind(before)
                        .execute(&self.maintenance)
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn purge_revocation_rules(&self, now: i64, settled_before: i64) -> Result<u64, StoreError> {
                    let mut tx = self.maintenance.begin().await?;
                    let superseded = sqlx::query::<$db>(
                        "DELETE FROM revocation_rules WHERE EXISTS (SELECT 1 FROM revocation_rules later \
                         WHERE later.scope_kind = revocation_rules.scope_kind \
                         AND later.scope_value = revocation_rules.scope_value \
                         AND (later.except_session IS NULL OR later.except_session = revocation_rules.except_session) \
                         AND later.recoverable <= revocation_rules.recoverable \
                         AND (later.not_before > revocation_rules.not_before \
                              OR (later.not_before = revocation_rules.not_before AND later.seq > revocation_rules.seq)))",
                    )
                    .execute(&mut *tx)
                    .await?;
                    let idle = sqlx::query::<$db>(
                        "DELETE FROM revocation_rules WHERE not_before < $1 AND NOT EXISTS (\
                         SELECT 1 FROM tokens t JOIN sessions s ON s.id = t.session_id \
                         WHERE t.expires_at > $2 AND t.issued_at <= revocation_rules.not_before AND (\
                           revocation_rules.scope_kind = 'global' \
                           OR (revocation_rules.scope_kind = 'user' AND t.user_id = revocation_rules.scope_value) \
                           OR (revocation_rules.scope_kind = 'device' AND s.device_id = revocation_rules.scope_value) \
                           OR (revocation_rules.scope_kind = 'channel' AND s.channel = revocation_rules.scope_value) \
                           OR (revocation_rules.scope_kind = 'user_channel' \
                               AND t.user_id || '/' || s.channel = revocation_rules.scope_value)))",
                    )
                    .bind(settled_before)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(superseded.rows_affected() + idle.rows_affected())
                }

                async fn mark_session_verified(&self, session_id: &str, verified: Verified) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE sessions SET verified_at = $1, verified_second_factor = $2 WHERE id = $3")
                        .bind(verified.at)
                        .bind(i64::from(verified.second_factor))
                        .bind(session_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use impl_session_store;
