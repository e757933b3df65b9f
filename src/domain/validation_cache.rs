//! This node's memory of tokens and profiles already read from the database, forgotten as soon as they may be stale.
//!
//! A cached token is still judged on every use by its expiry and by the revocation rules, exactly
//! as one just read (`Sessions::liveness`). What the rules do not carry — a session ended or
//! changed, an account changed — is forgotten here: by this node in the same call that changed it,
//! and by every node from the invalidation log, which database triggers write whatever the writer
//! (a node, the admin CLI, an operator with psql), which PostgreSQL signals with LISTEN/NOTIFY, and
//! which is polled as the safety net (see `Revocations::spawn_sync`).
//!
//! A look-up can race an invalidation: it reads the database before the change commits and stores
//! what it read after this node has forgotten the session. So every entry remembers the epoch at
//! which its read began, every invalidation takes a newer epoch, and an entry older than an
//! invalidation of its session or account is never served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::store::TokenRecord;

/// The `[validation_cache]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Entries held at most: three quarters for tokens, a quarter for profiles. 0 turns caching off.
    pub max_entries: u64,
    /// Memory held at most, in bytes, as estimated per entry, split like `max_entries`.
    pub max_bytes: u64,
    /// How long an entry is served before it is read again, whatever else happens.
    pub ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { max_entries: 400_000, max_bytes: 128 * 1024 * 1024, ttl_secs: 300 }
    }
}

/// What may be stale: a session (ended, re-verified, released from enrolment) or an account (its
/// profile, factors, or the account itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Session(String),
    User(String),
}

/// When a read from the database began, in invalidation epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Stamped<T> {
    value: T,
    loaded_at: u64,
}

/// Facts about an account that plex.tv-style clients read with every user element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlexFacts {
    pub numeric_id: i64,
    pub two_factor: bool,
}

struct Inner {
    enabled: bool,
    tokens: Cache<Vec<u8>, Arc<Stamped<TokenRecord>>>,
    profiles: Cache<String, Arc<Stamped<super::profile::Profile>>>,
    plex_facts: Cache<String, Arc<Stamped<PlexFacts>>>,
    ended_sessions: Cache<String, u64>,
    changed_users: Cache<String, u64>,
    epoch: Arc<AtomicU64>,
    /// Entries read before this epoch are never served: raised when this node may have missed
    /// invalidations (a sync that failed, a keyring change, a tombstone pushed out by size).
    floor: Arc<AtomicU64>,
}

/// The validation cache. Cheap to clone; shared by every request of the node.
#[derive(Clone)]
pub struct ValidationCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ValidationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationCache")
            .field("tokens", &self.inner.tokens.entry_count())
            .field("profiles", &self.inner.profiles.entry_count())
            .finish_non_exhaustive()
    }
}

/// Tombstones must outlive every entry they may have to stop; a minute more than the entries'
/// own life covers a read that was slow to finish.
const TOMBSTONE_MARGIN: Duration = Duration::from_secs(60);
/// Tombstones held at most before the node forgets everything instead (see `floor`).
const MAX_TOMBSTONES: u64 = 4_000_000;

fn token_bytes(digest: &[u8], record: &TokenRecord) -> usize {
    let optional = |value: &Option<String>| value.as_ref().map_or(0, String::len);
    std::mem::size_of::<Stamped<TokenRecord>>()
        + 2 * digest.len()
        + record.digest_key_id.len()
        + record.kind.len()
        + record.session_id.len()
        + record.user_id.len()
        + record.device_id.len()
        + record.channel.len()
        + optional(&record.dpop_jkt)
        + optional(&record.client_id)
        + optional(&record.scope)
}

fn profile_bytes(user_id: &str, profile: &super::profile::Profile) -> usize {
    std::mem::size_of::<Stamped<super::profile::Profile>>()
        + 2 * user_id.len()
        + profile.username.len()
        + profile.email.len()
        + profile.pending_email.as_ref().map_or(0, String::len)
}

/// A cache bounded in bytes and, by giving each entry at least its share of the bytes, in entries.
fn bounded<K, V>(max_entries: u64, max_bytes: u64, ttl: Duration, weight: fn(&K, &V) -> usize) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let share = (max_bytes / max_entries.max(1)).max(1);
    let weigher = move |key: &K, value: &V| -> u32 {
        let bytes = (weight(key, value) as u64).max(share);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    };
    Cache::builder().max_capacity(max_bytes.max(1)).weigher(weigher).time_to_live(ttl).build()
}

impl ValidationCache {
    pub fn new(settings: CacheSettings) -> Self {
        let ttl = Duration::from_secs(settings.ttl_secs.max(1));
        let (entries, bytes) = (settings.max_entries, settings.max_bytes);
        let epoch = Arc::new(AtomicU64::new(1));
        let floor = Arc::new(AtomicU64::new(0));
        let tombstones = || {
            let (epoch, floor) = (epoch.clone(), floor.clone());
            Cache::builder()
                .max_capacity(MAX_TOMBSTONES)
                .time_to_live(ttl + TOMBSTONE_MARGIN)
                .eviction_listener(move |_key: Arc<String>, _at: u64, cause: RemovalCause| {
                    // A tombstone pushed out before its time could let a stale entry through.
                    if cause == RemovalCause::Size {
                        floor.fetch_max(epoch.load(Ordering::Acquire) + 1, Ordering::AcqRel);
                    }
                })
                .build()
        };
        let inner = Inner {
            enabled: entries > 0 && bytes > 0,
            tokens: bounded(
                entries * 3 / 4,
                bytes * 3 / 4,
                ttl,
                |digest: &Vec<u8>, entry: &Arc<Stamped<TokenRecord>>| token_bytes(digest, &entry.value),
            ),
            profiles: bounded(entries / 8, bytes / 8, ttl, |id: &String, entry: &Arc<Stamped<_>>| {
                profile_bytes(id, &entry.value)
            }),
            plex_facts: bounded(entries / 8, bytes / 8, ttl, |id: &String, _: &Arc<Stamped<PlexFacts>>| {
                std::mem::size_of::<Stamped<PlexFacts>>() + 2 * id.len()
            }),
            ended_sessions: tombstones(),
            changed_users: tombstones(),
            epoch,
            floor,
        };
        Self { inner: Arc::new(inner) }
    }

    /// A cache that holds nothing: every validation reads the database.
    pub fn disabled() -> Self {
        Self::new(CacheSettings { max_entries: 0, ..CacheSettings::default() })
    }

    /// Taken before reading what is to be remembered.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.epoch.load(Ordering::Acquire))
    }

    /// Whether what was read at `loaded_at` about this session and account is still true.
    fn is_current(&self, loaded_at: u64, session: Option<&str>, user: &str) -> bool {
        let inner = &self.inner;
        if loaded_at < inner.floor.load(Ordering::Acquire) {
            return false;
        }
        if loaded_at == inner.epoch.load(Ordering::Acquire) {
            return true;
        }
        let newer = |at: Option<u64>| at.is_some_and(|at| at > loaded_at);
        !(session.is_some_and(|s| newer(inner.ended_sessions.get(s))) || newer(inner.changed_users.get(user)))
    }

    /// A token found before under `digest`, if nothing about it may have changed since.
    pub fn token(&self, digest: &[u8]) -> Option<TokenRecord> {
        if !self.inner.enabled {
            return None;
        }
        let entry = self.inner.tokens.get(digest)?;
        if self.is_current(entry.loaded_at, Some(&entry.value.session_id), &entry.value.user_id) {
            return Some(entry.value.clone());
        }
        self.inner.tokens.invalidate(digest);
        None
    }

    /// Remembers a token read since `ticket`, unless its session or account changed meanwhile.
    pub fn remember_token(&self, ticket: Ticket, record: &TokenRecord) {
        if self.inner.enabled && self.is_current(ticket.0, Some(&record.session_id), &record.user_id) {
            let entry = Arc::new(Stamped { value: record.clone(), loaded_at: ticket.0 });
            self.inner.tokens.insert(record.digest.clone(), entry);
        }
    }

    pub fn profile(&self, user_id: &str) -> Option<super::profile::Profile> {
        self.by_user(&self.inner.profiles, user_id)
    }

    pub fn remember_profile(&self, ticket: Ticket, profile: &super::profile::Profile) {
        self.remember_by_user(&self.inner.profiles, ticket, &profile.id, profile);
    }

    pub fn plex_facts(&self, user_id: &str) -> Option<PlexFacts> {
        self.by_user(&self.inner.plex_facts, user_id)
    }

    pub fn remember_plex_facts(&self, ticket: Ticket, user_id: &str, facts: &PlexFacts) {
        self.remember_by_user(&self.inner.plex_facts, ticket, user_id, facts);
    }

    fn by_user<T: Clone + Send + Sync + 'static>(
        &self,
        cache: &Cache<String, Arc<Stamped<T>>>,
        user_id: &str,
    ) -> Option<T> {
        if !self.inner.enabled {
            return None;
        }
        let entry = cache.get(user_id)?;
        if self.is_current(entry.loaded_at, None, user_id) {
            return Some(entry.value.clone());
        }
        cache.invalidate(user_id);
        None
    }

    fn remember_by_user<T: Clone + Send + Sync + 'static>(
        &self,
        cache: &Cache<String, Arc<Stamped<T>>>,
        ticket: Ticket,
        user_id: &str,
        value: &T,
    ) {
        if self.inner.enabled && self.is_current(ticket.0, None, user_id) {
            cache.insert(user_id.to_owned(), Arc::new(Stamped { value: value.clone(), loaded_at: ticket.0 }));
        }
    }

    /// Stops serving anything cached about what changed, on this node, from now on.
    pub fn forget(&self, what: &Invalidation) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        match what {
            Invalidation::Session(id) => self.inner.ended_sessions.insert(id.clone(), epoch),
            Invalidation::User(id) => {
                self.inner.changed_users.insert(id.clone(), epoch);
                self.inner.profiles.invalidate(id);
                self.inner.plex_facts.invalidate(id);
            }
        }
    }

    pub fn forget_session(&self, session_id: &str) {
        self.forget(&Invalidation::Session(session_id.to_owned()));
    }

    pub fn forget_user(&self, user_id: &str) {
        self.forget(&Invalidation::User(user_id.to_owned()));
    }

    /// Stops serving anything cached before now: for when this node may have missed invalidations.
    pub fn forget_everything(&self) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.floor.fetch_max(epoch, Ordering::AcqRel);
        self.inner.tokens.invalidate_all();
        self.inner.profiles.invalidate_all();
        self.inner.plex_facts.invalidate_all();
    }

    /// Entries held now (approximate: the cache counts lazily), for metrics and benchmarks.
    pub fn entries(&self) -> u64 {
        self.inner.tokens.run_pending_tasks();
        self.inner.profiles.run_pending_tasks();
        self.inner.plex_facts.run_pending_tasks();
        self.inner.tokens.entry_count() + self.inner.profiles.entry_count() + self.inner.plex_facts.entry_count()
    }

    /// Bytes held now, as estimated.
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.tokens.weighted_size() + self.inner.profiles.weighted_size() + self.inner.plex_facts.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: u8, session: &str, user: &str) -> TokenRecord {
        TokenRecord {
            digest: vec![digest; 32],
            digest_key_id: "k1".into(),
            kind: "access".into(),
            session_id: session.into(),
            user_id: user.into(),
            device_id: "d1".into(),
            channel: "api".into(),
            issued_at: 1,
            expires_at: i64::MAX,
            rotated_at: None,
            session_revoked_at: None,
            dpop_jkt: None,
            verified_at: 0,
            verified_second_factor: 0,
            enrolment_only: 0,
            client_id: None,
            scope: None,
            auth_time: None,
            session_started_at: 1,
        }
    }

    #[test]
    fn a_remembered_token_is_served_until_its_session_or_account_is_forgotten() {
        let cache = ValidationCache::new(CacheSettings::default());
        for (forget, digest) in [(Invalidation::Session("s1".into()), 1), (Invalidation::User("u1".into()), 2)] {
            let ticket = cache.ticket();
            cache.remember_token(ticket, &record(digest, "s1", "u1"));
            assert!(cache.token(&[digest; 32]).is_some());
            cache.forget(&forget);
            assert!(cache.token(&[digest; 32]).is_none(), "{forget:?}");
        }
        let ticket = cache.ticket();
        cache.remember_token(ticket, &record(3, "s2", "u2"));
        cache.forget_session("s1");
        assert!(cache.token(&[3; 32]).is_some(), "others' tokens stay");
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_is_not_remembered() {
        let cache = ValidationCache::new(CacheSettings::default());
        let ticket = cache.ticket();
        cache.forget_session("s1");
        cache.remember_token(ticket, &record(1, "s1", "u1"));
        assert!(cache.token(&[1; 32]).is_none());
        let later = cache.ticket();
        cache.remember_token(later, &record(1, "s1", "u1"));
        assert!(cache.token(&[1; 32]).is_some(), "a read after the change is current");
    }

    #[test]
    fn forgetting_everything_stops_every_entry_and_every_read_in_flight() {
        let cache = ValidationCache::new(CacheSettings::default());
        let before = cache.ticket();
        cache.remember_token(before, &record(1, "s1", "u1"));
        cache.forget_everything();
        cache.remember_token(before, &record(2, "s2", "u2"));
        assert!(cache.token(&[1; 32]).is_none() && cache.token(&[2; 32]).is_none());
    }

    #[test]
    fn a_disabled_cache_remembers_nothing() {
        let cache = ValidationCache::disabled();
        cache.remember_token(cache.ticket(), &record(1, "s1", "u1"));
        assert!(cache.token(&[1; 32]).is_none());
    }

    #[test]
    fn the_cache_holds_no_more_entries_than_configured() {
        let cache = ValidationCache::new(CacheSettings { max_entries: 400, max_bytes: 1 << 30, ttl_secs: 60 });
        for i in 0..2_000u32 {
            let mut token = record(0, &format!("s{i}"), "u1");
            token.digest = i.to_be_bytes().repeat(8);
            cache.remember_token(cache.ticket(), &token);
        }
        cache.inner.tokens.run_pending_tasks();
        assert!(cache.inner.tokens.entry_count() <= 300, "{}", cache.inner.tokens.entry_count());
    }
}
