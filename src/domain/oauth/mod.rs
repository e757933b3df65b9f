//! The OpenID Connect provider: authorization requests and codes with PKCE, the token endpoint's
//! grants, ID tokens, userinfo, introspection and revocation.
//!
//! Every access and refresh token it issues is an ordinary keywarden token in a session whose
//! channel is the client's id: stored as a keyed digest, listed on `/security`, and killed by
//! sign-out everywhere, a password reset or `admin revoke --channel CLIENT`, like any other.

mod authorize;
mod claims;
mod client_assertion;
pub mod clients;
mod consents;
mod device;
mod grants;
mod logout;
mod service_tokens;

use std::sync::Arc;

pub use authorize::{redirect_origin, AuthorizationRequest, AuthorizationResponse, AuthorizeError, Next, ValidRequest};
pub use claims::{Introspection, UserClaims};
pub use client_assertion::{ASSERTION_ALGS, JWT_BEARER_ASSERTION};
pub use consents::AllowedApp;
pub use device::{DeviceAuthorization, DeviceAuthorizationRequest, PendingLink};
pub use grants::{TokenRequest, TokenResponse, DEVICE_CODE_GRANT};
pub use logout::{EndSessionRequest, EndedSession, LogoutNotice, LogoutTokenClaims, BACKCHANNEL_LOGOUT_EVENT};
pub use service_tokens::ServiceTokenClaims;

use self::clients::{Client, Clients, ConfiguredClient};
use super::accounts::Accounts;
use super::audit::AuditLog;
use super::core::Core;
use super::error::{Error, Result};
use super::freshness::Freshness;
use super::policy::TokenPolicy;
use super::revocation::Revocations;
use super::sessions::Sessions;
use super::throttle::Throttle;
use crate::clock::Clock;
use crate::keys::signing::Signer;
use crate::keys::Keyring;
use crate::store::DynStore;

/// The scopes keywarden understands; anything else in a request is `invalid_scope`.
pub const SCOPES_SUPPORTED: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The `[oauth]` settings: lifetimes, and the platform's own clients (registered at start).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// How long an authorization code may wait for its exchange.
    pub code_ttl_secs: i64,
    /// How long an ID token is valid.
    pub id_token_ttl_secs: i64,
    /// How long a device's user code waits for its person (RFC 8628).
    pub device_code_ttl_secs: i64,
    /// How often a device may poll, at first (each `slow_down` adds 5 seconds).
    pub device_poll_interval_secs: i64,
    /// First-party clients kept in the configuration (`[[oauth.clients]]`), registered or updated
    /// at every start.
    pub clients: Vec<ConfiguredClient>,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            code_ttl_secs: 60,
            id_token_ttl_secs: 3600,
            device_code_ttl_secs: 600,
            device_poll_interval_secs: 5,
            clients: Vec::new(),
        }
    }
}

/// A set of granted scopes, without duplicates, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(Vec<&'static str>);

impl Scope {
    /// Parses a space-separated scope; unknown scopes are refused.
    pub fn parse(text: &str) -> Result<Self> {
        let mut scopes = Vec::new();
        for word in text.split(' ').filter(|w| !w.is_empty()) {
            let known = SCOPES_SUPPORTED
                .iter()
                .find(|s| **s == word)
                .ok_or_else(|| Error::oauth("invalid_scope", format!("unknown scope {word:?}")))?;
            if !scopes.contains(known) {
                scopes.push(*known);
            }
        }
        scopes.sort_by_key(|s| SCOPES_SUPPORTED.iter().position(|k| k == s));
        Ok(Self(scopes))
    }

    pub fn has(&self, scope: &str) -> bool {
        self.0.contains(&scope)
    }

    /// Whether everything in `self` was already granted in `granted`.
    pub fn within(&self, granted: &Scope) -> bool {
        self.0.iter().all(|s| granted.has(s))
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// How a client proves who it is at the token, introspection and revocation endpoints.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// `client_secret_basic` or `client_secret_post`.
    Secret { id: String, secret: String },
    /// A public client names itself only (`none`); PKCE or the refresh token binds it.
    Public { id: String },
    /// `private_key_jwt`: a JWT signed with one of the client's registered keys.
    Assertion { assertion: String, client_id: Option<String> },
    /// No client identification at all.
    Missing,
}

fn invalid_client() -> Error {
    Error::oauth("invalid_client", "client authentication failed")
}

#[derive(Clone)]
pub struct OAuth {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
    clients: Clients,
    sessions: Sessions,
    accounts: Accounts,
    signer: Arc<Signer>,
    issuer: String,
    settings: OAuthSettings,
    tokens: TokenPolicy,
    throttle: Throttle,
    freshness: Freshness,
    revocations: Revocations,
    /// `signup.require_verified_email`: no client signs in an account whose address is unproven.
    require_verified_email: bool,
}

impl OAuth {
    pub fn new(
        core: &Core,
        sessions: Sessions,
        accounts: Accounts,
        signer: Arc<Signer>,
        issuer: &str,
        settings: OAuthSettings,
    ) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
            clients: Clients::new(core.store.clone(), core.keyring.clone(), core.audit.clone(), core.clock.clone()),
            sessions,
            accounts,
            signer,
            issuer: issuer.trim_end_matches('/').to_owned(),
            settings,
            tokens: core.policy,
            throttle: core.throttle.clone(),
            freshness: core.freshness.clone(),
            revocations: core.revocations.clone(),
            require_verified_email: core.signup.require_verified_email,
        }
    }

    /// The issuer identifier: `iss` of every token and the base of every endpoint.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The client these credentials prove; every failure is the same `invalid_client`.
    pub async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<Client> {
        match credentials {
            ClientCredentials::Secret { id, secret } => {
                self.clients
                    .authenticate(id, secret)
                    .await
                    .map_err(|e| if e.is_internal() { e } else { invalid_client() })
            }
            ClientCredentials::Public { id } => match self.clients.get(id).await {
                Ok(client) if client.is_public() => Ok(client),
                Err(e) if e.is_internal() => Err(e),
                _ => Err(invalid_client()),
            },
            ClientCredentials::Assertion { assertion, client_id } => {
                self.authenticate_assertion(assertion, client_id.as_deref()).await
            }
            ClientCredentials::Missing => Err(invalid_client()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn scopes_are_known_deduplicated_and_ordered() {
        let scope = Scope::parse("email  openid email").unwrap();
        assert_eq!(scope.to_string(), "openid email");
        assert!(Scope::parse("openid admin").is_err());
        assert!(Scope::parse("openid").unwrap().within(&scope));
        assert!(!Scope::parse("openid profile").unwrap().within(&scope));
    }
}
