//! The parts every domain service is built on: store, keys, password hashing, audit, revocation, mail.

use std::sync::Arc;

use super::alerts::Alerts;
use super::audit::AuditLog;
use super::freshness::Freshness;
use super::password::PasswordHasher;
use super::policy::TokenPolicy;
use super::policy::{DeletionPolicy, MfaPolicy, SignupPolicy};
use super::revocation::Revocations;
use super::throttle::Throttle;
use super::validation_cache::ValidationCache;
use crate::clock::Clock;
use crate::keys::Keyring;
use crate::mail::Mailer;
use crate::store::DynStore;

#[derive(Clone)]
pub struct Core {
    /// The time every service reads (the system clock but in tests).
    pub clock: Clock,
    pub store: DynStore,
    pub keyring: Arc<Keyring>,
    pub hasher: Arc<PasswordHasher>,
    pub audit: AuditLog,
    pub revocations: Revocations,
    pub mailer: Mailer,
    pub policy: TokenPolicy,
    pub mfa: MfaPolicy,
    pub signup: SignupPolicy,
    pub deletion: DeletionPolicy,
    /// Failure counters with back-off for everything that can be guessed.
    pub throttle: Throttle,
    /// Whether a session proved its person just now, for new credentials and other sensitive actions.
    pub freshness: Freshness,
    /// Security alerts: audit, log, metric, admins' mail, webhook.
    pub alerts: Alerts,
    /// The product name people see: the issuer in authenticator apps.
    pub product: String,
    /// The WebAuthn relying party; `None` when passkeys cannot work on this server.
    pub webauthn: Option<Arc<webauthn_rs::Webauthn>>,
}

impl Core {
    /// Tokens and profiles already read, forgotten when they may be stale (kept current by the
    /// revocations, which read the invalidation log).
    pub fn validations(&self) -> &ValidationCache {
        self.revocations.validations()
    }
}
