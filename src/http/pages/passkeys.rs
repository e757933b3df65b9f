//! Passkeys on the pages: adding, renaming and removing them on `/security`, and passwordless
//! sign-in. The page script talks to the authenticator and posts its answer in an ordinary form.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use minijinja::context;
use serde::Deserialize;

use super::account::{form_proof, signed_in_cookies};
use super::security::{recovery_codes_page, refuse, signed_in, signed_in_to_enrol};
use super::step_up::stepped_up;
use super::PageError;
use super::{Browser, CsrfOnly, Page};
use crate::domain::caller::Authenticated;
use crate::domain::passkeys::{Assertion, Ceremony};
use crate::domain::sessions::{Issue, PasskeySignIn};
use crate::domain::Error;
use crate::http::error::ApiError;
use crate::http::extract::{ClientAddress, UserAgent};
use crate::http::passkeys::CeremonyResponse;
use crate::http::AppState;

/// The browser's answer as the page script put it in the form: JSON of a `PublicKeyCredential`.
fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|_| Error::PasskeyRejected)
}

/// A challenge for the page script, as JSON; refusals are JSON too (`{"error", "message"}`).
fn ceremony_json(ceremony: Result<Ceremony, Error>) -> Response {
    match ceremony {
        Ok(c) => Json(CeremonyResponse::from(c)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The signed-in session a challenge is for; the script gets a JSON refusal without one.
fn session_of(browser: &Browser) -> Result<&Authenticated, Error> {
    match browser.session.as_ref() {
        Some(who) if who.enrolment_only => Err(Error::MfaEnrolmentRequired),
        Some(who) => Ok(who),
        None => Err(Error::InvalidToken),
    }
}

pub async fn registration_options(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    // Adding a passkey is how a session limited to enrolment becomes whole.
    let who = browser.session.as_ref().ok_or(Error::InvalidToken).map_err(|e| ApiError::from(e).into_response())?;
    Ok(ceremony_json(state.factors.passkey_options(who).await))
}

pub async fn step_up_options(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = session_of(&browser).map_err(|e| ApiError::from(e).into_response())?;
    Ok(ceremony_json(state.factors.step_up_options(who).await))
}

pub async fn sign_in_options(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    Ok(ceremony_json(state.factors.passkey_sign_in_options(address.as_deref()).await))
}

#[derive(Deserialize)]
pub struct AddForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
}

/// Stores the new passkey; the account's first second factor shows its recovery codes next.
pub async fn add(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<AddForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in_to_enrol(&browser)?;
    let added = match parse(&form.webauthn_response) {
        Ok(credential) => {
            state.factors.add_passkey(&who, &form.ceremony_id, &form.name, &credential, address.as_deref()).await
        }
        Err(err) => Err(err),
    };
    match added {
        Ok(added) => match added.recovery_codes {
            Some(codes) => Ok(recovery_codes_page(&state, &browser, &codes).into_response()),
            None => Ok(Redirect::to("/security?done=passkey-added").into_response()),
        },
        Err(err) => Err(refuse(&state, &browser, &who, "passkey_error", &err).await.into()),
    }
}

#[derive(Deserialize)]
pub struct RenameForm {
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn rename(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    match state.factors.rename_passkey(&who, &id, &form.name, address.as_deref()).await {
        Ok(_) => Ok(Redirect::to("/security?done=passkey-renamed").into_response()),
        Err(err) => Err(refuse(&state, &browser, &who, "passkey_error", &err).await.into()),
    }
}

#[derive(Deserialize)]
pub struct RemoveForm {
    csrf: String,
    /// A code from the app or a recovery code, to confirm it is the owner (step-up).
    #[serde(default)]
    code: String,
    /// Or a passkey's answer to a step-up challenge.
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
}

/// Removes a passkey; the form may carry a step-up proof, which the last passkey needs.
pub async fn remove(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<RemoveForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let fresh =
        stepped_up(&state, &who, &form.code, "", &form.ceremony_id, &form.webauthn_response, address.as_deref());
    let removed = match fresh.await {
        Ok(fresh) => state.factors.remove_passkey(&fresh, &id, address.as_deref()).await,
        Err(err) => Err(err),
    };
    match removed {
        Ok(()) => Ok(Redirect::to("/security?done=passkey-removed").into_response()),
        Err(err) => {
            let err = match err {
                Error::StepUpRequired => Error::InvalidFactor(
                    "removing your last passkey needs a fresh check: confirm with the passkey, or enter a code",
                ),
                other => other,
            };
            Err(refuse(&state, &browser, &who, "passkey_error", &err).await.into())
        }
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
    #[serde(default)]
    dpop: String,
}

/// Passwordless sign-in: whichever passkey the person picked says whose account it is.
pub async fn sign_in(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Form(form): Form<SignInForm>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let next = state.pages.safe_next(&form.next);
    let signed = match parse(&form.webauthn_response) {
        Ok(credential) => {
            let request = PasskeySignIn {
                assertion: Assertion { ceremony_id: Some(form.ceremony_id), credential: Box::new(credential) },
                device: None,
                address,
                user_agent,
                dpop: form_proof(&state, &headers, "/signin/passkey", &form.dpop),
                issue: Issue::BrowserCookie,
            };
            state.sessions.sign_in_with_passkey(request).await
        }
        Err(err) => Err(err),
    };
    state.metrics.sign_ins.get_or_create(&crate::obs::metrics::Outcome::of(&signed, "success")).inc();
    match signed {
        Ok(issued) => {
            let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
            Ok((cookies, Redirect::to(&next)).into_response())
        }
        Err(err) if err.is_internal() => Err(browser.error(&state, &err)),
        Err(err) => {
            let status = crate::http::error::status_of(&err);
            let extra = context! {
                title => "Sign in", next => next, login => "", error => err.to_string(),
                passkeys => state.factors.passkeys().available(),
            };
            Err(browser.render(&state, status, "signin.html", extra))
        }
    }
}
