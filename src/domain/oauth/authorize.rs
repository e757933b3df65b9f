//! Authorization requests (RFC 6749 §4.1, OpenID Connect Core §3.1.2): checking them, deciding
//! whether to sign in, enrol or ask for consent, and issuing single-use codes.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{OAuth, Scope};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::device_info::DeviceInfo;
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;
use crate::domain::tokens::TokenKind;
use crate::store::OAuthCodeRecord;

/// An authorization request as the client sent it (query string or form). Unknown parameters are
/// ignored, as RFC 6749 §3.1 asks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub response_mode: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code's tokens must be bound to.
    pub dpop_jkt: Option<String>,
    /// Added by keywarden when `prompt=login` sends the browser to sign in: the sign-in that
    /// answers must be newer than this (Unix ms). A client can only make it stricter.
    pub kw_auth_after: Option<String>,
}

impl AuthorizationRequest {
    /// The request's parameters, to carry through a sign-in or a consent form unchanged.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("nonce", &self.nonce),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("prompt", &self.prompt),
            ("max_age", &self.max_age),
            ("response_mode", &self.response_mode),
            ("dpop_jkt", &self.dpop_jkt),
            ("kw_auth_after", &self.kw_auth_after),
        ];
        fields.into_iter().filter_map(|(name, value)| value.clone().map(|v| (name, v))).collect()
    }
}

/// A request that names a registered client and one of its redirect URIs, with every other
/// parameter checked.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub scope: Scope,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt_none: bool,
    pub prompt_login: bool,
    pub prompt_consent: bool,
    pub max_age_secs: Option<i64>,
    pub auth_after: Option<i64>,
    pub dpop_jkt: Option<String>,
}

/// Where the browser goes back to the client: the redirect URI with the response parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationResponse {
    pub redirect_uri: String,
    pub params: Vec<(&'static str, String)>,
}

impl AuthorizationResponse {
    /// The redirect URI with the parameters added to its query (RFC 6749 §3.1.2 keeps its own query).
    pub fn location(&self) -> String {
        match url::Url::parse(&self.redirect_uri) {
            Ok(mut url) => {
                url.query_pairs_mut().extend_pairs(self.params.iter().map(|(k, v)| (*k, v.as_str())));
                url.to_string()
            }
            Err(_) => self.redirect_uri.clone(),
        }
    }

    /// The origin the browser is sent to, for the page's `form-action` policy.
    pub fn origin(&self) -> Option<String> {
        redirect_origin(&self.redirect_uri)
    }
}

/// `scheme://host[:port]` of a redirect URI, or `scheme:` for a private-use scheme.
pub fn redirect_origin(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", url.scheme())),
    }
}

/// Why a request cannot go on.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or the redirect URI is wrong: tell the person, never redirect (RFC 6749 §4.1.2.1).
    NotRedirectable(Error),
    /// Anything else goes back to the client as `error=…`.
    Redirect(AuthorizationResponse),
}

impl From<Error> for AuthorizeError {
    fn from(err: Error) -> Self {
        Self::NotRedirectable(err)
    }
}

/// What the browser must do next.
#[derive(Debug)]
pub enum Next {
    /// Sign in (again), then come back to the request.
    SignIn,
    /// The operator requires a second factor the account lacks: enrol one first.
    Enrol,
    /// Ask the person whether the third-party client may have the scope.
    Consent,
    /// Back to the client.
    Redirect(AuthorizationResponse),
}

/// The request as approved, kept with its code until the exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CodeGrant {
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub dpop_jkt: Option<String>,
    /// When the person last authenticated (Unix ms).
    pub auth_time: i64,
    /// The client app on this person's browser, as its device on `/security`.
    pub device: DeviceInfo,
}

const MAX_PARAM_LEN: usize = 1024;

/// RFC 7636 §4.1: 43 to 128 unreserved characters (a verifier, or an S256 challenge's 43).
pub(super) fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl OAuth {
    /// Checks an authorization request; errors after the client and redirect URI are known go
    /// back to the client.
    pub async fn validate(&self, request: &AuthorizationRequest) -> Result<ValidRequest, AuthorizeError> {
        let client_id = request
            .client_id
            .as_deref()
            .ok_or_else(|| Error::oauth("invalid_request", "the request names no client_id"))?;
        let client = self.clients.get(client_id).await.map_err(|e| match e {
            Error::ClientNotFound => Error::oauth("invalid_client", "no client is registered with this client_id"),
            other => other,
        })?;
        let redirect_uri = match (&request.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(uri), _) if client.allows_redirect(uri) => uri.clone(),
            (Some(_), _) => {
                return Err(Error::oauth("invalid_request", "this redirect_uri is not registered for the client").into())
            }
            (None, [only]) => only.clone(),
            (None, _) => return Err(Error::oauth("invalid_request", "the request names no redirect_uri").into()),
        };
        let fail = |code: &'static str, description: &str| {
            AuthorizeError::Redirect(self.error_response(&redirect_uri, request.state.as_deref(), code, description))
        };
        if request.response_type.as_deref() != Some("code") {
            return Err(fail("unsupported_response_type", "only response_type=code is supported"));
        }
        if request.response_mode.as_deref().is_some_and(|mode| mode != "query") {
            return Err(fail("invalid_request", "only response_mode=query is supported"));
        }
        let too_long =
            [&request.state, &request.nonce].iter().any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_PARAM_LEN));
        if too_long {
            return Err(fail("invalid_request", "state and nonce may have at most 1024 characters"));
        }
        let scope = Scope::parse(request.scope.as_deref().unwrap_or("openid"))
            .map_err(|e| fail("invalid_scope", &e.to_string()))?;
        match (&request.code_challenge, request.code_challenge_method.as_deref()) {
            (Some(challenge), None | Some("S256")) if challenge.len() == 43 && pkce_shaped(challenge) => {}
            (Some(_), None | Some("S256")) => {
                return Err(fail("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)"))
            }
            (Some(_), Some(_)) => return Err(fail("invalid_request", "only code_challenge_method=S256 is supported")),
            (None, _) if client.is_public() => {
                return Err(fail("invalid_request", "public clients must use PKCE with code_challenge_method=S256"))
            }
            (None, _) => {}
        }
        let prompts: Vec<&str> =
            request.prompt.as_deref().unwrap_or_default().split(' ').filter(|p| !p.is_empty()).collect();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return Err(fail("invalid_request", "prompt=none cannot be combined with other values"));
        }
        let max_age_secs = match &request.max_age {
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|age| *age >= 0)
                    .ok_or_else(|| fail("invalid_request", "max_age must be a number of seconds"))?,
            ),
            None => None,
        };
        if request.dpop_jkt.as_ref().is_some_and(|jkt| jkt.len() != 43 || !pkce_shaped(jkt)) {
            return Err(fail("invalid_request", "dpop_jkt must be a JWK SHA-256 thumbprint"));
        }
        Ok(ValidRequest {
            redirect_uri: redirect_uri.clone(),
            scope,
            state: request.state.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            prompt_none: prompts.contains(&"none"),
            prompt_login: prompts.contains(&"login"),
            prompt_consent: prompts.contains(&"consent"),
            max_age_secs,
            auth_after: request.kw_auth_after.as_deref().and_then(|t| t.parse().ok()),
            dpop_jkt: request.dpop_jkt.clone(),
            client,
        })
    }

    /// `error=…` back to the client, with its `state` and our `iss` (RFC 9207).
    pub fn error_response(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        code: &str,
        description: &str,
    ) -> AuthorizationResponse {
        let mut params = vec![("error", code.to_owned()), ("error_description", description.to_owned())];
        params.extend(state.map(|s| ("state", s.to_owned())));
        params.push(("iss", self.issuer.clone()));
        AuthorizationResponse { redirect_uri: redirect_uri.to_owned(), params }
    }

    /// What happens to a valid request for this browser session (or none).
    pub async fn authorize(&self, request: &ValidRequest, browser: Option<&Authenticated>) -> Result<Next> {
        let now = self.clock.now_ms();
        let fresh = |who: &&Authenticated| {
            let within_max_age = request.max_age_secs.is_none_or(|age| now - who.verified_at <= age * 1000);
            let after = request.auth_after.is_none_or(|at| who.verified_at >= at);
            within_max_age && after && (request.auth_after.is_some() || !request.prompt_login)
        };
        let refuse = |code, description| {
            let response = self.error_response(&request.redirect_uri, request.state.as_deref(), code, description);
            Ok(Next::Redirect(response))
        };
        let Some(who) = browser.filter(fresh) else {
            if request.prompt_none {
                return refuse("login_required", "the person is not signed in");
            }
            return Ok(Next::SignIn);
        };
        if who.enrolment_only {
            if request.prompt_none {
                return refuse("interaction_required", "the account must set up two-step verification first");
            }
            return Ok(Next::Enrol);
        }
        if !request.client.first_party {
            let granted = self.store.consent(&who.user_id, &request.client.id).await?;
            let granted = granted.and_then(|g| Scope::parse(&g).ok()).unwrap_or_default();
            if request.prompt_consent || !request.scope.within(&granted) {
                if request.prompt_none {
                    return refuse("consent_required", "the person has not allowed this client yet");
                }
                return Ok(Next::Consent);
            }
        }
        Ok(Next::Redirect(self.issue_code(request, who).await?))
    }

    /// The person's answer on the consent page.
    pub async fn decide(
        &self,
        request: &ValidRequest,
        who: &Authenticated,
        allow: bool,
        address: Option<&str>,
    ) -> Result<AuthorizationResponse> {
        if !allow {
            let description = "the person did not allow the request";
            return Ok(self.error_response(
                &request.redirect_uri,
                request.state.as_deref(),
                "access_denied",
                description,
            ));
        }
        if who.enrolment_only {
            return Err(Error::MfaEnrolmentRequired);
        }
        let earlier = self.store.consent(&who.user_id, &request.client.id).await?;
        let mut scope: Vec<&str> = request.scope.iter().collect();
        if let Some(earlier) = earlier.as_deref().and_then(|g| Scope::parse(g).ok()) {
            scope.extend(earlier.iter());
        }
        let scope = Scope::parse(&scope.join(" "))?.to_string();
        self.store.save_consent(&who.user_id, &request.client.id, &scope, self.clock.now_ms()).await?;
        let details = json!({ "client_id": request.client.id, "scope": scope });
        let actor = Actor::User(who.user_id.clone());
        self.audit
            .record(AuditLog::event(kind::OAUTH_CONSENT_GRANTED, &actor, Some(&who.user_id), address, details))
            .await?;
        self.issue_code(request, who).await
    }

    async fn issue_code(&self, request: &ValidRequest, who: &Authenticated) -> Result<AuthorizationResponse> {
        if self.require_verified_email {
            let user = self.store.user_by_id(&who.user_id).await?.ok_or(Error::InvalidToken)?;
            if user.email_verified_at.is_none() {
                return Err(Error::EmailNotVerified);
            }
        }
        let browser = self.store.devices_of(&who.user_id).await?.into_iter().find(|d| d.id == who.device_id);
        let client = &request.client;
        let device = DeviceInfo {
            client_id: format!("oauth:{}:{}", client.id, who.device_id),
            product: client.name.clone(),
            platform: browser.map(|d| d.name).unwrap_or_default(),
            name: client.name.clone(),
        };
        let grant = CodeGrant {
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scope.to_string(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            dpop_jkt: request.dpop_jkt.clone(),
            auth_time: who.verified_at,
            device,
        };
        let code = TokenKind::AuthorizationCode.mint();
        let keyed = self.keyring.token_digest(&code);
        let now = self.clock.now_ms();
        self.store
            .create_oauth_code(&OAuthCodeRecord {
                digest: keyed.digest,
                digest_key_id: keyed.key_id,
                client_id: client.id.clone(),
                user_id: who.user_id.clone(),
                grant_json: serde_json::to_string(&grant).map_err(|e| Error::Internal(e.to_string()))?,
                created_at: now,
                expires_at: now + self.settings.code_ttl_secs * 1000,
                used_at: None,
                session_id: None,
            })
            .await?;
        let mut params = vec![("code", code.to_string())];
        params.extend(request.state.clone().map(|s| ("state", s)));
        params.push(("iss", self.issuer.clone()));
        Ok(AuthorizationResponse { redirect_uri: request.redirect_uri.clone(), params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_keep_the_redirect_uris_own_query() {
        let response = AuthorizationResponse {
            redirect_uri: "https://forum.example/cb?x=1".into(),
            params: vec![("code", "kw_ac_abc".into()), ("state", "a b&c".into())],
        };
        assert_eq!(response.location(), "https://forum.example/cb?x=1&code=kw_ac_abc&state=a+b%26c");
        assert_eq!(response.origin().as_deref(), Some("https://forum.example"));
        assert_eq!(redirect_origin("com.example.app:/cb").as_deref(), Some("com.example.app:"));
    }

    #[test]
    fn pkce_values_have_the_rfc_7636_shape() {
        assert!(pkce_shaped(&"a".repeat(43)));
        assert!(!pkce_shaped(&"a".repeat(42)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
