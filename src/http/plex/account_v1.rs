//! plex.tv's first account API, still called by Tautulli, Overseerr and Ombi: `GET /users/account`
//! (XML), `GET /users/account.json` and the password sign-in `POST /users/sign_in.json` (or `.xml`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::account::{sign_in_with, user_element, Credentials};
use super::xml::{Element, Format};
use super::{PlexClient, PlexError};
use crate::domain::validation_cache::PlexFacts;
use crate::domain::Error;
use crate::http::extract::{ClientAddress, UserAgent};
use crate::http::AppState;

/// The format a v1 path asks for by its ending: `.json` is JSON, anything else plex.tv's XML.
fn format_of(path: &str) -> Format {
    if path.ends_with(".json") {
        Format::Json
    } else {
        Format::Xml
    }
}

/// `GET /users/account` and `GET /users/account.json`: the signed-in account.
pub async fn account(
    State(state): State<AppState>,
    client: PlexClient,
    Path(name): Path<String>,
) -> Result<Response, PlexError> {
    let format = match name.as_str() {
        "account" | "account.xml" => Format::Xml,
        "account.json" => Format::Json,
        _ => return Err(not_found(&client)),
    };
    let client = PlexClient { format, ..client };
    let who = client.signed_in(&state).await?;
    let token = client.token.clone().unwrap_or_default();
    answer(&state, &client, &who.user_id, &token, StatusCode::OK).await
}

fn not_found(client: &PlexClient) -> PlexError {
    PlexError::new(client.format, StatusCode::NOT_FOUND, 1000, "Not found")
}

/// The account in the form the v1 path asks for. In XML, plex.tv's user element with the token
/// also as `authenticationToken` and as an `<authentication-token>` child (on the document's one
/// line, where the media server container's script finds it); in JSON `{"user": {…}}` with plex.tv's
/// types (`id` a number: Overseerr compares it strictly).
pub(super) async fn answer(
    state: &AppState,
    client: &PlexClient,
    user_id: &str,
    token: &str,
    status: StatusCode,
) -> Result<Response, PlexError> {
    match client.format {
        Format::Xml => {
            let user = user_element(state, user_id, token)
                .await
                .map_err(|e| client.error(&e))?
                .attr("authenticationToken", token)
                .child(Element::new("authentication-token").text(token));
            Ok(Format::Xml.answer(status, &user))
        }
        Format::Json => {
            let user = user_json(state, user_id, token).await.map_err(|e| client.error(&e))?;
            Ok((status, axum::Json(json!({ "user": user }))).into_response())
        }
    }
}

async fn user_json(state: &AppState, user_id: &str, token: &str) -> Result<serde_json::Value, Error> {
    let profile = state.accounts.profile(user_id).await?;
    let PlexFacts { numeric_id, two_factor } = state.accounts.plex_facts(user_id).await?;
    Ok(json!({
        "id": numeric_id,
        "uuid": profile.id,
        "email": profile.email,
        "username": profile.username,
        "title": profile.username,
        "thumb": "",
        "confirmed": profile.email_verified,
        "hasPassword": profile.has_password,
        "twoFactorEnabled": two_factor,
        "home": false,
        "restricted": false,
        "authToken": token,
        "authentication_token": token,
        "joined_at": super::iso_time(profile.created_at),
        "subscription": { "active": false, "status": "Inactive", "plan": null, "features": [] },
        "roles": { "roles": [] },
        "entitlements": [],
    }))
}

/// The credentials of a v1 sign-in, in any of the forms its clients send: JSON
/// `{"user": {"login", "password"}}` (Ombi), the form fields `user[login]` and `user[password]`,
/// `login` and `password`, or HTTP Basic (older Tautulli).
#[derive(Default, Deserialize)]
struct V1Body {
    #[serde(default)]
    user: V1User,
    #[serde(flatten)]
    top: V1User,
}

#[derive(Default, Deserialize)]
struct V1User {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "verificationCode")]
    verification_code: Option<String>,
}

fn credentials(headers: &HeaderMap, body: &[u8]) -> Result<Credentials, &'static str> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed: V1Body = if body.iter().all(u8::is_ascii_whitespace) {
        V1Body::default()
    } else if content_type.starts_with("application/json") {
        serde_json::from_slice(body).map_err(|_| "the body is not the JSON {\"user\": {\"login\", \"password\"}}")?
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut form = V1Body::default();
        for (name, value) in url::form_urlencoded::parse(body) {
            let value = Some(value.into_owned());
            match name.as_ref() {
                "user[login]" => form.user.login = value,
                "user[password]" => form.user.password = value,
                "login" => form.top.login = value,
                "password" => form.top.password = value,
                "verificationCode" | "user[verificationCode]" => form.top.verification_code = value,
                _ => {}
            }
        }
        form
    } else {
        // Older clients send `Content-Type: application/xml` with an empty body and Basic credentials.
        V1Body::default()
    };
    let basic = basic_credentials(headers);
    let (user, top) = (parsed.user, parsed.top);
    let login = user.login.or(top.login).or_else(|| basic.as_ref().map(|(l, _)| l.clone()));
    let password = user.password.or(top.password).or_else(|| basic.map(|(_, p)| p));
    match (login, password) {
        (Some(login), Some(password)) => {
            Ok(Credentials { login, password, code: user.verification_code.or(top.verification_code) })
        }
        _ => Err("send the login and password (JSON user.login and user.password, a form, or Basic)"),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    // Tautulli wrote the header as `Basic <base64>:`; the trailing colon is not base64.
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim().trim_end_matches(':')).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some((login.to_owned(), password.to_owned()))
}

/// `POST /users/sign_in.json` (or `.xml`): a password sign-in with the same counting, throttling
/// and two-step codes as `POST /api/v2/users/signin`; `201` with the account and its new token.
pub async fn sign_in(
    State(state): State<AppState>,
    client: PlexClient,
    Path(name): Path<String>,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PlexError> {
    if name != "sign_in.json" && name != "sign_in.xml" && name != "sign_in" {
        return Err(not_found(&client));
    }
    let client = PlexClient { format: format_of(&name), ..client };
    let credentials = credentials(&headers, &body)
        .map_err(|message| PlexError::new(client.format, StatusCode::BAD_REQUEST, 1000, message))?;
    let issued = sign_in_with(&state, &client, address, user_agent, credentials).await?;
    answer(&state, &client, &issued.user_id, &issued.access_token, StatusCode::CREATED).await
}
