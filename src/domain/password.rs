//! Passwords: the NIST SP 800-63B policy, argon2id over a peppered input, and admission control around hashing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use super::error::{Error, Result};
use crate::keys::Keyring;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 256;

/// The 20,000 most common passwords from breach corpora (the list Django ships, BSD licence).
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../data/common-passwords.txt").lines().map(str::trim).collect());

/// NFKC-normalised password, so the same password typed on two keyboards hashes the same
/// (SP 800-63B §5.1.1.2). Wiped from memory when dropped.
pub fn normalise(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

/// Checks a new password: length only, no composition rules, not common, not the account's own name.
pub fn check_new(password: &str, username: &str, email: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(Error::PasswordTooShort(MIN_LEN));
    }
    if chars > MAX_LEN {
        return Err(Error::PasswordTooLong(MAX_LEN));
    }
    let lowered = password.to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default();
    if COMMON.contains(lowered.as_str())
        || lowered == username.to_lowercase()
        || lowered == email.to_lowercase()
        || (local_part.len() >= MIN_LEN && lowered == local_part)
    {
        return Err(Error::PasswordTooCommon);
    }
    Ok(())
}

/// Argon2id cost. The default is OWASP's minimum; nothing below it is accepted outside the test profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashCost {
    pub const FLOOR: HashCost = HashCost { memory_kib: 19_456, iterations: 2, parallelism: 1 };
    /// Deliberately weak; only ever chosen explicitly by tests and benchmarks of other paths.
    pub const INSECURE_TEST_ONLY: HashCost = HashCost { memory_kib: 64, iterations: 1, parallelism: 1 };

    pub fn is_below_floor(&self) -> bool {
        self.memory_kib < Self::FLOOR.memory_kib
            || self.iterations < Self::FLOOR.iterations
            || self.parallelism < Self::FLOOR.parallelism
    }

    fn params(&self) -> Result<Params> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::Internal(format!("invalid argon2 parameters: {e}")))
    }
}

impl Default for HashCost {
    fn default() -> Self {
        Self::FLOOR
    }
}

/// How many hashes may run at once and how many may wait; beyond that, sign-ins are told to retry.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_concurrent: usize,
    pub max_waiting: usize,
    pub retry_after_secs: u64,
}

/// A password hash as stored: the PHC string and the id of the pepper mixed into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHash {
    pub phc: String,
    pub pepper_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The hash was made with older parameters or an older pepper and should be replaced.
    pub outdated: bool,
}

/// Hashes and verifies passwords on blocking threads, admitting a bounded number at a time.
pub struct PasswordHasher {
    keyring: Arc<Keyring>,
    cost: HashCost,
    params: Params,
    admission: Admission,
    running: Semaphore,
    admitted: AtomicUsize,
    waiting: AtomicUsize,
    verifications: AtomicU64,
    /// Verified against when the account does not exist, so that costs the same time (P5).
    dummy: StoredHash,
}

impl PasswordHasher {
    pub fn new(keyring: Arc<Keyring>, cost: HashCost, admission: Admission) -> Result<Self> {
        let params = cost.params()?;
        let (pepper_id, pepper) = keyring.active_pepper();
        let random = SaltString::generate(&mut rand::rngs::OsRng);
        let dummy = StoredHash { phc: hash_blocking(&pepper, &params, random.as_str())?, pepper_id: pepper_id.clone() };
        Ok(Self {
            running: Semaphore::new(admission.max_concurrent.max(1)),
            keyring,
            cost,
            params,
            admission,
            admitted: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            verifications: AtomicU64::new(0),
            dummy,
        })
    }

    pub fn cost(&self) -> HashCost {
        self.cost
    }

    /// Hash computations waiting for a free slot right now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Password verifications performed so far, real or against the dummy hash.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Hashes a (normalised) password under the active pepper.
    pub async fn hash(&self, password: &str) -> Result<StoredHash> {
        let (stored_pepper_id, pepper) = self.keyring.active_pepper();
        let password = Zeroizing::new(password.to_owned());
        let params = self.params.clone();
        let phc = self.run(move || hash_blocking(&pepper, &params, &password)).await?;
        Ok(StoredHash { phc, pepper_id: stored_pepper_id })
    }

    /// Verifies a password against a stored hash, or against a dummy hash when there is no account.
    pub async fn verify(&self, stored: Option<&StoredHash>, password: &str) -> Result<Verification> {
        let known_pepper = stored.and_then(|s| self.keyring.pepper(&s.pepper_id).map(|p| (s, p)));
        let (target, pepper, real) = match known_pepper {
            Some((stored, pepper)) => (stored, pepper, true),
            None => {
                if let Some(stored) = stored {
                    tracing::warn!(pepper_id = %stored.pepper_id, "password hash made with a pepper that is no longer in the keyring");
                }
                (&self.dummy, self.keyring.active_pepper().1, false)
            }
        };
        let phc = target.phc.clone();
        let password = Zeroizing::new(password.to_owned());
        let matches = self.run(move || Ok(verify_blocking(&pepper, &phc, &password))).await?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let outdated =
            real && (target.pepper_id != self.keyring.active_pepper().0 || !self.has_current_params(&target.phc));
        Ok(Verification { matches: matches && real, outdated })
    }

    fn has_current_params(&self, phc: &str) -> bool {
        PasswordHash::new(phc)
            .ok()
            .filter(|h| h.algorithm == argon2::ARGON2ID_IDENT)
            .and_then(|h| Params::try_from(&h).ok())
            .is_some_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            })
    }

    /// Runs one hash computation if it can be admitted; refuses at once when the queue is full,
    /// so a flood of sign-ins degrades to quick 503s instead of unbounded latency and memory.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let capacity = self.admission.max_concurrent.max(1) + self.admission.max_waiting;
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= capacity {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded { retry_after_secs: self.admission.retry_after_secs });
        }
        let _admitted = Release(&self.admitted);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = permit.map_err(|_| Error::Internal("hash semaphore closed".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("hash task failed: {e}")))?
    }
}

struct Release<'a>(&'a AtomicUsize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn argon2id<'k>(pepper: &'k [u8], params: Params) -> Result<Argon2<'k>> {
    Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params)
        .map_err(|e| Error::Internal(format!("argon2 setup failed: {e}")))
}

fn hash_blocking(pepper: &[u8], params: &Params, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2id(pepper, params.clone())?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2 hashing failed: {e}")))
}

/// The PHC string carries its own parameters; the pepper is the part a stolen database lacks.
fn verify_blocking(pepper: &[u8], phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let Ok(argon) = argon2id(pepper, Params::default()) else { return false };
    argon.verify_password(password.as_bytes(), &parsed).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(ring: Arc<Keyring>) -> PasswordHasher {
        let admission = Admission { max_concurrent: 2, max_waiting: 2, retry_after_secs: 1 };
        PasswordHasher::new(ring, HashCost::INSECURE_TEST_ONLY, admission).unwrap()
    }

    #[test]
    fn the_policy_counts_characters_and_refuses_common_passwords() {
        assert!(matches!(check_new("short", "alice", "a@x.io"), Err(Error::PasswordTooShort(8))));
        assert!(matches!(check_new(&"é".repeat(257), "alice", "a@x.io"), Err(Error::PasswordTooLong(256))));
        assert!(matches!(check_new("Password1", "alice", "a@x.io"), Err(Error::PasswordTooCommon)));
        assert!(matches!(check_new("alice-the-great", "alice-the-great", "a@x.io"), Err(Error::PasswordTooCommon)));
        assert!(check_new("correct horse battery staple", "alice", "a@x.io").is_ok());
        assert!(check_new("ééééééé8", "alice", "a@x.io").is_ok(), "8 characters, more bytes");
    }

    #[test]
    fn the_common_list_holds_at_least_ten_thousand_passwords() {
        assert!(COMMON.len() >= 10_000);
    }

    #[tokio::test]
    async fn a_hash_verifies_only_with_its_pepper() {
        let ring = Arc::new(Keyring::generate());
        let stored = hasher(ring.clone()).hash("correct horse").await.unwrap();
        let ok = hasher(ring).verify(Some(&stored), "correct horse").await.unwrap();
        assert!(ok.matches && !ok.outdated);
        let other = hasher(Arc::new(Keyring::generate()));
        assert!(!other.verify(Some(&stored), "correct horse").await.unwrap().matches);
        assert!(!verify_blocking(b"", &stored.phc, "correct horse"), "verified without the pepper");
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_are_outdated() {
        let ring = Arc::new(Keyring::generate());
        let (pepper_id, pepper) = ring.active_pepper();
        let weaker = Params::new(32, 1, 1, None).unwrap();
        let stored = StoredHash { phc: hash_blocking(&pepper, &weaker, "pw-12345678").unwrap(), pepper_id };
        let v = hasher(ring).verify(Some(&stored), "pw-12345678").await.unwrap();
        assert!(v.matches && v.outdated);
    }

    #[tokio::test]
    async fn no_account_never_matches() {
        let v = hasher(Arc::new(Keyring::generate())).verify(None, "anything").await.unwrap();
        assert!(!v.matches);
    }
}
