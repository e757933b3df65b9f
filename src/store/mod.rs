//! The `Store` trait every engine implements, and the records that cross it.
//!
//! The domain talks only to this trait. Both engines share one body of portable SQL (`sql.rs`);
//! `sqlite.rs` and `postgres.rs` hold what differs: connecting, pragmas and migrations.
//! Times are Unix milliseconds, ids are UUID strings, digests and ciphertexts are bytes, so the
//! same SQL and the same row types work on both engines.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (named) is already taken.
    #[error("{0} is already taken")]
    Conflict(UniqueField),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database did not answer in time or the connection to it failed: the request may
    /// succeed when retried, and the client is told so (`503 database_unavailable`).
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite:… or postgres://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailability(&err) {
            Self::Unavailable(err)
        } else {
            Self::Database(err)
        }
    }
}

/// Whether a failure says the database is out of reach (down, cut off, too slow) rather than that
/// the statement was wrong: only these are worth a retry.
fn is_unavailability(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code.len() == 5 {
                // PostgreSQL's SQLSTATE: connection exceptions (08…), statement_timeout (57014),
                // shutdowns and start-up (57P01-57P03), too many connections (53300).
                code.starts_with("08") || matches!(&*code, "57014" | "57P01" | "57P02" | "57P03" | "53300")
            } else {
                // SQLite's (extended) result code: busy or locked past the busy timeout.
                code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            }
        }
        _ => false,
    }
}

/// How long the request path waits for the database before giving up (the `[database]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Waiting for a free (or new) connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// One statement on the request path, in milliseconds (PostgreSQL's `statement_timeout`,
    /// SQLite's busy timeout). Maintenance (purges, migrations, bulk loads) is not bounded by it.
    pub statement_timeout_ms: u64,
    /// How long a node keeps validating tokens from memory after its last successful look at the
    /// revocation rules; past it, it answers `503 database_unavailable` rather than risk accepting
    /// a revoked token. The default is the one-second promise plus the poll interval.
    pub staleness_limit_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { acquire_timeout_ms: 2_000, statement_timeout_ms: 2_000, staleness_limit_ms: 1_250 }
    }
}

impl DatabaseSettings {
    /// No bound on statements: for the operator's commands, which may scan whole tables.
    pub fn unbounded() -> Self {
        Self { statement_timeout_ms: 0, acquire_timeout_ms: 30_000, ..Self::default() }
    }

    fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Username,
    Email,
    Other,
}

impl std::fmt::Display for UniqueField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Username => "username",
            Self::Email => "email",
            Self::Other => "a unique value",
        })
    }
}

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
}

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
    pub first_party: i64,
    pub created_at: i64,
    pub secret_rotated_at: Option<i64>,
    /// `ES256` or `EdDSA`: how this client's ID tokens are signed.
    pub id_token_alg: String,
    /// The public keys (a JWKS, as JSON) of a client that authenticates with `private_key_jwt`.
    pub jwks: Option<String>,
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

/// Rows written as they are, without the checks, audit events or mail of the paths that normally
/// write them: how `keywarden::fixture` fills a benchmark or capacity-test database.
#[derive(Debug, Clone, Default)]
pub struct BulkRows {
    pub users: Vec<NewUser>,
    pub devices: Vec<BulkDevice>,
    pub sessions: Vec<BulkSession>,
    pub tokens: Vec<NewToken>,
}

#[derive(Debug, Clone)]
pub struct BulkDevice {
    pub id: String,
    pub user_id: String,
    pub client_identifier: String,
    pub product: String,
    pub platform: String,
    pub name: String,
    pub seen_at: i64,
}

#[derive(Debug, Clone)]
pub struct BulkSession {
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub channel: String,
    pub created_at: i64,
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

/// Computes an audit event's MAC over the previous event's MAC; the domain holds the key.
pub trait AuditSealer: Send + Sync {
    fn key_id(&self) -> String;
    fn seal(&self, key_id: &str, prev_hash: &[u8], seq: i64, event: &NewAuditEvent) -> Vec<u8>;
}

/// Persistent state of keywarden. Every method that writes several rows does so in one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn engine(&self) -> &'static str;

    /// Wakes `wake` whenever any writer adds a revocation rule, where the engine can tell
    /// (PostgreSQL LISTEN/NOTIFY). Engines that cannot are polled instead.
    fn watch_revocations(&self, wake: Arc<tokio::sync::Notify>) -> Option<tokio::task::JoinHandle<()>> {
        let _ = wake;
        None
    }

    async fn ping(&self) -> Result<(), StoreError>;
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;

    async fn create_user(&self, user: &NewUser) -> Result<(), StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_username_key(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_email_index(&self, index: &[u8]) -> Result<Option<UserRecord>, StoreError>;
    async fn count_users(&self) -> Result<i64, StoreError>;
    /// Every account with this role (`admin` for alert mail).
    async fn users_with_role(&self, role: &str) -> Result<Vec<UserRecord>, StoreError>;
    /// Replaces a password hash, but only if it is still `expected` (an upgrade must not undo a change).
    async fn replace_password_hash(
        &self,
        user_id: &str,
        expected: &str,
        hash: &str,
        pepper_id: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Records the device (new or seen before), the session and its tokens; returns the device id.
    async fn start_session(&self, start: &SessionStart) -> Result<String, StoreError>;
    /// Ends the old session and starts its replacement, once: false if the old one was already ended.
    async fn recover_session(&self, recovery: &SessionRecovery) -> Result<bool, StoreError>;
    async fn token_by_digest(&self, digest: &[u8]) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a refresh token rotated and stores its successors, only if nobody rotated it first.
    async fn rotate_refresh_token(&self, digest: &[u8], now: i64, successors: &[NewToken]) -> Result<bool, StoreError>;
    async fn add_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError>;
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
    /// Writes `rows` in one transaction (see [`BulkRows`]).
    async fn bulk_load(&self, rows: &BulkRows) -> Result<(), StoreError>;
    /// Drops invalidation log entries written before `before`; returns how many.
    async fn purge_invalidations(&self, before: i64) -> Result<u64, StoreError>;

    /// Appends one event to the audit log; returns its sequence number.
    async fn append_audit(&self, event: &NewAuditEvent, sealer: &dyn AuditSealer) -> Result<i64, StoreError>;
    /// Up to `limit` events after `seq`, in order.
    async fn audit_events_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The newest `limit` events of one account, newest first.
    async fn audit_events_of(&self, user_id: &str, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The sequence number and MAC of the last event appended.
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError>;

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
    /// Keeps a new address until its confirmation link is used (replacing any earlier one).
    async fn set_pending_email(&self, user_id: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError>;
    /// Makes the pending address the account's, verified; `Conflict(Email)` if another account took it.
    async fn change_email(&self, change: &EmailChange) -> Result<(), StoreError>;
    /// Registers an OAuth client; `Conflict` if its id is taken.
    async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    /// Accepts a client assertion's `jti` once (until it expires); false if it was seen before.
    async fn use_client_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Registers a client, or replaces an existing one's settings and secret (configured clients).
    async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// False if there is no such client.
    async fn remove_client(&self, id: &str) -> Result<bool, StoreError>;
    /// Replaces a confidential client's secret digest; false if there is no such client.
    async fn set_client_secret(&self, id: &str, digest: &[u8], key_id: &str, at: i64) -> Result<bool, StoreError>;
    async fn create_oauth_code(&self, code: &OAuthCodeRecord) -> Result<(), StoreError>;
    async fn oauth_code(&self, digest: &[u8]) -> Result<Option<OAuthCodeRecord>, StoreError>;
    /// Spends an authorization code and starts the session it grants, in one transaction; `None`
    /// (and nothing written) if the code was spent first.
    async fn redeem_oauth_code(
        &self,
        digest: &[u8],
        at: i64,
        start: &SessionStart,
    ) -> Result<Option<String>, StoreError>;
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
    /// Claims up to `limit` back-channel logouts due at `now` for this node until `lock_until`.
    async fn claim_due_logouts(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<LogoutJob>, StoreError>;
    /// Marks a notice done (delivered or given up); it is kept a while so it is not queued again.
    async fn logout_delivered(&self, session_id: &str, at: i64) -> Result<(), StoreError>;
    async fn logout_failed(&self, session_id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError>;
    /// Ends a session on its own, not by a rule (a replayed refresh token or authorization code, an
    /// app's access removed) and, if its OAuth client wants to hear of it, queues the back-channel
    /// logout in the same transaction.
    async fn end_session_and_tell(&self, session_id: &str, at: i64) -> Result<(), StoreError>;
    /// The scope a user already allowed a client, if any.
    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError>;
    async fn save_consent(&self, user_id: &str, client_id: &str, scope: &str, at: i64) -> Result<(), StoreError>;
    /// Every client the user allowed: `(client_id, scope, granted_at)`, newest first.
    async fn consents_of(&self, user_id: &str) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Forgets what the user allowed a client; false if nothing was allowed.
    async fn remove_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError>;
    /// Sets an account's role; false if there is no such account.
    async fn set_role(&self, user_id: &str, role: &str) -> Result<bool, StoreError>;
    /// Sets a new password, kills unused reset links, stores the sign-out rule and the audit event.
    async fn change_password(&self, change: &PasswordChange, sealer: &dyn AuditSealer) -> Result<(), StoreError>;
    /// Flags an account so its next password sign-in is refused until it chooses a new password.
    async fn require_password_reset(
        &self,
        user_id: &str,
        event: &NewAuditEvent,
        sealer: &dyn AuditSealer,
    ) -> Result<(), StoreError>;

    async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError>;
    /// Claims up to `limit` messages due at `now` for delivery by this node until `lock_until`.
    async fn claim_due_mail(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError>;
    async fn mail_delivered(&self, id: &str) -> Result<(), StoreError>;
    async fn mail_failed(&self, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError>;
    async fn mail_queue_depth(&self) -> Result<i64, StoreError>;

    /// Accounts in creation order, for administrators.
    async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<UserRecord>, StoreError>;

    /// Deletes tokens that expired before `before`; returns how many.
    async fn purge_expired_tokens(&self, before: i64) -> Result<u64, StoreError>;

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
    /// Records that the session just proved something (a step-up).
    async fn mark_session_verified(&self, session_id: &str, verified: Verified) -> Result<(), StoreError>;
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

    /// Records what a device provides (from its `X-Plex-Provides` header).
    async fn set_device_provides(&self, device_id: &str, provides: &str) -> Result<(), StoreError>;
    /// Replaces the addresses a device published.
    async fn set_device_connections(&self, device_id: &str, connections: &str) -> Result<(), StoreError>;

    /// The account's stable integer id, handed out on first use.
    async fn numeric_user_id(&self, user_id: &str) -> Result<i64, StoreError>;

    /// Registers (or re-registers, for the same account) a device key; false if another account
    /// holds that key id.
    async fn register_device_key(&self, key: &DeviceKeyRecord) -> Result<bool, StoreError>;
    async fn device_key(&self, kid: &str) -> Result<Option<DeviceKeyRecord>, StoreError>;
    /// The account's registered device keys, newest first.
    async fn device_keys_of(&self, user_id: &str) -> Result<Vec<DeviceKeyRecord>, StoreError>;
    /// Forgets one of the account's device keys; false when it has no such key.
    async fn remove_device_key(&self, user_id: &str, kid: &str) -> Result<bool, StoreError>;
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
    /// Removes and returns a WebAuthn ceremony: each challenge is answered at most once.
    async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError>;

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
    /// How many keys starting with `prefix` had a settled failure since `since`, and their counted
    /// attempts in all.
    async fn throttles_failing(&self, prefix: &str, since: i64) -> Result<(i64, i64), StoreError>;
    /// Drops counters neither failing nor blocking since `before`.
    async fn purge_throttles(&self, before: i64) -> Result<u64, StoreError>;
    /// Drops revocation rules that no longer change any answer: those another rule of the same
    /// scope covers (a later or equal cut-off, sparing nothing or the same session, no more
    /// forgiving), and those older than `settled_before` that no unexpired stored token at `now`
    /// falls under. Every node's cache stays correct without them (it holds the strongest rules).
    async fn purge_revocation_rules(&self, now: i64, settled_before: i64) -> Result<u64, StoreError>;
    /// Drops alert states (a surge's hold, a sign-in code's mailing window) that ended before `before`.
    async fn purge_alert_states(&self, before: i64) -> Result<u64, StoreError>;
    /// Raises the state `kind` until `until` unless it is already raised at `now`; true when this
    /// call raised it, so that of many nodes exactly one sends the alert.
    async fn raise_alert_state(&self, kind: &str, now: i64, until: i64) -> Result<bool, StoreError>;
    /// Keeps a raised state up for longer (never shortens it).
    async fn extend_alert_state(&self, kind: &str, until: i64) -> Result<(), StoreError>;
    async fn alert_state_until(&self, kind: &str) -> Result<Option<i64>, StoreError>;

    /// Rows per key id in one key column (live rows only; `$1` in its filter is `now`).
    async fn rows_per_key(&self, column: &KeyColumn, now: i64) -> Result<Vec<(String, i64)>, StoreError>;
    /// Up to `limit` values of a sealed column under another key than `active`.
    async fn sealed_under_other_keys(
        &self,
        column: SealedColumn,
        active: &str,
        limit: i64,
    ) -> Result<Vec<SealedRow>, StoreError>;
    /// Replaces a sealed value if it is still the one read (same key id); false if it changed meanwhile.
    async fn reseal(
        &self,
        column: SealedColumn,
        row: &SealedRow,
        bytes: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError>;
    /// Up to `limit` accounts whose email blind index is under another key than `active`, with their sealed email.
    async fn emails_indexed_under_other_keys(&self, active: &str, limit: i64) -> Result<Vec<SealedRow>, StoreError>;
    /// Replaces an account's email blind index, unless it is already under `key_id`.
    async fn reindex_email(&self, user_id: &str, index: &[u8], key_id: &str) -> Result<bool, StoreError>;
}

/// A value sealed under the data key, in one of the columns that are re-sealed after a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    Email,
    PendingEmail,
    TotpSecret,
    ProviderLabel,
    QueuedMail,
}

impl SealedColumn {
    pub const ALL: [SealedColumn; 5] =
        [Self::Email, Self::PendingEmail, Self::TotpSecret, Self::ProviderLabel, Self::QueuedMail];

    /// `(table, id column, value column, key-id column)`: fixed names, never from input.
    pub(crate) fn sql_names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::Email => ("users", "id", "email_sealed", "email_key_id"),
            Self::PendingEmail => ("users", "id", "pending_email_sealed", "pending_email_key_id"),
            Self::TotpSecret => ("totp_factors", "user_id", "secret_sealed", "secret_key_id"),
            Self::ProviderLabel => ("sso_identities", "id", "label_sealed", "label_key_id"),
            Self::QueuedMail => ("mail_queue", "id", "sealed", "key_id"),
        }
    }
}

/// A sealed value as the re-wrap job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedRow {
    pub id: String,
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// A column that names the key protecting its row, counted per key for `keys status`.
#[derive(Debug, Clone, Copy)]
pub struct KeyColumn {
    pub purpose: &'static str,
    pub table: &'static str,
    pub column: &'static str,
    /// Only rows that still matter (a live token, an unused code); fixed SQL, never from input.
    pub live: &'static str,
}

/// Every column that records which key protects its row.
pub const KEY_COLUMNS: &[KeyColumn] = &[
    KeyColumn { purpose: "pepper", table: "users", column: "password_pepper_id", live: "password_hash <> ''" },
    KeyColumn { purpose: "data", table: "users", column: "email_key_id", live: "1 = 1" },
    KeyColumn {
        purpose: "data",
        table: "users",
        column: "pending_email_key_id",
        live: "pending_email_sealed IS NOT NULL",
    },
    KeyColumn { purpose: "data", table: "totp_factors", column: "secret_key_id", live: "1 = 1" },
    KeyColumn { purpose: "data", table: "sso_identities", column: "label_key_id", live: "label_sealed IS NOT NULL" },
    KeyColumn { purpose: "data", table: "mail_queue", column: "key_id", live: "1 = 1" },
    KeyColumn { purpose: "blind_index", table: "users", column: "email_index_key_id", live: "1 = 1" },
    KeyColumn { purpose: "blind_index", table: "sso_identities", column: "subject_index_key_id", live: "1 = 1" },
    KeyColumn { purpose: "token_hash", table: "tokens", column: "digest_key_id", live: "expires_at > $1" },
    KeyColumn {
        purpose: "token_hash",
        table: "one_time_tokens",
        column: "digest_key_id",
        live: "used_at IS NULL AND expires_at > $1",
    },
    KeyColumn { purpose: "token_hash", table: "recovery_codes", column: "digest_key_id", live: "used_at IS NULL" },
    KeyColumn {
        purpose: "token_hash",
        table: "oauth_clients",
        column: "secret_key_id",
        live: "secret_digest IS NOT NULL",
    },
];

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

pub type DynStore = Arc<dyn Store>;

/// Opens the store a URL names (`sqlite:…` or `postgres://…`), creating an SQLite file if needed,
/// for the operator's commands: statements are not time-bounded.
pub async fn open(url: &str) -> Result<DynStore, StoreError> {
    open_with(url, &DatabaseSettings::unbounded()).await
}

/// Opens the store with the request path's time bounds.
pub async fn open_with(url: &str, settings: &DatabaseSettings) -> Result<DynStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, settings).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, settings).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// A unique-constraint violation as the `Conflict` it means, any other failure as it is.
fn conflict_or_database(err: sqlx::Error) -> StoreError {
    match unique_field(&err) {
        Some(field) => StoreError::Conflict(field),
        None => StoreError::from(err),
    }
}

/// Which unique constraint a violation names; both engines put the column or index name in the message.
fn unique_field(err: &sqlx::Error) -> Option<UniqueField> {
    let db = err.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
    Some(if text.contains("username") {
        UniqueField::Username
    } else if text.contains("email") {
        UniqueField::Email
    } else {
        UniqueField::Other
    })
}
