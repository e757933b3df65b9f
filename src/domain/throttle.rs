//! Throttling of guessable secrets: failure counters per account, source address and known device,
//! shared by every node through the database, with exponential back-off.
//!
//! A counter allows a few free failures; from then on every failure blocks its key for twice as
//! long as the one before, up to `max_delay_secs`. A blocked key answers `rate_limited` with the
//! seconds to wait, without looking at the secret, so guessing costs the attacker time and us
//! nothing. Every attempt is counted *before* its secret is checked (an [`Attempt`]), so parallel
//! guesses cannot all slip past a counter that has not been written yet. An account's lock is
//! soft: its owner signing in from a device the account already knows (by the device token only
//! that device was given, see `known_devices`) is counted on that device alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::{kind, Actor, AuditLog};
use super::error::{Error, Result};
use crate::clock::Clock;
use crate::keys::Keyring;
use crate::store::{ThrottleStep, ThrottleStore};

/// What is being guessed; each has its own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Passwords at sign-in (API, pages, plex.tv-style clients).
    SignIn,
    /// Second-factor codes after a password or provider.
    SecondFactor,
    /// Password-reset requests.
    PasswordReset,
    /// Codes typed on `/link` (device codes and PINs).
    LinkCode,
    /// Polls for PINs that do not exist or belong to another device.
    PinPoll,
    /// Trips to an upstream sign-in provider (each writes a row).
    SsoStart,
    /// PINs asked for by plex.tv-style devices (each writes a row; no account yet).
    PinCreation,
    /// Device authorization requests (RFC 8628; each writes a row).
    DeviceAuthorization,
    /// Passkey sign-in challenges (each writes a ceremony row).
    PasskeyChallenge,
    /// "Sign out of all devices" (each writes a revocation rule and mails the owner).
    SignOutEverywhere,
    /// Verification links mailed again on request.
    VerificationMail,
    /// Media server claim tokens made by an account (each writes a row).
    ClaimCreation,
    /// Claim tokens presented for exchange (guesses, when wrong).
    ClaimExchange,
    /// Accounts created (each writes rows and sends a mail), per source address.
    SignUp,
    /// Copies of an account's data downloaded (each reads a lot and sends a mail), per account.
    DataExport,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Self::SignIn => "signin",
            Self::SecondFactor => "mfa",
            Self::PasswordReset => "reset",
            Self::LinkCode => "link",
            Self::PinPoll => "pin",
            Self::SsoStart => "sso",
            Self::PinCreation => "pin_create",
            Self::DeviceAuthorization => "device_authorization",
            Self::PasskeyChallenge => "passkey_challenge",
            Self::SignOutEverywhere => "signout_all",
            Self::VerificationMail => "verify_mail",
            Self::ClaimCreation => "claim_create",
            Self::ClaimExchange => "claim",
            Self::SignUp => "signup",
            Self::DataExport => "data_export",
        }
    }

    /// Whether what is counted is a thing made for the asker rather than a guess: such counters
    /// have their own, larger, free allowance.
    fn creates(self) -> bool {
        matches!(
            self,
            Self::PinCreation
                | Self::DeviceAuthorization
                | Self::PasskeyChallenge
                | Self::SignOutEverywhere
                | Self::VerificationMail
                | Self::ClaimCreation
                | Self::SignUp
                | Self::DataExport
        )
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An existing account, by id.
    Account(&'a str),
    /// A login name that matches no account: counted like an account, so a lock says nothing
    /// about whether the account exists.
    Login(&'a str),
    /// A source address.
    Address(&'a str),
    /// A device the account already knows, by device id.
    Device(&'a str),
    /// A client's own name for itself (`X-Plex-Client-Identifier`): no secret, so it only ever
    /// adds a counter, never replaces the address's.
    Client(&'a str),
}

/// The counters a guess at one account's secret counts on: the source address's and the account's.
pub fn against_account<'a>(user_id: &'a str, address: Option<&'a str>) -> Vec<Subject<'a>> {
    address.map(Subject::Address).into_iter().chain([Subject::Account(user_id)]).collect()
}

/// The limits. Per account (and per login name or known device) and per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Off only for load tests: every guess is then evaluated.
    pub enabled: bool,
    /// Failures an account, login name or known device may have before back-off starts.
    pub account_free_failures: i64,
    /// Failures one source address may have (across accounts) before back-off starts.
    pub address_free_failures: i64,
    /// The first block; each further failure doubles it.
    pub base_delay_secs: i64,
    pub max_delay_secs: i64,
    /// A counter without failures for this long starts again from zero.
    pub forget_after_secs: i64,
    /// Things a stranger can have made (PINs, device codes, passkey challenges) per source
    /// address before back-off starts.
    pub address_free_creations: i64,
    /// The same per client identifier, and sign-outs of all devices per account.
    pub client_free_creations: i64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            account_free_failures: 5,
            address_free_failures: 20,
            base_delay_secs: 1,
            max_delay_secs: 15 * 60,
            forget_after_secs: 3600,
            address_free_creations: 60,
            client_free_creations: 10,
        }
    }
}

impl ThrottleSettings {
    /// How long a key is blocked after its `failures`-th failure, in milliseconds (0: not blocked).
    pub fn delay_ms(&self, failures: i64, free: i64) -> i64 {
        if failures < free {
            return 0;
        }
        let doublings = u32::try_from((failures - free).min(30)).unwrap_or(30);
        let delay = self.base_delay_secs.max(1).saturating_mul(1i64 << doublings);
        delay.min(self.max_delay_secs.max(1)).saturating_mul(1000)
    }
}

/// The prefix of the counters of accounts and login names, and of addresses, for a purpose: the
/// credential-stuffing detector counts how many of each are failing.
pub fn account_prefix(purpose: Purpose) -> String {
    format!("{}:acct:", purpose.name())
}

pub fn address_prefix(purpose: Purpose) -> String {
    format!("{}:addr:", purpose.name())
}

/// How long an attempt at or past the free ones holds its key while its secret is checked. Far
/// longer than any check takes; a node that dies mid-check leaves the key held for this long.
const HOLD_MS: i64 = 60_000;

/// The counter an IPv6 source address is kept on: its /64, which one subscriber usually holds
/// whole, so that walking through its addresses does not buy fresh guesses.
fn address_counted(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| address.to_owned(), |v4| v4.to_string()),
        _ => address.to_owned(),
    }
}

/// One attempt counted before its secret was checked. It must be settled: as a failure
/// ([`Throttle::failed`]), a success ([`Throttle::succeeded`]) or neither ([`Throttle::abandoned`],
/// when keywarden itself failed and nothing was learnt about the secret).
#[must_use = "an attempt must be settled: failed, succeeded or abandoned"]
#[derive(Debug)]
pub struct Attempt {
    purpose: Purpose,
    counted: Vec<Counted>,
}

#[derive(Debug)]
struct Counted {
    key: String,
    /// A source address: shared by many people, so a success does not wipe its failures.
    address: bool,
    known_device: bool,
    free: i64,
    /// This attempt's number on the counter; at or past `free` it holds the key.
    count: i64,
}

impl Counted {
    fn held(&self) -> bool {
        self.count >= self.free
    }
}

#[derive(Clone)]
pub struct Throttle(std::sync::Arc<ThrottleParts>);

impl std::ops::Deref for Throttle {
    type Target = ThrottleParts;

    fn deref(&self) -> &ThrottleParts {
        &self.0
    }
}

/// What every handle to the throttle shares.
pub struct ThrottleParts {
    clock: Clock,
    store: Arc<dyn ThrottleStore>,
    keyring: std::sync::Arc<Keyring>,
    audit: AuditLog,
    settings: ThrottleSettings,
}

impl Throttle {
    pub fn new(
        store: Arc<dyn ThrottleStore>,
        keyring: std::sync::Arc<Keyring>,
        audit: AuditLog,
        settings: ThrottleSettings,
        clock: Clock,
    ) -> Self {
        Self(std::sync::Arc::new(ThrottleParts { clock, store, keyring, audit, settings }))
    }

    /// The counter's key. Login names and addresses are personal data: they are stored as keyed
    /// digests (a new token-hash key starts their counters afresh, which is harmless).
    fn key(&self, purpose: Purpose, subject: Subject<'_>) -> String {
        let digest = |kind: &str, value: &str| {
            let keyed = self.keyring.token_digest(&format!("throttle:{kind}:{value}"));
            hex::encode(&keyed.digest[..16])
        };
        let purpose = purpose.name();
        match subject {
            Subject::Account(id) => format!("{purpose}:acct:{id}"),
            Subject::Login(login) => format!("{purpose}:acct:login-{}", digest("login", &login.to_lowercase())),
            Subject::Address(address) => format!("{purpose}:addr:{}", digest("address", &address_counted(address))),
            Subject::Device(id) => format!("{purpose}:dev:{id}"),
            Subject::Client(name) => format!("{purpose}:client:{}", digest("client", name)),
        }
    }

    fn free_failures(&self, purpose: Purpose, subject: Subject<'_>) -> i64 {
        match (purpose.creates(), subject) {
            (true, Subject::Address(_)) => self.settings.address_free_creations,
            (true, _) => self.settings.client_free_creations,
            (false, Subject::Address(_)) => self.settings.address_free_failures,
            (false, _) => self.settings.account_free_failures,
        }
    }

    /// Counts an attempt against every subject before its secret is looked at, or refuses with
    /// `rate_limited` (saying how long to wait) while any of them is blocked. Counting first, in one
    /// statement per counter, is what keeps a burst of parallel guesses to the free ones: each
    /// finds the count the others left, and the one that reaches the limit holds the counter.
    pub async fn reserve(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<Attempt> {
        let mut attempt = Attempt { purpose, counted: Vec::with_capacity(subjects.len()) };
        if !self.settings.enabled {
            return Ok(attempt);
        }
        let now = self.clock.now_ms();
        let forget_before = now - self.settings.forget_after_secs * 1000;
        for subject in subjects {
            let key = self.key(purpose, *subject);
            let free = self.free_failures(purpose, *subject).max(1);
            let step = ThrottleStep { now, forget_before, free, hold_until: now + HOLD_MS };
            match self.store.throttle_reserve(&key, &step).await {
                Ok(Some(count)) => attempt.counted.push(Counted {
                    key,
                    address: matches!(subject, Subject::Address(_)),
                    known_device: matches!(subject, Subject::Device(_)),
                    free,
                    count,
                }),
                Ok(None) => {
                    let wait_ms = self.wait_ms(&key, free, now).await;
                    self.abandoned(attempt).await?;
                    let retry_after_secs = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
                    return Err(Error::RateLimited { retry_after_secs });
                }
                Err(err) => {
                    self.abandoned(attempt).await?;
                    return Err(err.into());
                }
            }
        }
        Ok(attempt)
    }

    /// How long a blocked key will stay blocked: what is left of its block, but no more than the
    /// back-off its count earns (a key held by an attempt being checked gets that once settled).
    async fn wait_ms(&self, key: &str, free: i64, now: i64) -> i64 {
        match self.store.throttle(key).await {
            Ok(Some(counter)) => {
                let earned = self.settings.delay_ms(counter.failures, free).max(1000);
                (counter.blocked_until - now).clamp(1, earned)
            }
            _ => 1000,
        }
    }

    /// Settles an attempt as a wrong guess: each counter at or past its free failures is blocked
    /// for its back-off. The moment a counter starts holding guesses back is audited.
    pub async fn failed(&self, attempt: Attempt, user_id: Option<&str>, address: Option<&str>) -> Result<()> {
        let now = self.clock.now_ms();
        let mut newly_blocked = false;
        for counted in &attempt.counted {
            let blocked_until = counted.held().then(|| now + self.settings.delay_ms(counted.count, counted.free));
            self.store.throttle_failed(&counted.key, now, blocked_until).await?;
            newly_blocked |= counted.count == counted.free;
        }
        if newly_blocked {
            let known_device = attempt.counted.iter().any(|c| c.known_device);
            let details = json!({ "purpose": attempt.purpose.name(), "known_device": known_device });
            self.audit.record(AuditLog::event(kind::THROTTLED, &Actor::Anonymous, user_id, address, details)).await?;
        }
        Ok(())
    }

    /// Settles an attempt whose secret was right. Only the counters of what just proved itself (an
    /// account, a login name, a known device) forget their failures; a source address is shared,
    /// and one good sign-in from it says nothing about the guesses that came from it before, so it
    /// only gets this attempt back.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<()> {
        for counted in &attempt.counted {
            if counted.address {
                self.store.throttle_refund(&counted.key, counted.held()).await?;
            } else {
                self.store.throttle_clear(&counted.key).await?;
            }
        }
        Ok(())
    }

    /// Gives an attempt back that was never judged (keywarden failed, or another counter refused).
    pub async fn abandoned(&self, attempt: Attempt) -> Result<()> {
        for counted in &attempt.counted {
            self.store.throttle_refund(&counted.key, counted.held()).await?;
        }
        Ok(())
    }

    /// Settles an attempt by the outcome of its check: a success, a wrong guess (any error a client
    /// is shown), or keywarden's own failure (given back, as nothing was learnt).
    pub async fn settle<T>(
        &self,
        attempt: Attempt,
        outcome: &Result<T>,
        user_id: Option<&str>,
        address: Option<&str>,
    ) -> Result<()> {
        match outcome {
            Ok(_) => self.succeeded(attempt).await,
            Err(err) if err.is_internal() || err.is_unavailable() => self.abandoned(attempt).await,
            Err(_) => self.failed(attempt, user_id, address).await,
        }
    }

    /// Counts an attempt, runs `check`, and settles the attempt by its outcome.
    pub async fn guard<T>(
        &self,
        purpose: Purpose,
        subjects: &[Subject<'_>],
        user_id: Option<&str>,
        address: Option<&str>,
        check: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let attempt = self.reserve(purpose, subjects).await?;
        let outcome = check.await;
        self.settle(attempt, &outcome, user_id, address).await?;
        outcome
    }

    /// For what costs us something every time (a mail, a stored row) rather than only when it
    /// fails: refuses while blocked, and otherwise counts this attempt as if it had failed.
    pub async fn count_attempt(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<()> {
        let attempt = self.reserve(purpose, subjects).await?;
        let now = self.clock.now_ms();
        for counted in &attempt.counted {
            let blocked_until = counted.held().then(|| now + self.settings.delay_ms(counted.count, counted.free));
            self.store.throttle_failed(&counted.key, now, blocked_until).await?;
        }
        Ok(())
    }

    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::{address_counted, ThrottleSettings};

    #[test]
    fn an_ipv6_subscriber_is_one_counter_and_ipv4_stays_as_it_is() {
        assert_eq!(address_counted("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_counted("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(address_counted("2001:db8:1:3::1"), address_counted("2001:db8:1:2::1"));
        assert_eq!(address_counted("192.0.2.7"), "192.0.2.7");
        assert_eq!(address_counted("::ffff:192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn back_off_doubles_after_the_free_failures_and_stops_at_the_maximum() {
        let settings = ThrottleSettings { base_delay_secs: 1, max_delay_secs: 60, ..Default::default() };
        assert_eq!(settings.delay_ms(4, 5), 0);
        assert_eq!(settings.delay_ms(5, 5), 1000);
        assert_eq!(settings.delay_ms(6, 5), 2000);
        assert_eq!(settings.delay_ms(9, 5), 16_000);
        assert_eq!(settings.delay_ms(12, 5), 60_000);
        assert_eq!(settings.delay_ms(10_000, 5), 60_000);
    }
}
