//! Signing in, the user element, signing out and ping, as plex.tv answers them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::xml::{Element, Format};
use super::{PlexClient, PlexError};
use crate::domain::second_factors::Factor;
use crate::domain::sessions::{FinishSignIn, Issue, IssuedTokens, SignIn};
use crate::domain::validation_cache::PlexFacts;
use crate::domain::Error;
use crate::http::extract::{ClientAddress, UserAgent};
use crate::http::AppState;

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    /// The authenticator code, for an account with two-step verification.
    #[serde(default, rename = "verificationCode")]
    verification_code: Option<String>,
}

/// `POST /api/v2/users/signin`: password (and verification code) in one request; the answer is the
/// user element with a new `authToken` for the device in the `X-Plex-*` headers.
pub async fn sign_in(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Form(form): Form<SignInForm>,
) -> Result<Response, PlexError> {
    let credentials = Credentials { login: form.login, password: form.password, code: form.verification_code };
    let issued = sign_in_with(&state, &client, address, user_agent, credentials).await?;
    let user = user_element(&state, &issued.user_id, &issued.access_token).await.map_err(|e| client.error(&e))?;
    Ok(client.format.answer(StatusCode::CREATED, &user))
}

/// What a person gives to sign in through one of plex.tv's sign-in paths.
pub(super) struct Credentials {
    pub login: String,
    pub password: String,
    /// The authenticator (or recovery) code, for an account with two-step verification.
    pub code: Option<String>,
}

/// A password sign-in (and its second step) for the device in the `X-Plex-*` headers, counted and
/// throttled like every sign-in; the new token is a plex token of that device.
pub(super) async fn sign_in_with(
    state: &AppState,
    client: &PlexClient,
    address: Option<String>,
    user_agent: Option<String>,
    credentials: Credentials,
) -> Result<IssuedTokens, PlexError> {
    let device = client.device()?;
    let request = SignIn {
        login: credentials.login,
        password: Zeroizing::new(credentials.password),
        device: Some(device),
        address: address.clone(),
        user_agent,
        dpop: None,
        issue: Issue::PlexToken,
        // plex.tv clients have no device token: a client identifier is no proof of a known device.
        device_token: None,
    };
    let issued = match state.sessions.sign_in(request).await {
        Ok(issued) => issued,
        Err(Error::MfaRequired { mfa_token, .. }) => {
            let Some(code) = credentials.code.filter(|c| !c.trim().is_empty()) else {
                return Err(verification(client, "Please enter the verification code"));
            };
            let factor = Factor::guess(&code).map_err(|_| verification(client, "Invalid verification code"))?;
            let finish = FinishSignIn { mfa_token, factor, address, dpop: None };
            state.sessions.finish_sign_in(finish).await.map_err(|err| match err {
                Error::InvalidCode | Error::CodeAlreadyUsed | Error::InvalidMfaToken => {
                    verification(client, "Invalid verification code")
                }
                other => client.error(&other),
            })?
        }
        Err(err) => return Err(client.error(&err)),
    };
    if let Some(provides) = &client.provides {
        state.devices.record_provides(&issued.device_id, provides).await.map_err(|e| client.error(&e))?;
    }
    Ok(issued)
}

/// plex.tv's answer when two-step verification needs (another) code; clients look for these words.
fn verification(client: &PlexClient, message: &str) -> PlexError {
    PlexError::new(client.format, StatusCode::UNAUTHORIZED, 1029, message)
}

/// `GET /api/v2/user`: the signed-in user.
pub async fn user(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    let token = client.token.clone().unwrap_or_default();
    let user = user_element(&state, &who.user_id, &token).await.map_err(|e| client.error(&e))?;
    Ok(client.format.answer(StatusCode::OK, &user))
}

/// `DELETE /api/v2/users/signout`: ends the session of the token presented.
pub async fn sign_out(
    State(state): State<AppState>,
    client: PlexClient,
    ClientAddress(address): ClientAddress,
) -> Result<Response, PlexError> {
    let who = client.signed_in(&state).await?;
    state.sessions.sign_out(&who, address.as_deref()).await.map_err(|e| client.error(&e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v2/ping`: whether the token still works (`{"pong": true}`, Overseerr looks for `pong`).
pub async fn ping(State(state): State<AppState>, client: PlexClient) -> Result<Response, PlexError> {
    client.signed_in(&state).await?;
    Ok(match client.format {
        Format::Json => axum::Json(serde_json::json!({ "pong": true })).into_response(),
        Format::Xml => Format::Xml.answer(StatusCode::OK, &Element::new("pong").text("true")),
    })
}

/// The `<user>` element clients read after signing in: who they are, their token, and the child
/// elements (`subscription`, `profile`, …) they expect to find even when empty.
pub(super) async fn user_element(state: &AppState, user_id: &str, token: &str) -> Result<Element, Error> {
    let profile = state.accounts.profile(user_id).await?;
    let PlexFacts { numeric_id, two_factor } = state.accounts.plex_facts(user_id).await?;
    Ok(Element::with_capacity("user", 32)
        .attr("id", numeric_id)
        .attr("uuid", &profile.id)
        .attr("username", &profile.username)
        .attr("title", &profile.username)
        .attr("friendlyName", &profile.username)
        .attr("email", &profile.email)
        .attr("joinedAt", profile.created_at / 1000)
        .flag("confirmed", profile.email_verified)
        .flag("hasPassword", profile.has_password)
        .flag("twoFactorEnabled", two_factor)
        .flag("emailOnlyAuth", false)
        .flag("guest", false)
        .flag("home", false)
        .flag("homeAdmin", false)
        .attr("homeSize", 1)
        .attr("maxHomeSize", 1)
        .flag("restricted", false)
        .flag("protected", false)
        .flag("anonymous", false)
        .flag("mailingListActive", false)
        .flag("experimentalFeatures", false)
        .flag("backupCodesCreated", two_factor)
        .attr("scrobbleTypes", "")
        .attr("locale", "")
        .attr("thumb", "")
        .attr("authToken", token)
        .child(
            Element::new("subscription")
                .flag("active", false)
                .attr("status", "Inactive")
                .attr("plan", "")
                .attr("paymentService", "")
                .attr("subscribedAt", "")
                .child(Element::array("features", [])),
        )
        .child(
            Element::new("profile")
                .flag("autoSelectAudio", true)
                .attr("defaultAudioLanguage", "")
                .attr("defaultSubtitleLanguage", "")
                .attr("autoSelectSubtitle", 0)
                .attr("defaultSubtitleAccessibility", 0)
                .attr("defaultSubtitleForces", 0),
        )
        .child(Element::array("entitlements", []))
        .child(Element::array("roles", []))
        .child(Element::array("services", [])))
}
