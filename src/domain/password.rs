//! Passwords: the NIST SP 800-63B policy, argon2id over a peppered input, and admission control around hashing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
/// Length is counted on the normalised form that is hashed (U+FDFA is one character typed and
/// eighteen hashed), so both bounds hold for what is stored.
pub fn check_new(password: &str, username: &str, email: &str) -> Result<()> {
    let normalised = normalise(password);
    let password = normalised.as_str();
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
    memory: Arc<WorkingMemory>,
}

impl PasswordHasher {
    pub fn new(keyring: Arc<Keyring>, cost: HashCost, admission: Admission) -> Result<Self> {
        let params = cost.params()?;
        let (pepper_id, pepper) = keyring.active_pepper();
        let random = SaltString::generate(&mut rand::rngs::OsRng);
        let memory = Arc::new(WorkingMemory::default());
        let mut blocks = memory.take(params.block_count());
        let dummy = StoredHash {
            phc: hash_blocking(&pepper, &params, random.as_str(), &mut blocks)?,
            pepper_id: pepper_id.clone(),
        };
        memory.put(blocks, admission.max_concurrent.max(1));
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
            memory,
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
        let blocks = params.block_count();
        let phc = self.run(blocks, move |memory| hash_blocking(&pepper, &params, &password, memory)).await?;
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
        let blocks = blocks_of(&phc, &self.params);
        let matches = self.run(blocks, move |memory| Ok(verify_blocking(&pepper, &phc, &password, memory))).await?;
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
    /// The work gets working memory of at least `blocks` argon2 blocks, reused across hashes.
    async fn run<T: Send + 'static>(
        &self,
        blocks: usize,
        work: impl FnOnce(&mut [Block]) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let capacity = self.admission.max_concurrent.max(1) + self.admission.max_waiting;
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= capacity {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            super::outages::overloaded();
            return Err(Error::Overloaded { retry_after_secs: self.admission.retry_after_secs });
        }
        let _admitted = Release(&self.admitted);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = permit.map_err(|_| Error::Internal("hash semaphore closed".into()))?;
        let memory = self.memory.clone();
        let keep = self.admission.max_concurrent.max(1);
        tokio::task::spawn_blocking(move || {
            let mut blocks = memory.take(blocks);
            let result = work(&mut blocks);
            memory.put(blocks, keep);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("hash task failed: {e}")))?
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

/// argon2's working memory (`memory_kib` per hash), kept between hashes instead of allocated for
/// each: at most one array per hashing slot ever exists. Allocated per hash on whichever blocking
/// thread ran it, the arrays stayed in each thread's allocator arena, and a sign-in flood grew the
/// process by hundreds of megabytes that were never returned.
#[derive(Default)]
struct WorkingMemory(std::sync::Mutex<Vec<Vec<Block>>>);

impl WorkingMemory {
    /// An array of at least `blocks` blocks, for one hash; give it back with `put`.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let spare = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut memory = spare.unwrap_or_default();
        if memory.len() < blocks {
            // A stored hash with a larger cost than the current one (the cost was lowered).
            memory.resize(blocks, Block::default());
        }
        memory
    }

    fn put(&self, memory: Vec<Block>, keep: usize) {
        let mut spares = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if spares.len() < keep {
            spares.push(memory);
        }
    }
}

/// One argon2id computation into reused memory: the raw output for `salt`.
fn compute(
    pepper: &[u8],
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut [Block],
) -> Result<()> {
    argon2id(pepper, params.clone())?
        .hash_password_into_with_memory(password, salt, out, memory)
        .map_err(|e| Error::Internal(format!("argon2 hashing failed: {e}")))
}

fn hash_blocking(pepper: &[u8], params: &Params, password: &str, memory: &mut [Block]) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| Error::Internal(format!("salt: {e}")))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(pepper, params, password.as_bytes(), salt_bytes, &mut out, memory)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| Error::Internal(format!("argon2 params: {e}")))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| Error::Internal(format!("argon2 output: {e}")))?),
    };
    Ok(phc.to_string())
}

/// The PHC string carries its own parameters; the pepper is the part a stolen database lacks.
fn verify_blocking(pepper: &[u8], phc: &str, password: &str, memory: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version.is_some_and(|v| v != u32::from(Version::V0x13))
    {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    if compute(pepper, &params, password.as_bytes(), salt_bytes, &mut out, memory).is_err() {
        return false;
    }
    bool::from(subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes()))
}

/// How many argon2 blocks (1 KiB each) a stored hash needs; the current cost when it cannot be read.
fn blocks_of(phc: &str, current: &Params) -> usize {
    PasswordHash::new(phc)
        .ok()
        .and_then(|parsed| Params::try_from(&parsed).ok())
        .unwrap_or_else(|| current.clone())
        .block_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(ring: Arc<Keyring>) -> PasswordHasher {
        let admission = Admission { max_concurrent: 2, max_waiting: 2, retry_after_secs: 1 };
        PasswordHasher::new(ring, HashCost::INSECURE_TEST_ONLY, admission).unwrap()
    }

    #[test]
    fn hashes_in_reused_memory_are_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let pepper = b"pepper-pepper-pepper-pepper-32by";
        let params = HashCost::INSECURE_TEST_ONLY.params().unwrap();
        let memory = WorkingMemory::default();
        let mut blocks = memory.take(params.block_count());
        let ours = hash_blocking(pepper, &params, "open sesame", &mut blocks).unwrap();
        let argon = argon2id(pepper, params.clone()).unwrap();
        assert!(argon.verify_password(b"open sesame", &PasswordHash::new(&ours).unwrap()).is_ok());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = argon.hash_password(b"open sesame", &salt).unwrap().to_string();
        // The same array serves the next hash, and hashes with another cost.
        assert!(verify_blocking(pepper, &theirs, "open sesame", &mut blocks));
        assert!(!verify_blocking(pepper, &theirs, "open sesamE", &mut blocks));
        assert!(!verify_blocking(b"another-pepper-another-pepper-32", &theirs, "open sesame", &mut blocks));
        let costlier = Params::new(128, 1, 1, None).unwrap();
        let bigger = argon2id(pepper, costlier.clone()).unwrap().hash_password(b"x y z", &salt).unwrap().to_string();
        memory.put(blocks, 1);
        let mut grown = memory.take(blocks_of(&bigger, &params));
        assert_eq!(grown.len(), costlier.block_count(), "the kept array grows for a costlier stored hash");
        assert!(verify_blocking(pepper, &bigger, "x y z", &mut grown));
        memory.put(grown, 1);
        memory.put(vec![Block::default()], 1);
        assert_eq!(memory.0.lock().unwrap().len(), 1, "no more arrays kept than hashing slots");
    }

    #[test]
    fn the_policy_counts_characters_and_refuses_common_passwords() {
        assert!(matches!(check_new("short", "alice", "a@x.io"), Err(Error::PasswordTooShort(8))));
        assert!(matches!(check_new(&"é".repeat(257), "alice", "a@x.io"), Err(Error::PasswordTooLong(256))));
        // U+FDFA is one character as typed and eighteen once normalised (NFKC), as it is hashed.
        let ligature = "\u{FDFA}";
        assert_eq!(normalise(ligature).chars().count(), 18);
        assert!(check_new(&ligature.repeat(7), "alice", "a@x.io").is_ok(), "126 characters as hashed");
        assert!(matches!(check_new(&ligature.repeat(15), "alice", "a@x.io"), Err(Error::PasswordTooLong(256))));
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
        let mut memory =
            vec![Block::default(); blocks_of(&stored.phc, &HashCost::INSECURE_TEST_ONLY.params().unwrap())];
        assert!(!verify_blocking(b"", &stored.phc, "correct horse", &mut memory), "verified without the pepper");
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_are_outdated() {
        let ring = Arc::new(Keyring::generate());
        let (pepper_id, pepper) = ring.active_pepper();
        let weaker = Params::new(32, 1, 1, None).unwrap();
        let mut memory = vec![Block::default(); weaker.block_count()];
        let stored =
            StoredHash { phc: hash_blocking(&pepper, &weaker, "pw-12345678", &mut memory).unwrap(), pepper_id };
        let v = hasher(ring).verify(Some(&stored), "pw-12345678").await.unwrap();
        assert!(v.matches && v.outdated);
    }

    #[tokio::test]
    async fn no_account_never_matches() {
        let v = hasher(Arc::new(Keyring::generate())).verify(None, "anything").await.unwrap();
        assert!(!v.matches);
    }
}
