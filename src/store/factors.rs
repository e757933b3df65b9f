//! Second factors: authenticator apps, recovery codes, passkeys and their ceremonies, and the challenges between a password and its second factor.

use async_trait::async_trait;

use super::StoreError;

/// An authenticator-app secret being enrolled, sealed under the data key.
#[derive(Debug, Clone)]
pub struct NewTotp {
    pub user_id: String,
    pub secret_sealed: Vec<u8>,
    pub secret_key_id: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpRecord {
    pub user_id: String,
    pub secret_sealed: Vec<u8>,
    pub secret_key_id: String,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
    pub last_used_step: i64,
}

/// A recovery code as stored: its keyed digest.
#[derive(Debug, Clone)]
pub struct RecoveryCodeDigest {
    pub digest: Vec<u8>,
    pub key_id: String,
}

/// A TOTP confirmation (with the step of its first code) or a regeneration: the new set of
/// recovery codes replaces every old one in the same transaction.
#[derive(Debug, Clone)]
pub struct FactorChange {
    pub user_id: String,
    pub at: i64,
    pub step: i64,
    pub recovery_codes: Vec<RecoveryCodeDigest>,
}

/// A registered passkey: only its public half, which signs nothing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRecord {
    pub id: String,
    pub user_id: String,
    pub credential_id: Vec<u8>,
    pub user_handle: String,
    pub name: String,
    /// webauthn-rs's credential (public key, algorithm, counter) as JSON.
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A WebAuthn challenge waiting for its answer; `state` is webauthn-rs's ceremony state as JSON.
#[derive(Debug, Clone)]
pub struct NewCeremony {
    pub id: String,
    pub user_id: Option<String>,
    pub purpose: &'static str,
    pub state: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CeremonyRecord {
    pub user_id: Option<String>,
    pub purpose: String,
    pub state: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewMfaChallenge {
    pub digest: Vec<u8>,
    pub digest_key_id: String,
    pub user_id: String,
    /// The sign-in's context, as JSON.
    pub sign_in: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MfaChallengeRecord {
    pub digest: Vec<u8>,
    pub user_id: String,
    pub sign_in: String,
    pub expires_at: i64,
    pub failures: i64,
    pub used_at: Option<i64>,
}

#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    async fn totp_of(&self, user_id: &str) -> Result<Option<TotpRecord>, StoreError>;
    /// Stores a pending TOTP secret; false if the account already has a confirmed one.
    async fn begin_totp_enrolment(&self, factor: &NewTotp) -> Result<bool, StoreError>;
    /// Activates the pending TOTP secret and sets the recovery codes; false if nothing was pending.
    async fn confirm_totp(&self, confirmation: &FactorChange) -> Result<bool, StoreError>;
    async fn replace_recovery_codes(&self, change: &FactorChange) -> Result<(), StoreError>;
    /// Accepts a TOTP step only if it is later than every step accepted before (replay protection).
    async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError>;
    /// Removes the authenticator app, and the recovery codes unless passkeys remain; false if
    /// there was no app.
    async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError>;
    /// Removes every second factor of an account (app, passkeys, recovery codes); how many went.
    async fn clear_second_factors(&self, user_id: &str) -> Result<u64, StoreError>;
    /// Lifts the enrolment restriction from every session of an account that now has a factor.
    async fn end_enrolment_restriction(&self, user_id: &str) -> Result<(), StoreError>;
    /// Spends an unused recovery code; false if there is no such unused code.
    async fn use_recovery_code(&self, user_id: &str, digest: &[u8], at: i64) -> Result<bool, StoreError>;
    async fn unused_recovery_codes(&self, user_id: &str) -> Result<i64, StoreError>;
    async fn create_mfa_challenge(&self, challenge: &NewMfaChallenge) -> Result<(), StoreError>;
    async fn mfa_challenge(&self, digest: &[u8]) -> Result<Option<MfaChallengeRecord>, StoreError>;
    /// Counts one code against the challenge before it is checked, unless `limit` codes were
    /// counted already or it was used; false then. One statement, so parallel codes cannot pass it.
    async fn reserve_mfa_attempt(&self, digest: &[u8], limit: i64) -> Result<bool, StoreError>;
    /// Spends the challenge; false if it was already used or has expired.
    async fn consume_mfa_challenge(&self, digest: &[u8], at: i64) -> Result<bool, StoreError>;
    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError>;
    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError>;
    /// Adds a passkey; if the account has no unused recovery codes, `first_codes` become its codes
    /// in the same transaction (returns true then). A credential already registered is a conflict.
    async fn add_passkey(&self, passkey: &PasskeyRecord, first_codes: &FactorChange) -> Result<bool, StoreError>;
    async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> Result<bool, StoreError>;
    /// Removes a passkey, and the recovery codes with it when no second factor is left. The last
    /// way to sign in of an account without a password or provider is never removed (false).
    async fn remove_passkey(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    /// Stores the credential's new signature counter after a sign-in with it.
    async fn passkey_used(&self, id: &str, passkey: &str, at: i64) -> Result<(), StoreError>;
    async fn create_ceremony(&self, ceremony: &NewCeremony) -> Result<(), StoreError>;
    /// Removes and returns a WebAuthn ceremony: each challenge is answered at most once.
    async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError>;
}

/// Implements `FactorStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_factor_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::FactorStore for $store {
                async fn totp_of(&self, user_id: &str) -> Result<Option<TotpRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, TotpRecord>(
                        "SELECT user_id, secret_sealed, secret_key_id, created_at, confirmed_at, last_used_step \
                         FROM totp_factors WHERE user_id = $1",
                    )
                    .bind(user_id)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn begin_totp_enrolment(&self, factor: &NewTotp) -> Result<bool, StoreError> {
                    // A pending enrolment is replaced; a confirmed factor is never overwritten.
                    let done = sqlx::query::<$db>(
                        "INSERT INTO totp_factors (user_id, secret_sealed, secret_key_id, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET \
                         secret_sealed = excluded.secret_sealed, secret_key_id = excluded.secret_key_id, \
                         created_at = excluded.created_at, last_used_step = 0 \
                         WHERE totp_factors.confirmed_at IS NULL",
                    )
                    .bind(&factor.user_id)
                    .bind(&factor.secret_sealed)
                    .bind(&factor.secret_key_id)
                    .bind(factor.created_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn confirm_totp(&self, confirmation: &FactorChange) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let done = sqlx::query::<$db>(
                        "UPDATE totp_factors SET confirmed_at = $1, last_used_step = $2 \
                         WHERE user_id = $3 AND confirmed_at IS NULL",
                    )
                    .bind(confirmation.at)
                    .bind(confirmation.step)
                    .bind(&confirmation.user_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    replace_recovery_codes!($db, &mut *tx, confirmation);
                    tx.commit().await?;
                    Ok(true)
                }

                async fn replace_recovery_codes(&self, change: &FactorChange) -> Result<(), StoreError> {
                    let mut tx = self.writer.begin().await?;
                    replace_recovery_codes!($db, &mut *tx, change);
                    tx.commit().await?;
                    Ok(())
                }

                async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
                    // Atomic across nodes: of two requests with the same code, one wins.
                    let done = sqlx::query::<$db>(
                        "UPDATE totp_factors SET last_used_step = $1 \
                         WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_used_step < $1",
                    )
                    .bind(step)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let done = sqlx::query::<$db>("DELETE FROM totp_factors WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    // Passkeys left still need the recovery codes as their fallback.
                    sqlx::query::<$db>(
                        "DELETE FROM recovery_codes WHERE user_id = $1 \
                         AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)",
                    )
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn clear_second_factors(&self, user_id: &str) -> Result<u64, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let mut removed = 0;
                    for table in ["totp_factors", "passkeys", "recovery_codes"] {
                        let sql = format!("DELETE FROM {table} WHERE user_id = $1");
                        removed += sqlx::query::<$db>(&sql).bind(user_id).execute(&mut *tx).await?.rows_affected();
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn end_enrolment_restriction(&self, user_id: &str) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE sessions SET enrolment_only = 0 WHERE user_id = $1 AND enrolment_only <> 0")
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn use_recovery_code(&self, user_id: &str, digest: &[u8], at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND digest = $3 AND used_at IS NULL",
                    )
                    .bind(at)
                    .bind(user_id)
                    .bind(digest)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn unused_recovery_codes(&self, user_id: &str) -> Result<i64, StoreError> {
                    let (n,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                    )
                    .bind(user_id)
                    .fetch_one(&self.reader)
                    .await?;
                    Ok(n)
                }

                async fn create_mfa_challenge(&self, challenge: &NewMfaChallenge) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO mfa_challenges (digest, digest_key_id, user_id, sign_in, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&challenge.digest)
                    .bind(&challenge.digest_key_id)
                    .bind(&challenge.user_id)
                    .bind(&challenge.sign_in)
                    .bind(challenge.created_at)
                    .bind(challenge.expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn mfa_challenge(&self, digest: &[u8]) -> Result<Option<MfaChallengeRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, MfaChallengeRecord>(
                        "SELECT digest, user_id, sign_in, expires_at, failures, used_at FROM mfa_challenges \
                         WHERE digest = $1",
                    )
                    .bind(digest)
                    .fetch_optional(&self.reader)
                    .await?)
                }

                async fn reserve_mfa_attempt(&self, digest: &[u8], limit: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE mfa_challenges SET failures = failures + 1 \
                         WHERE digest = $1 AND failures < $2 AND used_at IS NULL",
                    )
                    .bind(digest)
                    .bind(limit)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn consume_mfa_challenge(&self, digest: &[u8], at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE mfa_challenges SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1",
                    )
                    .bind(at)
                    .bind(digest)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, PasskeyRecord>(concat!(passkey_select!(), " WHERE user_id = $1 ORDER BY created_at, id"))
                        .bind(user_id)
                        .fetch_all(&self.reader)
                        .await?)
                }

                async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, PasskeyRecord>(concat!(passkey_select!(), " WHERE credential_id = $1"))
                        .bind(credential_id)
                        .fetch_optional(&self.reader)
                        .await?)
                }

                async fn add_passkey(&self, passkey: &PasskeyRecord, first_codes: &FactorChange) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    sqlx::query::<$db>(
                        "INSERT INTO passkeys (id, user_id, credential_id, user_handle, name, passkey, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&passkey.id)
                    .bind(&passkey.user_id)
                    .bind(&passkey.credential_id)
                    .bind(&passkey.user_handle)
                    .bind(&passkey.name)
                    .bind(&passkey.passkey)
                    .bind(passkey.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::conflict_or_database)?;
                    let (unused,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                    )
                    .bind(&passkey.user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let codes_set = unused == 0;
                    if codes_set {
                        replace_recovery_codes!($db, &mut *tx, first_codes);
                    }
                    tx.commit().await?;
                    Ok(codes_set)
                }

                async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
                        .bind(name)
                        .bind(id)
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn remove_passkey(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
                    let mut tx = self.writer.begin().await?;
                    let done = sqlx::query::<$db>(
                        "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 \
                         AND (EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash <> '') \
                              OR EXISTS (SELECT 1 FROM sso_identities WHERE user_id = $2) \
                              OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $2 AND id <> $1))",
                    )
                        .bind(id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query::<$db>(
                        "DELETE FROM recovery_codes WHERE user_id = $1 \
                         AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1) \
                         AND NOT EXISTS (SELECT 1 FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                    )
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn passkey_used(&self, id: &str, passkey: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query::<$db>("UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3")
                        .bind(passkey)
                        .bind(at)
                        .bind(id)
                        .execute(&self.writer)
                        .await?;
                    Ok(())
                }

                async fn create_ceremony(&self, ceremony: &NewCeremony) -> Result<(), StoreError> {
                    sqlx::query::<$db>(
                        "INSERT INTO webauthn_ceremonies (id, user_id, purpose, state, expires_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&ceremony.id)
                    .bind(&ceremony.user_id)
                    .bind(ceremony.purpose)
                    .bind(&ceremony.state)
                    .bind(ceremony.expires_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
                    Ok(sqlx::query_as::<$db, CeremonyRecord>(
                        "DELETE FROM webauthn_ceremonies WHERE id = $1 RETURNING user_id, purpose, state, expires_at",
                    )
                    .bind(id)
                    .fetch_optional(&self.writer)
                    .await?)
                }
            }
        };
    };
}

pub(super) use impl_factor_store;
