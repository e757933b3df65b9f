//! The keyring: password pepper, token-hash key, data-encryption key, email blind-index key and
//! token-signing key, each with an id.
//!
//! None of these keys ever enters the database (promise P1). Every value they protect is stored beside
//! the id of the key that protected it, so a key can be rotated without downtime: new values use the
//! active key, older ones stay readable while their key is still in the ring.

pub mod signing;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::clock::now_ms;

type HmacSha256 = Hmac<Sha256>;

const SECRET_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// What a key is for; each purpose has its own independent set of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    Pepper,
    TokenHash,
    Data,
    BlindIndex,
    /// Seeds the asymmetric keys that sign ID and logout tokens (see `signing`).
    Signing,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 5] = [Self::Pepper, Self::TokenHash, Self::Data, Self::BlindIndex, Self::Signing];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pepper => "pepper",
            Self::TokenHash => "token_hash",
            Self::Data => "data",
            Self::BlindIndex => "blind_index",
            Self::Signing => "signing",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Self::Pepper => "pep",
            Self::TokenHash => "tok",
            Self::Data => "dat",
            Self::BlindIndex => "idx",
            Self::Signing => "sig",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read the key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write the key file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("the keyring is not valid TOML: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the keyring's {purpose} set is invalid: {reason}")]
    Invalid { purpose: &'static str, reason: String },
    #[error("a value was sealed with key {0:?}, which is not in the keyring")]
    UnknownKey(String),
    #[error("a sealed value failed authentication: it was altered or belongs to another record")]
    Tampered,
}

/// A 256-bit secret, wiped from memory when dropped and never printed.
struct Secret(Zeroizing<[u8; SECRET_LEN]>);

impl Secret {
    fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }
}

/// The keys of one purpose: the active one signs or seals new values; the others only read old ones.
/// A rotated-in key may wait (`next`) until every node has loaded it before it becomes active.
struct KeySet {
    active: String,
    keys: BTreeMap<String, Secret>,
    /// A key that becomes the active one at the given instant (Unix ms).
    next: Option<(String, i64)>,
    /// Token-hash keys only: the audit keys derived from retired token-hash keys, kept so that the
    /// audit events they sealed still verify (they verify nothing else).
    audit_only: BTreeMap<String, Secret>,
}

impl KeySet {
    fn generate(purpose: KeyPurpose) -> Self {
        let id = new_key_id(purpose);
        let mut keys = BTreeMap::new();
        keys.insert(id.clone(), Secret::random());
        Self { active: id, keys, next: None, audit_only: BTreeMap::new() }
    }

    /// The id of the key new values use now.
    fn active_id(&self) -> &str {
        match &self.next {
            Some((id, from)) if now_ms() >= *from => id,
            _ => &self.active,
        }
    }

    fn active(&self) -> (&str, &[u8; SECRET_LEN]) {
        let id = self.active_id();
        // Construction guarantees the active (and next) ids are present.
        let secret = self.keys.get(id).map(|s| &*s.0).unwrap_or(&[0; SECRET_LEN]);
        (id, secret)
    }

    /// Adds a fresh key that becomes active at `active_from` (Unix ms).
    fn rotate(&mut self, purpose: KeyPurpose, active_from: i64) -> String {
        self.settle();
        let id = new_key_id(purpose);
        self.keys.insert(id.clone(), Secret::random());
        self.next = Some((id.clone(), active_from));
        self.settle();
        id
    }

    /// Makes a due `next` key the active one.
    fn settle(&mut self) {
        if let Some((id, from)) = &self.next {
            if now_ms() >= *from {
                self.active = id.clone();
                self.next = None;
            }
        }
    }

    /// Removes a key that is neither active nor about to be.
    fn retire(&mut self, purpose: KeyPurpose, id: &str) -> Result<(), KeyringError> {
        self.settle();
        let invalid = |reason: String| KeyringError::Invalid { purpose: purpose.name(), reason };
        if id == self.active || self.next.as_ref().is_some_and(|(next, _)| next == id) {
            return Err(invalid(format!("{id:?} is the active key (rotate first)")));
        }
        let Some(secret) = self.keys.remove(id) else {
            return Err(invalid(format!("there is no key {id:?}")));
        };
        if purpose == KeyPurpose::TokenHash {
            self.audit_only.insert(id.to_owned(), Secret(audit_key(&secret.0)));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Option<&[u8; SECRET_LEN]> {
        self.keys.get(id).map(|s| &*s.0)
    }

    /// The active key first, then the others still kept for reading (and a key about to become active).
    fn in_lookup_order(&self) -> impl Iterator<Item = (&str, &[u8; SECRET_LEN])> {
        let active = self.active_id();
        std::iter::once(self.active())
            .chain(self.keys.iter().filter(move |(id, _)| id.as_str() != active).map(|(id, s)| (id.as_str(), &*s.0)))
    }

    /// The signing set of a keyring written before signing keys existed: one key derived from the
    /// active token-hash key, so every node that shares the file derives the same one.
    fn signing_derived_from(token_hash: &KeySet) -> Self {
        let (token_id, token_key) = token_hash.active();
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        // HKDF-SHA256 can expand up to 8160 bytes; 32 never fails.
        let _ = hkdf::Hkdf::<Sha256>::new(None, token_key).expand(b"keywarden signing seed v1", secret.as_mut());
        let id = format!("sig-from-{token_id}");
        Self {
            active: id.clone(),
            keys: BTreeMap::from([(id, Secret(secret))]),
            next: None,
            audit_only: BTreeMap::new(),
        }
    }

    fn from_file(purpose: KeyPurpose, file: KeySetFile) -> Result<Self, KeyringError> {
        let invalid = |reason: String| KeyringError::Invalid { purpose: purpose.name(), reason };
        let decode = |entries: BTreeMap<String, String>| -> Result<BTreeMap<String, Secret>, KeyringError> {
            let mut keys = BTreeMap::new();
            for (id, encoded) in entries {
                let bytes = Zeroizing::new(
                    B64.decode(encoded.trim()).map_err(|_| invalid(format!("key {id:?} is not base64")))?,
                );
                let array: [u8; SECRET_LEN] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| invalid(format!("key {id:?} must be {SECRET_LEN} bytes")))?;
                keys.insert(id, Secret(Zeroizing::new(array)));
            }
            Ok(keys)
        };
        let keys = decode(file.keys)?;
        let audit_only = decode(file.audit_only)?;
        if !keys.contains_key(&file.active) {
            return Err(invalid(format!("the active key {:?} is not among its keys", file.active)));
        }
        let next = match (file.next, file.next_active_from_ms) {
            (Some(id), Some(from)) if keys.contains_key(&id) => Some((id, from)),
            (None, None) => None,
            _ => return Err(invalid("`next` must name one of its keys, with `next_active_from_ms`".into())),
        };
        Ok(Self { active: file.active, keys, next, audit_only })
    }

    fn to_file(&self) -> KeySetFile {
        KeySetFile {
            active: self.active.clone(),
            keys: self.keys.iter().map(|(id, s)| (id.clone(), B64.encode(*s.0))).collect(),
            next: self.next.as_ref().map(|(id, _)| id.clone()),
            next_active_from_ms: self.next.as_ref().map(|(_, from)| *from),
            audit_only: self.audit_only.iter().map(|(id, s)| (id.clone(), B64.encode(*s.0))).collect(),
        }
    }
}

fn new_key_id(purpose: KeyPurpose) -> String {
    let mut tag = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut tag);
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "{}-{:04}{:02}{:02}-{}",
        purpose.id_prefix(),
        date.year(),
        u8::from(date.month()),
        date.day(),
        hex::encode(tag)
    )
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySetFile {
    active: String,
    /// A rotated-in key that becomes active at `next_active_from_ms` (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_active_from_ms: Option<i64>,
    keys: BTreeMap<String, String>,
    /// Audit keys of retired token-hash keys (they verify old audit events, nothing else).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    audit_only: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    pepper: KeySetFile,
    token_hash: KeySetFile,
    data: KeySetFile,
    blind_index: KeySetFile,
    /// Absent from key files written before issue 6: then derived from the token-hash key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing: Option<KeySetFile>,
}

/// A keyed digest together with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedDigest {
    pub key_id: String,
    pub digest: Vec<u8>,
}

/// A value encrypted under the data key: `nonce || ciphertext+tag`, with the key's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// Every key keywarden holds. Cheap to share behind an `Arc`; never serialised except to the key file.
/// Running servers swap in a changed key file (`replace_with`) without a restart.
pub struct Keyring {
    sets: RwLock<Sets>,
}

struct Sets {
    pepper: KeySet,
    token_hash: KeySet,
    data: KeySet,
    blind_index: KeySet,
    signing: KeySet,
}

impl Sets {
    fn set(&self, purpose: KeyPurpose) -> &KeySet {
        match purpose {
            KeyPurpose::Pepper => &self.pepper,
            KeyPurpose::TokenHash => &self.token_hash,
            KeyPurpose::Data => &self.data,
            KeyPurpose::BlindIndex => &self.blind_index,
            KeyPurpose::Signing => &self.signing,
        }
    }

    fn set_mut(&mut self, purpose: KeyPurpose) -> &mut KeySet {
        match purpose {
            KeyPurpose::Pepper => &mut self.pepper,
            KeyPurpose::TokenHash => &mut self.token_hash,
            KeyPurpose::Data => &mut self.data,
            KeyPurpose::BlindIndex => &mut self.blind_index,
            KeyPurpose::Signing => &mut self.signing,
        }
    }
}

impl From<Sets> for Keyring {
    fn from(sets: Sets) -> Self {
        Self { sets: RwLock::new(sets) }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("active_ids", &self.active_ids()).finish_non_exhaustive()
    }
}

const FILE_HEADER: &str = "\
# keywarden keyring. Back this file up and store it APART from the database:
# without it nothing in the database can be used, and with the database it is everything an attacker needs.
";

impl Keyring {
    /// A new keyring with one fresh random key for each purpose.
    pub fn generate() -> Self {
        Self::from(Sets {
            pepper: KeySet::generate(KeyPurpose::Pepper),
            token_hash: KeySet::generate(KeyPurpose::TokenHash),
            data: KeySet::generate(KeyPurpose::Data),
            blind_index: KeySet::generate(KeyPurpose::BlindIndex),
            signing: KeySet::generate(KeyPurpose::Signing),
        })
    }

    /// The key sets, for reading. A poisoned lock still holds whole sets: swaps replace them at once.
    fn read(&self) -> RwLockReadGuard<'_, Sets> {
        self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sets> {
        self.sets.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes over every key of `other` (a reloaded key file), at once for every caller.
    pub fn replace_with(&self, other: Keyring) {
        let fresh = other.sets.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        *self.write() = fresh;
    }

    pub fn from_toml(text: &str) -> Result<Self, KeyringError> {
        let file: KeyringFile = toml::from_str(text)?;
        let token_hash = KeySet::from_file(KeyPurpose::TokenHash, file.token_hash)?;
        let signing = match file.signing {
            Some(set) => KeySet::from_file(KeyPurpose::Signing, set)?,
            None => KeySet::signing_derived_from(&token_hash),
        };
        Ok(Self::from(Sets {
            pepper: KeySet::from_file(KeyPurpose::Pepper, file.pepper)?,
            token_hash,
            data: KeySet::from_file(KeyPurpose::Data, file.data)?,
            blind_index: KeySet::from_file(KeyPurpose::BlindIndex, file.blind_index)?,
            signing,
        }))
    }

    pub fn to_toml(&self) -> String {
        let sets = self.read();
        let file = KeyringFile {
            pepper: sets.pepper.to_file(),
            token_hash: sets.token_hash.to_file(),
            data: sets.data.to_file(),
            blind_index: sets.blind_index.to_file(),
            signing: Some(sets.signing.to_file()),
        };
        // Serialising plain strings and maps cannot fail.
        format!("{FILE_HEADER}\n{}", toml::to_string(&file).unwrap_or_default())
    }

    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyringError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
    }

    /// Writes the keyring to a new file readable only by its owner; refuses to overwrite one.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyringError> {
        let err = |source| KeyringError::Write { path: path.display().to_string(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(err)?;
        file.write_all(self.to_toml().as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)
    }

    /// Replaces an existing key file: written beside it, then renamed over it, so a crash never
    /// leaves half a keyring.
    pub fn replace(&self, path: &Path) -> Result<(), KeyringError> {
        let err = |source| KeyringError::Write { path: path.display().to_string(), source };
        let temporary = path.with_extension("toml.new");
        let _ = std::fs::remove_file(&temporary);
        self.write_new(&temporary)?;
        std::fs::rename(&temporary, path).map_err(err)
    }

    /// The active key id of every purpose, for logs and consistency checks (never the secrets).
    pub fn active_ids(&self) -> BTreeMap<&'static str, String> {
        let sets = self.read();
        KeyPurpose::ALL.iter().map(|p| (p.name(), sets.set(*p).active_id().to_owned())).collect()
    }

    /// The active key id of one purpose.
    pub fn active_id(&self, purpose: KeyPurpose) -> String {
        self.read().set(purpose).active_id().to_owned()
    }

    /// Every key id of one purpose, and the one waiting to become active with its instant (Unix ms).
    pub fn key_ids(&self, purpose: KeyPurpose) -> (Vec<String>, Option<(String, i64)>) {
        let sets = self.read();
        let set = sets.set(purpose);
        let next = set.next.clone().filter(|(_, from)| now_ms() < *from);
        (set.keys.keys().cloned().collect(), next)
    }

    /// Whether the keyring holds a key with this id for this purpose.
    pub fn has_key(&self, purpose: KeyPurpose, id: &str) -> bool {
        self.read().set(purpose).get(id).is_some()
    }

    /// Adds a new key for `purpose` that new values use from `active_from` (Unix ms) on; older
    /// keys stay for reading what they protect until retired.
    pub fn rotate(&self, purpose: KeyPurpose, active_from: i64) -> String {
        self.write().set_mut(purpose).rotate(purpose, active_from)
    }

    /// Removes a key that is not active: whatever only it could read or verify is lost.
    pub fn retire(&self, purpose: KeyPurpose, id: &str) -> Result<(), KeyringError> {
        self.write().set_mut(purpose).retire(purpose, id)
    }

    /// `(meta key, check value)` for every key: an HMAC of a fixed label, which identifies the key
    /// without revealing anything that could compute other digests.
    pub fn check_values(&self) -> Vec<(String, String)> {
        let sets = self.read();
        KeyPurpose::ALL
            .iter()
            .flat_map(|purpose| {
                sets.set(*purpose).keys.iter().map(move |(id, secret)| {
                    (
                        format!("keycheck.{}.{id}", purpose.name()),
                        hex::encode(hmac(&*secret.0, b"keywarden key check v1")),
                    )
                })
            })
            .collect()
    }

    /// Every signing secret with its id, the active one first: each seeds one key per algorithm.
    pub fn signing_secrets(&self) -> Vec<(String, Zeroizing<[u8; SECRET_LEN]>)> {
        self.read().signing.in_lookup_order().map(|(id, secret)| (id.to_owned(), Zeroizing::new(*secret))).collect()
    }

    /// The active pepper and its id, mixed into every new password hash.
    pub fn active_pepper(&self) -> (String, Zeroizing<Vec<u8>>) {
        let sets = self.read();
        let (id, key) = sets.pepper.active();
        (id.to_owned(), Zeroizing::new(key.to_vec()))
    }

    pub fn pepper(&self, id: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.read().pepper.get(id).map(|k| Zeroizing::new(k.to_vec()))
    }

    /// The id of the key that seals new audit events: derived from the active token-hash key.
    pub fn active_audit_key_id(&self) -> String {
        format!("audit:{}", self.read().token_hash.active_id())
    }

    /// MAC of an audit event under the audit key `key_id`, or `None` if that key is no longer held.
    /// Audit keys are derived (HKDF-SHA256) from token-hash keys, so rotating the token-hash key
    /// rotates the audit key with it; retiring one keeps only its audit key (`audit_only`).
    pub fn audit_mac(&self, key_id: &str, message: &[u8]) -> Option<Vec<u8>> {
        let token_id = key_id.strip_prefix("audit:")?;
        let sets = self.read();
        let audit_key = match sets.token_hash.get(token_id) {
            Some(token_key) => audit_key(token_key),
            None => Zeroizing::new(*sets.token_hash.audit_only.get(token_id)?.0),
        };
        Some(hmac(audit_key.as_ref(), message))
    }

    /// HMAC-SHA256 of a token under the active token-hash key: the only form in which tokens are stored.
    pub fn token_digest(&self, token: &str) -> KeyedDigest {
        let sets = self.read();
        let (id, key) = sets.token_hash.active();
        KeyedDigest { key_id: id.to_owned(), digest: hmac(key, token.as_bytes()) }
    }

    /// The token's digest under every token-hash key, active first, for look-up during a rotation.
    pub fn token_digests(&self, token: &str) -> Vec<KeyedDigest> {
        self.read()
            .token_hash
            .in_lookup_order()
            .map(|(id, key)| KeyedDigest { key_id: id.to_owned(), digest: hmac(key, token.as_bytes()) })
            .collect()
    }

    /// The first record `look_up` finds for the token's digest under any token-hash key, active
    /// first: how a stored token is found while keys rotate.
    pub async fn find_by_token_digest<T, E, F, Fut>(&self, token: &str, mut look_up: F) -> Result<Option<T>, E>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, E>>,
    {
        for keyed in self.token_digests(token) {
            if let Some(found) = look_up(keyed.digest).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The keyed blind index of a normalised value under every blind-index key, active first.
    pub fn blind_indexes(&self, value: &str) -> Vec<KeyedDigest> {
        self.read()
            .blind_index
            .in_lookup_order()
            .map(|(id, key)| KeyedDigest { key_id: id.to_owned(), digest: hmac(key, value.as_bytes()) })
            .collect()
    }

    /// The first record `look_up` finds for the value's blind index under any blind-index key, active
    /// first: how an indexed value is found while keys rotate.
    pub async fn find_by_blind_index<T, E, F, Fut>(&self, value: &str, mut look_up: F) -> Result<Option<T>, E>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, E>>,
    {
        for keyed in self.blind_indexes(value) {
            if let Some(found) = look_up(keyed.digest).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    pub fn blind_index(&self, value: &str) -> KeyedDigest {
        let sets = self.read();
        let (id, key) = sets.blind_index.active();
        KeyedDigest { key_id: id.to_owned(), digest: hmac(key, value.as_bytes()) }
    }

    /// Encrypts with XChaCha20-Poly1305 under the active data key. `context` is authenticated but not
    /// stored: it binds the ciphertext to its record so it cannot be moved to another row.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let sets = self.read();
        let (id, key) = sets.data.active();
        let cipher = XChaCha20Poly1305::new(key.into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce only fails for plaintexts beyond 256 GiB.
        let ciphertext =
            cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context }).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Sealed { key_id: id.to_owned(), bytes }
    }

    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let sets = self.read();
        let key = sets.data.get(&sealed.key_id).ok_or_else(|| KeyringError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(KeyringError::Tampered);
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        XChaCha20Poly1305::new(key.into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context })
            .map(Zeroizing::new)
            .map_err(|_| KeyringError::Tampered)
    }
}

/// The audit key derived (HKDF-SHA256) from a token-hash key.
fn audit_key(token_key: &[u8; SECRET_LEN]) -> Zeroizing<[u8; SECRET_LEN]> {
    let mut key = Zeroizing::new([0u8; SECRET_LEN]);
    // HKDF-SHA256 can expand up to 8160 bytes; 32 never fails.
    let _ = hkdf::Hkdf::<Sha256>::new(None, token_key).expand(b"keywarden audit log v1", key.as_mut());
    key
}

#[allow(clippy::expect_used)] // HMAC takes keys of any length: `new_from_slice` cannot fail here.
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_file_format() {
        let ring = Keyring::generate();
        let again = Keyring::from_toml(&ring.to_toml()).unwrap();
        assert_eq!(ring.active_ids(), again.active_ids());
        assert_eq!(ring.token_digest("kw_at_x"), again.token_digest("kw_at_x"));
    }

    #[test]
    fn sealed_values_are_bound_to_their_context() {
        let ring = Keyring::generate();
        let sealed = ring.seal(b"alice@example.com", b"user:1");
        assert_eq!(&*ring.open(&sealed, b"user:1").unwrap(), b"alice@example.com");
        assert!(matches!(ring.open(&sealed, b"user:2"), Err(KeyringError::Tampered)));
    }

    #[test]
    fn a_keyring_whose_active_key_is_missing_is_refused() {
        let text = Keyring::generate().to_toml().replacen("active = \"pep-", "active = \"gone-", 1);
        assert!(matches!(Keyring::from_toml(&text), Err(KeyringError::Invalid { purpose: "pepper", .. })));
    }

    #[test]
    fn a_key_file_without_signing_keys_derives_the_same_one_every_time() {
        let text = Keyring::generate().to_toml();
        let start = text.find("[signing]").unwrap();
        let old_format = &text[..start];
        let (a, b) = (Keyring::from_toml(old_format).unwrap(), Keyring::from_toml(old_format).unwrap());
        assert_eq!(a.signing_secrets()[0].0, b.signing_secrets()[0].0);
        assert_eq!(*a.signing_secrets()[0].1, *b.signing_secrets()[0].1);
        assert!(a.signing_secrets()[0].0.starts_with("sig-from-tok-"));
    }

    #[test]
    fn rotating_the_signing_key_keeps_the_old_one_for_verification() {
        let ring = Keyring::generate();
        let old = ring.signing_secrets()[0].0.clone();
        let new = ring.rotate(KeyPurpose::Signing, 0);
        let ids: Vec<String> = ring.signing_secrets().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![new, old]);
    }

    #[test]
    fn a_rotated_key_waits_for_its_instant_then_old_values_stay_readable_until_retired() {
        let ring = Keyring::generate();
        let old = ring.active_id(KeyPurpose::Data);
        let sealed = ring.seal(b"x", b"c");
        let new = ring.rotate(KeyPurpose::Data, now_ms() + 60_000);
        assert_eq!(ring.active_id(KeyPurpose::Data), old, "not active before its instant");
        let reloaded = Keyring::from_toml(&ring.to_toml()).unwrap();
        assert_eq!(reloaded.key_ids(KeyPurpose::Data).1.map(|(id, _)| id), Some(new.clone()));
        let due = ring.rotate(KeyPurpose::Data, 0);
        assert_eq!(ring.active_id(KeyPurpose::Data), due);
        assert_eq!(ring.seal(b"y", b"c").key_id, due);
        assert_eq!(&*ring.open(&sealed, b"c").unwrap(), b"x");
        assert!(ring.retire(KeyPurpose::Data, &due).is_err(), "the active key cannot be retired");
        ring.retire(KeyPurpose::Data, &old).unwrap();
        assert!(matches!(ring.open(&sealed, b"c"), Err(KeyringError::UnknownKey(_))));
        assert!(ring.has_key(KeyPurpose::Data, &new));
    }

    #[test]
    fn different_keyrings_give_different_digests() {
        let (a, b) = (Keyring::generate(), Keyring::generate());
        assert_ne!(a.token_digest("t").digest, b.token_digest("t").digest);
        assert_ne!(a.blind_index("e").digest, b.blind_index("e").digest);
    }
}
