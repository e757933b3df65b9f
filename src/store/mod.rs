//! The `Store` every engine implements: one trait per aggregate, and what all of them share.
//!
//! The domain talks only to these traits. Each aggregate's module (`accounts.rs`, `sessions.rs`, …)
//! holds its trait, its records and its portable SQL, which both engines instantiate;
//! `sqlite.rs` and `postgres.rs` hold what differs: connecting, pragmas and migrations.
//! Times are Unix milliseconds, ids are UUID strings, digests and ciphertexts are bytes, so the
//! same SQL and the same row types work on both engines.

mod accounts;
mod audit;
mod factors;
mod keys;
mod mail_queue;
mod oauth;
mod plex;
mod postgres;
mod sessions;
mod sql;
mod sqlite;
mod sso;
mod throttle;

use std::sync::Arc;

use async_trait::async_trait;

/// Implements every aggregate's trait for an engine, with each aggregate's portable SQL.
macro_rules! impl_aggregates {
    ($store:ty, $db:ty) => {
        $crate::store::accounts::impl_account_store!($store, $db);
        $crate::store::audit::impl_audit_store!($store, $db);
        $crate::store::factors::impl_factor_store!($store, $db);
        $crate::store::keys::impl_key_store!($store, $db);
        $crate::store::mail_queue::impl_mail_queue_store!($store, $db);
        $crate::store::oauth::impl_oauth_store!($store, $db);
        $crate::store::plex::impl_plex_store!($store, $db);
        $crate::store::sessions::impl_session_store!($store, $db);
        $crate::store::sso::impl_sso_store!($store, $db);
        $crate::store::throttle::impl_throttle_store!($store, $db);
    };
}
pub(crate) use impl_aggregates;

pub use accounts::*;
pub use audit::*;
pub use factors::*;
pub use keys::*;
pub use mail_queue::*;
pub use oauth::*;
pub use plex::*;
pub use postgres::PostgresStore;
pub use sessions::*;
pub use sqlite::SqliteStore;
pub use sso::*;
pub use throttle::*;

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

/// Persistent state of keywarden: every aggregate's trait, and what concerns the database as a
/// whole. Every method that writes several rows does so in one transaction.
#[async_trait]
pub trait Store:
    AccountStore
    + SessionStore
    + FactorStore
    + OAuthStore
    + SsoStore
    + PlexStore
    + AuditStore
    + ThrottleStore
    + MailQueueStore
    + KeyStore
    + Send
    + Sync
    + 'static
{
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
    /// Writes `rows` in one transaction (see [`BulkRows`]).
    async fn bulk_load(&self, rows: &BulkRows) -> Result<(), StoreError>;
    /// Deletes tokens that expired before `before`; returns how many.
    async fn purge_expired_tokens(&self, before: i64) -> Result<u64, StoreError>;
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
