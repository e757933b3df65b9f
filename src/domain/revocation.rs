//! Revocation rules: one row kills every token in a scope issued up to an instant, checked from memory.
//!
//! Killing a set of credentials never touches the tokens themselves (P3): a rule says "every token of
//! this user / device / channel / the whole system, issued at or before T, is dead". Each node keeps
//! every rule in memory and checks it at each validation; rules arrive from other nodes by
//! notification and by polling, and a full reload now and then repairs anything missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::audit::{kind, Actor, AuditLog};
use super::error::Result;
use super::validation_cache::{Invalidation, ValidationCache};
use crate::clock::Clock;
use crate::store::{DynStore, InvalidationRecord, NewAuditEvent, NewRule, RuleRecord};

/// What a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every token.
    Global,
    /// Every token of one channel: `web`, `device`, `api`, or an OAuth client's id.
    Channel(String),
    /// Every token of one account.
    User(String),
    /// Every token of one device.
    Device(String),
    /// Every token of one account in one channel (a breach response for listed accounts that
    /// leaked through one channel).
    UserChannel { user: String, channel: String },
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Channel(_) => "channel",
            Self::User(_) => "user",
            Self::Device(_) => "device",
            Self::UserChannel { .. } => "user_channel",
        }
    }

    /// The stored value; a user-channel pair is `USER/CHANNEL` (account ids never hold a `/`).
    pub fn value(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Global => "".into(),
            Self::Channel(v) | Self::User(v) | Self::Device(v) => v.as_str().into(),
            Self::UserChannel { user, channel } => format!("{user}/{channel}").into(),
        }
    }

    /// The account a rule is about, if it is about one.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::User(user) | Self::UserChannel { user, .. } => Some(user),
            _ => None,
        }
    }

    pub fn from_parts(kind: &str, value: &str) -> Option<Self> {
        Some(match kind {
            "global" => Self::Global,
            "channel" => Self::Channel(value.to_owned()),
            "user" => Self::User(value.to_owned()),
            "device" => Self::Device(value.to_owned()),
            "user_channel" => {
                let (user, channel) = value.split_once('/')?;
                Self::UserChannel { user: user.to_owned(), channel: channel.to_owned() }
            }
            _ => return None,
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => f.write_str("every token"),
            Self::Channel(c) => write!(f, "channel {c}"),
            Self::User(u) => write!(f, "user {u}"),
            Self::Device(d) => write!(f, "device {d}"),
            Self::UserChannel { user, channel } => write!(f, "channel {channel} of user {user}"),
        }
    }
}

/// One revocation: tokens in `scope` issued at or before `not_before` are dead, except those of
/// `except_session` (the session that asked to sign out everywhere else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub scope: Scope,
    pub not_before: i64,
    pub except_session: Option<String>,
    /// Whether a client that proves possession of its session's DPoP key may obtain new tokens
    /// without a password: true for leak responses (the token was seen, the key was not), false for
    /// deliberate sign-outs.
    pub recoverable: bool,
}

/// The facts of a presented token that rules are matched against.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub issued_at: i64,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub channel: &'a str,
    pub session_id: &'a str,
}

/// Why a token is dead, as far as revocation rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// A DPoP-bound client of this session may recover silently.
    pub recoverable: bool,
}

/// The latest cut-off per scope; only the strongest rule of each scope matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cutoff {
    not_before: i64,
    recoverable: bool,
}

#[derive(Debug, Default)]
struct Rules {
    global: Option<Cutoff>,
    by_scope: HashMap<Scope, Cutoff>,
    /// Cut-offs that spare one session, by scope: session spared → cut-off.
    sparing: HashMap<Scope, HashMap<String, Cutoff>>,
}

fn strongest(current: Option<Cutoff>, rule: &Rule) -> Cutoff {
    let new = Cutoff { not_before: rule.not_before, recoverable: rule.recoverable };
    match current {
        // A later cut-off wins; at the same instant a final revocation beats a recoverable one.
        Some(old) if old.not_before > new.not_before => old,
        Some(old) if old.not_before == new.not_before => {
            Cutoff { not_before: old.not_before, recoverable: old.recoverable && new.recoverable }
        }
        _ => new,
    }
}

impl Rules {
    fn apply(&mut self, rule: &Rule) {
        match (&rule.scope, &rule.except_session) {
            (Scope::Global, None) => self.global = Some(strongest(self.global, rule)),
            (scope, None) => {
                let cut = strongest(self.by_scope.get(scope).copied(), rule);
                self.by_scope.insert(scope.clone(), cut);
            }
            (scope, Some(session)) => {
                let spared = self.sparing.entry(scope.clone()).or_default();
                let cut = strongest(spared.get(session).copied(), rule);
                spared.insert(session.clone(), cut);
            }
        }
    }

    fn check(&self, token: &TokenFacts<'_>) -> Option<Revoked> {
        let hits = |cut: &Cutoff| token.issued_at <= cut.not_before;
        let mut verdict: Option<Revoked> = None;
        let mut consider = |cut: Cutoff| {
            if hits(&cut) {
                let recoverable = verdict.map_or(cut.recoverable, |v| v.recoverable && cut.recoverable);
                verdict = Some(Revoked { recoverable });
            }
        };
        let scopes = [
            Scope::Channel(token.channel.to_owned()),
            Scope::User(token.user_id.to_owned()),
            Scope::Device(token.device_id.to_owned()),
            Scope::UserChannel { user: token.user_id.to_owned(), channel: token.channel.to_owned() },
        ];
        if let Some(cut) = self.global {
            consider(cut);
        }
        for scope in &scopes {
            if let Some(cut) = self.by_scope.get(scope) {
                consider(*cut);
            }
        }
        // Rules that spare a session apply to every *other* session of their scope.
        for scope in scopes.iter().chain(std::iter::once(&Scope::Global)) {
            for (spared, cut) in self.sparing.get(scope).into_iter().flatten() {
                if spared != token.session_id {
                    consider(*cut);
                }
            }
        }
        verdict
    }
}

/// The rules every validation on this node consults. Cheap to clone; shared by all requests.
#[derive(Debug, Clone, Default)]
pub struct RevocationCache {
    rules: Arc<RwLock<Rules>>,
}

impl RevocationCache {
    pub fn apply(&self, rules: &[Rule]) {
        let mut guard = self.rules.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for rule in rules {
            guard.apply(rule);
        }
    }

    /// Replaces every rule, as after a full reload from the database.
    pub fn replace(&self, rules: &[Rule]) {
        let mut fresh = Rules::default();
        for rule in rules {
            fresh.apply(rule);
        }
        *self.rules.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
    }

    pub fn check(&self, token: &TokenFacts<'_>) -> Option<Revoked> {
        self.rules.read().unwrap_or_else(|poisoned| poisoned.into_inner()).check(token)
    }

    /// How many distinct cut-offs are held.
    pub fn len(&self) -> usize {
        let rules = self.rules.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        usize::from(rules.global.is_some())
            + rules.by_scope.len()
            + rules.sparing.values().map(HashMap::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How far back each incremental sync re-reads, so a rule committed out of sequence order (possible
/// on PostgreSQL under concurrent writers) is still picked up; full reloads cover anything older.
const RESYNC_OVERLAP: i64 = 64;

/// A revocation to make.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub scope: Scope,
    /// Tokens issued at or before this instant die; `None` means now.
    pub issued_before: Option<i64>,
    pub except_session: Option<String>,
    pub recoverable: bool,
    pub reason: String,
    pub actor: Actor,
    pub address: Option<String>,
}

impl Revocation {
    /// Every token of one account, now, with no silent recovery: what disabling, deleting and an
    /// incident's sign-out do.
    pub fn whole_account(user_id: &str, reason: &str, actor: &Actor) -> Self {
        Self {
            scope: Scope::User(user_id.to_owned()),
            issued_before: None,
            except_session: None,
            recoverable: false,
            reason: reason.to_owned(),
            actor: actor.clone(),
            address: None,
        }
    }
}

/// How far back (by the database's clock) each read of the invalidation log reaches past the newest
/// entry seen: on PostgreSQL an entry can commit after one with a higher sequence number.
const INVALIDATION_OVERLAP_MS: i64 = 2_000;

/// Where this node is in the invalidation log.
#[derive(Debug, Default)]
struct InvalidationCursor {
    last_seq: i64,
    last_at: i64,
    /// Entries within the overlap already applied (sequence number → time), so a re-read does not
    /// forget them again.
    seen: HashMap<i64, i64>,
}

/// How current this node's view of the rules is: a node cut off from the database cannot learn of
/// new rules, so past a limit it must stop trusting what it holds (P3: a revocation reaches every
/// node within a second, or that node refuses to answer).
#[derive(Debug)]
struct Currency {
    started: Instant,
    /// Milliseconds after `started` at which the last successful read of the rules began.
    synced_at_ms: AtomicU64,
    /// 0 until the node keeps its view current (`spawn_sync`); the operator's commands never do.
    limit_ms: AtomicU64,
}

impl Default for Currency {
    fn default() -> Self {
        Self { started: Instant::now(), synced_at_ms: AtomicU64::new(0), limit_ms: AtomicU64::new(0) }
    }
}

impl Currency {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long ago the rules were last known current, if that is past the limit.
    fn staleness(&self) -> Option<Duration> {
        let limit = self.limit_ms.load(Ordering::Relaxed);
        let age = self.now_ms().saturating_sub(self.synced_at_ms.load(Ordering::Acquire));
        (limit > 0 && age > limit).then(|| Duration::from_millis(age))
    }
}

/// Writes revocation rules and keeps this node's view of dead tokens current: the rules, and what
/// its validation cache must forget.
#[derive(Clone)]
pub struct Revocations {
    clock: Clock,
    store: DynStore,
    audit: AuditLog,
    cache: RevocationCache,
    last_seq: Arc<AtomicI64>,
    validations: ValidationCache,
    cursor: Arc<Mutex<InvalidationCursor>>,
    currency: Arc<Currency>,
}

impl Revocations {
    pub fn new(store: DynStore, audit: AuditLog, validations: ValidationCache, clock: Clock) -> Self {
        Self {
            clock,
            store,
            audit,
            cache: RevocationCache::default(),
            last_seq: Arc::new(AtomicI64::new(0)),
            validations,
            cursor: Arc::default(),
            currency: Arc::default(),
        }
    }

    /// Whether this node's rules are current enough to validate tokens from memory.
    pub fn is_current(&self) -> bool {
        self.currency.staleness().is_none()
    }

    /// Refuses to vouch for any token while the rules may have missed a revocation.
    pub fn ensure_current(&self) -> Result<()> {
        match self.currency.staleness() {
            None => Ok(()),
            Some(stale_for) => {
                super::outages::revocations_stale(stale_for);
                Err(super::Error::DatabaseUnavailable)
            }
        }
    }

    pub fn cache(&self) -> &RevocationCache {
        &self.cache
    }

    /// The node's cache of validated tokens and profiles, which this keeps current.
    pub fn validations(&self) -> &ValidationCache {
        &self.validations
    }

    /// Writes one rule (one row, plus its audit event) and enforces it on this node at once.
    pub async fn revoke(&self, revocation: Revocation) -> Result<Rule> {
        let (rule, stored, event) = self.prepare(revocation);
        self.store.add_revocation_rule(&stored, &event, &self.audit).await?;
        self.enforce_locally(&rule);
        Ok(rule)
    }

    /// The rule, its stored form and its audit event, for writers that add more to the transaction.
    pub(crate) fn prepare(&self, revocation: Revocation) -> (Rule, NewRule, NewAuditEvent) {
        let now = self.clock.now_ms();
        let rule = Rule {
            scope: revocation.scope,
            not_before: revocation.issued_before.unwrap_or(now),
            except_session: revocation.except_session,
            recoverable: revocation.recoverable,
        };
        let stored = NewRule {
            scope_kind: rule.scope.kind().to_owned(),
            scope_value: rule.scope.value().into_owned(),
            except_session: rule.except_session.clone(),
            not_before: rule.not_before,
            recoverable: rule.recoverable,
            reason: revocation.reason.clone(),
            actor: revocation.actor.to_string(),
            created_at: now,
        };
        let user_id = rule.scope.user();
        let details = serde_json::json!({
            "scope": rule.scope.kind(),
            "value": rule.scope.value(),
            "issued_before": crate::clock::rfc3339(rule.not_before),
            "except_session": rule.except_session,
            "recoverable": rule.recoverable,
            "reason": revocation.reason,
        });
        let event =
            AuditLog::event(kind::REVOCATION, &revocation.actor, user_id, revocation.address.as_deref(), details);
        (rule, stored, event)
    }

    pub(crate) fn enforce_locally(&self, rule: &Rule) {
        self.cache.apply(std::slice::from_ref(rule));
        tracing::info!(scope = %rule.scope, not_before = rule.not_before, recoverable = rule.recoverable, "revocation rule enforced");
    }

    pub fn check(&self, token: &TokenFacts<'_>) -> Option<Revoked> {
        self.cache.check(token)
    }

    /// Fetches rules added since the last sync (by any node or the admin CLI), and forgets what
    /// the invalidation log names since then.
    pub async fn sync(&self) -> Result<usize> {
        let began = self.currency.now_ms();
        let from = (self.last_seq.load(Ordering::Acquire) - RESYNC_OVERLAP).max(0);
        let records = self.store.revocation_rules_after(from).await?;
        let rules: Vec<Rule> = records.iter().filter_map(rule_of).collect();
        self.cache.apply(&rules);
        if let Some(last) = records.last() {
            self.last_seq.fetch_max(last.seq, Ordering::AcqRel);
        }
        self.sync_invalidations().await?;
        self.currency.synced_at_ms.fetch_max(began, Ordering::AcqRel);
        Ok(rules.len())
    }

    /// Reads the invalidation log past this node's cursor and forgets what it names.
    async fn sync_invalidations(&self) -> Result<usize> {
        let (seq, at) = {
            let cursor = self.cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (cursor.last_seq, cursor.last_at - INVALIDATION_OVERLAP_MS)
        };
        let records = self.store.invalidations_after(seq, at).await?;
        let mut cursor = self.cursor.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut applied = 0;
        for record in &records {
            if cursor.seen.insert(record.seq, record.at).is_some() {
                continue;
            }
            cursor.last_seq = cursor.last_seq.max(record.seq);
            cursor.last_at = cursor.last_at.max(record.at);
            if let Some(what) = invalidation_of(record) {
                self.validations.forget(&what);
                applied += 1;
            }
        }
        let horizon = cursor.last_at - INVALIDATION_OVERLAP_MS;
        cursor.seen.retain(|_, at| *at >= horizon);
        Ok(applied)
    }

    /// Rebuilds the cache from every stored rule.
    pub async fn reload(&self) -> Result<()> {
        let began = self.currency.now_ms();
        let records = self.store.revocation_rules_after(0).await?;
        let rules: Vec<Rule> = records.iter().filter_map(rule_of).collect();
        self.cache.replace(&rules);
        if let Some(last) = records.last() {
            self.last_seq.fetch_max(last.seq, Ordering::AcqRel);
        }
        self.sync_invalidations().await?;
        self.currency.synced_at_ms.fetch_max(began, Ordering::AcqRel);
        Ok(())
    }

    /// Keeps the cache current: at once when the store signals a new rule, every `poll` otherwise,
    /// and with a full reload every `reload_every`, so a missed signal cannot keep a token alive.
    /// From then on, a node whose last successful sync began more than `staleness_limit` ago
    /// validates no token (`Error::DatabaseUnavailable`) until a sync succeeds; zero turns that off.
    pub fn spawn_sync(&self, poll: Duration, reload_every: Duration, staleness_limit: Duration) -> Vec<JoinHandle<()>> {
        let limit_ms = u64::try_from(staleness_limit.as_millis()).unwrap_or(u64::MAX);
        self.currency.limit_ms.store(limit_ms, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let mut tasks: Vec<JoinHandle<()>> = self.store.watch_revocations(wake.clone()).into_iter().collect();
        let this = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut last_reload = tokio::time::Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
                let result = if last_reload.elapsed() >= reload_every {
                    last_reload = tokio::time::Instant::now();
                    this.reload().await
                } else {
                    this.sync().await.map(|_| ())
                };
                match result {
                    Err(err) => {
                        if !failing {
                            tracing::warn!(error = %err, "revocation sync failed; retrying");
                        }
                        failing = true;
                    }
                    // What was forgotten elsewhere meanwhile may be past the log's overlap.
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("revocation sync works again");
                        this.validations.forget_everything();
                    }
                    Ok(()) => {}
                }
            }
        }));
        tasks
    }
}

fn invalidation_of(record: &InvalidationRecord) -> Option<Invalidation> {
    match record.kind.as_str() {
        "session" => Some(Invalidation::Session(record.id.clone())),
        "user" => Some(Invalidation::User(record.id.clone())),
        other => {
            tracing::error!(seq = record.seq, kind = other, "unknown invalidation ignored");
            None
        }
    }
}

fn rule_of(record: &RuleRecord) -> Option<Rule> {
    let scope = Scope::from_parts(&record.scope_kind, &record.scope_value);
    if scope.is_none() {
        tracing::error!(seq = record.seq, kind = %record.scope_kind, "unknown revocation scope ignored");
    }
    Some(Rule {
        scope: scope?,
        not_before: record.not_before,
        except_session: record.except_session.clone(),
        recoverable: record.recoverable != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(issued_at: i64, session: &'static str) -> TokenFacts<'static> {
        TokenFacts { issued_at, user_id: "u1", device_id: "d1", channel: "web", session_id: session }
    }

    fn rule(scope: Scope, not_before: i64) -> Rule {
        Rule { scope, not_before, except_session: None, recoverable: false }
    }

    #[test]
    fn a_rule_kills_tokens_issued_up_to_its_instant_and_spares_later_ones() {
        let cache = RevocationCache::default();
        cache.apply(&[rule(Scope::Channel("web".into()), 100)]);
        assert!(cache.check(&token(100, "s")).is_some());
        assert!(cache.check(&token(101, "s")).is_none());
        let device_token = TokenFacts { channel: "device", ..token(50, "s") };
        assert!(cache.check(&device_token).is_none(), "another channel is untouched");
    }

    #[test]
    fn every_scope_matches_its_own_tokens() {
        let user_web = Scope::UserChannel { user: "u1".into(), channel: "web".into() };
        for scope in [
            Scope::Global,
            Scope::User("u1".into()),
            Scope::Device("d1".into()),
            Scope::Channel("web".into()),
            user_web,
        ] {
            let cache = RevocationCache::default();
            cache.apply(&[rule(scope.clone(), 10)]);
            assert!(cache.check(&token(5, "s")).is_some(), "{scope}");
            let stranger = TokenFacts { user_id: "u2", device_id: "d2", channel: "api", ..token(5, "s") };
            assert_eq!(cache.check(&stranger).is_some(), scope == Scope::Global, "{scope}");
        }
    }

    #[test]
    fn a_user_channel_rule_spares_the_account_elsewhere_and_others_there() {
        let scope = Scope::UserChannel { user: "u1".into(), channel: "device".into() };
        assert_eq!(Scope::from_parts(scope.kind(), &scope.value()), Some(scope.clone()), "stored and read back");
        let cache = RevocationCache::default();
        cache.apply(&[rule(scope, 10)]);
        assert!(cache.check(&TokenFacts { channel: "device", ..token(5, "s") }).is_some());
        assert!(cache.check(&token(5, "s")).is_none(), "the account's web tokens live");
        assert!(cache.check(&TokenFacts { channel: "device", user_id: "u2", ..token(5, "s") }).is_none());
        assert_eq!(Scope::from_parts("user_channel", "no-separator"), None);
    }

    #[test]
    fn a_sparing_rule_keeps_only_the_named_session() {
        let cache = RevocationCache::default();
        cache.apply(&[Rule { except_session: Some("keep".into()), ..rule(Scope::User("u1".into()), 10) }]);
        assert!(cache.check(&token(5, "keep")).is_none());
        assert!(cache.check(&token(5, "other")).is_some());
    }

    #[test]
    fn a_final_revocation_outranks_a_recoverable_one() {
        let cache = RevocationCache::default();
        cache.apply(&[Rule { recoverable: true, ..rule(Scope::Channel("web".into()), 10) }]);
        assert_eq!(cache.check(&token(5, "s")), Some(Revoked { recoverable: true }));
        cache.apply(&[rule(Scope::User("u1".into()), 7)]);
        assert_eq!(cache.check(&token(5, "s")), Some(Revoked { recoverable: false }));
        assert_eq!(cache.check(&token(8, "s")), Some(Revoked { recoverable: true }));
    }

    #[test]
    fn replacing_forgets_rules_that_are_gone() {
        let cache = RevocationCache::default();
        cache.apply(&[rule(Scope::Global, 10)]);
        cache.replace(&[]);
        assert!(cache.check(&token(5, "s")).is_none() && cache.is_empty());
    }
}
