//! After a key rotation: re-sealing encrypted fields and re-indexing emails under the active keys
//! (a background job on every node, and `keywarden admin keys rewrap`), and counting what each key
//! still protects, so an operator knows what retiring it would kill.
//!
//! Passwords move to a new pepper at each owner's next sign-in (see `Sessions::sign_in`); tokens
//! cannot be re-hashed (only their digests are kept) and live out their lifetime under the old key.

use super::accounts::{email_context, pending_email_context};
use super::error::{Error, Result};
use super::second_factors::secret_context;
use super::sso::label_context;
use crate::keys::{KeyPurpose, Keyring, Sealed};
use crate::mail::mail_context;
use crate::store::Store;
use crate::store::{DynStore, SealedColumn, SealedRow, KEY_COLUMNS};

/// How many rows a key still protects, per purpose and key id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyUsage {
    pub purpose: &'static str,
    pub key_id: String,
    pub active: bool,
    /// Becomes active at this instant (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_from: Option<i64>,
    pub rows: i64,
}

fn context(column: SealedColumn, id: &str) -> Vec<u8> {
    match column {
        SealedColumn::Email => email_context(id),
        SealedColumn::PendingEmail => pending_email_context(id),
        SealedColumn::TotpSecret => secret_context(id),
        SealedColumn::ProviderLabel => label_context(id),
        SealedColumn::QueuedMail => mail_context(id),
    }
}

#[derive(Clone)]
pub struct KeyRotation {
    store: DynStore,
    keyring: std::sync::Arc<Keyring>,
}

/// Each key's check value (an HMAC of a constant, useless to an attacker) is recorded in the
/// database the first time the key is used with it, so a wrong or altered key file is refused.
pub async fn check_keyring_matches_database(keyring: &Keyring, store: &dyn Store) -> Result<()> {
    let mut recognised = 0;
    let mut new = Vec::new();
    for (name, value) in keyring.check_values() {
        match store.meta(&name).await? {
            Some(stored) if stored == value => recognised += 1,
            Some(_) => {
                return Err(Error::KeyringMismatch(format!(
                    "the keyring's {name} differs from the key with that id this database was used with"
                )))
            }
            None => new.push((name, value)),
        }
    }
    if recognised == 0 && store.count_users().await? > 0 {
        return Err(Error::KeyringMismatch(
            "this database was created with a different keyring: none of its keys is known here".into(),
        ));
    }
    for (name, value) in new {
        store.set_meta(&name, &value).await?;
    }
    Ok(())
}

impl KeyRotation {
    /// Refuses a keyring that does not match this database (see `check_keyring_matches_database`).
    pub async fn check_matches_database(&self, keyring: &Keyring) -> Result<()> {
        check_keyring_matches_database(keyring, self.store.as_ref()).await
    }

    pub fn new(store: DynStore, keyring: std::sync::Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    /// Every key of every purpose with the live rows it protects (signing keys protect no rows).
    pub async fn usage(&self) -> Result<Vec<KeyUsage>> {
        let now = crate::clock::now_ms();
        let mut usage = Vec::new();
        for purpose in KeyPurpose::ALL {
            let (ids, next) = self.keyring.key_ids(purpose);
            let active = self.keyring.active_id(purpose);
            for id in ids {
                let active_from = next.as_ref().filter(|(next, _)| *next == id).map(|(_, from)| *from);
                usage.push(KeyUsage {
                    purpose: purpose.name(),
                    active: id == active,
                    key_id: id,
                    active_from,
                    rows: 0,
                });
            }
        }
        for column in KEY_COLUMNS {
            for (key_id, rows) in self.store.rows_per_key(column, now).await? {
                match usage.iter_mut().find(|u| u.purpose == column.purpose && u.key_id == key_id) {
                    Some(entry) => entry.rows += rows,
                    // A key the ring no longer holds: what it protected is already lost.
                    None => {
                        usage.push(KeyUsage { purpose: column.purpose, key_id, active: false, active_from: None, rows })
                    }
                }
            }
        }
        Ok(usage)
    }

    /// Rows the re-wrap job still has to move: sealed under another data key, or an email indexed
    /// under another blind-index key. (Provider subjects are indexed but never stored: they keep
    /// their key until the identity is linked again.)
    pub async fn remaining(&self) -> Result<i64> {
        let data = self.keyring.active_id(KeyPurpose::Data);
        let index = self.keyring.active_id(KeyPurpose::BlindIndex);
        let now = crate::clock::now_ms();
        let mut remaining = 0;
        for column in KEY_COLUMNS {
            let active = match (column.purpose, column.table) {
                ("data", _) => &data,
                ("blind_index", "users") => &index,
                _ => continue,
            };
            for (key_id, rows) in self.store.rows_per_key(column, now).await? {
                if key_id != *active {
                    remaining += rows;
                }
            }
        }
        Ok(remaining)
    }

    /// Re-seals and re-indexes up to `limit` rows of each kind; returns how many moved.
    pub async fn rewrap_batch(&self, limit: i64) -> Result<u64> {
        let mut moved = 0;
        let data = self.keyring.active_id(KeyPurpose::Data);
        for column in SealedColumn::ALL {
            for row in self.store.sealed_under_other_keys(column, &data, limit).await? {
                let context = context(column, &row.id);
                let plain = self.open(&row, &context)?;
                let sealed = self.keyring.seal(&plain, &context);
                if self.store.reseal(column, &row, &sealed.bytes, &sealed.key_id).await? {
                    moved += 1;
                }
            }
        }
        let index = self.keyring.active_id(KeyPurpose::BlindIndex);
        for row in self.store.emails_indexed_under_other_keys(&index, limit).await? {
            let plain = self.open(&row, &email_context(&row.id))?;
            let email =
                String::from_utf8(plain.to_vec()).map_err(|_| Error::Internal("a sealed email is not UTF-8".into()))?;
            let keyed = self.keyring.blind_index(&email);
            if self.store.reindex_email(&row.id, &keyed.digest, &keyed.key_id).await? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    fn open(&self, row: &SealedRow, context: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let sealed = Sealed { key_id: row.key_id.clone(), bytes: row.bytes.clone() };
        self.keyring.open(&sealed, context).map_err(|e| {
            tracing::error!(error = %e, row = %row.id, "cannot open a value to re-wrap it");
            Error::Internal(format!("cannot re-wrap a value: {e}"))
        })
    }

    /// Runs the re-wrap job in the background: a batch every `every`, logging progress.
    pub fn spawn(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // With one data key and one blind-index key in the ring there is nothing to move:
                // the usual case costs no query.
                let older_keys = [KeyPurpose::Data, KeyPurpose::BlindIndex]
                    .into_iter()
                    .any(|purpose| this.keyring.key_ids(purpose).0.len() > 1);
                if !older_keys {
                    continue;
                }
                match this.rewrap_batch(200).await {
                    Ok(0) => {}
                    Ok(moved) => {
                        let remaining = this.remaining().await.unwrap_or(-1);
                        tracing::info!(moved, remaining, "re-wrapped values under the active keys");
                    }
                    Err(err) => tracing::warn!(error = %err, "re-wrapping values failed"),
                }
            }
        })
    }
}
