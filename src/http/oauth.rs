//! The OpenID Connect provider's machine endpoints: discovery, JWKS, token, userinfo,
//! introspection and revocation. Errors take the OAuth shape `{"error", "error_description"}`.

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{caller_with, Audience, ClientAddress, TokenRequestProof};
use super::AppState;
use crate::domain::caller::Authenticated;
use crate::domain::oauth::{
    ClientCredentials, DeviceAuthorizationRequest, TokenRequest, ASSERTION_ALGS, DEVICE_CODE_GRANT,
    JWT_BEARER_ASSERTION, SCOPES_SUPPORTED,
};
use crate::domain::Error;
use crate::keys::signing::SigningAlg;

/// An error in the shape RFC 6749 §5.2 gives every OAuth endpoint.
#[derive(Debug)]
pub struct OAuthError {
    err: Error,
    /// The client tried HTTP Basic: a 401 names that scheme (RFC 6749 §5.2).
    basic: bool,
}

impl From<Error> for OAuthError {
    fn from(err: Error) -> Self {
        Self { err, basic: false }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.err {
            e if e.is_internal() => {
                tracing::error!(error = %e, "internal error at an OAuth endpoint");
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
            e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            Error::InvalidDpopProof(_) | Error::DpopProofRequired => (StatusCode::BAD_REQUEST, "invalid_dpop_proof"),
            Error::UseDpopNonce => (StatusCode::BAD_REQUEST, "use_dpop_nonce"),
            Error::InvalidClientCredentials => (StatusCode::UNAUTHORIZED, "invalid_client"),
            Error::OAuth { code, .. } => (super::error::status_of(&self.err), *code),
            other => (super::error::status_of(other), "invalid_request"),
        };
        let description = if status.is_server_error() { "internal error".to_owned() } else { self.err.to_string() };
        let mut response = (status, Json(json!({ "error": code, "error_description": description }))).into_response();
        if let Some(secs) = self.err.retry_after_secs() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = if self.basic { "Basic realm=\"keywarden\"" } else { "Bearer realm=\"keywarden\"" };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

fn endpoint(state: &AppState, path: &str) -> String {
    format!("{}{path}", state.oauth.issuer())
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0, RFC 8414).
pub async fn discovery(State(state): State<AppState>) -> Response {
    let algs: Vec<&str> = SigningAlg::ALL.iter().map(|a| a.as_str()).collect();
    let assertion_algs: Vec<String> = ASSERTION_ALGS.iter().map(|a| format!("{a:?}")).collect();
    let document = json!({
        "issuer": state.oauth.issuer(),
        "authorization_endpoint": endpoint(&state, "/oauth/authorize"),
        "token_endpoint": endpoint(&state, "/oauth/token"),
        "userinfo_endpoint": endpoint(&state, "/oauth/userinfo"),
        "jwks_uri": endpoint(&state, "/oauth/jwks"),
        "introspection_endpoint": endpoint(&state, "/oauth/introspect"),
        "revocation_endpoint": endpoint(&state, "/oauth/revoke"),
        "end_session_endpoint": endpoint(&state, "/oauth/logout"),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT, "client_credentials"],
        "device_authorization_endpoint": endpoint(&state, "/oauth/device_authorization"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": [
            "sub", "iss", "aud", "azp", "exp", "iat", "auth_time", "nonce", "sid",
            "preferred_username", "name", "email", "email_verified"
        ],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "PS256", "RS256"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    });
    let cache = [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"))];
    (cache, Json(document)).into_response()
}

/// `GET /oauth/jwks`: every signing key still in the keyring, so tokens signed before a rotation verify.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let cache = [(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"))];
    (cache, Json(state.oauth.signer().jwks())).into_response()
}

/// The client credentials of a form, from HTTP Basic (RFC 6749 §2.3.1, each half form-encoded)
/// or from the body; sending both is refused.
/// The client-authentication fields every OAuth form may carry.
#[derive(Debug, Default, Deserialize)]
pub struct ClientFields {
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// The client credentials of a form: HTTP Basic (RFC 6749 §2.3.1, each half form-encoded), the
/// body, or a `private_key_jwt` assertion (RFC 7523); more than one way at once is refused.
fn client_credentials(headers: &HeaderMap, fields: &ClientFields) -> Result<ClientCredentials, OAuthError> {
    match (fields.client_assertion_type.as_deref(), &fields.client_assertion) {
        (None, None) => {}
        (Some(JWT_BEARER_ASSERTION), Some(assertion)) if fields.client_secret.is_none() && !uses_basic(headers) => {
            return Ok(ClientCredentials::Assertion {
                assertion: assertion.clone(),
                client_id: fields.client_id.clone(),
            })
        }
        _ => {
            let err =
                Error::oauth("invalid_client", "use one client authentication method, with a JWT bearer assertion");
            return Err(err.into());
        }
    }
    secret_credentials(headers, fields.client_id.as_deref(), fields.client_secret.as_deref())
}

fn secret_credentials(
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")));
    let malformed =
        || OAuthError { err: Error::oauth("invalid_client", "malformed HTTP Basic credentials"), basic: true };
    if let Some(encoded) = basic {
        if client_secret.is_some() {
            let err = Error::oauth("invalid_request", "send the client's credentials one way only");
            return Err(OAuthError { err, basic: true });
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
        let text = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
        let decode =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        let (id, secret) = (decode(id).ok_or_else(malformed)?, decode(secret).ok_or_else(malformed)?);
        if client_id.is_some_and(|body_id| body_id != id) {
            return Err(OAuthError {
                err: Error::oauth("invalid_client", "client_id differs from the credentials"),
                basic: true,
            });
        }
        return Ok(ClientCredentials::Secret { id, secret });
    }
    Ok(match (client_id, client_secret) {
        (Some(id), Some(secret)) => ClientCredentials::Secret { id: id.to_owned(), secret: secret.to_owned() },
        (Some(id), None) => ClientCredentials::Public { id: id.to_owned() },
        _ => ClientCredentials::Missing,
    })
}

fn uses_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic "))
}

/// A form that carries client authentication.
trait WithClient {
    fn client(&self) -> &ClientFields;
}

/// An OAuth form, its client's credentials, and whether they came by HTTP Basic.
fn unpack<T: WithClient>(
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<(T, ClientCredentials, bool), OAuthError> {
    let Form(form) = form.map_err(|rejection| {
        Error::oauth("invalid_request", format!("the body must be application/x-www-form-urlencoded: {rejection}"))
    })?;
    let credentials = client_credentials(headers, form.client())?;
    Ok((form, credentials, uses_basic(headers)))
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    device_code: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

impl WithClient for TokenForm {
    fn client(&self) -> &ClientFields {
        &self.client
    }
}

/// `POST /oauth/token` (RFC 6749 §3.2).
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    TokenRequestProof(dpop): TokenRequestProof,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (form, client, basic) = unpack(&headers, form)?;
    let request = TokenRequest {
        grant_type: form.grant_type,
        code: form.code,
        redirect_uri: form.redirect_uri,
        code_verifier: form.code_verifier,
        refresh_token: form.refresh_token,
        device_code: form.device_code,
        client,
        dpop,
        address,
    };
    let response = state.oauth.token(request).await.map_err(|err| OAuthError { err, basic })?;
    Ok((StatusCode::OK, [(header::PRAGMA, "no-cache")], Json(response)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeviceAuthorizationForm {
    #[serde(flatten)]
    client: ClientFields,
    scope: Option<String>,
    /// keywarden's extension: what the device calls itself, shown when its person approves it.
    device_name: Option<String>,
}

impl WithClient for DeviceAuthorizationForm {
    fn client(&self) -> &ClientFields {
        &self.client
    }
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1).
pub async fn device_authorization(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    form: Result<Form<DeviceAuthorizationForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (form, client, basic) = unpack(&headers, form)?;
    let request = DeviceAuthorizationRequest { client, scope: form.scope, device_name: form.device_name, address };
    let answer = state.oauth.device_authorization(request).await.map_err(|err| OAuthError { err, basic })?;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenOnlyForm {
    token: Option<String>,
    #[allow(dead_code)] // accepted and ignored: both kinds are looked up (RFC 7009 §2.1)
    token_type_hint: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

impl WithClient for TokenOnlyForm {
    fn client(&self) -> &ClientFields {
        &self.client
    }
}

/// `POST /oauth/introspect` (RFC 7662).
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (form, client, basic) = unpack(&headers, form)?;
    let token = form.token.ok_or_else(|| Error::oauth("invalid_request", "token is missing"))?;
    let answer = state.oauth.introspect(&client, &token).await.map_err(|err| OAuthError { err, basic })?;
    Ok(Json(answer).into_response())
}

/// `POST /oauth/revoke` (RFC 7009).
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    form: Result<Form<TokenOnlyForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let (form, client, basic) = unpack(&headers, form)?;
    let token = form.token.ok_or_else(|| Error::oauth("invalid_request", "token is missing"))?;
    state.oauth.revoke(&client, &token, address.as_deref()).await.map_err(|err| OAuthError { err, basic })?;
    Ok(StatusCode::OK.into_response())
}

/// The holder of an access token issued to an OAuth client.
#[derive(Debug)]
pub struct ClientTokenHolder(pub Authenticated);

impl FromRequestParts<AppState> for ClientTokenHolder {
    type Rejection = super::error::ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        caller_with(parts, state, Audience::OAuthClient).await.map(ClientTokenHolder)
    }
}

/// `GET|POST /oauth/userinfo` (OpenID Connect Core §5.3).
pub async fn userinfo(
    State(state): State<AppState>,
    ClientTokenHolder(who): ClientTokenHolder,
) -> Result<Json<Value>, super::error::ApiError> {
    let claims = state.oauth.userinfo(&who).await?;
    Ok(Json(serde_json::to_value(claims).map_err(|e| Error::Internal(e.to_string()))?))
}
