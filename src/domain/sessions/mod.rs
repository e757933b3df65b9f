//! Sign-in and sessions: issuing tokens, validating them, rotating refresh tokens with reuse detection.
//!
//! A session is one sign-in on one device. Its tokens form one family: ending the session (sign-out,
//! or a refresh token presented twice) kills every token of it with a single write.

mod authenticate;
mod refresh;
mod sign_in;

use std::sync::Arc;

use serde_json::json;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::accounts::Accounts;
use crate::domain::alerts::Alerts;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::core::Core;
use crate::domain::device_info::{DeviceInfo, CHANNEL_DEVICE, CHANNEL_WEB};
use crate::domain::dpop::Proof;
use crate::domain::error::{Error, Result};
use crate::domain::known_devices;
use crate::domain::password::PasswordHasher;
use crate::domain::policy::TokenPolicy;
use crate::domain::revocation::Revocations;
use crate::domain::second_factors::SecondFactors;
use crate::domain::throttle::Throttle;
use crate::domain::tokens::TokenKind;
use crate::domain::validation_cache::ValidationCache;
use crate::keys::Keyring;
use crate::mail::Notice;
use crate::store::{DeviceSighting, DynStore, NewToken, SessionStart, Verified};

pub use sign_in::{FinishSignIn, PasskeySignIn, ProviderSignIn, SignIn, MAILED_CODE};

/// A password sign-in as it started, kept with its second-factor challenge so that finishing it
/// issues exactly what the password step would have: same device, same key binding, same kind.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PendingSignIn {
    device: Option<DeviceInfo>,
    address: Option<String>,
    user_agent: Option<String>,
    dpop_jkt: Option<String>,
    issue: Issue,
    /// The passkey challenge offered with the second-factor step, if the account has passkeys.
    #[serde(default)]
    webauthn_ceremony: Option<String>,
    /// The upstream provider that vouched for the first step, for a sign-in through one.
    #[serde(default)]
    provider: Option<String>,
    /// A device the account already knows, by id: its failures are counted on it alone.
    #[serde(default)]
    known_device: Option<String>,
    /// The second step is the code mailed to the account (a new device during a credential-stuffing surge).
    #[serde(default)]
    mailed_code: bool,
    /// The client identifier of a browser recognised by its device token: the sign-in continues
    /// that device instead of starting a new one.
    #[serde(default)]
    known_browser: Option<String>,
}

impl PendingSignIn {
    fn new(
        device: Option<DeviceInfo>,
        address: Option<String>,
        user_agent: Option<String>,
        dpop: Option<Proof>,
        issue: Issue,
    ) -> Self {
        Self {
            device,
            address,
            user_agent,
            dpop_jkt: dpop.map(|p| p.jkt),
            issue,
            webauthn_ceremony: None,
            provider: None,
            known_device: None,
            known_browser: None,
            mailed_code: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Issue {
    #[default]
    TokenPair,
    /// A `kw_ws_` token for the page session cookie, valid as long as a refresh token.
    BrowserCookie,
    /// One `kw_pt_` token for a plex.tv-style client (`X-Plex-Token`), valid as long as a refresh
    /// token: those clients never refresh.
    PlexToken,
}

#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Zeroizing<String>,
    /// `Bearer`, or `DPoP` when the tokens are bound to a key.
    pub token_type: &'static str,
    pub expires_in: i64,
    /// The account signed in.
    pub user_id: String,
    pub session_id: String,
    pub device_id: String,
    pub channel: String,
    /// The session was revoked by a leak response and replaced without a password, because the
    /// client proved it still holds the session's key.
    pub recovered: bool,
    /// The operator requires a second factor this account lacks: until it enrols one, the session
    /// may only do that (every other call answers `403 mfa_enrolment_required`).
    pub mfa_enrolment_required: bool,
    /// Proof, for later sign-ins, that this device knows the account (see `known_devices`).
    pub device_token: String,
}

fn token_type(bound: bool) -> &'static str {
    if bound {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// How a device linked from another session (a plex.tv-style PIN) signed in: with no proof of its own.
const LINKED: &str = "linked";

#[derive(Clone)]
pub struct Sessions(std::sync::Arc<SessionsParts>);

impl std::ops::Deref for Sessions {
    type Target = SessionsParts;

    fn deref(&self) -> &SessionsParts {
        &self.0
    }
}

/// What every handle to the session service shares.
pub struct SessionsParts {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    hasher: Arc<PasswordHasher>,
    accounts: Accounts,
    revocations: Revocations,
    audit: AuditLog,
    policy: TokenPolicy,
    factors: SecondFactors,
    throttle: Throttle,
    alerts: Alerts,
    validations: ValidationCache,
    require_verified_email: bool,
}

impl Sessions {
    pub fn new(core: &Core, accounts: Accounts, factors: SecondFactors) -> Self {
        Self(std::sync::Arc::new(SessionsParts {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            hasher: core.hasher.clone(),
            accounts,
            revocations: core.revocations.clone(),
            audit: core.audit.clone(),
            policy: core.policy,
            factors,
            throttle: core.throttle.clone(),
            alerts: core.alerts.clone(),
            validations: core.validations().clone(),
            require_verified_email: core.signup.require_verified_email,
        }))
    }

    /// Records that the session's person just signed in again at their provider: a step-up that
    /// stands for a password, never for a second factor.
    pub async fn mark_verified(&self, who: &Authenticated, address: Option<&str>, provider: &str) -> Result<()> {
        let verified = Verified { at: self.clock.now_ms(), second_factor: false };
        self.store.mark_session_verified(&who.session_id, verified).await?;
        self.validations.forget_session(&who.session_id);
        let details = json!({ "session_id": who.session_id, "provider": provider });
        let event =
            AuditLog::event(kind::STEPPED_UP, &Actor::User(who.user_id.clone()), Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }

    /// The session of a device its person linked from a signed-in session (a plex.tv-style PIN):
    /// one `X-Plex-Token` for it, in the `device` channel.
    pub async fn start_linked_device(
        &self,
        user_id: &str,
        device: DeviceInfo,
        address: Option<String>,
    ) -> Result<IssuedTokens> {
        let device = device.validated()?;
        let pending = PendingSignIn::new(Some(device), address, None, None, Issue::PlexToken);
        self.start(user_id, pending, Some(LINKED), false).await
    }

    /// Creates the session of a sign-in whose factors all passed; an `enrolment_only` session may
    /// do nothing but enrol a second factor.
    async fn start(
        &self,
        user_id: &str,
        request: PendingSignIn,
        factor: Option<&str>,
        enrolment_only: bool,
    ) -> Result<IssuedTokens> {
        // Checked here, after every factor passed, so only someone who holds the account's
        // credentials learns that it is disabled; every way in (password, passkey, provider, a
        // linked device, a claimed server) starts its session here.
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::InvalidCredentials)?;
        if user.disabled_at.is_some() {
            return Err(Error::AccountDisabled);
        }
        // `signup.require_verified_email`: a plex token works anywhere, so none before the proof.
        if self.require_verified_email && request.issue == Issue::PlexToken && user.email_verified_at.is_none() {
            return Err(Error::EmailNotVerified);
        }
        // The owner is back within the grace period: the deletion they asked for is cancelled.
        if user.deletion_due_at.is_some() {
            self.accounts.keep(user_id, "sign_in", request.address.as_deref()).await?;
        }
        let channel = match &request.device {
            // A plex.tv-style web app names itself as a device, but it lives in a browser.
            Some(device) if request.issue == Issue::PlexToken && device.is_browser_app() => CHANNEL_WEB,
            Some(_) => CHANNEL_DEVICE,
            None => CHANNEL_WEB,
        };
        let mut device = request.device.unwrap_or_else(|| DeviceInfo::browser(request.user_agent.as_deref()));
        if let Some(client_identifier) = request.known_browser {
            device.client_id = client_identifier;
        }
        let now = self.clock.now_ms();
        let session_id = uuid::Uuid::now_v7().to_string();
        let (access, refresh, tokens) = self.mint(request.issue, &session_id, user_id, now);
        // A device linked from another session proved nothing itself; any other sign-in proved
        // a password or a provider, and with a second factor or a passkey, that too.
        let verified = match factor {
            Some(LINKED) => Verified::default(),
            Some("totp" | "recovery_code" | "webauthn") => Verified { at: now, second_factor: true },
            _ => Verified { at: now, second_factor: false },
        };
        let start = SessionStart {
            session_id: session_id.clone(),
            new_device_id: uuid::Uuid::now_v7().to_string(),
            device: DeviceSighting {
                user_id: user_id.to_owned(),
                client_identifier: device.client_id,
                product: device.product,
                platform: device.platform,
                name: device.name,
                address: request.address.clone(),
                seen_at: now,
            },
            channel: channel.to_owned(),
            dpop_jkt: request.dpop_jkt,
            enrolment_only,
            verified,
            grant: None,
            tokens,
        };
        let device_id = self.store.start_session(&start).await?;
        let new_device = device_id == start.new_device_id;
        tracing::info!(%user_id, %session_id, %device_id, channel, new_device, "signed in");
        let actor = Actor::User(user_id.to_owned());
        let address = request.address.as_deref();
        let device = &start.device;
        if new_device {
            let details = json!({ "device_id": device_id, "product": device.product, "platform": device.platform, "name": device.name });
            self.audit.record(AuditLog::event(kind::NEW_DEVICE, &actor, Some(user_id), address, details)).await?;
            // The very first device of an account is not news to its owner.
            if self.store.devices_of(user_id).await?.len() > 1 {
                let notice = Notice::NewSignIn {
                    device_name: device.name.clone(),
                    product: device.product.clone(),
                    platform: device.platform.clone(),
                    address: request.address.clone(),
                };
                self.accounts.notify(user_id, notice).await?;
            }
        }
        let details = json!({
            "session_id": session_id, "device_id": device_id, "channel": channel, "second_factor": factor,
            "enrolment_only": enrolment_only, "provider": request.provider,
        });
        self.audit.record(AuditLog::event(kind::SIGN_IN, &actor, Some(user_id), address, details)).await?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            token_type: token_type(start.dpop_jkt.is_some()),
            expires_in: self.policy.access_ttl_secs,
            user_id: user_id.to_owned(),
            session_id,
            device_token: known_devices::mint(&self.keyring, user_id, &device_id),
            device_id,
            channel: channel.to_owned(),
            recovered: false,
            mfa_enrolment_required: enrolment_only,
        })
    }

    /// Ends the caller's session: its access and refresh tokens stop working at once.
    pub async fn sign_out(&self, who: &Authenticated, address: Option<&str>) -> Result<()> {
        self.store.revoke_session(&who.session_id, self.clock.now_ms()).await?;
        self.validations.forget_session(&who.session_id);
        tracing::info!(user_id = %who.user_id, session_id = %who.session_id, "signed out");
        let details = json!({ "session_id": who.session_id, "device_id": who.device_id });
        let event =
            AuditLog::event(kind::SIGNED_OUT, &Actor::User(who.user_id.clone()), Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }

    fn token_row(
        &self,
        token: &str,
        kind: TokenKind,
        session_id: &str,
        user_id: &str,
        now: i64,
        ttl_secs: i64,
    ) -> NewToken {
        let digest = self.keyring.token_digest(token);
        NewToken {
            digest: digest.digest,
            digest_key_id: digest.key_id,
            kind: kind.as_str(),
            session_id: session_id.to_owned(),
            user_id: user_id.to_owned(),
            issued_at: now,
            expires_at: now + ttl_secs * 1000,
        }
    }

    /// The tokens a sign-in or recovery hands out: an access/refresh pair, or one page cookie token.
    fn mint(
        &self,
        issue: Issue,
        session_id: &str,
        user_id: &str,
        now: i64,
    ) -> (Zeroizing<String>, Zeroizing<String>, Vec<NewToken>) {
        match issue {
            Issue::TokenPair => self.mint_pair(session_id, user_id, now),
            Issue::BrowserCookie | Issue::PlexToken => {
                let kind = if issue == Issue::PlexToken { TokenKind::PlexToken } else { TokenKind::WebSession };
                let token = kind.mint();
                let ttl = if issue == Issue::PlexToken {
                    self.policy.plex_idle_ttl_secs
                } else {
                    self.policy.refresh_ttl_secs
                };
                let row = self.token_row(&token, kind, session_id, user_id, now, ttl);
                (token, Zeroizing::new(String::new()), vec![row])
            }
        }
    }

    pub(crate) fn mint_pair(
        &self,
        session_id: &str,
        user_id: &str,
        now: i64,
    ) -> (Zeroizing<String>, Zeroizing<String>, Vec<NewToken>) {
        let access = TokenKind::Access.mint();
        let refresh = TokenKind::Refresh.mint();
        let rows = vec![
            self.token_row(&access, TokenKind::Access, session_id, user_id, now, self.policy.access_ttl_secs),
            self.token_row(&refresh, TokenKind::Refresh, session_id, user_id, now, self.policy.refresh_ttl_secs),
        ];
        (access, refresh, rows)
    }

    /// Re-hashes a password made with older parameters or pepper, off the request's path. Skipped
    /// when hashing is saturated: the next sign-in tries again.
    fn upgrade_hash_later(&self, user_id: String, old_phc: String, password: Zeroizing<String>) {
        let (store, hasher, clock) = (self.store.clone(), self.hasher.clone(), self.clock.clone());
        tokio::spawn(async move {
            let Ok(new) = hasher.hash(&password).await else { return };
            match store.replace_password_hash(&user_id, &old_phc, &new.phc, &new.pepper_id, clock.now_ms()).await {
                Ok(true) => tracing::info!(%user_id, "password hash upgraded"),
                Ok(false) => {}
                Err(err) => tracing::warn!(%user_id, error = %err, "password hash upgrade failed"),
            }
        });
    }
}
