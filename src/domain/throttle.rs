//! Throttling of guessable secrets: failure counters per account, source address and known device,
//! shared by every node through the database, with exponential back-off.
//!
//! A counter allows a few free failures; from then on every failure blocks its key for twice as
//! long as the one before, up to `max_delay_secs`. A blocked key answers `rate_limited` with the
//! seconds to wait, without looking at the secret, so guessing costs the attacker time and us
//! nothing. An account's lock is soft: its owner signing in from a device the account already
//! knows is counted on that device alone (see `KnownDevice`), never on the account or address.

use serde::{Deserialize, Serialize};

use super::clock::now_ms;
use super::error::{Error, Result};
use crate::keys::{hex, Keyring};
use crate::store::DynStore;

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
        }
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

#[derive(Clone)]
pub struct Throttle {
    store: DynStore,
    keyring: std::sync::Arc<Keyring>,
    settings: ThrottleSettings,
}

impl Throttle {
    pub fn new(store: DynStore, keyring: std::sync::Arc<Keyring>, settings: ThrottleSettings) -> Self {
        Self { store, keyring, settings }
    }

    /// The counter's key. Login names and addresses are personal data: they are stored as keyed
    /// digests (a new token-hash key starts their counters afresh, which is harmless).
    fn key(&self, purpose: Purpose, subject: Subject<'_>) -> String {
        let digest = |kind: &str, value: &str| {
            let keyed = self.keyring.token_digest(&format!("throttle:{kind}:{value}"));
            hex(&keyed.digest[..16])
        };
        let purpose = purpose.name();
        match subject {
            Subject::Account(id) => format!("{purpose}:acct:{id}"),
            Subject::Login(login) => format!("{purpose}:acct:login-{}", digest("login", &login.to_lowercase())),
            Subject::Address(address) => format!("{purpose}:addr:{}", digest("address", address)),
            Subject::Device(id) => format!("{purpose}:dev:{id}"),
        }
    }

    fn free_failures(&self, subject: Subject<'_>) -> i64 {
        match subject {
            Subject::Address(_) => self.settings.address_free_failures,
            _ => self.settings.account_free_failures,
        }
    }

    /// Refuses with `rate_limited` while any of the subjects is blocked, saying how long to wait.
    /// Otherwise says whether any of them has failures on record (worth forgetting after a success).
    pub async fn check(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<bool> {
        if !self.settings.enabled {
            return Ok(false);
        }
        let now = now_ms();
        let (mut wait_ms, mut on_record) = (0, false);
        for subject in subjects {
            if let Some(counter) = self.store.throttle(&self.key(purpose, *subject)).await? {
                wait_ms = wait_ms.max(counter.blocked_until - now);
                on_record = true;
            }
        }
        if wait_ms > 0 {
            let retry_after_secs = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
            return Err(Error::RateLimited { retry_after_secs });
        }
        Ok(on_record)
    }

    /// Counts a failure against every subject; true when one of them just became blocked for the
    /// first time (the moment worth an audit event).
    pub async fn failed(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<bool> {
        if !self.settings.enabled {
            return Ok(false);
        }
        let now = now_ms();
        let forget_before = now - self.settings.forget_after_secs * 1000;
        let mut newly_blocked = false;
        for subject in subjects {
            let key = self.key(purpose, *subject);
            let free = self.free_failures(*subject);
            let failures = self.store.throttle_failed(&key, now, forget_before).await?;
            let delay = self.settings.delay_ms(failures, free);
            if delay > 0 {
                self.store.throttle_block(&key, now + delay).await?;
                newly_blocked |= failures == free;
            }
        }
        Ok(newly_blocked)
    }

    /// For what costs us something every time (a mail, a stored row) rather than only when it
    /// fails: refuses while blocked, and otherwise counts this attempt.
    pub async fn count_attempt(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<()> {
        self.check(purpose, subjects).await?;
        self.failed(purpose, subjects).await?;
        Ok(())
    }

    /// Forgets the failures of subjects that just proved themselves.
    pub async fn succeeded(&self, purpose: Purpose, subjects: &[Subject<'_>]) -> Result<()> {
        for subject in subjects {
            self.store.throttle_clear(&self.key(purpose, *subject)).await?;
        }
        Ok(())
    }

    pub fn settings(&self) -> ThrottleSettings {
        self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::ThrottleSettings;

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
