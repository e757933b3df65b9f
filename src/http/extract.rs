//! Request extractors: JSON bodies with our error format, the bearer caller, and the client address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OriginalUri};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::domain::caller::{Authenticated, Presentation};
use crate::domain::dpop::{Expected, Proof};
use crate::domain::Error;
use crate::obs::metrics::Outcome;

/// `axum::Json`, but malformed bodies are answered in keywarden's error format, and a body must be
/// a JSON object: serde reads a struct from an array too, so `[]` would pass for `{}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(ApiError::from_body)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes).map_err(ApiError::from)?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "the request body must be a JSON object",
            ));
        }
        Ok(Self(value))
    }
}

/// `application/json` or any `application/…+json`, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The holder of a valid access token, presented as `Bearer` or, for key-bound tokens, as `DPoP`
/// with a proof. A session that may only enrol a second factor is refused (`mfa_enrolment_required`).
#[derive(Debug)]
pub struct Caller(pub Authenticated);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        caller_with(parts, state, Audience::Api).await.map(Caller)
    }
}

/// Like [`Caller`], but also a session that the operator's policy limits to enrolling a second
/// factor: for the calls that enrol one, read the profile, or sign out.
#[derive(Debug)]
pub struct EnrollingCaller(pub Authenticated);

impl FromRequestParts<AppState> for EnrollingCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        caller_with(parts, state, Audience::ApiEnrolling).await.map(EnrollingCaller)
    }
}

/// The caller when the request carries a valid access token (a session limited to enrolment too),
/// else `None`: for endpoints that work without one but do more for a signed-in app.
#[derive(Debug)]
pub struct OptionalCaller(pub Option<Authenticated>);

impl FromRequestParts<AppState> for OptionalCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if authorization(parts).is_none() {
            return Ok(Self(None));
        }
        Ok(Self(caller_with(parts, state, Audience::ApiEnrolling).await.ok()))
    }
}

/// Which tokens an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// keywarden's own API, for sessions with every right.
    Api,
    /// keywarden's own API, also for sessions that may only enrol a second factor.
    ApiEnrolling,
    /// An OAuth client's own endpoints (userinfo): only tokens issued to a client.
    OAuthClient,
}

pub(crate) async fn caller_with(
    parts: &Parts,
    state: &AppState,
    audience: Audience,
) -> Result<Authenticated, ApiError> {
    let (scheme, token) = authorization(parts).ok_or_else(ApiError::missing_token)?;
    let mut presented = Presentation::default();
    if scheme.eq_ignore_ascii_case("dpop") {
        let proof = dpop_header(parts)?.ok_or(Error::DpopProofRequired)?;
        let url = request_url(parts, state);
        let expected = Expected { method: parts.method.as_str(), url: &url, access_token: Some(token) };
        presented = Presentation { dpop_scheme: true, proof: Some(state.dpop.verify(proof, expected)?) };
    } else if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::missing_token());
    }
    let result = match audience {
        Audience::Api => state.sessions.authenticate(token, &presented).await,
        Audience::ApiEnrolling => state.sessions.authenticate_for_enrolment(token, &presented).await,
        Audience::OAuthClient => state.sessions.authenticate_client_token(token, &presented).await,
    };
    state.metrics.token_validations.get_or_create(&Outcome::of(&result, "valid")).inc();
    Ok(result?)
}

fn authorization(parts: &Parts) -> Option<(&str, &str)> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    Some((scheme, token.trim()))
}

/// The single `DPoP` header, if any (RFC 9449 §4.3: more than one is an error).
fn dpop_header(parts: &Parts) -> Result<Option<&str>, Error> {
    let mut values = parts.headers.get_all("dpop").iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Error::InvalidDpopProof("more than one DPoP header"));
    }
    first.map(|v| v.to_str().map_err(|_| Error::InvalidDpopProof("the DPoP header is not text"))).transpose()
}

/// The URL a proof must name: the configured public URL (behind a proxy), else this request's host.
fn request_url(parts: &Parts, state: &AppState) -> String {
    // Nested routers see their path with the prefix stripped; the proof names the full one.
    let path = parts.extensions.get::<OriginalUri>().map_or(parts.uri.path(), |original| original.0.path());
    url_for(state, &parts.headers, path)
}

/// The absolute URL of a path on this server, as clients name it in DPoP proofs.
pub(crate) fn url_for(state: &AppState, headers: &HeaderMap, path: &str) -> String {
    match &state.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

/// A DPoP proof sent to an endpoint that issues tokens (sign-in, refresh), verified.
#[derive(Debug)]
pub struct TokenRequestProof(pub Option<Proof>);

impl FromRequestParts<AppState> for TokenRequestProof {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(proof) = dpop_header(parts)? else { return Ok(Self(None)) };
        let url = request_url(parts, state);
        let expected = Expected { method: parts.method.as_str(), url: &url, access_token: None };
        Ok(Self(Some(state.dpop.verify(proof, expected)?)))
    }
}

/// Where a request came from, as the domain records it: the peer address, or the client named by
/// a trusted proxy.
#[derive(Debug, Clone)]
pub struct ClientAddress(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let trusted = |ip: &IpAddr| state.trusted_proxies.iter().any(|net| net.contains(ip));
        let Some(mut client) = peer else { return Ok(Self(None)) };
        if trusted(&client) {
            // Walk X-Forwarded-For from the right: the first address not of our proxies is the client.
            let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
            let hops: Vec<IpAddr> =
                forwarded.flat_map(|v| v.split(',')).filter_map(|hop| hop.trim().parse().ok()).collect();
            for hop in hops.into_iter().rev() {
                client = hop;
                if !trusted(&hop) {
                    break;
                }
            }
        }
        Ok(Self(Some(client.to_string())))
    }
}

/// The `User-Agent` header, used to name browsers that do not name themselves.
#[derive(Debug, Clone)]
pub struct UserAgent(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned)))
    }
}
