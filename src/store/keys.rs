//! Which key protects each sealed, indexed or hashed column, and re-sealing after a rotation.

use async_trait::async_trait;

use super::StoreError;

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

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
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

/// Implements `KeyStore` for an engine with `reader` and `writer` pools of database `$db`, with the
/// portable SQL of `super::sql`.
macro_rules! impl_key_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::store::sql::*;
            #[allow(unused_imports)]
            use $crate::store::*;

            #[async_trait::async_trait]
            impl $crate::store::KeyStore for $store {
                async fn rows_per_key(&self, column: &KeyColumn, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
                    let sql = format!(
                        "SELECT {col}, COUNT(*) FROM {table} WHERE {col} IS NOT NULL AND ({live}) AND $1 = $1 GROUP BY {col}",
                        col = column.column,
                        table = column.table,
                        live = column.live,
                    );
                    Ok(sqlx::query_as::<$db, (String, i64)>(&sql).bind(now).fetch_all(&self.reader).await?)
                }

                async fn sealed_under_other_keys(
                    &self,
                    column: SealedColumn,
                    active: &str,
                    limit: i64,
                ) -> Result<Vec<SealedRow>, StoreError> {
                    let (table, id, value, key) = column.sql_names();
                    let sql = format!(
                        "SELECT {id} AS id, {key} AS key_id, {value} AS bytes FROM {table} \
                         WHERE {value} IS NOT NULL AND {key} IS NOT NULL AND {key} <> $1 ORDER BY {id} LIMIT $2"
                    );
                    Ok(sqlx::query_as::<$db, SealedRow>(&sql).bind(active).bind(limit).fetch_all(&self.reader).await?)
                }

                async fn reseal(
                    &self,
                    column: SealedColumn,
                    row: &SealedRow,
                    bytes: &[u8],
                    key_id: &str,
                ) -> Result<bool, StoreError> {
                    let (table, id, value, key) = column.sql_names();
                    let sql = format!("UPDATE {table} SET {value} = $1, {key} = $2 WHERE {id} = $3 AND {key} = $4");
                    let done = sqlx::query::<$db>(&sql)
                        .bind(bytes)
                        .bind(key_id)
                        .bind(&row.id)
                        .bind(&row.key_id)
                        .execute(&self.writer)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn emails_indexed_under_other_keys(
                    &self,
                    active: &str,
                    limit: i64,
                ) -> Result<Vec<SealedRow>, StoreError> {
                    Ok(sqlx::query_as::<$db, SealedRow>(
                        "SELECT id, email_key_id AS key_id, email_sealed AS bytes FROM users \
                         WHERE email_index_key_id <> $1 ORDER BY id LIMIT $2",
                    )
                    .bind(active)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?)
                }

                async fn reindex_email(&self, user_id: &str, index: &[u8], key_id: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query::<$db>(
                        "UPDATE users SET email_index = $1, email_index_key_id = $2 WHERE id = $3 AND email_index_key_id <> $2",
                    )
                    .bind(index)
                    .bind(key_id)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }
            }
        };
    };
}

pub(super) use impl_key_store;
