//! Sign-in with upstream OpenID Connect providers: trips to a provider and back (code + PKCE +
//! `state` + `nonce`), accounts created or found from them, and linking and unlinking.
//!
//! An upstream account is found only by the provider's subject, never by email: linking one to an
//! existing account takes a full sign-in to that account (or a fresh step-up) first.

pub mod id_token;
pub mod provider;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use self::id_token::{Refusal, UpstreamClaims};
use self::provider::{ClientAuth, Metadata, Provider};
use self::upstream::{Reply, Upstream};
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
use crate::mail::Notice;
use crate::store::{DynStore, SsoFlowRecord, SsoIdentityRecord, SsoPendingRecord, StoreError, UniqueField};

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
        let vouched =
            claims.email_verified && claims.email.as_deref().and_then(|e| Email::parse(e).ok()) == Some(email.clone());
        let now = self.clock.now_ms();
        // No password: this account signs in through its provider (or a passkey it adds).
        let user = self.accounts.new_user(&username, &email, None, vouched.then_some(now));
        let user_id = user.id.clone();
        if !self.store.consume_sso_pending(&record.digest, now).await? {
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

    /// The upstream accounts linked to an account.
    pub async fn identities(&self, user_id: &str) -> Result<Vec<LinkedIdentity>> {
        let records = self.store.sso_identities_of(user_id).await?;
        let mut linked = Vec::with_capacity(records.len());
        for record in records {
            let label = match (&record.label_key_id, &record.label_sealed) {
                (Some(key_id), Some(bytes)) => {
                    let sealed = Sealed { key_id: key_id.clone(), bytes: bytes.clone() };
                    let plain = self.keyring.open(&sealed, &label_context(&record.id))?;
                    Some(String::from_utf8_lossy(&plain).into_owned())
                }
                _ => None,
            };
            linked.push(LinkedIdentity {
                provider_name: self.provider_name(&record.provider),
                provider_id: record.provider,
                id: record.id,
                label,
                linked_at: record.created_at,
                last_used_at: record.last_used_at,
            });
        }
        Ok(linked)
    }

    /// Unlinks an upstream account (after a fresh step-up), unless it is the last way in.
    pub async fn unlink(&self, who: &Authenticated, id: &str, address: Option<&str>) -> Result<()> {
        self.freshness.require(who).await?;
        let identities = self.store.sso_identities_of(&who.user_id).await?;
        let identity = identities.iter().find(|i| i.id == id).ok_or(Error::SsoIdentityNotFound)?;
        if !self.store.unlink_sso_identity(&who.user_id, id).await? {
            return Err(Error::LastSignInMethod);
        }
        self.tell_owner(who, &identity.provider, false, address).await
    }

    async fn link(
        &self,
        provider: &str,
        claims: &UpstreamClaims,
        who: &Authenticated,
        address: Option<&str>,
    ) -> Result<()> {
        let identity = self.identity_record(provider, claims, &who.user_id, self.clock.now_ms());
        self.store.link_sso_identity(&identity).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::SsoIdentityTaken,
            other => Error::from(other),
        })?;
        tracing::info!(user_id = %who.user_id, provider, "sign-in provider linked");
        self.tell_owner(who, provider, true, address).await
    }

    /// Audits a link or unlink and mails the account's owner about it.
    async fn tell_owner(&self, who: &Authenticated, provider: &str, linked: bool, address: Option<&str>) -> Result<()> {
        let kind = if linked { kind::SSO_LINKED } else { kind::SSO_UNLINKED };
        let actor = Actor::User(who.user_id.clone());
        let details = json!({ "provider": provider });
        self.audit.record(AuditLog::event(kind, &actor, Some(&who.user_id), address, details)).await?;
        let notice = Notice::SignInProviderChanged {
            provider: self.provider_name(provider),
            linked,
            address: address.map(str::to_owned),
        };
        self.accounts.notify(&who.user_id, notice).await
    }

    fn identity_record(&self, provider: &str, claims: &UpstreamClaims, user_id: &str, now: i64) -> SsoIdentityRecord {
        let id = uuid::Uuid::now_v7().to_string();
        let index = self.keyring.blind_index(&subject_key(provider, &claims.sub));
        let label = claims.email.as_deref().map(|email| self.keyring.seal(email.as_bytes(), &label_context(&id)));
        SsoIdentityRecord {
            user_id: user_id.to_owned(),
            provider: provider.to_owned(),
            subject_index: index.digest,
            subject_index_key_id: index.key_id,
            label_key_id: label.as_ref().map(|l| l.key_id.clone()),
            label_sealed: label.map(|l| l.bytes),
            created_at: now,
            last_used_at: Some(now),
            id,
        }
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

    /// The provider's discovery document, fetched at most hourly; its issuer must be the one configured.
    async fn metadata(&self, provider: &Provider) -> Result<Metadata> {
        if let Some(metadata) = provider.cached_metadata() {
            return Ok(metadata);
        }
        let url = format!("{}/.well-known/openid-configuration", provider.issuer.trim_end_matches('/'));
        let reply = self.get(provider, &url, None).await?;
        if !reply.ok() {
            tracing::warn!(provider = %provider.id, status = reply.status, "provider discovery failed");
            return Err(Error::SsoUnavailable);
        }
        let metadata: Metadata = serde_json::from_value(reply.body)
            .map_err(|_| Error::SsoFailed("the provider's discovery document is incomplete".into()))?;
        if metadata.issuer != provider.issuer {
            return Err(Error::SsoFailed("the provider's discovery document names another issuer".into()));
        }
        provider.remember_metadata(metadata.clone());
        Ok(metadata)
    }

    /// The provider's signing keys; fetched again when a token names a key we do not know.
    async fn jwks(&self, provider: &Provider, metadata: &Metadata, refresh: bool) -> Result<JwkSet> {
        match provider.cached_jwks() {
            Some((keys, age)) if !refresh || age < JWKS_REFETCH_AFTER => return Ok(keys),
            _ => {}
        }
        let reply = self.get(provider, &metadata.jwks_uri, None).await?;
        if !reply.ok() {
            return Err(Error::SsoUnavailable);
        }
        let keys: JwkSet = serde_json::from_value(reply.body)
            .map_err(|_| Error::SsoFailed("the provider's key set is malformed".into()))?;
        provider.remember_jwks(keys.clone());
        Ok(keys)
    }

    /// Exchanges the code (with the PKCE verifier and our client credentials) and checks the ID token.
    async fn redeem(
        &self,
        provider: &Provider,
        metadata: &Metadata,
        code: &str,
        verifier: &str,
        nonce_digest: &[u8],
    ) -> Result<UpstreamClaims> {
        let redirect_uri = self.redirect_uri(&provider.id);
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.to_owned()),
        ];
        let methods = metadata.token_endpoint_auth_methods_supported.as_deref().unwrap_or_default();
        let basic = match &provider.auth {
            ClientAuth::Secret(secret)
                if !methods.is_empty() && !methods.iter().any(|m| m == "client_secret_basic") =>
            {
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_secret", secret.to_string()));
                None
            }
            ClientAuth::Secret(secret) => Some((form_urlencode(&provider.client_id), form_urlencode(secret))),
            ClientAuth::PrivateKey { key, alg, kid } => {
                let assertion =
                    client_assertion(&provider.client_id, &metadata.token_endpoint, key, *alg, kid.clone())?;
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", assertion));
                None
            }
        };
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let basic_ref = basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let reply = self
            .upstream
            .post_form(&metadata.token_endpoint, &pairs, basic_ref)
            .await
            .map_err(|e| unreachable(provider, &e))?;
        if !reply.ok() {
            // Usually keywarden's own settings (a wrong or expired client secret: `invalid_client`),
            // which the operator must hear of; the provider's words hold no secret of ours.
            let refusal = reply.oauth_error();
            tracing::warn!(provider = %provider.id, status = reply.status, error = %refusal, "the sign-in provider refused the code exchange");
            return Err(Error::SsoFailed(format!("the code exchange was refused ({refusal})")));
        }
        let id_token = reply
            .body
            .get("id_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::SsoFailed("the provider sent no ID token".into()))?;
        let check =
            |keys: &JwkSet| id_token::verify(id_token, keys, &provider.issuer, &provider.client_id, nonce_digest);
        let keys = self.jwks(provider, metadata, false).await?;
        let mut claims = match check(&keys) {
            Err(Refusal::UnknownKey) => check(&self.jwks(provider, metadata, true).await?),
            other => other,
        }
        .map_err(|refusal| {
            tracing::warn!(provider = %provider.id, %refusal, "upstream ID token refused");
            Error::SsoFailed(refusal.to_string())
        })?;
        // Many providers put the email in userinfo only (Core §5.4 with a code flow).
        let access_token = reply.body.get("access_token").and_then(|v| v.as_str());
        if let (None, Some(userinfo), Some(access_token)) = (&claims.email, &metadata.userinfo_endpoint, access_token) {
            let reply = self.get(provider, userinfo, Some(access_token)).await?;
            if reply.ok() {
                let more: UpstreamClaims = serde_json::from_value(reply.body)
                    .map_err(|_| Error::SsoFailed("the provider's userinfo answer is malformed".into()))?;
                // Core §5.3.2: a userinfo answer about someone else must not be used.
                if more.sub != claims.sub {
                    return Err(Error::SsoFailed("the userinfo answer is about another account".into()));
                }
                claims = UpstreamClaims { sub: claims.sub, ..more };
            }
        }
        Ok(claims)
    }

    async fn get(&self, provider: &Provider, url: &str, bearer: Option<&str>) -> Result<Reply> {
        self.upstream.get_json(url, bearer).await.map_err(|e| unreachable(provider, &e))
    }
}

fn unreachable(provider: &Provider, err: &upstream::Unreachable) -> Error {
    tracing::warn!(provider = %provider.id, error = %err, "a sign-in provider could not be reached");
    Error::SsoUnavailable
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

/// RFC 6749 §2.3.1: client credentials are form-encoded before they go into HTTP Basic.
fn form_urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A `private_key_jwt` client assertion (RFC 7523) for the provider's token endpoint.
fn client_assertion(
    client_id: &str,
    audience: &str,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: Option<String>,
) -> Result<String> {
    // Checked by the provider against its own clock, the real one.
    let now = crate::clock::now_ms() / 1000;
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience, "jti": random_text().as_str(),
        "iat": now, "exp": now + 60,
    });
    let header = jsonwebtoken::Header { kid, ..jsonwebtoken::Header::new(alg) };
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| Error::Internal(e.to_string()))
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

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(form_urlencode("a b:c%"), "a+b%3Ac%25");
    }
}
