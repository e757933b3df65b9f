//! Accounts: who they are, how they sign in with a password, and the single-use links mailed to them.

use async_trait::async_trait;

use super::{AuditSealer, NewAuditEvent, NewRule, StoreError};

/// A new account, with its email already sealed and indexed and its password already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub username_key: String,
    pub email_sealed: Vec<u8>,
    pub email_key_id: String,
    pub email_index: Vec<u8>,
    pub email_index_key_id: String,
    pub password_hash: String,
    pub password_pepper_id: String,
    pub created_at: i64,
    /// Set when the address is already proven (an upstream provider vouched for it).
    pub email_verified_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub email_sealed: Vec<u8>,
    pub email_key_id: String,
    pub password_hash: String,
    pub password_pepper_id: String,
    pub created_at: i64,
    pub email_verified_at: Option<i64>,
    pub must_reset_password: i64,
    /// `user` or `admin`.
    pub role: String,
    /// A new address waiting for its confirmation link, sealed like `email_sealed`.
    pub pending_email_sealed: Option<Vec<u8>>,
    pub pending_email_key_id: Option<String>,
    /// When an operator disabled the account (no new session starts while set).
    pub disabled_at: Option<i64>,
    /// When the account is erased, if its owner asked for that (a sign-in before cancels it).
    pub deletion_due_at: Option<i64>,
}

/// An invitation to sign up; its code only as a keyed digest.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InviteRecord {
    pub id: String,
    pub code_digest: Vec<u8>,
    pub digest_key_id: String,
    /// The address it is for, sealed, and its blind index; `None` for anyone.
    pub email_sealed: Option<Vec<u8>>,
    pub email_key_id: Option<String>,
    pub email_index: Option<Vec<u8>>,
    pub uses: i64,
    pub uses_left: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub created_by: String,
}

/// A confirmed change of address: the new sealed address and its blind index replace the old.
#[derive(Debug, Clone)]
pub struct EmailChange {
    pub user_id: String,
    pub email_sealed: Vec<u8>,
    pub email_key_id: String,
    pub email_index: Vec<u8>,
    pub email_index_key_id: String,
    pub at: i64,
}

/// An account's address proven for the first time (see `Store::secure_first_proof`).
#[derive(Debug, Clone)]
pub struct FirstProof {
    pub user_id: String,
    pub at: i64,
    pub remove_identities: bool,
    pub sign_out: NewRule,
    pub event: NewAuditEvent,
}

/// What the first proof of an address took away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemovedOnFirstProof {
    pub authenticator_apps: u64,
    pub passkeys: u64,
    pub device_keys: u64,
    pub linked_providers: u64,
    /// Sessions that were alive and are now signed out.
    pub sessions: u64,
}

impl RemovedOnFirstProof {
    /// How many ways in were removed, not counting signed-out sessions.
    pub fn credentials(&self) -> u64 {
        self.authenticator_apps + self.passkeys + self.device_keys + self.linked_providers
    }
}

/// A single-use link's token, as stored: its keyed digest.
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub purpose: &'static str,
    pub user_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// A new password and everything that goes with it, written in one transaction.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    pub user_id: String,
    pub hash: String,
    pub pepper_id: String,
    pub at: i64,
    /// "Sign out connected devices": the rule that kills the account's older tokens.
    pub sign_out: Option<NewRule>,
    pub event: NewAuditEvent,
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn create_user(&self, user: &NewUser) -> Result<(), StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_username_key(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_email_index(&self, index: &[u8]) -> Result<Option<UserRecord>, StoreError>;
    async fn count_users(&self) -> Result<i64, StoreError>;
    /// Every account with this role (`admin` for alert mail).
    async fn users_with_role(&self, role: &str) -> Result<Vec<UserRecord>, StoreError>;
    /// Accounts in creation order, for administrators.
    async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<UserRecord>, StoreError>;
    /// Replaces a password hash, but only if it is still `expected` (an upgrade must not undo a change).
    async fn replace_password_hash(
        &self,
        user_id: &str,
        expected: &str,
        hash: &str,
        pepper_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Stores a single-use token; with `supersede`, unused tokens of the same purpose for the same
    /// account die in the same transaction (a new reset link invalidates older ones).
    async fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> Result<(), StoreError>;
    /// The account a single-use token belongs to, if it is unused, unexpired and of this purpose.
    async fn one_time_token_owner(&self, digest: &[u8], purpose: &str, now: i64) -> Result<Option<String>, StoreError>;
    /// Spends a single-use token if it exists, is unused, unexpired and of this purpose; returns its account.
    async fn consume_one_time_token(
        &self,
        digest: &[u8],
        purpose: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
    async fn mark_email_verified(&self, user_id: &str, at: i64) -> Result<(), StoreError>;
    /// The first proof of an account's address (a verification or reset link): marks it verified
    /// and, in the same transaction, removes what anyone could have added before it was proven
    /// (second factors, recovery codes, device keys, and with `remove_identities` linked
    /// providers), signs out every session by `sign_out` and records `event` with what was
    /// removed in its details. `None`, and nothing done, when the address was proven before.
    async fn secure_first_proof(
        &self,
        proof: &FirstProof,
        sealer: &dyn AuditSealer,
    ) -> Result<Option<RemovedOnFirstProof>, StoreError>;
    /// Keeps a new address until its confirmation link is used (replacing any earlier one).
    async fn set_pending_email(&self, user_id: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError>;
    /// Makes the pending address the account's, verified; `Conflict(Email)` if another account took it.
    async fn change_email(&self, change: &EmailChange) -> Result<(), StoreError>;
    /// Sets an account's role; false if there is no such account.
    async fn set_role(&self, user_id: &str, role: &str) -> Result<bool, StoreError>;
    async fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError>;
    /// Every invitation, newest first.
    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError>;
    /// Spends one use of the live invitation with this code digest, atomically.
    async fn take_invite(&self, digest: &[u8], now: i64) -> Result<Option<InviteRecord>, StoreError>;
    /// Gives back a use taken for a sign-up that did not happen.
    async fn return_invite(&self, id: &str) -> Result<(), StoreError>;
    /// False if there is no such invitation or it was revoked already.
    async fn revoke_invite(&self, id: &str, at: i64) -> Result<bool, StoreError>;
    /// Sets when the account is erased (`None` cancels); false when nothing changed.
    async fn schedule_deletion(&self, user_id: &str, due: Option<i64>) -> Result<bool, StoreError>;
    /// Accounts whose erasure is due at `now`, oldest first.
    async fn deletions_due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError>;
    /// Ends every open session of the account and queues a back-channel logout notice for each
    /// one an OAuth client holds; how many sessions ended.
    async fn end_sessions_and_tell(&self, user_id: &str, at: i64) -> Result<u64, StoreError>;
    /// Erases the account and everything that names it but the audit log (see `ERASE_ACCOUNT`),
    /// recording `event` in the same transaction; false if there was no such account.
    async fn erase_user(
        &self,
        user_id: &str,
        event: &NewAuditEvent,
        sealer: &dyn AuditSealer,
    ) -> Result<bool, StoreError>;
    /// Disables the account at `at`, or enables it (`None`); false if it already was so.
    async fn set_disabled(&self, user_id: &str, at: Option<i64>) -> Result<bool, StoreError>;
    /// Sets a new password, kills unused reset links, stores the sign-out rule and the audit event.
    async fn change_password(&self, change: &PasswordChange, sealer: &dyn AuditSealer) -> Result<(), StoreError>;
    /// Flags an account so its next password sign-in is refused until it chooses a new password.
    async fn require_password_reset(
        &self,
        user_id: &str,
        event: &NewAuditEvent,
        sealer: &dyn AuditSealer,
    ) -> Result<(), StoreError>;
}

/// Implements `AccountStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_account_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::AccountStore for $store {
                async fn create_user(&self, user: &NewUser) -> Result<(), StoreError> {
                    insert_user!($db, &self.writer, user).map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn user_by_username_key(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE username_key = $1"))
                        .bind(username_key)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn user_by_email_index(&self, index: &[u8]) -> Result<Option<UserRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE email_index = $1"))
                        .bind(index)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn count_users(&self) -> Result<i64, StoreError> {
                    let (n,): (i64,) =
                        sqlx::query_as::<$db, (i64,)>("SELECT COUNT(*) FROM users").fetch_one(&self.reader).await?;
                    Ok(n)
                }

                async fn users_with_role(&self, role: &str) -> Result<Vec<UserRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE role = $1 ORDER BY created_at, id"))
                        .bind(role)
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<UserRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " ORDER BY created_at, id LIMIT $1 OFFSET $2"))
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn replace_password_hash(
                    &self,
                    user_id: &str,
                    expected: &str,
                    hash: &str,
                    pepper_id: &str,
                    now: i64,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE users SET password_hash = $1, password_pepper_id = $2, updated_at = $3 \
                         WHERE id = $4 AND password_hash = $5",
                    )
                    .bind(hash)
                    .bind(pepper_id)
                    .bind(now)
                    .bind(user_id)
                    .bind(expected)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    if supersede {
                        sqlx::query::<$db>(
                            "UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
                        )
                        .bind(token.issued_at)
                        .bind(&token.user_id)
                        .bind(token.purpose)
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query::<$db>(
                        "INSERT INTO one_time_tokens (digest, digest_key_id, purpose, user_id, issued_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&token.digest)
                    .bind(&token.digest_key_id)
                    .bind(token.purpose)
                    .bind(&token.user_id)
                    .bind(token.issued_at)
                    .bind(token.expires_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn one_time_token_owner(&self, digest: &[u8], purpose: &str, now: i64) -> Result<Option<String>, StoreError> {
                    let owner: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "SELECT user_id FROM one_time_tokens \
                         WHERE digest = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
                    )
                    .bind(digest)
                    .bind(purpose)
                    .bind(now)
                    .fetch_optional(&self.reader)
                    .await?;
                    Ok(owner.map(|(user_id,)| user_id))
                }

                async fn consume_one_time_token(&self, digest: &[u8], purpose: &str, now: i64) -> Result<Option<String>, StoreError> {
                    let spent: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "UPDATE one_time_tokens SET used_at = $1 \
                         WHERE digest = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                    )
                    .bind(now)
                    .bind(digest)
                    .bind(purpose)
                    .fetch_optional(&self.writer)
                    .await?;
                    Ok(spent.map(|(user_id,)| user_id))
                }

                async fn mark_email_verified(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL")
                        .bind(at)
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn secure_first_proof(
                    &self,
                    proof: &FirstProof,
                    sealer: &dyn AuditSealer,
                ) -> Result<Option<RemovedOnFirstProof>, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let first = sqlx::query::<$db>(
                        "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
                    )
                    .bind(proof.at)
                    .bind(&proof.user_id)
                    .execute(&mut *tx)
                    .await?;
                    if first.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let (sessions,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                        "SELECT COUNT(*) FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL \
                         AND s.id <> COALESCE($2, '') AND EXISTS (SELECT 1 FROM tokens t WHERE t.session_id = s.id \
                         AND t.expires_at > $3)",
                    )
                    .bind(&proof.user_id)
                    .bind(&proof.sign_out.except_session)
                    .bind(proof.at)
                    .fetch_one(&mut *tx)
                    .await?;
                    let mut removed = RemovedOnFirstProof {
                        sessions: u64::try_from(sessions).unwrap_or_default(),
                        ..Default::default()
                    };
                    let mut tables: Vec<(&str, Option<&mut u64>)> = vec![
                        ("totp_factors", Some(&mut removed.authenticator_apps)),
                        ("passkeys", Some(&mut removed.passkeys)),
                        ("device_keys", Some(&mut removed.device_keys)),
                        ("recovery_codes", None),
                    ];
                    if proof.remove_identities {
                        tables.push(("sso_identities", Some(&mut removed.linked_providers)));
                    }
                    for (table, count) in tables {
                        let sql = format!("DELETE FROM {table} WHERE user_id = $1");
                        let gone = sqlx::query::<$db>(&sql).bind(&proof.user_id).execute(&mut *tx).await?.rows_affected();
                        if let Some(count) = count {
                            *count = gone;
                        }
                    }
                    insert_rule!($db, &mut *tx, &proof.sign_out);
                    let mut event = proof.event.clone();
                    event.details = serde_json::json!({ "removed": removed }).to_string();
                    append_audit!($db, &mut *tx, &event, sealer);
                    tx.commit().await?;
                    Ok(Some(removed))
                }

                async fn set_pending_email(&self, user_id: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE users SET pending_email_sealed = $1, pending_email_key_id = $2 WHERE id = $3")
                        .bind(sealed)
                        .bind(key_id)
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn change_email(&self, change: &EmailChange) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "UPDATE users SET email_sealed = $1, email_key_id = $2, email_index = $3, email_index_key_id = $4, \
                         email_verified_at = $5, updated_at = $5, pending_email_sealed = NULL, pending_email_key_id = NULL \
                         WHERE id = $6",
                    )
                    .bind(&change.email_sealed)
                    .bind(&change.email_key_id)
                    .bind(&change.email_index)
                    .bind(&change.email_index_key_id)
                    .bind(change.at)
                    .bind(&change.user_id)
                    .execute(&self.writer)
                    .await
                    .map_err($crate::store::conflict_or_database)?;
                    Ok(())
                }

                async fn set_role(&self, user_id: &str, role: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("UPDATE users SET role = $1 WHERE id = $2")
                        .bind(role)
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO invites (id, code_digest, digest_key_id, email_sealed, email_key_id, email_index, \
                         uses, uses_left, created_at, expires_at, created_by) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(&invite.id)
                    .bind(&invite.code_digest)
                    .bind(&invite.digest_key_id)
                    .bind(&invite.email_sealed)
                    .bind(&invite.email_key_id)
                    .bind(&invite.email_index)
                    .bind(invite.uses)
                    .bind(invite.uses_left)
                    .bind(invite.created_at)
                    .bind(invite.expires_at)
                    .bind(&invite.created_by)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, InviteRecord>(concat!(invite_select!(), " ORDER BY created_at DESC, id"))
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn take_invite(&self, digest: &[u8], now: i64) -> Result<Option<InviteRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, InviteRecord>(
                        "UPDATE invites SET uses_left = uses_left - 1 \
                         WHERE code_digest = $1 AND uses_left > 0 AND revoked_at IS NULL AND expires_at > $2 \
                         RETURNING id, code_digest, digest_key_id, email_sealed, email_key_id, email_index, uses, \
                         uses_left, created_at, expires_at, revoked_at, created_by",
                    )
                    .bind(digest)
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await?)
                }

                async fn return_invite(&self, id: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE invites SET uses_left = uses_left + 1 WHERE id = $1 AND uses_left < uses")
                        .bind(id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn revoke_invite(&self, id: &str, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("UPDATE invites SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(at)
                        .bind(id)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn schedule_deletion(&self, user_id: &str, due: Option<i64>) -> Result<bool, StoreError> {
                    let sql = if due.is_some() {
                        "UPDATE users SET deletion_due_at = $1 WHERE id = $2 AND deletion_due_at IS NULL"
                    } else {
                        "UPDATE users SET deletion_due_at = $1 WHERE id = $2 AND deletion_due_at IS NOT NULL"
                    };
                    let done = sqlx::query::<$db>(sql).bind(due).bind(user_id).execute(&self.writer).await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn deletions_due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
                    let due: Vec<(String,)> = sqlx::query_as::<$db, (String,)>(
                        "SELECT id FROM users WHERE deletion_due_at IS NOT NULL AND deletion_due_at <= $1 \
                         ORDER BY deletion_due_at LIMIT $2",
                    )
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?;
                    Ok(due.into_iter().map(|(id,)| id).collect())
                }

                async fn end_sessions_and_tell(&self, user_id: &str, at: i64) -> Result<u64, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    sqlx::query::<$db>(
                        "INSERT INTO backchannel_logouts (session_id, client_id, user_id, created_at, next_attempt_at) \
                         SELECT s.id, s.client_id, s.user_id, $1, $1 FROM sessions s JOIN oauth_clients c ON c.id = s.client_id \
                         WHERE s.user_id = $2 AND s.revoked_at IS NULL AND c.backchannel_logout_uri IS NOT NULL \
                         ON CONFLICT (session_id) DO NOTHING",
                    )
                    .bind(at)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                    let ended = sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                        .bind(at)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    tx.commit().await?;
                    Ok(ended)
                }

                async fn erase_user(&self, user_id: &str, event: &NewAuditEvent, sealer: &dyn AuditSealer) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    // Relying parties that know the account (a consent or a session) and asked for
                    // Security Event Tokens hear of the erasure, through the logout queue.
                    sqlx::query::<$db>(
                        "INSERT INTO backchannel_logouts (session_id, client_id, user_id, created_at, next_attempt_at, event) \
                         SELECT 'purged:' || c.id || ':' || $1, c.id, $1, $2, $2, 'account_purged' FROM oauth_clients c \
                         WHERE c.security_event_uri IS NOT NULL \
                         AND (EXISTS (SELECT 1 FROM oauth_consents k WHERE k.client_id = c.id AND k.user_id = $1) \
                              OR EXISTS (SELECT 1 FROM sessions s WHERE s.client_id = c.id AND s.user_id = $1)) \
                         ON CONFLICT (session_id) DO NOTHING",
                    )
                    .bind(user_id)
                    .bind(event.at)
                    .execute(&mut *tx)
                    .await?;
                    let mut erased = false;
                    for statement in super::sql::ERASE_ACCOUNT {
                        let done = sqlx::query::<$db>(statement).bind(user_id).execute(&mut *tx).await?;
                        erased = done.rows_affected() == 1 && statement.starts_with("DELETE FROM users");
                    }
                    if !erased {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    append_audit!($db, &mut *tx, event, sealer);
                    tx.commit().await?;
                    Ok(true)
                }

                async fn set_disabled(&self, user_id: &str, at: Option<i64>) -> Result<bool, StoreError> {
                    let sql = if at.is_some() {
                        "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL"
                    } else {
                        "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NOT NULL"
                    };
                    let done = sqlx::query::<$db>(sql).bind(at).bind(user_id).execute(&self.writer).await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn change_password(&self, change: &PasswordChange, sealer: &dyn AuditSealer) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    sqlx::query::<$db>(
                        "UPDATE users SET password_hash = $1, password_pepper_id = $2, updated_at = $3, \
                         must_reset_password = 0 WHERE id = $4",
                    )
                    .bind(&change.hash)
                    .bind(&change.pepper_id)
                    .bind(change.at)
                    .bind(&change.user_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query::<$db>(
                        "UPDATE one_time_tokens SET used_at = $1 \
                         WHERE user_id = $2 AND purpose = 'password_reset' AND used_at IS NULL",
                    )
                    .bind(change.at)
                    .bind(&change.user_id)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(rule) = &change.sign_out {
                        insert_rule!($db, &mut *tx, rule);
                    }
                    append_audit!($db, &mut *tx, &change.event, sealer);
                    tx.commit().await?;
                    Ok(())
                }

                async fn require_password_reset(
                    &self,
                    user_id: &str,
                    event: &NewAuditEvent,
                    sealer: &dyn AuditSealer,
                ) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    sqlx::query::<$db>("UPDATE users SET must_reset_password = 1 WHERE id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    append_audit!($db, &mut *tx, event, sealer);
                    tx.commit().await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use impl_account_store;
