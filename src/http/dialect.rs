//! Every answer in the words of the surface a request reached, including those the web framework or the connection layer makes before a handler runs.
//!
//! axum's extractors refuse bad input with plain text (`Failed to deserialize query string…`),
//! tower-http's timeout answers with an empty body, and hyper knows nothing of keywarden's error
//! codes. This layer checks the sizes a request declares before any of its body is read, and
//! rewrites any error answer that is not already keywarden's (plain text or empty) into the API's
//! JSON error, plex.tv's error shape, the OAuth error shape, or an HTML page, by where it went.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::plex::xml::Format;
use super::plex::PlexError;
use super::AppState;

/// Which surface's error shape a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": code, "message": text}`.
    Api,
    /// plex.tv's `<errors><error code=… message=… status=…/></errors>` (or its JSON form).
    Plex(Format),
    /// RFC 6749 §5.2: `{"error": code, "error_description": text}`.
    OAuth,
    /// An HTML page.
    Page,
}

/// The OAuth endpoints that machines call; the rest under `/oauth/` are pages people see.
const OAUTH_MACHINE_PATHS: &[&str] = &[
    "/oauth/token",
    "/oauth/device_authorization",
    "/oauth/introspect",
    "/oauth/revoke",
    "/oauth/userinfo",
    "/oauth/jwks",
];

impl Dialect {
    pub fn of(path: &str, headers: &HeaderMap) -> Self {
        if path.starts_with("/api/v1/") {
            Self::Api
        } else if super::plex::is_plex_path(path) {
            Self::Plex(Format::of(headers))
        } else if OAUTH_MACHINE_PATHS.contains(&path) || path == "/.well-known/openid-configuration" {
            Self::OAuth
        } else if super::pages::wants_html(headers) || is_form(headers) {
            Self::Page
        } else {
            Self::Api
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// A refusal of the HTTP layer, before or instead of a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn of_status(status: StatusCode, detail: &str) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("invalid_request", "the request is malformed"),
            StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this endpoint does not accept that method"),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long to arrive"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::URI_TOO_LONG => ("uri_too_long", "the request's address is too long"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "this content type is not accepted here"),
            StatusCode::UNPROCESSABLE_ENTITY => ("invalid_request", "the request's fields are missing or invalid"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers_too_large", "the request's headers are too large"),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the server cannot answer now; try again shortly"),
            s if s.is_server_error() => ("internal_error", "internal error"),
            _ => ("invalid_request", "the request was refused"),
        };
        // The framework's own words say which field or parameter was wrong; they never hold more
        // than the request did, and are cut short.
        let detail = detail.trim();
        let message = if detail.is_empty() || status.is_server_error() {
            message.to_owned()
        } else {
            detail.chars().filter(|c| !c.is_control()).take(300).collect()
        };
        Self { status, code, message }
    }

    /// The refusal as the surface speaks.
    pub fn answer(self, dialect: Dialect, state: &AppState) -> Response {
        match dialect {
            Dialect::Api => ApiError::new(self.status, self.code, self.message).into_response(),
            Dialect::Plex(format) => PlexError::new(format, self.status, 1000, &self.message).into_response(),
            Dialect::OAuth => {
                let code = if self.status.is_server_error() { "server_error" } else { "invalid_request" };
                (self.status, axum::Json(json!({ "error": code, "error_description": self.message }))).into_response()
            }
            Dialect::Page => {
                let heading = match self.status {
                    StatusCode::PAYLOAD_TOO_LARGE => "That was too much to send",
                    StatusCode::REQUEST_TIMEOUT => "That took too long",
                    StatusCode::NOT_FOUND => "Page not found",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "That did not work",
                };
                let body = "The form or link was not what this page expects. Go back, reload the page and try again.";
                state.pages.bare_message(self.status, heading, body).into_response()
            }
        }
    }
}

/// The sizes a request declares, checked before any of its body is read: a body declared larger
/// than the limit is refused at once (and a client that asked `Expect: 100-continue` is not told to
/// go on), as are request targets and headers larger than `[http]` allows.
pub fn declared_too_large(request: &Request, limits: &Limits) -> Option<Refusal> {
    let target = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(Refusal::of_status(StatusCode::URI_TOO_LONG, ""));
    }
    let header_bytes: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        return Some(Refusal::of_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ""));
    }
    let declared =
        request.headers().get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
    match declared {
        Some(Some(length)) if length > limits.max_body_bytes as u64 => {
            Some(Refusal::of_status(StatusCode::PAYLOAD_TOO_LARGE, ""))
        }
        Some(None) => Some(Refusal::of_status(StatusCode::BAD_REQUEST, "the Content-Length header is not a number")),
        _ => None,
    }
}

/// The size limits the layer enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

/// Whether an error answer is already keywarden's: ours carry JSON, XML or HTML; the framework's
/// carry plain text or nothing.
fn is_ours(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|content_type| {
        content_type.starts_with("application/json")
            || content_type.starts_with("text/html")
            || content_type.contains("xml")
    })
}

/// The layer: refuses oversized requests up front, and rewrites foreign error answers.
pub async fn speak(State((state, limits)): State<(AppState, Limits)>, request: Request, next: Next) -> Response {
    let dialect = Dialect::of(request.uri().path(), request.headers());
    if let Some(refusal) = declared_too_large(&request, &limits) {
        let mut response = refusal.answer(dialect, &state);
        // The body was never read: the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let head = request.method() == Method::HEAD;
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_ours(&response) || head {
        return response;
    }
    let (parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&detail);
    // A form whose body stalled: axum says so only in words (tower-http's `TimeoutError` text).
    let status = if detail.contains("within the designated timeout") { StatusCode::REQUEST_TIMEOUT } else { status };
    let mut rewritten = Refusal::of_status(status, &detail).answer(dialect, &state);
    for name in [header::RETRY_AFTER, header::ALLOW, header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}
