//! Sign-in with upstream OpenID Connect providers: trips to a provider and back (code + PKCE +
//! `state` + `nonce`), accounts created or found from them, and linking and unlinking.
//!
//! An upstream account is found only by the provider's subject, never by email: linking one to an
//! existing account takes a full sign-in to that account (or a fresh step-up) first.

mod exchange;
pub mod id_token;
mod links;
pub mod provider;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use self::id_token::UpstreamClaims;
use self::provider::Provider;
use self::upstream::Upstream;
use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::dpop::Proof;
use super::error::{Error, Result};
use super::freshness::Freshness;
use super::identity::{Email, Username};
use super::sessions::{IssuedTokens, ProviderSignIn, Sessions};
use super::throttle::{Purpose as ThrottlePurpose, Subject, Throttle};
use super::tokens::TokenKind;
use crate::clock::Clock;
use crate::keys::{Keyring, Sealed};
use crate::store::{DynStore, SsoFlowRecord, SsoPendingRecord, StoreError, UniqueField};

pub use self::provider::ProviderSettings;

/// How long a trip to a provider may take, and how long an unlinked upstream account waits.
const FLOW_TTL_MS: i64 = 10 * 60 * 1000;
/// Unknown `kid`s make keywarden fetch a provider's keys again, at most this often.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(30);

/// What a trip to a provider is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sign in (or create an account).
    SignIn,
    /// Add the upstream account to the signed-in account.
    Link,
    /// Prove it is still the signed-in person (a step-up for an account without password or factor).
    Reauth,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "signin",
            Self::Link => "link",
            Self::Reauth => "reauth",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::SignIn, Self::Link, Self::Reauth].into_iter().find(|p| p.as_str() == text)
    }
}

/// A trip ready to start: send the browser to `url`, and bind `state` to it (a cookie).
pub struct Departure {
    pub url: String,
    pub state: Zeroizing<String>,
}

/// The provider's answer as the browser brought it back.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub state: String,
    /// The `state` this browser was given when it left (its cookie); a trip started elsewhere fails.
    pub browser_state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

/// Who is arriving: for the session a sign-in creates.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    pub address: Option<String>,
    pub user_agent: Option<String>,
    pub dpop: Option<Proof>,
    /// The browser's session, if it has one.
    pub current: Option<Authenticated>,
}

/// How a trip ended.
pub enum Outcome {
    /// A linked account: signed in, or (an error carrying `mfa_required`) waiting for its second factor.
    SignIn {
        attempt: Result<IssuedTokens>,
        next: String,
    },
    /// An upstream account linked to nothing yet: the person creates an account or signs in to link
    /// it (the pending record keeps where to go next).
    Unlinked {
        pending: Zeroizing<String>,
    },
    Linked {
        next: String,
    },
    Reauthenticated {
        next: String,
    },
}

/// An unlinked upstream account, as the finish page shows it.
#[derive(Debug, Clone)]
pub struct PendingView {
    pub provider_name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub suggested_username: String,
}

/// A linked upstream account, as `/security` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkedIdentity {
    pub id: String,
    pub provider_id: String,
    pub provider_name: String,
    /// What the provider calls the account (its email), if it said.
    pub label: Option<String>,
    pub linked_at: i64,
    pub last_used_at: Option<i64>,
}

/// A provider as the sign-in page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderButton {
    pub id: String,
    pub name: String,
    pub icon: Option<String>,
}

#[derive(Clone)]
pub struct Sso {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
    accounts: Accounts,
    sessions: Sessions,
    providers: Arc<Vec<Arc<Provider>>>,
    upstream: Arc<dyn Upstream>,
    /// `https://id.example.com`: callbacks are `{base}/sso/{provider}/callback`.
    public_url: String,
    freshness: Freshness,
    throttle: Throttle,
}

fn random_text() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

fn verifier_context(provider: &str) -> Vec<u8> {
    format!("keywarden:sso:{provider}:pkce").into_bytes()
}

fn claims_context(provider: &str) -> Vec<u8> {
    format!("keywarden:sso:{provider}:pending").into_bytes()
}

pub(crate) fn label_context(identity_id: &str) -> Vec<u8> {
    format!("keywarden:sso_identity:{identity_id}:label").into_bytes()
}

impl Sso {
    pub fn new(
        core: &Core,
        accounts: Accounts,
        sessions: Sessions,
        providers: Vec<Provider>,
        upstream: Arc<dyn Upstream>,
        public_url: &str,
    ) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
            accounts,
            sessions,
            providers: Arc::new(providers.into_iter().map(Arc::new).collect()),
            upstream,
            public_url: public_url.trim_end_matches('/').to_owned(),
            freshness: core.freshness.clone(),
            throttle: core.throttle.clone(),
        }
    }

    /// Counts a sign-in trip from `address`: each writes a row, so one address may start only so
    /// many before it must wait (`rate_limited`).
    pub async fn count_trip(&self, address: Option<&str>) -> Result<()> {
        let Some(address) = address else { return Ok(()) };
        self.throttle.count_attempt(ThrottlePurpose::SsoStart, &[Subject::Address(address)]).await
    }

    pub fn buttons(&self) -> Vec<ProviderButton> {
        self.providers
            .iter()
            .map(|p| ProviderButton { id: p.id.clone(), name: p.name.clone(), icon: p.icon.clone() })
            .collect()
    }

    /// Where a form that starts a trip may lead: each provider's issuer origin, and its
    /// authorization endpoint's origin once known.
    pub fn form_origins(&self) -> Vec<String> {
        let mut origins = Vec::new();
        for provider in self.providers.iter() {
            let endpoint = provider.cached_metadata().map(|m| m.authorization_endpoint);
            for url in std::iter::once(provider.issuer.clone()).chain(endpoint) {
                if let Ok(url) = url::Url::parse(&url) {
                    let origin = url.origin().ascii_serialization();
                    if !origins.contains(&origin) {
                        origins.push(origin);
                    }
                }
            }
        }
        origins
    }

    fn provider(&self, id: &str) -> Result<Arc<Provider>> {
        self.providers.iter().find(|p| p.id == id).cloned().ok_or(Error::UnknownProvider)
    }

    fn provider_name(&self, id: &str) -> String {
        self.providers.iter().find(|p| p.id == id).map_or_else(|| id.to_owned(), |p| p.name.clone())
    }

    fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/sso/{provider}/callback", self.public_url)
    }

    /// Starts a trip to a provider. `Link` and `Reauth` belong to the signed-in session `who`; a
    /// link also needs a fresh authentication and a proven address, since it adds a way in.
    pub async fn depart(
        &self,
        provider_id: &str,
        purpose: Purpose,
        who: Option<&Authenticated>,
        next: &str,
    ) -> Result<Departure> {
        let provider = self.provider(provider_id)?;
        let owner = match (purpose, who) {
            (Purpose::SignIn, _) => None,
            (Purpose::Link, Some(who)) => {
                self.freshness.require_for_new_credential(who).await?;
                Some(who)
            }
            (Purpose::Reauth, Some(who)) => Some(who),
            (_, None) => return Err(Error::InvalidToken),
        };
        let metadata = self.metadata(&provider).await?;
        let state = TokenKind::SsoState.mint();
        let verifier = random_text();
        let nonce = random_text();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let keyed = self.keyring.token_digest(&state);
        let sealed = self.keyring.seal(verifier.as_bytes(), &verifier_context(&provider.id));
        let now = self.clock.now_ms();
        let flow = SsoFlowRecord {
            digest: keyed.digest,
            digest_key_id: keyed.key_id,
            provider: provider.id.clone(),
            purpose: purpose.as_str().to_owned(),
            user_id: owner.map(|w| w.user_id.clone()),
            session_id: owner.map(|w| w.session_id.clone()),
            next: next.to_owned(),
            verifier_sealed: sealed.bytes,
            verifier_key_id: sealed.key_id,
            nonce_digest: id_token::nonce_digest(&nonce),
            created_at: now,
            expires_at: now + FLOW_TTL_MS,
        };
        self.store.create_sso_flow(&flow).await?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| Error::SsoFailed("the provider's authorization endpoint is not a URL".into()))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &provider.client_id)
                .append_pair("redirect_uri", &self.redirect_uri(&provider.id))
                .append_pair("scope", &provider.scope)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if purpose == Purpose::Reauth {
                // A step-up must be a new authentication at the provider, not its remembered session.
                query.append_pair("prompt", "login").append_pair("max_age", "0");
            }
        }
        Ok(Departure { url: url.to_string(), state })
    }

    /// Ends a trip: checks the answer belongs to a trip this browser started, exchanges the code,
    /// verifies the ID token, then signs in, links or re-authenticates as the trip was meant to.
    pub async fn arrive(&self, provider_id: &str, callback: Callback, arrival: Arrival) -> Result<Outcome> {
        let provider = self.provider(provider_id)?;
        let bound = callback
            .browser_state
            .as_deref()
            .is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(c.as_bytes(), callback.state.as_bytes())));
        if !bound || TokenKind::of(&callback.state) != Some(TokenKind::SsoState) {
            return Err(Error::InvalidSsoState);
        }
        let now = self.clock.now_ms();
        let store = &self.store;
        let take = |digest: Vec<u8>| async move { store.take_sso_flow(&digest, now).await };
        let flow = self.keyring.find_by_token_digest(&callback.state, take).await?.ok_or(Error::InvalidSsoState)?;
        let purpose = Purpose::parse(&flow.purpose).ok_or(Error::InvalidSsoState)?;
        if flow.provider != provider.id {
            return Err(Error::InvalidSsoState);
        }
        if let Some(error) = &callback.error {
            let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            return Err(Error::SsoFailed(format!("the provider answered {error}")));
        }
        let metadata = self.metadata(&provider).await?;
        match &callback.iss {
            Some(iss) if *iss != metadata.issuer => {
                return Err(Error::SsoFailed("the answer names another issuer".into()));
            }
            None if metadata.authorization_response_iss_parameter_supported => {
                return Err(Error::SsoFailed("the answer does not name its issuer".into()));
            }
            _ => {}
        }
        let code = callback.code.as_deref().filter(|c| !c.is_empty()).ok_or(Error::InvalidSsoState)?;
        let sealed = Sealed { key_id: flow.verifier_key_id.clone(), bytes: flow.verifier_sealed.clone() };
        let verifier = self.keyring.open(&sealed, &verifier_context(&provider.id))?;
        let verifier = std::str::from_utf8(&verifier).map_err(|e| Error::Internal(e.to_string()))?;
        let claims = self.redeem(&provider, &metadata, code, verifier, &flow.nonce_digest).await?;
        let (store, provider_id) = (&self.store, provider.id.as_str());
        let look_up = |index: Vec<u8>| async move { store.sso_identity(provider_id, &index).await };
        let identity = self.keyring.find_by_blind_index(&subject_key(&provider.id, &claims.sub), look_up).await?;
        match purpose {
            Purpose::SignIn => match identity {
                Some(identity) => {
                    self.store.sso_identity_used(&identity.id, self.clock.now_ms()).await?;
                    let request =
                        ProviderSignIn { address: arrival.address, user_agent: arrival.user_agent, dpop: arrival.dpop };
                    let attempt = self.sessions.sign_in_with_provider(&identity.user_id, &provider.id, request).await;
                    Ok(Outcome::SignIn { attempt, next: flow.next })
                }
                None => {
                    let pending = self.keep_pending(&provider.id, &claims, &flow.next).await?;
                    Ok(Outcome::Unlinked { pending })
                }
            },
            Purpose::Link => {
                let who = owner_of(&flow, arrival.current.as_ref())?;
                match identity {
                    Some(identity) if identity.user_id == who.user_id => {}
                    Some(_) => return Err(Error::SsoIdentityTaken),
                    None => self.link(&provider.id, &claims, &who, arrival.address.as_deref()).await?,
                }
                Ok(Outcome::Linked { next: flow.next })
            }
            Purpose::Reauth => {
                let who = owner_of(&flow, arrival.current.as_ref())?;
                match identity {
                    Some(identity) if identity.user_id == who.user_id => {
                        self.store.sso_identity_used(&identity.id, self.clock.now_ms()).await?;
                        self.sessions.mark_verified(&who, arrival.address.as_deref(), &provider.id).await?;
                        Ok(Outcome::Reauthenticated { next: flow.next })
                    }
                    _ => Err(Error::SsoFailed(format!("that {} account is not linked to this account", provider.name))),
                }
            }
        }
    }

    /// The unlinked upstream account a finish page is about.
    pub async fn pending(&self, token: &str) -> Result<PendingView> {
        let (record, claims) = self.open_pending(token).await?;
        let suggested_username = suggest_username(&claims);
        Ok(PendingView {
            provider_name: self.provider_name(&record.provider),
            email: claims.email.clone(),
            email_verified: claims.email_verified,
            suggested_username,
        })
    }

    /// Creates an account for an unlinked upstream account and signs it in. The address is
    /// verified at once when it is the one the provider vouched for; otherwise it gets a link.
    pub async fn create_account(
        &self,
        token: &str,
        username: &str,
        email: &str,
        arrival: Arrival,
    ) -> Result<(IssuedTokens, String)> {
        let (record, claims) = self.open_pending(token).await?;
        let username = Username::parse(username)?;
        let email = Email::parse(email)?;
        self.accounts.check_available(&username, &email).await?;
        // A provider's account is a sign-up like any other: closed or by invitation applies (an
        // invited person signs up at /signup and links the provider on /security afterwards).
        let admission = self.accounts.admit(None, &email, arrival.address.as_deref()).await?;
        let vouched =
            claims.email_verified && claims.email.as_deref().and_then(|e| Email::parse(e).ok()) == Some(email.clone());
        let now = self.clock.now_ms();
        // No password: this account signs in through its provider (or a passkey it adds).
        let user = self.accounts.new_user(&username, &email, None, vouched.then_some(now));
        let user_id = user.id.clone();
        if !self.store.consume_sso_pending(&record.digest, now).await? {
            self.accounts.turn_away(admission).await?;
            return Err(Error::InvalidSsoState);
        }
        let identity = self.identity_record(&record.provider, &claims, &user_id, now);
        self.store.create_user_with_identity(&user, &identity).await.map_err(|e| match e {
            StoreError::Conflict(UniqueField::Other) => Error::SsoIdentityTaken,
            other => Error::from_conflict(other),
        })?;
        tracing::info!(%user_id, provider = %record.provider, "account created through a sign-in provider");
        let details = json!({ "provider": record.provider, "email_verified_by_provider": vouched });
        let event = AuditLog::event(
            kind::ACCOUNT_CREATED,
            &Actor::User(user_id.clone()),
            Some(&user_id),
            arrival.address.as_deref(),
            details,
        );
        self.audit.record(event).await?;
        if !vouched {
            self.accounts.send_verification(&user_id, &user.username, email.as_str()).await?;
        }
        let request = ProviderSignIn { address: arrival.address, user_agent: arrival.user_agent, dpop: arrival.dpop };
        let issued = self.sessions.sign_in_with_provider(&user_id, &record.provider, request).await?;
        Ok((issued, record.next))
    }

    /// Links an unlinked upstream account to the signed-in account. The session must have proved
    /// itself just now (see `Freshness`), and its address must be proven.
    pub async fn link_pending(&self, token: &str, who: &Authenticated, address: Option<&str>) -> Result<String> {
        self.freshness.require_for_new_credential(who).await?;
        let (record, claims) = self.open_pending(token).await?;
        if !self.store.consume_sso_pending(&record.digest, self.clock.now_ms()).await? {
            return Err(Error::InvalidSsoState);
        }
        self.link(&record.provider, &claims, who, address).await?;
        Ok(record.next)
    }

    async fn keep_pending(&self, provider: &str, claims: &UpstreamClaims, next: &str) -> Result<Zeroizing<String>> {
        let token = TokenKind::SsoPending.mint();
        let keyed = self.keyring.token_digest(&token);
        let plain = Zeroizing::new(serde_json::to_vec(claims).map_err(|e| Error::Internal(e.to_string()))?);
        let sealed = self.keyring.seal(&plain, &claims_context(provider));
        let now = self.clock.now_ms();
        let record = SsoPendingRecord {
            digest: keyed.digest,
            digest_key_id: keyed.key_id,
            provider: provider.to_owned(),
            claims_sealed: sealed.bytes,
            claims_key_id: sealed.key_id,
            next: next.to_owned(),
            created_at: now,
            expires_at: now + FLOW_TTL_MS,
        };
        self.store.create_sso_pending(&record).await?;
        Ok(token)
    }

    async fn open_pending(&self, token: &str) -> Result<(SsoPendingRecord, UpstreamClaims)> {
        if TokenKind::of(token) != Some(TokenKind::SsoPending) {
            return Err(Error::InvalidSsoState);
        }
        let now = self.clock.now_ms();
        let store = &self.store;
        let look_up = |digest: Vec<u8>| async move { store.sso_pending(&digest, now).await };
        let record = self.keyring.find_by_token_digest(token, look_up).await?.ok_or(Error::InvalidSsoState)?;
        let sealed = Sealed { key_id: record.claims_key_id.clone(), bytes: record.claims_sealed.clone() };
        let plain = self.keyring.open(&sealed, &claims_context(&record.provider))?;
        let claims = serde_json::from_slice(&plain).map_err(|e| Error::Internal(e.to_string()))?;
        Ok((record, claims))
    }
}

/// The session a link or re-authentication trip belongs to must still be this browser's.
fn owner_of(flow: &SsoFlowRecord, current: Option<&Authenticated>) -> Result<Authenticated> {
    match current {
        Some(who)
            if Some(&who.session_id) == flow.session_id.as_ref() && Some(&who.user_id) == flow.user_id.as_ref() =>
        {
            Ok(who.clone())
        }
        _ => Err(Error::InvalidSsoState),
    }
}

/// The value blind-indexed for an upstream account: one subject per provider.
fn subject_key(provider: &str, subject: &str) -> String {
    format!("sso:{provider}:{subject}")
}

/// A username to offer: the provider's, else the email's local part, cleaned to our rules.
fn suggest_username(claims: &UpstreamClaims) -> String {
    let raw = claims
        .preferred_username
        .clone()
        .or_else(|| claims.email.as_deref().and_then(|e| e.split('@').next()).map(str::to_owned))
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(Username::MAX_LEN)
        .collect();
    if Username::parse(&cleaned).is_ok() {
        cleaned
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(preferred: Option<&str>, email: Option<&str>) -> UpstreamClaims {
        UpstreamClaims {
            sub: "s".into(),
            email: email.map(str::to_owned),
            email_verified: true,
            preferred_username: preferred.map(str::to_owned),
            name: None,
        }
    }

    #[test]
    fn suggested_usernames_follow_our_rules() {
        assert_eq!(suggest_username(&claims(Some("Jane Doe!"), None)), "JaneDoe");
        assert_eq!(suggest_username(&claims(None, Some("_jane.doe@example.com"))), "jane.doe");
        assert_eq!(suggest_username(&claims(Some("é"), None)), "");
    }
}
