//! Second factors: authenticator apps (TOTP), passkeys, recovery codes, their checks and step-up.
//!
//! A stolen database holds TOTP secrets only sealed under the data key, recovery codes only as
//! keyed digests and passkeys only as public keys (P1): none of them yields a sign-in.

use std::sync::Arc;

use serde_json::json;
use zeroize::Zeroizing;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::error::{Error, Result};
use super::freshness::Freshness;
use super::passkeys::{self, Assertion, Ceremony, PasskeyView, Passkeys};
use super::password::{self, PasswordHasher};
use super::profile::Role;
use super::recovery_codes;
use super::throttle::{self, Purpose, Throttle};
use super::totp::{self, TotpSecret};
use super::validation_cache::ValidationCache;
use crate::clock::Clock;
use crate::domain::policy::MfaPolicy;
use crate::keys::{Keyring, Sealed};
use crate::mail::Notice;
use crate::store::{DynStore, FactorChange, NewTotp, PasskeyRecord, RecoveryCodeDigest, StoreError, Verified};

/// A second factor as a person or client presents it.
#[derive(Debug, Clone)]
pub enum Factor {
    Totp(Zeroizing<String>),
    RecoveryCode(Zeroizing<String>),
    Passkey(Assertion),
}

impl Factor {
    /// Exactly one of a code, a recovery code or a passkey's answer.
    pub fn from_fields(
        code: Option<String>,
        recovery_code: Option<String>,
        passkey: Option<Assertion>,
    ) -> Result<Self> {
        match (code.filter(|c| !c.trim().is_empty()), recovery_code.filter(|c| !c.trim().is_empty()), passkey) {
            (Some(code), None, None) => Ok(Self::Totp(Zeroizing::new(code))),
            (None, Some(code), None) => Ok(Self::RecoveryCode(Zeroizing::new(code))),
            (None, None, Some(assertion)) => Ok(Self::Passkey(assertion)),
            _ => Err(Error::InvalidFactor("send exactly one of `code`, `recovery_code` or `webauthn_response`")),
        }
    }

    /// One field that takes either: six digits are an app code, anything else a recovery code.
    pub fn guess(typed: &str) -> Result<Self> {
        let compact: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return Err(Error::InvalidFactor("enter a code from your authenticator app or a recovery code"));
        }
        if compact.len() == 6 && compact.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self::Totp(Zeroizing::new(compact)))
        } else {
            Ok(Self::RecoveryCode(Zeroizing::new(compact)))
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Self::Totp(_) => "totp",
            Self::RecoveryCode(_) => "recovery_code",
            Self::Passkey(_) => "webauthn",
        }
    }
}

/// A new authenticator-app secret, shown once while the user sets up the app.
pub struct TotpEnrolment {
    pub secret: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
    pub qr_svg: String,
}

/// What an account has set up.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FactorStatus {
    pub totp: bool,
    pub totp_pending: bool,
    pub recovery_codes_remaining: i64,
    pub passkeys: Vec<PasskeyView>,
    /// Whether this server can register passkeys (it is reached at a domain name).
    pub passkeys_available: bool,
}

/// A passkey just added; `recovery_codes` are set (and shown once) when it is the account's first
/// second factor.
pub struct AddedPasskey {
    pub passkey: PasskeyView,
    pub recovery_codes: Option<Vec<Zeroizing<String>>>,
}

#[derive(Clone)]
pub struct SecondFactors(std::sync::Arc<SecondFactorsParts>);

impl std::ops::Deref for SecondFactors {
    type Target = SecondFactorsParts;

    fn deref(&self) -> &SecondFactorsParts {
        &self.0
    }
}

/// What every handle to the second-factor service shares.
pub struct SecondFactorsParts {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    hasher: Arc<PasswordHasher>,
    audit: AuditLog,
    accounts: Accounts,
    policy: MfaPolicy,
    issuer: String,
    passkeys: Passkeys,
    throttle: Throttle,
    freshness: Freshness,
    validations: ValidationCache,
}

/// The AEAD context of a user's TOTP secret: a sealed secret cannot be moved to another account.
pub(crate) fn secret_context(user_id: &str) -> Vec<u8> {
    format!("totp:{user_id}").into_bytes()
}

impl SecondFactors {
    pub fn new(core: &Core, accounts: Accounts) -> Self {
        Self(std::sync::Arc::new(SecondFactorsParts {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            hasher: core.hasher.clone(),
            audit: core.audit.clone(),
            accounts,
            policy: core.mfa,
            issuer: core.product.clone(),
            passkeys: Passkeys::new(
                core.store.clone(),
                core.webauthn.clone(),
                core.mfa.challenge_ttl_secs,
                core.clock.clone(),
            ),
            throttle: core.throttle.clone(),
            freshness: core.freshness.clone(),
            validations: core.validations().clone(),
        }))
    }

    pub fn passkeys(&self) -> &Passkeys {
        &self.passkeys
    }

    /// A challenge for passwordless sign-in. Anyone may ask, and each is a stored ceremony, so
    /// asking is counted per source address.
    pub async fn passkey_sign_in_options(&self, address: Option<&str>) -> Result<Ceremony> {
        let subjects: Vec<_> = address.map(throttle::Subject::Address).into_iter().collect();
        self.throttle.count_attempt(Purpose::PasskeyChallenge, &subjects).await?;
        self.passkeys.discovery_options().await
    }

    pub fn policy(&self) -> MfaPolicy {
        self.policy
    }

    pub async fn status(&self, user_id: &str) -> Result<FactorStatus> {
        let totp = self.store.totp_of(user_id).await?;
        Ok(FactorStatus {
            totp: totp.as_ref().is_some_and(|t| t.confirmed_at.is_some()),
            totp_pending: totp.as_ref().is_some_and(|t| t.confirmed_at.is_none()),
            recovery_codes_remaining: self.store.unused_recovery_codes(user_id).await?,
            passkeys: self.passkeys.list(user_id).await?,
            passkeys_available: self.passkeys.available(),
        })
    }

    /// The ways this account can finish a sign-in, empty if a password is enough.
    pub async fn methods(&self, user_id: &str) -> Result<Vec<&'static str>> {
        let totp = self.totp_active(user_id).await?;
        let passkeys = self.passkeys.count(user_id).await? > 0;
        let mut methods = Vec::new();
        if totp {
            methods.push("totp");
        }
        if totp || passkeys {
            methods.push("recovery_code");
        }
        if passkeys {
            methods.push("webauthn");
        }
        Ok(methods)
    }

    /// Whether the account has a second factor (an authenticator app or a passkey).
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool> {
        self.freshness.has_second_factor(user_id).await
    }

    async fn totp_active(&self, user_id: &str) -> Result<bool> {
        Ok(self.store.totp_of(user_id).await?.is_some_and(|t| t.confirmed_at.is_some()))
    }

    /// Starts (or restarts) setting up an authenticator app; it is not used until confirmed. Like
    /// every new credential it needs a fresh authentication and a proven address: a stolen session
    /// must not lock the owner out behind the thief's app.
    pub async fn begin_totp(&self, who: &Authenticated, address: Option<&str>) -> Result<TotpEnrolment> {
        // An app already set up is said first: stepping up would not change the answer.
        if self.store.totp_of(&who.user_id).await?.is_some_and(|t| t.confirmed_at.is_some()) {
            return Err(Error::TotpAlreadyEnabled);
        }
        self.freshness.require_for_new_credential(who).await?;
        let secret = TotpSecret::generate();
        let sealed = self.keyring.seal(secret.as_bytes(), &secret_context(&who.user_id));
        let factor = NewTotp {
            user_id: who.user_id.clone(),
            secret_sealed: sealed.bytes,
            secret_key_id: sealed.key_id,
            created_at: self.clock.now_ms(),
        };
        if !self.store.begin_totp_enrolment(&factor).await? {
            return Err(Error::TotpAlreadyEnabled);
        }
        self.record(kind::TOTP_ENROLMENT_STARTED, &who.user_id, address, json!({})).await?;
        self.enrolment(&who.user_id, &secret).await
    }

    /// The enrolment in progress, shown again (say, after a mistyped first code).
    pub async fn pending_enrolment(&self, who: &Authenticated) -> Result<TotpEnrolment> {
        self.freshness.require_for_new_credential(who).await?;
        let record = self.store.totp_of(&who.user_id).await?.filter(|t| t.confirmed_at.is_none());
        let record = record.ok_or(Error::TotpNotEnrolled)?;
        let secret = self.open_secret(&record.user_id, record.secret_sealed, record.secret_key_id)?;
        self.enrolment(&who.user_id, &secret).await
    }

    /// What the person sees to set up their app: the key, the `otpauth://` URI and its QR code.
    async fn enrolment(&self, user_id: &str, secret: &TotpSecret) -> Result<TotpEnrolment> {
        let profile = self.accounts.profile(user_id).await?;
        let uri = Zeroizing::new(secret.otpauth_uri(&self.issuer, &profile.username));
        Ok(TotpEnrolment { secret: Zeroizing::new(secret.base32()), qr_svg: totp::qr_svg(&uri), otpauth_uri: uri })
    }

    /// Activates the app with its first code and returns the recovery codes, shown this once.
    pub async fn confirm_totp(
        &self,
        who: &Authenticated,
        code: &str,
        address: Option<&str>,
    ) -> Result<Vec<Zeroizing<String>>> {
        self.freshness.require_for_new_credential(who).await?;
        let record = self.store.totp_of(&who.user_id).await?.ok_or(Error::TotpNotEnrolled)?;
        if record.confirmed_at.is_some() {
            return Err(Error::TotpAlreadyEnabled);
        }
        let secret = self.open_secret(&record.user_id, record.secret_sealed, record.secret_key_id)?;
        let step = secret.matching_step(code, now_secs()).ok_or(Error::InvalidCode)?;
        let codes = recovery_codes::generate();
        let now = self.clock.now_ms();
        let change = FactorChange {
            user_id: who.user_id.clone(),
            at: now,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            recovery_codes: self.code_digests(&who.user_id, &codes),
        };
        if !self.store.confirm_totp(&change).await? {
            return Err(Error::TotpNotEnrolled);
        }
        // The account's sessions that were waiting for a factor are whole now. This session is not
        // made any fresher: the code proves the new app, not the person (a thief's app proves the
        // thief), so what comes next on this account needs a step-up with a factor.
        self.store.end_enrolment_restriction(&who.user_id).await?;
        self.validations.forget_user(&who.user_id);
        self.record(kind::TOTP_ENABLED, &who.user_id, address, json!({})).await?;
        self.notify(&who.user_id, "totp_enabled", address, codes.len()).await?;
        Ok(codes)
    }

    /// Removes the authenticator app and its recovery codes. Needs a fresh step-up.
    pub async fn disable_totp(&self, who: &Authenticated, address: Option<&str>) -> Result<()> {
        self.freshness.require(who).await?;
        // Removing the app leaves the passkeys as they are.
        let passkeys_left = self.passkeys.count(&who.user_id).await?;
        if passkeys_left == 0 {
            self.refuse_if_required(&who.user_id).await?;
        }
        if !self.store.remove_totp(&who.user_id).await? {
            return Err(Error::TotpNotEnrolled);
        }
        self.validations.forget_user(&who.user_id);
        self.record(kind::TOTP_DISABLED, &who.user_id, address, json!({})).await?;
        self.notify(&who.user_id, "totp_disabled", address, passkeys_left).await
    }

    /// A new set of recovery codes; the old set stops working. Needs a fresh step-up.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &Authenticated,
        address: Option<&str>,
    ) -> Result<Vec<Zeroizing<String>>> {
        self.freshness.require(who).await?;
        if !self.has_second_factor(&who.user_id).await? {
            return Err(Error::TotpNotEnrolled);
        }
        let codes = recovery_codes::generate();
        let change = FactorChange {
            user_id: who.user_id.clone(),
            at: self.clock.now_ms(),
            step: 0,
            recovery_codes: self.code_digests(&who.user_id, &codes),
        };
        self.store.replace_recovery_codes(&change).await?;
        self.record(kind::RECOVERY_CODES_REGENERATED, &who.user_id, address, json!({})).await?;
        self.notify(&who.user_id, "recovery_codes_regenerated", address, codes.len()).await?;
        Ok(codes)
    }

    /// Checks a second factor of `user_id`. A TOTP code works once (per account, across nodes);
    /// a recovery code works once ever, and its use is mailed to the owner.
    pub async fn check(&self, user_id: &str, factor: &Factor, address: Option<&str>) -> Result<()> {
        let outcome = match factor {
            Factor::Totp(code) => self.check_totp(user_id, code).await,
            Factor::RecoveryCode(code) => self.check_recovery_code(user_id, code, address).await,
            Factor::Passkey(assertion) => self.passkeys.verify(user_id, assertion).await,
        };
        if let Err(err) = &outcome {
            if !err.is_internal() {
                let details = json!({ "method": factor.method(), "reason": err.code() });
                let event =
                    AuditLog::event(kind::SECOND_FACTOR_FAILED, &Actor::Anonymous, Some(user_id), address, details);
                self.audit.record(event).await?;
            }
        }
        outcome
    }

    async fn check_totp(&self, user_id: &str, code: &str) -> Result<()> {
        let record = self.store.totp_of(user_id).await?.filter(|t| t.confirmed_at.is_some());
        let record = record.ok_or(Error::InvalidCode)?;
        let last_used = record.last_used_step;
        let secret = self.open_secret(&record.user_id, record.secret_sealed, record.secret_key_id)?;
        let step = secret.matching_step(code, now_secs()).ok_or(Error::InvalidCode)?;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if step <= last_used || !self.store.use_totp_step(user_id, step).await? {
            return Err(Error::CodeAlreadyUsed);
        }
        Ok(())
    }

    async fn check_recovery_code(&self, user_id: &str, code: &str, address: Option<&str>) -> Result<()> {
        let normalised = recovery_codes::normalise(code).ok_or(Error::InvalidCode)?;
        let now = self.clock.now_ms();
        let mut used = false;
        for digest in recovery_codes::digests(&self.keyring, user_id, &normalised) {
            if self.store.use_recovery_code(user_id, &digest.digest, now).await? {
                used = true;
                break;
            }
        }
        if !used {
            return Err(Error::InvalidCode);
        }
        let remaining = self.store.unused_recovery_codes(user_id).await?;
        self.record(kind::RECOVERY_CODE_USED, user_id, address, json!({ "remaining": remaining })).await?;
        self.notify(user_id, "recovery_code_used", address, remaining).await
    }

    /// Proves it is still the account's owner at this session: a second factor, or the password for
    /// an account without one. Sensitive actions then work for `mfa.step_up_secs`; the session as it
    /// now stands is returned, so an action in the same request can follow at once.
    pub async fn step_up(&self, who: &Authenticated, proof: StepUp, address: Option<&str>) -> Result<Authenticated> {
        let has_factor = self.has_second_factor(&who.user_id).await?;
        // A stolen session must not become an oracle for the code or the password: each guess
        // counts on the account's and the address's counters, as at sign-in.
        let subjects = throttle::against_account(&who.user_id, address);
        let user_id = Some(who.user_id.as_str());
        match proof {
            StepUp::Factor(factor) if has_factor => {
                let check = self.check(&who.user_id, &factor, address);
                self.throttle.guard(Purpose::SecondFactor, &subjects, user_id, address, check).await?
            }
            StepUp::Factor(_) => {
                return Err(Error::InvalidFactor("this account has no second factor: send `password`"))
            }
            StepUp::Password(_) if has_factor => {
                return Err(Error::InvalidFactor(
                    "this account has a second factor: send `code`, `recovery_code` or `webauthn_response`",
                ))
            }
            StepUp::Password(given) => {
                let user = self.store.user_by_id(&who.user_id).await?.ok_or(Error::InvalidToken)?;
                let stored = Accounts::stored_hash(&user).ok_or(Error::NoPassword)?;
                let check = self.check_password(&stored, &given);
                self.throttle.guard(Purpose::SignIn, &subjects, user_id, address, check).await?
            }
        }
        let verified = Verified { at: self.clock.now_ms(), second_factor: has_factor };
        self.store.mark_session_verified(&who.session_id, verified).await?;
        self.validations.forget_session(&who.session_id);
        self.record(kind::STEPPED_UP, &who.user_id, address, json!({ "session_id": who.session_id })).await?;
        Ok(Authenticated { verified_at: verified.at, verified_second_factor: verified.second_factor, ..who.clone() })
    }

    /// Checks a password against the stored hash: `wrong_password` unless it matches.
    pub(crate) async fn check_password(&self, stored: &password::StoredHash, given: &str) -> Result<()> {
        let verification = self.hasher.verify(Some(stored), &password::normalise(given)).await?;
        if verification.matches {
            Ok(())
        } else {
            Err(Error::WrongPassword)
        }
    }

    /// A passkey challenge for a step-up of this session.
    pub async fn step_up_options(&self, who: &Authenticated) -> Result<Ceremony> {
        self.passkeys.authentication_options(&who.user_id).await?.ok_or(Error::PasskeyNotFound)
    }

    /// A challenge to add a passkey to the signed-in account; only for a fresh session of an account
    /// whose address was proven, like the passkey it creates.
    pub async fn passkey_options(&self, who: &Authenticated) -> Result<Ceremony> {
        self.freshness.require_for_new_credential(who).await?;
        let profile = self.accounts.profile(&who.user_id).await?;
        self.passkeys.registration_options(&who.user_id, &profile.username).await
    }

    /// Stores the passkey the browser created for `passkey_options`. The first second factor of an
    /// account also gets recovery codes, shown once, so losing the device does not lock it out.
    pub async fn add_passkey(
        &self,
        who: &Authenticated,
        ceremony_id: &str,
        name: &str,
        credential: &webauthn_rs::prelude::RegisterPublicKeyCredential,
        address: Option<&str>,
    ) -> Result<AddedPasskey> {
        self.freshness.require_for_new_credential(who).await?;
        let name = passkeys::clean_name(name)?;
        let created = self.passkeys.finish_registration(&who.user_id, ceremony_id, credential).await?;
        let now = self.clock.now_ms();
        let record = PasskeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: who.user_id.clone(),
            credential_id: created.passkey.cred_id().to_vec(),
            user_handle: created.user_handle,
            name,
            passkey: serde_json::to_string(&created.passkey).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now,
            last_used_at: None,
        };
        let codes = recovery_codes::generate();
        let first_codes = FactorChange {
            user_id: who.user_id.clone(),
            at: now,
            step: 0,
            recovery_codes: self.code_digests(&who.user_id, &codes),
        };
        let codes_set = self.store.add_passkey(&record, &first_codes).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::PasskeyAlreadyRegistered,
            other => Error::from(other),
        })?;
        // Creating the passkey proves the authenticator, not the person (a thief's passkey proves
        // the thief): the session is not made any fresher.
        self.store.end_enrolment_restriction(&who.user_id).await?;
        self.validations.forget_user(&who.user_id);
        let details = json!({ "passkey_id": record.id, "name": record.name });
        self.record(kind::PASSKEY_ADDED, &who.user_id, address, details).await?;
        let remaining = if codes_set { codes.len() } else { 0 };
        self.notify(&who.user_id, "passkey_added", address, remaining).await?;
        Ok(AddedPasskey { passkey: PasskeyView::from(&record), recovery_codes: codes_set.then_some(codes) })
    }

    pub async fn rename_passkey(
        &self,
        who: &Authenticated,
        id: &str,
        name: &str,
        address: Option<&str>,
    ) -> Result<PasskeyView> {
        let name = passkeys::clean_name(name)?;
        if !self.store.rename_passkey(&who.user_id, id, &name).await? {
            return Err(Error::PasskeyNotFound);
        }
        self.record(kind::PASSKEY_RENAMED, &who.user_id, address, json!({ "passkey_id": id, "name": name })).await?;
        let listed = self.passkeys.list(&who.user_id).await?;
        listed.into_iter().find(|p| p.id == id).ok_or(Error::PasskeyNotFound)
    }

    /// Removes a passkey; like removing any factor it needs a fresh authentication. With no second
    /// factor left, the recovery codes go too.
    pub async fn remove_passkey(&self, who: &Authenticated, id: &str, address: Option<&str>) -> Result<()> {
        let listed = self.passkeys.list(&who.user_id).await?;
        if !listed.iter().any(|p| p.id == id) {
            return Err(Error::PasskeyNotFound);
        }
        self.freshness.require(who).await?;
        let totp = self.totp_active(&who.user_id).await?;
        if listed.len() == 1 && !totp {
            self.refuse_if_required(&who.user_id).await?;
        }
        if !self.store.remove_passkey(&who.user_id, id).await? {
            // It was listed a moment ago: the store kept it as the account's last way to sign in.
            return Err(Error::LastSignInMethod);
        }
        self.validations.forget_user(&who.user_id);
        self.record(kind::PASSKEY_REMOVED, &who.user_id, address, json!({ "passkey_id": id })).await?;
        let factors_left = listed.len() - 1 + usize::from(totp);
        self.notify(&who.user_id, "passkey_removed", address, factors_left).await
    }

    /// Refuses to remove an account's last second factor when the operator requires one.
    async fn refuse_if_required(&self, user_id: &str) -> Result<()> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::InvalidToken)?;
        if self.policy.requires_second_factor(Role::of(&user)) {
            return Err(Error::SecondFactorRequired);
        }
        Ok(())
    }

    /// An operator's way out for an account whose owner lost every factor: removes the app, the
    /// passkeys and the recovery codes, after the operator checked who is asking. The owner is told.
    pub async fn reset_for_owner(&self, user_id: &str, actor: &Actor, reason: &str) -> Result<u64> {
        let removed = self.store.clear_second_factors(user_id).await?;
        self.validations.forget_user(user_id);
        let details = json!({ "removed": removed, "reason": reason });
        self.audit.record(AuditLog::event(kind::SECOND_FACTORS_RESET, actor, Some(user_id), None, details)).await?;
        self.notify(user_id, "factors_reset", None, 0).await?;
        Ok(removed)
    }

    /// Removes every second factor of an account as part of an incident response, without a mail of
    /// its own (the incident notice tells the owner to enrol again).
    pub async fn clear_for_incident(&self, user_id: &str, actor: &Actor, reason: &str) -> Result<u64> {
        let removed = self.store.clear_second_factors(user_id).await?;
        self.validations.forget_user(user_id);
        let details = json!({ "removed": removed, "reason": reason });
        self.audit.record(AuditLog::event(kind::SECOND_FACTORS_RESET, actor, Some(user_id), None, details)).await?;
        Ok(removed)
    }

    fn open_secret(&self, user_id: &str, sealed: Vec<u8>, key_id: String) -> Result<TotpSecret> {
        let bytes = self.keyring.open(&Sealed { key_id, bytes: sealed }, &secret_context(user_id))?;
        Ok(TotpSecret::from_bytes(bytes))
    }

    fn code_digests(&self, user_id: &str, codes: &[Zeroizing<String>]) -> Vec<RecoveryCodeDigest> {
        codes
            .iter()
            .filter_map(|code| recovery_codes::normalise(code))
            .map(|normalised| {
                let keyed = recovery_codes::digest(&self.keyring, user_id, &normalised);
                RecoveryCodeDigest { digest: keyed.digest, key_id: keyed.key_id }
            })
            .collect()
    }

    /// Records an event the account's owner caused.
    async fn record(
        &self,
        event_kind: &str,
        user_id: &str,
        address: Option<&str>,
        details: serde_json::Value,
    ) -> Result<()> {
        let actor = Actor::User(user_id.to_owned());
        self.audit.record(AuditLog::event(event_kind, &actor, Some(user_id), address, details)).await?;
        Ok(())
    }

    /// Mails the owner about a change; `remaining` is the recovery codes left after it.
    async fn notify(
        &self,
        user_id: &str,
        change: &'static str,
        address: Option<&str>,
        remaining: impl TryInto<i64>,
    ) -> Result<()> {
        let remaining = remaining.try_into().unwrap_or_default();
        let notice = Notice::SecondFactorChanged { change, address: address.map(str::to_owned), remaining };
        self.accounts.notify(user_id, notice).await
    }
}

/// What a session offers to prove it is still its owner.
pub enum StepUp {
    Factor(Factor),
    Password(Zeroizing<String>),
}

fn now_secs() -> u64 {
    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_factor_is_taken() {
        assert!(matches!(Factor::from_fields(Some("123456".into()), None, None), Ok(Factor::Totp(_))));
        assert!(matches!(Factor::from_fields(None, Some("abcde-fghjk".into()), None), Ok(Factor::RecoveryCode(_))));
        assert!(Factor::from_fields(Some("1".into()), Some("2".into()), None).is_err());
        assert!(Factor::from_fields(Some("  ".into()), None, None).is_err());
        assert!(Factor::from_fields(None, None, None).is_err());
    }
}
