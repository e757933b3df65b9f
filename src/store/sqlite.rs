//! The embedded SQLite engine: a WAL database file, one writer connection and a pool of readers.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::sql::impl_store_with_portable_sql;
use super::{BulkRows, DatabaseSettings, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// SQLite allows one writer at a time; a single writer connection queues writes inside the process
/// instead of failing them with SQLITE_BUSY, while readers proceed in parallel thanks to WAL.
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// The writer again: SQLite has one, and maintenance waits its turn like any write.
    maintenance: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str, settings: &DatabaseSettings) -> Result<Self, StoreError> {
        // Another process (a second node, the admin CLI) may hold the write lock; past the
        // statement bound the request is told to retry.
        let busy = match settings.statement_timeout_ms {
            0 => Duration::from_secs(10),
            ms => Duration::from_millis(ms),
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(busy);
        let io = |e| StoreError::Database(sqlx::Error::Io(e));
        let file = options.get_filename();
        if let Some(dir) = file.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        if file != Path::new(":memory:") && !file.exists() {
            create_owner_only(file).map_err(io)?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options)
            .await?;
        Ok(Self { reader, maintenance: writer.clone(), writer })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

/// Creates the empty database file readable by its owner only: it holds every account. SQLite
/// gives its `-wal` and `-shm` files the same permissions.
fn create_owner_only(file: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(file) {
        Ok(_) => Ok(()),
        // Another process (a second node starting) created it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl_store_with_portable_sql!(SqliteStore, sqlx::Sqlite, "sqlite");

super::impl_aggregates!(SqliteStore, sqlx::Sqlite);
