//! Sign-in and sessions: issuing tokens, validating them, rotating refresh tokens with reuse detection.
//!
//! A session is one sign-in on one device. Its tokens form one family: ending the session (sign-out,
//! or a refresh token presented twice) kills every token of it with a single write.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use serde_json::json;

use super::accounts::{Accounts, Role};
use super::alerts::Alerts;
use super::audit::{kind, Actor, AuditLog};
use super::core::Core;
use super::dpop::Proof;
use super::error::{Error, Result};
use super::honeytokens;
use super::identity::Login;
use super::known_devices;
use super::passkeys::Assertion;
use super::password::{self, PasswordHasher};
use super::revocation::{Revocations, TokenFacts};
use super::second_factors::{Factor, SecondFactors};
use super::throttle::{self, Purpose, Subject, Throttle};
use super::tokens::TokenKind;
use super::validation_cache::ValidationCache;
use crate::clock::now_ms;
use crate::keys::Keyring;
use crate::mail::Notice;
use crate::store::{
    DeviceRecord, DeviceSighting, DynStore, NewMfaChallenge, NewToken, SessionRecovery, SessionStart, TokenRecord,
    Verified,
};

/// Tokens of browsers that sign in without describing themselves as a device.
pub const CHANNEL_WEB: &str = "web";
/// Tokens of apps and media servers that sign in as a named device.
pub const CHANNEL_DEVICE: &str = "device";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenPolicy {
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// How long a just-rotated refresh token may be presented again, for a client whose response
    /// was lost; after that, presenting it is reuse and kills the family.
    pub refresh_reuse_grace_secs: i64,
}

/// The longest an access token may live (`tokens.access_ttl_secs`); a revocation rule older than
/// this no longer has a stateless token to judge.
pub const MAX_ACCESS_TTL_SECS: i64 = 24 * 3600;

impl Default for TokenPolicy {
    fn default() -> Self {
        Self { access_ttl_secs: 15 * 60, refresh_ttl_secs: 30 * 24 * 3600, refresh_reuse_grace_secs: 10 }
    }
}

/// How a client describes itself when it signs in.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub client_id: String,
    pub product: String,
    pub platform: String,
    pub name: String,
}

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

/// How an access token was presented.
#[derive(Debug, Clone, Default)]
pub struct Presentation {
    /// `Authorization: DPoP …` rather than `Bearer …`.
    pub dpop_scheme: bool,
    /// The verified proof sent with it (its `ath` already matched the token).
    pub proof: Option<Proof>,
}

/// Three base64url parts: a compact JWS rather than a `kw_` token.
fn looks_like_jwt(token: &str) -> bool {
    token.len() <= 4096
        && token.split('.').count() == 3
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether a stored token may still be used.
enum Liveness {
    Alive,
    /// Killed by a rule that allows a key holder to recover.
    Recoverable,
    Dead(Error),
}

fn token_type(bound: bool) -> &'static str {
    if bound {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// Who presented a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user_id: String,
    pub session_id: String,
    pub device_id: String,
    pub channel: String,
    /// When the session last proved its person (Unix ms; 0 for never), for fresh authentication.
    pub verified_at: i64,
    /// Whether that proof included a second factor or a passkey.
    pub verified_second_factor: bool,
    /// The session may only enrol a second factor (`mfa.require` and the account has none yet).
    pub enrolment_only: bool,
    /// The OAuth client the token was issued to, and what the user granted it; `None` for
    /// keywarden's own clients (pages, apps and devices that sign in with the API).
    pub client_id: Option<String>,
    pub scope: Option<String>,
}

impl From<TokenRecord> for Authenticated {
    /// Who a stored token speaks for.
    fn from(record: TokenRecord) -> Self {
        Self {
            user_id: record.user_id,
            session_id: record.session_id,
            device_id: record.device_id,
            channel: record.channel,
            verified_at: record.verified_at,
            verified_second_factor: record.verified_second_factor != 0,
            enrolment_only: record.enrolment_only != 0,
            client_id: record.client_id,
            scope: record.scope,
        }
    }
}

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
}

const FIELD_MAX: usize = 128;

/// Whether a plex.tv-style client is a web app (`Plex Web`, or a browser as its platform): its
/// tokens belong to the `web` channel although it names itself as a device.
pub(crate) fn is_browser_app(product: &str, platform: &str) -> bool {
    const BROWSERS: [&str; 6] = ["chrome", "firefox", "safari", "edge", "opera", "microsoft edge"];
    let platform = platform.to_ascii_lowercase();
    product.to_ascii_lowercase().ends_with(" web") || BROWSERS.contains(&platform.as_str())
}

/// How a device linked from another session (a plex.tv-style PIN) signed in: with no proof of its own.
const LINKED: &str = "linked";

/// The second-step method of a code mailed to the account (see `StuffingSettings::new_device_step`).
pub const MAILED_CODE: &str = "email";
const SIGN_IN_CODE_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Characters that are not control characters yet still rearrange or break what is shown around
/// them: bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, marks U+200E/F, U+061C)
/// can make a device list or a mail read backwards, and line and paragraph separators (U+2028/9)
/// break lines like CR/LF.
pub(crate) fn is_layout_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

fn clean_field(value: &str, required: bool, what: &'static str) -> Result<String> {
    let value = value.trim();
    let unprintable = value.chars().any(|c| c.is_control() || is_layout_control(c));
    if (required && value.is_empty()) || value.chars().count() > FIELD_MAX || unprintable {
        return Err(Error::InvalidDevice(what));
    }
    Ok(value.to_owned())
}

impl DeviceInfo {
    fn validated(&self) -> Result<Self> {
        Ok(Self {
            client_id: clean_field(&self.client_id, true, "device.client_id must be 1 to 128 printable characters")?,
            product: clean_field(&self.product, false, "device.product must be at most 128 printable characters")?,
            platform: clean_field(&self.platform, false, "device.platform must be at most 128 printable characters")?,
            name: clean_field(&self.name, false, "device.name must be at most 128 printable characters")?,
        })
    }

    /// Whether a plex.tv-style client is a web app.
    fn is_browser_app(&self) -> bool {
        is_browser_app(&self.product, &self.platform)
    }

    /// A browser that did not name itself: a device of its own, named after its user agent.
    fn browser(user_agent: Option<&str>) -> Self {
        let (browser, system) = user_agent.map_or(("Web browser", ""), describe_user_agent);
        let name = if system.is_empty() { browser.to_owned() } else { format!("{browser} on {system}") };
        Self {
            client_id: format!("browser-{}", uuid::Uuid::new_v4()),
            product: browser.into(),
            platform: system.into(),
            name,
        }
    }
}

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

/// A person-readable browser and system from a User-Agent ("Chrome", "Linux"); order matters, since
/// Edge and Chrome also claim to be Safari and most browsers claim to be Mozilla.
fn describe_user_agent(agent: &str) -> (&'static str, &'static str) {
    let browser =
        [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari")]
            .iter()
            .find(|(marker, _)| agent.contains(marker))
            .map_or("Web browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| agent.contains(marker))
    .map_or("", |(_, name)| name);
    (browser, system)
}

impl Sessions {
    pub fn new(core: &Core, accounts: Accounts, factors: SecondFactors) -> Self {
        Self(std::sync::Arc::new(SessionsParts {
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
        }))
    }

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
    fn sign_in_codes(&self, user_id: &str, window: i64) -> Vec<String> {
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
    async fn mail_sign_in_code(&self, user_id: &str, pending: &PendingSignIn) -> Result<()> {
        let now = now_ms();
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
    fn check_sign_in_code(&self, user_id: &str, factor: &Factor) -> Result<()> {
        let Factor::Totp(typed) = factor else { return Err(Error::InvalidCode) };
        let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        let window = now_ms() / SIGN_IN_CODE_WINDOW_MS;
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

    /// Records that the session's person just signed in again at their provider: a step-up that
    /// stands for a password, never for a second factor.
    pub async fn mark_verified(&self, who: &Authenticated, address: Option<&str>, provider: &str) -> Result<()> {
        let verified = Verified { at: now_ms(), second_factor: false };
        self.store.mark_session_verified(&who.session_id, verified).await?;
        self.validations.forget_session(&who.session_id);
        let details = json!({ "session_id": who.session_id, "provider": provider });
        let event =
            AuditLog::event(kind::STEPPED_UP, &Actor::User(who.user_id.clone()), Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }

    /// The device of this account that the sign-in comes from, if it proves the account knows it
    /// with the device token it was given. A client identifier is not proof: it is no secret, and
    /// naming the owner's TV would otherwise buy a guesser the TV's counter (and let them lock the
    /// TV). A device that was signed out is not known any more.
    async fn known_device(&self, user_id: &str, token: Option<&str>) -> Result<Option<DeviceRecord>> {
        let Some(device_id) = token.and_then(|t| known_devices::device_of(&self.keyring, t, user_id)) else {
            return Ok(None);
        };
        let devices = self.store.devices_of(user_id).await?;
        Ok(devices.into_iter().find(|d| d.id == device_id && d.signed_out_at.is_none()))
    }

    /// Stores the half-done sign-in and answers `mfa_required` with the token that finishes it.
    async fn challenge(&self, user_id: &str, mut pending: PendingSignIn, methods: Vec<&'static str>) -> Result<Error> {
        let ceremony = self.factors.passkeys().authentication_options(user_id).await?;
        pending.webauthn_ceremony = ceremony.as_ref().map(|c| c.ceremony_id.clone());
        let token = TokenKind::MfaChallenge.mint();
        let keyed = self.keyring.token_digest(&token);
        let now = now_ms();
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
        let now = now_ms();
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
        if !self.store.consume_mfa_challenge(&record.digest, now_ms()).await? {
            return Err(Error::InvalidMfaToken);
        }
        let method = if pending.mailed_code { MAILED_CODE } else { factor.method() };
        let pending = PendingSignIn { address, ..pending };
        self.start(&record.user_id, pending, Some(method), false).await
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
        let now = now_ms();
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

    /// Validates an access token as presented and says whose it is. A token bound to a key is only
    /// accepted with the DPoP scheme and a proof from that key (RFC 9449 §7). A session that may
    /// only enrol a second factor is refused with `mfa_enrolment_required`.
    /// An OAuth client's token is for that client's own use (`/oauth/userinfo`), never for the
    /// account API.
    pub async fn authenticate(&self, access_token: &str, presented: &Presentation) -> Result<Authenticated> {
        let who = self.authenticate_for_enrolment(access_token, presented).await?;
        if who.enrolment_only {
            return Err(Error::MfaEnrolmentRequired);
        }
        Ok(who)
    }

    /// An access token issued to an OAuth client, as presented to an endpoint for such clients.
    pub async fn authenticate_client_token(
        &self,
        access_token: &str,
        presented: &Presentation,
    ) -> Result<Authenticated> {
        let who = self.authenticate_as(access_token, TokenKind::Access, presented).await?;
        if who.client_id.is_none() {
            return Err(Error::InsufficientScope);
        }
        Ok(who)
    }

    /// Like [`Self::authenticate`], but also accepts a session that may only enrol a second factor,
    /// for the calls that do that (and for reading one's profile and signing out).
    pub async fn authenticate_for_enrolment(
        &self,
        access_token: &str,
        presented: &Presentation,
    ) -> Result<Authenticated> {
        let who = self.authenticate_as(access_token, TokenKind::Access, presented).await?;
        if who.client_id.is_some() {
            return Err(Error::InsufficientScope);
        }
        Ok(who)
    }

    /// Validates a page session cookie (a `kw_ws_` token); `enrolment_only` tells the pages what it
    /// may do.
    pub async fn authenticate_browser(&self, cookie: &str) -> Result<Authenticated> {
        self.authenticate_as(cookie, TokenKind::WebSession, &Presentation::default()).await
    }

    /// Validates an `X-Plex-Token`: a `kw_pt_` token, or a device-key JWT issued by
    /// `DeviceKeys::exchange` (kept, like every token, as a keyed digest).
    pub async fn authenticate_plex(&self, token: &str) -> Result<Authenticated> {
        let record = self.plex_token_record(token).await?;
        self.check_presentation(&record, TokenKind::PlexToken, &Presentation::default())?;
        Ok(Authenticated::from(record))
    }

    /// The stored record of an `X-Plex-Token`, in either shape.
    pub(crate) async fn plex_token_record(&self, token: &str) -> Result<TokenRecord> {
        if looks_like_jwt(token) {
            self.find_stored(token, TokenKind::PlexToken).await
        } else {
            self.find(token, TokenKind::PlexToken).await
        }
    }

    /// Stores `token` (a device-key JWT) as a new `X-Plex-Token` of the session `anchor` belongs to;
    /// returns its digest.
    pub(crate) async fn add_plex_token(&self, anchor: &TokenRecord, token: &str, ttl_secs: i64) -> Result<Vec<u8>> {
        let row = self.token_row(token, TokenKind::PlexToken, &anchor.session_id, &anchor.user_id, now_ms(), ttl_secs);
        let digest = row.digest.clone();
        self.store.add_tokens(&[row]).await?;
        Ok(digest)
    }

    async fn authenticate_as(&self, token: &str, kind: TokenKind, presented: &Presentation) -> Result<Authenticated> {
        let record = self.find(token, kind).await?;
        self.check_presentation(&record, kind, presented)?;
        Ok(Authenticated::from(record))
    }

    /// Whether a stored token is alive and presented as its binding demands.
    pub(crate) fn check_presentation(
        &self,
        record: &TokenRecord,
        kind: TokenKind,
        presented: &Presentation,
    ) -> Result<()> {
        match self.liveness(record) {
            Liveness::Alive => {}
            Liveness::Recoverable => return Err(Error::TokenRevoked),
            Liveness::Dead(err) => return Err(err),
        }
        // A page cookie cannot carry a proof on every navigation (it is HttpOnly and SameSite
        // instead); its key binding only decides who may recover it after a leak.
        let proof_needed = kind != TokenKind::WebSession;
        match (&record.dpop_jkt, presented.dpop_scheme, &presented.proof) {
            (Some(jkt), true, Some(proof)) if proof.jkt == *jkt => {}
            (Some(_), true, Some(_)) => return Err(Error::InvalidDpopProof("the proof was signed by another key")),
            (Some(_), _, _) if proof_needed => return Err(Error::DpopProofRequired),
            (None, true, _) => return Err(Error::InvalidToken),
            _ => {}
        }
        Ok(())
    }

    /// Exchanges a refresh token for a new pair. Each refresh token works once (plus a short grace for
    /// a retried request); presenting it again later means it was copied, and the session dies.
    /// A session bound to a key needs a proof from it; if a leak response revoked the session, that
    /// proof alone earns a fresh session, without the password.
    /// A refresh token issued to an OAuth client works only at the token endpoint, for that client.
    pub async fn refresh(&self, refresh_token: &str, proof: Option<&Proof>) -> Result<IssuedTokens> {
        let record = self.find(refresh_token, TokenKind::Refresh).await?;
        if record.client_id.is_some() {
            return Err(Error::InvalidToken);
        }
        self.refresh_found(record, proof).await
    }

    /// [`Self::refresh`] for a token already looked up and checked to belong to its presenter.
    pub(crate) async fn refresh_found(&self, record: TokenRecord, proof: Option<&Proof>) -> Result<IssuedTokens> {
        if let Some(jkt) = &record.dpop_jkt {
            match proof {
                Some(p) if p.jkt == *jkt => {}
                Some(_) => return Err(Error::InvalidDpopProof("the proof was signed by another key")),
                None => return Err(Error::DpopProofRequired),
            }
        }
        match self.liveness(&record) {
            Liveness::Alive => self.rotate(record).await,
            Liveness::Recoverable if record.dpop_jkt.is_some() && record.rotated_at.is_none() => {
                self.recover(record, Issue::TokenPair).await
            }
            Liveness::Recoverable => Err(Error::TokenRevoked),
            Liveness::Dead(err) => Err(err),
        }
    }

    async fn rotate(&self, record: TokenRecord) -> Result<IssuedTokens> {
        let now = now_ms();
        let (access, refresh, successors) = self.mint_pair(&record.session_id, &record.user_id, now);
        let issued = IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            token_type: token_type(record.dpop_jkt.is_some()),
            expires_in: self.policy.access_ttl_secs,
            user_id: record.user_id.clone(),
            session_id: record.session_id.clone(),
            device_token: known_devices::mint(&self.keyring, &record.user_id, &record.device_id),
            device_id: record.device_id.clone(),
            channel: record.channel.clone(),
            recovered: false,
            mfa_enrolment_required: record.enrolment_only != 0,
        };
        if record.rotated_at.is_none() && self.store.rotate_refresh_token(&record.digest, now, &successors).await? {
            return Ok(issued);
        }
        // Rotated before: by an earlier request of this client, or by whoever else holds a copy.
        let rotated_at = match record.rotated_at {
            Some(at) => at,
            None => self.store.token_by_digest(&record.digest).await?.and_then(|r| r.rotated_at).unwrap_or(now),
        };
        if now - rotated_at <= self.policy.refresh_reuse_grace_secs * 1000 {
            self.store.add_tokens(&successors).await?;
            return Ok(issued);
        }
        // An OAuth client whose session this was hears of it by back-channel logout.
        self.store.end_session_and_tell(&record.session_id, now).await?;
        self.validations.forget_session(&record.session_id);
        tracing::warn!(user_id = %record.user_id, session_id = %record.session_id, "refresh token reused: session revoked");
        let details = json!({ "session_id": record.session_id, "device_id": record.device_id });
        let event = AuditLog::event(kind::REFRESH_TOKEN_REUSED, &Actor::System, Some(&record.user_id), None, details);
        self.audit.record(event).await?;
        Err(Error::RefreshTokenReused)
    }

    /// Replaces a session that a leak response revoked with a new one bound to the same key. The
    /// key never travelled, so whoever proves possession of it is the session's own client.
    async fn recover(&self, record: TokenRecord, issue: Issue) -> Result<IssuedTokens> {
        let now = now_ms();
        let session_id = uuid::Uuid::now_v7().to_string();
        let (access, refresh, tokens) = self.mint(issue, &session_id, &record.user_id, now);
        let recovery = SessionRecovery {
            old_session_id: record.session_id.clone(),
            session_id: session_id.clone(),
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            channel: record.channel.clone(),
            dpop_jkt: record.dpop_jkt.clone().unwrap_or_default(),
            at: now,
            enrolment_only: record.enrolment_only != 0,
            tokens,
        };
        if !self.store.recover_session(&recovery).await? {
            return Err(Error::TokenRevoked);
        }
        self.validations.forget_session(&record.session_id);
        tracing::info!(user_id = %record.user_id, old_session_id = %record.session_id, %session_id, "session recovered by its DPoP key");
        let details = json!({ "old_session_id": record.session_id, "session_id": session_id, "device_id": record.device_id, "channel": record.channel });
        let event = AuditLog::event(
            kind::SESSION_RECOVERED,
            &Actor::User(record.user_id.clone()),
            Some(&record.user_id),
            None,
            details,
        );
        self.audit.record(event).await?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            token_type: "DPoP",
            expires_in: self.policy.access_ttl_secs,
            user_id: record.user_id.clone(),
            session_id,
            device_token: known_devices::mint(&self.keyring, &record.user_id, &record.device_id),
            device_id: record.device_id,
            channel: record.channel,
            recovered: true,
            mfa_enrolment_required: record.enrolment_only != 0,
        })
    }

    /// A page session cookie whose session a leak response revoked, presented with a proof from the
    /// key the browser bound it to at sign-in: a new cookie, without the password. A copied cookie
    /// without the key gets nothing.
    pub async fn recover_browser(&self, cookie: &str, proof: &Proof) -> Result<IssuedTokens> {
        let record = self.find(cookie, TokenKind::WebSession).await?;
        match (&record.dpop_jkt, self.liveness(&record)) {
            (Some(jkt), Liveness::Recoverable) if *jkt == proof.jkt => self.recover(record, Issue::BrowserCookie).await,
            (Some(_), Liveness::Recoverable) => Err(Error::InvalidDpopProof("the proof was signed by another key")),
            (_, Liveness::Dead(err)) => Err(err),
            _ => Err(Error::TokenRevoked),
        }
    }

    /// Ends the caller's session: its access and refresh tokens stop working at once.
    pub async fn sign_out(&self, who: &Authenticated, address: Option<&str>) -> Result<()> {
        self.store.revoke_session(&who.session_id, now_ms()).await?;
        self.validations.forget_session(&who.session_id);
        tracing::info!(user_id = %who.user_id, session_id = %who.session_id, "signed out");
        let details = json!({ "session_id": who.session_id, "device_id": who.device_id });
        let event =
            AuditLog::event(kind::SIGNED_OUT, &Actor::User(who.user_id.clone()), Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }

    /// Looks a token up by its keyed digest and checks that it is of the expected kind.
    pub(crate) async fn find(&self, token: &str, kind: TokenKind) -> Result<TokenRecord> {
        if honeytokens::is_decoy_token(&self.keyring, token) {
            honeytokens::touched(&self.alerts, "a decoy token was presented", None, None);
            return Err(Error::InvalidToken);
        }
        if TokenKind::of(token) != Some(kind) {
            return Err(Error::InvalidToken);
        }
        self.find_stored(token, kind).await
    }

    /// Looks a token up by its keyed digest under every token-hash key, whatever its shape: from
    /// this node's cache when it was read before (refresh tokens, whose every use changes them,
    /// always from the database).
    async fn find_stored(&self, token: &str, kind: TokenKind) -> Result<TokenRecord> {
        let candidates = self.keyring.token_digests(token);
        let cached = kind != TokenKind::Refresh;
        if cached {
            let hit = candidates.iter().find_map(|c| self.validations.token(&c.digest));
            if let Some(record) = hit.filter(|r| r.kind == kind.as_str()) {
                return Ok(record);
            }
        }
        let ticket = self.validations.ticket();
        for candidate in candidates {
            let Some(record) = self.store.token_by_digest(&candidate.digest).await? else { continue };
            // The look-up already matched on the digest; the constant-time re-check guards against
            // an engine that compares loosely (for example a collation or a truncated index).
            let same: bool = record.digest.ct_eq(&candidate.digest).into();
            if same && record.kind == kind.as_str() {
                if cached {
                    self.validations.remember_token(ticket, &record);
                }
                return Ok(record);
            }
        }
        Err(Error::InvalidToken)
    }

    /// Whether a stored token may still be used, whatever the reason it may not.
    pub(crate) fn is_alive(&self, record: &TokenRecord) -> bool {
        matches!(self.liveness(record), Liveness::Alive)
    }

    fn liveness(&self, record: &TokenRecord) -> Liveness {
        if record.session_revoked_at.is_some() {
            return Liveness::Dead(Error::TokenRevoked);
        }
        if record.expires_at <= now_ms() {
            return Liveness::Dead(Error::TokenExpired);
        }
        if let Err(stale) = self.revocations.ensure_current() {
            return Liveness::Dead(stale);
        }
        // A token is judged by its session's start, not its own issue: a node that had not loaded
        // a new rule yet may have rotated or minted tokens of a revoked session after the cut-off.
        let facts = TokenFacts {
            issued_at: record.session_started_at.min(record.issued_at),
            user_id: &record.user_id,
            device_id: &record.device_id,
            channel: &record.channel,
            session_id: &record.session_id,
        };
        match self.revocations.check(&facts) {
            None => Liveness::Alive,
            Some(revoked) if revoked.recoverable => Liveness::Recoverable,
            Some(_) => Liveness::Dead(Error::TokenRevoked),
        }
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
                let ttl = self.policy.refresh_ttl_secs;
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
        let (store, hasher) = (self.store.clone(), self.hasher.clone());
        tokio::spawn(async move {
            let Ok(new) = hasher.hash(&password).await else { return };
            match store.replace_password_hash(&user_id, &old_phc, &new.phc, &new.pepper_id, now_ms()).await {
                Ok(true) => tracing::info!(%user_id, "password hash upgraded"),
                Ok(false) => {}
                Err(err) => tracing::warn!(%user_id, error = %err, "password hash upgrade failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn browsers_are_named_after_their_user_agent() {
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(super::describe_user_agent(chrome), ("Chrome", "Linux"));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(super::describe_user_agent(edge), ("Edge", "Windows"));
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile Safari/604.1";
        assert_eq!(super::describe_user_agent(iphone), ("Safari", "iOS"));
        assert_eq!(super::describe_user_agent("curl/8.0"), ("Web browser", ""));
    }
}
