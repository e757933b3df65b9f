//! The PostgreSQL engine, for several keywarden nodes sharing one database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::sql::impl_store_with_portable_sql;
use super::{BulkRows, DatabaseSettings, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PostgresStore {
    reader: PgPool,
    writer: PgPool,
    /// Purges, migrations and bulk loads: not bounded by the request path's statement timeout.
    maintenance: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let bounded = match settings.statement_timeout_ms {
            0 => options.clone(),
            ms => options.clone().options([("statement_timeout", ms.to_string())]),
        };
        // PostgreSQL serialises conflicting writes itself: readers and writers share one pool.
        // Connections are made as needed, so a node starts (and recovers) whatever the database.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(bounded)
            .await?;
        let maintenance = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout())
            .connect_lazy_with(options);
        Ok(Self { reader: pool.clone(), writer: pool, maintenance })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.maintenance).await?;
        Ok(())
    }
}

/// The channel the `revocation_rules` insert trigger notifies.
const REVOCATION_CHANNEL: &str = "keywarden_revocations";

impl_store_with_portable_sql!(
    PostgresStore,
    sqlx::Postgres,
    "postgres",
    fn watch_revocations(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        let pool = self.writer.clone();
        Some(tokio::spawn(async move {
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen(REVOCATION_CHANNEL).await {
                        Ok(()) => {
                            // Whatever happened while we were not listening is fetched now.
                            wake.notify_one();
                            while listener.recv().await.is_ok() {
                                wake.notify_one();
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "cannot LISTEN for revocations"),
                    },
                    Err(err) => tracing::warn!(error = %err, "cannot connect to LISTEN for revocations"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
);

super::impl_aggregates!(PostgresStore, sqlx::Postgres);
