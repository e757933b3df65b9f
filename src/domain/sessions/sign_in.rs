//! Every way of proving who you are: a password, a passkey, an upstream provider, and the second
//! step (an authenticator code, a recovery code, a passkey or a mailed code) that may follow.

use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::PendingSignIn;
use super::{Issue, IssuedTokens, Sessions};
use crate::domain::accounts::Accounts;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::device_info::DeviceInfo;
use crate::domain::dpop::Proof;
use crate::domain::error::{Error, Result};
use crate::domain::honeytokens;
use crate::domain::identity::Login;
use crate::domain::known_devices;
use crate::domain::passkeys::Assertion;
use crate::domain::password;
use crate::domain::profile::Role;
use crate::domain::second_factors::Factor;
use crate::domain::throttle::{self, Purpose, Subject};
use crate::domain::tokens::TokenKind;
use crate::mail::Notice;
use crate::store::{DeviceRecord, NewMfaChallenge};

#[derive(Debug, Clone)]
pub struct SignIn {
    pub login: String,
    pub password: Zeroizing<String>,
    pub device: Option<DeviceInfo>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// A verified DPoP proof sent with the sign-in: the session's tokens are bound to its key.
    pub dpop: Option<Proof>,
    /// What to issue: an access/refresh pair for API clients, or one cookie token for keywarden's pages.
    pub issue: Issue,
    /// The device token this browser or app was given at an earlier sign-in (see `known_devices`).
    pub device_token: Option<String>,
}

/// A passwordless sign-in: a passkey's answer to a discovery challenge.
#[derive(Debug, Clone)]
pub struct PasskeySignIn {
    pub assertion: Assertion,
    pub device: Option<DeviceInfo>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    pub dpop: Option<Proof>,
    pub issue: Issue,
}

/// A browser's sign-in vouched for by an upstream provider (see `crate::domain::sso`).
#[derive(Debug, Clone, Default)]
pub struct ProviderSignIn {
    pub address: Option<String>,
    pub user_agent: Option<String>,
    pub dpop: Option<Proof>,
}

/// Finishing a sign-in with its second factor.
#[derive(Debug, Clone)]
pub struct FinishSignIn {
    pub mfa_token: String,
    pub factor: Factor,
    pub address: Option<String>,
    /// Required, from the same key, when the password step was bound to a DPoP key.
    pub dpop: Option<Proof>,
}

/// The second-step method of a code mailed to the account (see `StuffingSettings::new_device_step`).
pub const MAILED_CODE: &str = "email";

const SIGN_IN_CODE_WINDOW_MS: i64 = 10 * 60 * 1000;

/// What a password sign-in's failures count against: the owner's known device alone (neither the
/// account's lock nor a shared address holds it back), or else the source address and the account
/// (or, for a name that matches none, the name).
fn sign_in_subjects<'a>(
    user: Option<&'a crate::store::UserRecord>,
    known: Option<&'a DeviceRecord>,
    login: &'a str,
    address: Option<&'a str>,
) -> Vec<Subject<'a>> {
    let counted = match (user, known) {
        (_, Some(known)) => return vec![Subject::Device(&known.id)],
        (Some(user), None) => Subject::Account(&user.id),
        (None, None) => Subject::Login(login.trim()),
    };
    address.map(Subject::Address).into_iter().chain([counted]).collect()
}

impl Sessions {
    /// Password sign-in. Unknown accounts and wrong passwords fail identically and in about the
    /// same time: both cost one argon2id verification (P5), and both are throttled alike.
    pub async fn sign_in(&self, request: SignIn) -> Result<IssuedTokens> {
        let device = request.device.as_ref().map(DeviceInfo::validated).transpose()?;
        let password = password::normalise(&request.password);
        let user = match Login::parse(&request.login) {
            Some(login) => self.accounts.find_by_login(&login).await?,
            None => None,
        };
        let known = match &user {
            Some(user) => self.known_device(&user.id, request.device_token.as_deref()).await?,
            None => None,
        };
        let decoy = user.as_ref().filter(|u| honeytokens::is_decoy_account(&self.keyring, &u.id));
        if let Some(decoy) = decoy {
            let what = "a sign-in as a decoy account";
            honeytokens::touched(&self.alerts, what, Some(&decoy.id), request.address.as_deref());
        }
        let subjects = sign_in_subjects(user.as_ref(), known.as_ref(), &request.login, request.address.as_deref());
        let attempt = self.throttle.reserve(Purpose::SignIn, &subjects).await?;
        let stored = user.as_ref().and_then(Accounts::stored_hash);
        let verification = match self.hasher.verify(stored.as_ref(), &password).await {
            Ok(verification) => verification,
            Err(err) => {
                self.throttle.abandoned(attempt).await?;
                return Err(err);
            }
        };
        // A decoy never signs in, even with its password: it answers like a wrong one.
        let (Some(user), Some(stored), true, None) = (&user, stored, verification.matches, decoy) else {
            // The attempted login is not recorded: it may be an email address (P1).
            let user_id = user.as_ref().map(|u| u.id.as_str());
            let reason = match &user {
                None => "unknown_account",
                Some(user) if user.password_hash.is_empty() => "no_password",
                Some(_) => "wrong_password",
            };
            let address = request.address.as_deref();
            let details = json!({ "reason": reason, "known_device": known.as_ref().map(|d| &d.id) });
            self.audit
                .record(AuditLog::event(kind::SIGN_IN_FAILED, &Actor::Anonymous, user_id, address, details))
                .await?;
            self.throttle.failed(attempt, user_id, address).await?;
            return Err(Error::InvalidCredentials);
        };
        self.throttle.succeeded(attempt).await?;
        if verification.outdated {
            self.upgrade_hash_later(user.id.clone(), stored.phc, password);
        }
        if user.must_reset_password != 0 {
            return Err(Error::PasswordResetRequired);
        }

        let mut pending = PendingSignIn::new(device, request.address, request.user_agent, request.dpop, request.issue);
        if let Some(known) = known {
            pending.known_browser = pending.device.is_none().then(|| known.client_identifier.clone());
            pending.known_device = Some(known.id);
        }
        let methods = self.factors.methods(&user.id).await?;
        if !methods.is_empty() {
            return Err(self.challenge(&user.id, pending, methods).await?);
        }
        if pending.known_device.is_none() && self.alerts.new_device_step_required().await? {
            // A password alone is what credential stuffing has: a new device must also read the
            // account's mail while a surge lasts.
            self.mail_sign_in_code(&user.id, &pending).await?;
            pending.mailed_code = true;
            return Err(self.challenge(&user.id, pending, vec![MAILED_CODE]).await?);
        }
        let enrolment_only = self.factors.policy().requires_second_factor(Role::of(user));
        self.start(&user.id, pending, None, enrolment_only).await
    }

    /// The code for the extra step, the same for every attempt within a ten-minute window (so a
    /// client that signs in again with the code, as plex.tv clients do, meets the code it was sent).
    pub(super) fn sign_in_codes(&self, user_id: &str, window: i64) -> Vec<String> {
        self.keyring
            .token_digests(&format!("sign-in-code:{user_id}:{window}"))
            .iter()
            .map(|d| {
                let number = u32::from_be_bytes([d.digest[0], d.digest[1], d.digest[2], d.digest[3]]);
                format!("{:06}", number % 1_000_000)
            })
            .collect()
    }

    /// Mails the extra step's code, once per account and window however often the password is tried.
    pub(super) async fn mail_sign_in_code(&self, user_id: &str, pending: &PendingSignIn) -> Result<()> {
        let now = self.clock.now_ms();
        let window = now / SIGN_IN_CODE_WINDOW_MS;
        let window_end = (window + 1) * SIGN_IN_CODE_WINDOW_MS;
        if !self.store.raise_alert_state(&format!("sign_in_code:{user_id}"), now, window_end).await? {
            return Ok(());
        }
        let code = self.sign_in_codes(user_id, window).swap_remove(0);
        let device_name = match &pending.device {
            Some(device) => device.name.clone(),
            None => DeviceInfo::browser(pending.user_agent.as_deref()).name,
        };
        let minutes = SIGN_IN_CODE_WINDOW_MS / 60_000;
        let notice = Notice::SignInCode { code, minutes, device_name, address: pending.address.clone() };
        self.accounts.notify(user_id, notice).await
    }

    /// Checks a typed code against this window's and the previous window's codes.
    pub(super) fn check_sign_in_code(&self, user_id: &str, factor: &Factor) -> Result<()> {
        let Factor::Totp(typed) = factor else { return Err(Error::InvalidCode) };
        let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        let window = self.clock.now_ms() / SIGN_IN_CODE_WINDOW_MS;
        let matches = [window, window - 1]
            .iter()
            .flat_map(|w| self.sign_in_codes(user_id, *w))
            .any(|code| bool::from(code.as_bytes().ct_eq(typed.as_bytes())));
        if matches {
            Ok(())
        } else {
            Err(Error::InvalidCode)
        }
    }

    /// Passwordless sign-in with a passkey. A passkey checks possession and user verification on
    /// the device, so the session counts as signed in with two factors.
    pub async fn sign_in_with_passkey(&self, request: PasskeySignIn) -> Result<IssuedTokens> {
        let device = request.device.as_ref().map(DeviceInfo::validated).transpose()?;
        let user_id = match self.factors.passkeys().discover(&request.assertion).await {
            Ok(user_id) => user_id,
            Err(err) => {
                if !err.is_internal() {
                    let details = json!({ "reason": err.code(), "method": "webauthn" });
                    let event = AuditLog::event(
                        kind::SIGN_IN_FAILED,
                        &Actor::Anonymous,
                        None,
                        request.address.as_deref(),
                        details,
                    );
                    self.audit.record(event).await?;
                }
                return Err(err);
            }
        };
        let pending = PendingSignIn::new(device, request.address, request.user_agent, request.dpop, request.issue);
        self.start(&user_id, pending, Some("webauthn"), false).await
    }

    /// A sign-in an upstream provider vouched for. Like a password it is one factor: an account
    /// with a second factor is asked for it, and `mfa.require` applies as for any sign-in.
    pub async fn sign_in_with_provider(
        &self,
        user_id: &str,
        provider: &str,
        request: ProviderSignIn,
    ) -> Result<IssuedTokens> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::InvalidCredentials)?;
        let mut pending =
            PendingSignIn::new(None, request.address, request.user_agent, request.dpop, Issue::BrowserCookie);
        pending.provider = Some(provider.to_owned());
        let methods = self.factors.methods(user_id).await?;
        if !methods.is_empty() {
            return Err(self.challenge(user_id, pending, methods).await?);
        }
        let enrolment_only = self.factors.policy().requires_second_factor(Role::of(&user));
        self.start(user_id, pending, None, enrolment_only).await
    }

    /// The device of this account that the sign-in comes from, if it proves the account knows it
    /// with the device token it was given. A client identifier is not proof: it is no secret, and
    /// naming the owner's TV would otherwise buy a guesser the TV's counter (and let them lock the
    /// TV). A device that was signed out is not known any more.
    pub(super) async fn known_device(&self, user_id: &str, token: Option<&str>) -> Result<Option<DeviceRecord>> {
        let Some(device_id) = token.and_then(|t| known_devices::device_of(&self.keyring, t, user_id)) else {
            return Ok(None);
        };
        let devices = self.store.devices_of(user_id).await?;
        Ok(devices.into_iter().find(|d| d.id == device_id && d.signed_out_at.is_none()))
    }

    /// Stores the half-done sign-in and answers `mfa_required` with the token that finishes it.
    pub(super) async fn challenge(
        &self,
        user_id: &str,
        mut pending: PendingSignIn,
        methods: Vec<&'static str>,
    ) -> Result<Error> {
        let ceremony = self.factors.passkeys().authentication_options(user_id).await?;
        pending.webauthn_ceremony = ceremony.as_ref().map(|c| c.ceremony_id.clone());
        let token = TokenKind::MfaChallenge.mint();
        let keyed = self.keyring.token_digest(&token);
        let now = self.clock.now_ms();
        let challenge = NewMfaChallenge {
            digest: keyed.digest,
            digest_key_id: keyed.key_id,
            user_id: user_id.to_owned(),
            sign_in: serde_json::to_string(&pending).map_err(|e| Error::Internal(e.to_string()))?,
            created_at: now,
            expires_at: now + self.factors.policy().challenge_ttl_secs * 1000,
        };
        self.store.create_mfa_challenge(&challenge).await?;
        tracing::info!(%user_id, "password accepted; waiting for the second factor");
        let webauthn_options = ceremony.map(|c| c.options);
        Ok(Error::MfaRequired { mfa_token: token.to_string(), methods, webauthn_options })
    }

    /// Finishes a password sign-in with its second factor. The challenge token works once, for a
    /// few minutes and a few wrong codes; a DPoP-bound attempt must be finished by the same key.
    pub async fn finish_sign_in(&self, finish: FinishSignIn) -> Result<IssuedTokens> {
        if TokenKind::of(&finish.mfa_token) != Some(TokenKind::MfaChallenge) {
            return Err(Error::InvalidMfaToken);
        }
        let now = self.clock.now_ms();
        let store = &self.store;
        let look_up = |digest: Vec<u8>| async move { store.mfa_challenge(&digest).await };
        let record =
            self.keyring.find_by_token_digest(&finish.mfa_token, look_up).await?.ok_or(Error::InvalidMfaToken)?;
        let policy = self.factors.policy();
        // A challenge already used up says so before any counter is asked (its limit is taken
        // again, atomically, below: this read only spares a spent challenge the throttle).
        if record.used_at.is_some() || record.expires_at <= now || record.failures >= policy.max_code_attempts {
            return Err(Error::InvalidMfaToken);
        }
        let pending: PendingSignIn =
            serde_json::from_str(&record.sign_in).map_err(|e| Error::Internal(e.to_string()))?;
        if let (Some(jkt), Issue::TokenPair) = (&pending.dpop_jkt, pending.issue) {
            match &finish.dpop {
                Some(proof) if proof.jkt == *jkt => {}
                Some(_) => return Err(Error::InvalidDpopProof("the proof was signed by another key")),
                None => return Err(Error::DpopProofRequired),
            }
        }
        let address = finish.address.as_deref().or(pending.address.as_deref()).map(str::to_owned);
        // A passkey answers the challenge that was offered with this sign-in, and no other.
        let factor = match finish.factor {
            Factor::Passkey(assertion) => {
                Factor::Passkey(Assertion { ceremony_id: pending.webauthn_ceremony.clone(), ..assertion })
            }
            other => other,
        };
        let subjects = match &pending.known_device {
            Some(device_id) => vec![Subject::Device(device_id)],
            None => throttle::against_account(&record.user_id, address.as_deref()),
        };
        let attempt = self.throttle.reserve(Purpose::SecondFactor, &subjects).await?;
        // The challenge's own limit is taken before the code is looked at, like the throttle's.
        if !self.store.reserve_mfa_attempt(&record.digest, policy.max_code_attempts).await? {
            self.throttle.abandoned(attempt).await?;
            return Err(Error::InvalidMfaToken);
        }
        let checked = if pending.mailed_code {
            self.check_sign_in_code(&record.user_id, &factor)
        } else {
            self.factors.check(&record.user_id, &factor, address.as_deref()).await
        };
        self.throttle.settle(attempt, &checked, Some(&record.user_id), address.as_deref()).await?;
        checked?;
        if !self.store.consume_mfa_challenge(&record.digest, self.clock.now_ms()).await? {
            return Err(Error::InvalidMfaToken);
        }
        let method = if pending.mailed_code { MAILED_CODE } else { factor.method() };
        let pending = PendingSignIn { address, ..pending };
        self.start(&record.user_id, pending, Some(method), false).await
    }
}
