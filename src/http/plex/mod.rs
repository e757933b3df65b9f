//! The plex.tv-compatible account API (issue 8): the paths and answers existing apps, media servers
//! and scripts (such as Python's `plexapi`) already speak, served from the same accounts, devices,
//! sessions and revocation rules as the rest of keywarden. See `docs/plex-compatibility.md`.

mod account;
mod account_v1;
mod auth;
mod claim;
mod devices;
mod pins;
mod sharing;
mod webhooks;
pub mod xml;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use self::xml::{Element, Format};
use super::AppState;
use crate::domain::caller::Authenticated;
use crate::domain::device_info::DeviceInfo;
use crate::domain::Error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/users/signin", post(account::sign_in))
        .route("/api/v2/users/signout", delete(account::sign_out))
        .route("/api/v2/user", get(account::user))
        .route("/api/v2/ping", get(account::ping))
        .route("/users/{name}", get(account_v1::account).post(account_v1::sign_in))
        .route("/devices.xml", get(devices::list))
        .route("/devices/{id}", delete(devices::remove).put(devices::publish))
        .route("/api/v2/resources", get(devices::resources))
        .route("/api/resources", get(devices::resources_v1))
        .route("/pms/servers.xml", get(devices::servers_xml))
        .route("/api/v2/auth/jwk", post(auth::register))
        .route("/api/v2/auth/nonce", get(auth::nonce))
        .route("/api/v2/auth/token", post(auth::token))
        .route("/api/v2/auth/keys", get(auth::keys))
        .route("/api/v2/pins/link", put(pins::link))
        .merge(public_pins())
        .route("/api/claim/token.json", get(claim::token_json))
        .route("/api/claim/token", get(claim::token_xml))
        .route("/api/claim/exchange", post(claim::exchange))
        .route("/api/v2/user/webhooks", get(webhooks::list).post(webhooks::replace))
        .route("/api/users", get(sharing::friends))
        .route("/api/users/", get(sharing::friends))
        .route("/api/servers/{machine_identifier}/shared_servers", get(sharing::shared_servers))
}

/// Creating and polling PINs, callable from any web page (Overseerr's, Tautulli's and Ombi's
/// sign-in runs in the browser): CORS with any origin, the methods they use and the headers they
/// send (`accept`, `content-type`, `x-plex-*`). Nothing here reads a cookie, and nothing else gets CORS.
fn public_pins() -> Router<AppState> {
    use axum::http::{header::HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};

    const HEADERS: [&str; 21] = [
        "accept",
        "content-type",
        "x-plex-product",
        "x-plex-version",
        "x-plex-client-identifier",
        "x-plex-model",
        "x-plex-platform",
        "x-plex-platform-version",
        "x-plex-device",
        "x-plex-device-name",
        "x-plex-device-vendor",
        "x-plex-device-screen-resolution",
        "x-plex-language",
        "x-plex-provides",
        "x-plex-features",
        "x-plex-sync-version",
        "x-plex-token",
        "x-plex-client-profile-extra",
        "x-plex-session-identifier",
        "x-plex-container-start",
        "x-plex-container-size",
    ];
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(HEADERS.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(600));
    // The CORS layer answers preflights; the OPTIONS routes give it a route to answer on.
    Router::new()
        .route("/api/v2/pins", post(pins::create).options(StatusCode::NO_CONTENT))
        .route("/api/v2/pins/{id}", get(pins::poll).options(StatusCode::NO_CONTENT))
        .layer(cors)
}

/// Whether a path belongs to the plex.tv-compatible API (its errors are plex.tv's, whoever raises them).
pub fn is_plex_path(path: &str) -> bool {
    const PREFIXES: [&str; 7] =
        ["/api/v2/", "/devices/", "/api/users", "/api/servers/", "/api/resources", "/api/claim/", "/pms/"];
    path == "/devices.xml" || path.starts_with("/users/") || PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// A time as plex.tv writes it in ISO form: `2026-11-24T06:20:01Z`, whole seconds.
pub(super) fn iso_time(ms: i64) -> String {
    crate::clock::rfc3339(ms - ms.rem_euclid(1000))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// What a plex.tv-style client says about itself in its `X-Plex-*` headers.
#[derive(Debug, Clone)]
pub struct PlexClient {
    pub format: Format,
    pub client_identifier: Option<String>,
    pub product: Option<String>,
    pub platform: Option<String>,
    pub device_name: Option<String>,
    /// `X-Plex-Provides`: `server` for a media server, `player`, `controller`, …
    pub provides: Option<String>,
    pub token: Option<String>,
}

impl PlexClient {
    fn from_headers(headers: &HeaderMap, query: Option<&str>) -> Self {
        let from_query = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "X-Plex-Token")
                .map(|(_, value)| value.into_owned())
        });
        let owned = |name: &str| header(headers, name).map(str::to_owned);
        Self {
            format: Format::of(headers),
            client_identifier: owned("x-plex-client-identifier"),
            product: owned("x-plex-product"),
            platform: owned("x-plex-platform"),
            device_name: owned("x-plex-device-name").or_else(|| owned("x-plex-device")),
            provides: owned("x-plex-provides"),
            token: owned("x-plex-token").or(from_query),
        }
    }

    /// The device a sign-in comes from; plex.tv refuses a client that does not identify itself.
    pub fn device(&self) -> Result<DeviceInfo, PlexError> {
        let Some(client_id) = self.client_identifier.clone() else {
            return Err(PlexError::new(
                self.format,
                StatusCode::BAD_REQUEST,
                1000,
                "X-Plex-Client-Identifier is missing",
            ));
        };
        let product = self.product.clone().unwrap_or_default();
        let name = self.device_name.clone().unwrap_or_else(|| product.clone());
        Ok(DeviceInfo { client_id, product, platform: self.platform.clone().unwrap_or_default(), name })
    }

    /// The session behind `X-Plex-Token`, or the 401 plex.tv gives.
    pub async fn signed_in(&self, state: &AppState) -> Result<Authenticated, PlexError> {
        let Some(token) = &self.token else {
            return Err(PlexError::new(self.format, StatusCode::UNAUTHORIZED, 1001, "User could not be authenticated"));
        };
        state.sessions.authenticate_plex(token).await.map_err(|err| self.error(&err))
    }

    /// A domain error as plex.tv would answer it.
    pub fn error(&self, err: &Error) -> PlexError {
        let status = super::error::status_of(err);
        let code = match err {
            Error::InvalidCredentials => 1001,
            Error::MfaRequired { .. } | Error::InvalidCode | Error::CodeAlreadyUsed | Error::InvalidMfaToken => 1029,
            Error::InvalidToken | Error::TokenExpired | Error::TokenRevoked => 1001,
            _ => 1000,
        };
        if err.is_internal() {
            tracing::error!(error = %err, "internal error on the plex.tv-compatible API");
            return PlexError::new(self.format, status, code, "internal error");
        }
        let message = match err {
            Error::InvalidToken | Error::TokenExpired | Error::TokenRevoked => "User could not be authenticated".into(),
            // plex.tv clients have no step-up: a new sign-in is the fresh authentication they can give.
            Error::StepUpRequired => "This needs a recent sign-in: sign in again, then retry".into(),
            other => other.to_string(),
        };
        let retry_after_secs = err.retry_after_secs();
        PlexError { retry_after_secs, ..PlexError::new(self.format, status, code, &message) }
    }
}

impl FromRequestParts<AppState> for PlexClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers, parts.uri.query()))
    }
}

/// plex.tv's error answer: `<errors><error code=… message=… status=…/></errors>`.
/// In JSON: `{"errors": [{"code": 1001, "message": …, "status": 401}]}`.
#[derive(Debug)]
pub struct PlexError {
    format: Format,
    status: StatusCode,
    code: u32,
    message: String,
    /// Sent as `Retry-After` with a 429 or 503.
    retry_after_secs: Option<u64>,
}

impl PlexError {
    pub fn new(format: Format, status: StatusCode, code: u32, message: &str) -> Self {
        Self { format, status, code, message: message.to_owned(), retry_after_secs: None }
    }
}

impl IntoResponse for PlexError {
    fn into_response(self) -> Response {
        let status = self.status.as_u16();
        let retry_after = self.retry_after_secs.map(|secs| [(axum::http::header::RETRY_AFTER, secs.to_string())]);
        let answer = match self.format {
            Format::Json => {
                let body =
                    serde_json::json!({ "errors": [{ "code": self.code, "message": self.message, "status": status }] });
                (self.status, axum::Json(body)).into_response()
            }
            Format::Xml => {
                let error =
                    Element::new("error").attr("code", self.code).attr("message", &self.message).attr("status", status);
                self.format.answer(self.status, &Element::new("errors").child(error))
            }
        };
        (retry_after, answer).into_response()
    }
}
