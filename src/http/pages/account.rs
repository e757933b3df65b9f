//! Sign-in, sign-up, sign-out, password reset and email verification pages.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::{context, Value};
use serde::Deserialize;
use zeroize::Zeroizing;

use axum_extra::extract::cookie::CookieJar;

use super::PageError;
use super::{cookie, Browser, CsrfOnly, Page, DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE_SECS, SESSION_COOKIE};
use crate::domain::accounts::Registration;
use crate::domain::dpop::{Expected, Proof};
use crate::domain::passkeys::Assertion;
use crate::domain::policy::SignupMode;
use crate::domain::second_factors::Factor;
use crate::domain::sessions::{FinishSignIn, Issue, IssuedTokens, SignIn};
use crate::http::extract::{url_for, ClientAddress, TokenRequestProof, UserAgent};
use crate::http::AppState;

/// The cookies of a browser that just signed in: its session (the freshly issued `kw_ws_` token),
/// and the device token that lets it
/// sign in again while its account is locked by someone else's guessing (kept about a year).
pub(super) fn signed_in_cookies(jar: CookieJar, state: &AppState, issued: &IssuedTokens) -> CookieJar {
    let secure = state.pages.secure_cookies;
    let session =
        cookie(SESSION_COOKIE, issued.access_token.to_string(), secure, Some(state.token_policy.refresh_ttl_secs));
    let device = cookie(DEVICE_COOKIE, issued.device_token.clone(), secure, Some(DEVICE_COOKIE_MAX_AGE_SECS));
    jar.add(session).add(device)
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn signin_form(State(state): State<AppState>, browser: Browser, Query(query): Query<NextQuery>) -> Page {
    let next = state.pages.safe_next(query.next.as_deref().unwrap_or("/security"));
    let extra = context! {
        title => "Sign in", next => next, login => "", recoverable => browser.stale_session,
        passkeys => state.factors.passkeys().available(), providers => state.sso.buttons(),
    };
    let target = super::oauth::form_target(&state, &next).await;
    browser.render(&state, StatusCode::OK, "signin.html", extra).allow_form_target(target)
}

#[derive(Deserialize)]
pub struct SigninForm {
    csrf: String,
    login: String,
    password: String,
    #[serde(default)]
    next: String,
    /// A DPoP proof made by the page's script: the session is bound to the browser's key.
    #[serde(default)]
    dpop: String,
}

/// Verifies the proof a page's script put in a form. A browser whose proof fails (a wrong clock,
/// say) still signs in, with a session that is not bound to a key.
pub(super) fn form_proof(state: &AppState, headers: &HeaderMap, action: &str, proof: &str) -> Option<Proof> {
    if proof.is_empty() {
        return None;
    }
    let url = url_for(state, headers, action);
    match state.dpop.verify(proof, Expected { method: "POST", url: &url, access_token: None }) {
        Ok(proof) => Some(proof),
        Err(err) => {
            tracing::warn!(error = %err, "page sign-in proof refused; signing in unbound");
            None
        }
    }
}

/// Signs the browser in and sets its session cookie; failures re-show the form with the same
/// message for unknown accounts and wrong passwords.
pub async fn signin(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Form(form): Form<SigninForm>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let next = state.pages.safe_next(&form.next);
    let target = super::oauth::form_target(&state, &next).await;
    let request = SignIn {
        login: form.login.clone(),
        password: Zeroizing::new(form.password),
        device: None,
        address,
        user_agent,
        dpop: form_proof(&state, &headers, "/signin", &form.dpop),
        issue: Issue::BrowserCookie,
        device_token: browser.device_token(&state),
    };
    match state.sessions.sign_in(request).await {
        Ok(issued) => {
            let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
            // A session that must first enrol a second factor goes where it can do that.
            let next = if issued.mfa_enrolment_required { "/security" } else { next.as_str() };
            Ok((cookies, Redirect::to(next)).into_response())
        }
        Err(crate::domain::Error::MfaRequired { mfa_token, methods, webauthn_options }) => {
            Err(second_step_page(&state, &browser, &next, mfa_token, &methods, webauthn_options)
                .allow_form_target(target))
        }
        Err(err) => {
            let status = crate::http::error::status_of(&err);
            let extra = context! {
                title => "Sign in", next => next, login => form.login, error => err.to_string(),
                passkeys => state.factors.passkeys().available(), providers => state.sso.buttons(),
            };
            Err(browser.render(&state, status, "signin.html", extra).allow_form_target(target).retry_after_of(&err))
        }
    }
}

/// The second step of a sign-in whose first step (a password or a provider) passed.
pub(super) fn second_step_page(
    state: &AppState,
    browser: &Browser,
    next: &str,
    mfa_token: String,
    methods: &[&str],
    webauthn_options: Option<serde_json::Value>,
) -> Page {
    let webauthn_options = webauthn_options.map(|o| o.to_string());
    let extra = context! {
        title => "Two-step verification", next => next, mfa_token => mfa_token,
        totp => methods.contains(&"totp"), webauthn_options => webauthn_options,
        mailed_code => methods.contains(&crate::domain::sessions::MAILED_CODE),
    };
    browser.render(state, StatusCode::OK, "signin_mfa.html", extra)
}

#[derive(Deserialize)]
pub struct SigninMfaForm {
    csrf: String,
    mfa_token: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
    /// A passkey's answer, put in the form by the page script.
    #[serde(default)]
    webauthn_response: Option<String>,
    /// The passkey challenge of this sign-in, carried along so a retry can still offer the passkey.
    #[serde(default)]
    webauthn_options: Option<String>,
    #[serde(default)]
    totp: Option<String>,
    /// The second step is a code mailed to the account.
    #[serde(default)]
    mailed_code: Option<String>,
}

/// The second step of a page sign-in: a code from the app, or a recovery code.
pub async fn signin_mfa(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<SigninMfaForm>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let next = state.pages.safe_next(&form.next);
    let target = super::oauth::form_target(&state, &next).await;
    let again = |err: &crate::domain::Error| {
        let extra = context! {
            title => "Two-step verification", next => next.clone(), mfa_token => form.mfa_token.clone(),
            error => err.to_string(), webauthn_options => form.webauthn_options.clone(), totp => form.totp.is_some(),
            mailed_code => form.mailed_code.is_some(),
        };
        browser
            .render(&state, crate::http::error::status_of(err), "signin_mfa.html", extra)
            .allow_form_target(target.clone())
            .retry_after_of(err)
    };
    let passkey = match form.webauthn_response.as_deref().filter(|r| !r.is_empty()) {
        Some(json) => {
            let credential = serde_json::from_str(json).map_err(|_| again(&crate::domain::Error::PasskeyRejected))?;
            Some(Assertion { ceremony_id: None, credential: Box::new(credential) })
        }
        None => None,
    };
    let factor = Factor::from_fields(form.code.clone(), form.recovery_code.clone(), passkey).map_err(|e| again(&e))?;
    let finish = FinishSignIn { mfa_token: form.mfa_token.clone(), factor, address, dpop: None };
    match state.sessions.finish_sign_in(finish).await {
        Ok(issued) => {
            let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
            Ok((cookies, Redirect::to(&next)).into_response())
        }
        Err(err @ crate::domain::Error::InvalidMfaToken) => Err(browser.message(
            &state,
            StatusCode::UNAUTHORIZED,
            "Please sign in again",
            &err.to_string(),
            Some(("/signin", "Sign in")),
        )),
        Err(err) if err.is_internal() => Err(browser.error(&state, &err)),
        Err(err) => Err(again(&err)),
    }
}

#[derive(Deserialize)]
pub struct SignupQuery {
    #[serde(default)]
    invite: String,
}

/// What the sign-up page shows for `signup.mode`: the form (with the invitation's code kept, or a
/// field for it), or that sign-up is closed.
fn signup_page(state: &AppState, browser: &Browser, status: StatusCode, fields: Value) -> Page {
    let mode = state.signup.mode;
    if mode == SignupMode::Closed {
        let body = "Sign-up is closed here. Ask the people who run this service for an account.";
        return browser.message(state, StatusCode::FORBIDDEN, "Sign-up is closed", body, Some(("/signin", "Sign in")));
    }
    // Providers create accounts too, which only an open sign-up allows.
    let providers = if mode == SignupMode::Open { state.sso.buttons() } else { Vec::new() };
    let extra = context! {
        title => "Create an account", by_invitation => mode == SignupMode::Invite, providers => providers, ..fields
    };
    browser.render(state, status, "signup.html", extra)
}

pub async fn signup_form(State(state): State<AppState>, browser: Browser, Query(query): Query<SignupQuery>) -> Page {
    let fields = context! { email => "", username => "", invite => query.invite.trim() };
    signup_page(&state, &browser, StatusCode::OK, fields)
}

#[derive(Deserialize)]
pub struct SignupForm {
    csrf: String,
    email: String,
    username: String,
    password: String,
    #[serde(default)]
    dpop: String,
    #[serde(default)]
    invite: String,
}

pub async fn signup(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Form(form): Form<SignupForm>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let registration = Registration {
        email: form.email.clone(),
        username: form.username.clone(),
        password: form.password.clone(),
        invite: Some(form.invite.clone()).filter(|i| !i.trim().is_empty()),
    };
    if let Err(err) = state.accounts.register(registration, address.as_deref()).await {
        let status = crate::http::error::status_of(&err);
        let fields = context! {
            email => form.email, username => form.username, invite => form.invite, error => err.to_string(),
        };
        return Err(signup_page(&state, &browser, status, fields).retry_after_of(&err));
    }
    let request = SignIn {
        login: form.username,
        password: Zeroizing::new(form.password),
        device: None,
        address,
        user_agent,
        dpop: form_proof(&state, &headers, "/signup", &form.dpop),
        issue: Issue::BrowserCookie,
        device_token: browser.device_token(&state),
    };
    let issued = state.sessions.sign_in(request).await.map_err(|e| browser.error(&state, &e))?;
    let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
    Ok((cookies, Redirect::to("/security?welcome=1")).into_response())
}

pub async fn signout(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    if let Some(session) = &browser.session {
        state.sessions.sign_out(session, address.as_deref()).await.map_err(|e| browser.error(&state, &e))?;
    }
    let cleared = browser.without_session(&state);
    Ok((cleared, Redirect::to("/signin")).into_response())
}

#[derive(Deserialize)]
pub struct RecoverRequest {
    csrf: String,
    #[serde(default)]
    next: String,
}

/// The page script's silent recovery: the stale cookie plus a proof from the key the session was
/// bound to buys a new cookie, after a leak response only (see `Sessions::recover_browser`).
pub async fn recover(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    TokenRequestProof(proof): TokenRequestProof,
    axum::Json(body): axum::Json<RecoverRequest>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &body.csrf)?;
    let refused = |err: crate::domain::Error| crate::http::error::ApiError::from(err).into_response();
    let proof = proof.ok_or_else(|| refused(crate::domain::Error::DpopProofRequired))?;
    let cookie_value = super::cookie_value(&browser.jar, SESSION_COOKIE, state.pages.secure_cookies)
        .ok_or_else(|| refused(crate::domain::Error::InvalidToken))?;
    let issued = state.sessions.recover_browser(&cookie_value, &proof).await.map_err(refused)?;
    let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
    let next = state.pages.safe_next(&body.next);
    Ok((cookies, axum::Json(serde_json::json!({ "next": next }))).into_response())
}

pub async fn reset_request_form(State(state): State<AppState>, browser: Browser) -> Page {
    let providers: Vec<String> = state.sso.buttons().into_iter().map(|p| p.name).collect();
    let extra = context! { title => "Reset your password", providers => providers };
    browser.render(&state, StatusCode::OK, "reset_request.html", extra)
}

#[derive(Deserialize)]
pub struct ResetRequestForm {
    csrf: String,
    email: String,
}

pub async fn reset_request(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ResetRequestForm>,
) -> Result<Page, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    state.recovery.request_reset(&form.email, address).await.map_err(|e| browser.error(&state, &e))?;
    Ok(browser.message(
        &state,
        StatusCode::ACCEPTED,
        "Check your email",
        "If this address has an account, we have sent it a link to choose a new password. The link works once, for 30 minutes.",
        Some(("/signin", "Back to sign in")),
    ))
}

#[derive(Deserialize)]
pub struct ResetQuery {
    removed: Option<String>,
}

/// The reset form, and what was added to the account lately, each removable in one click.
pub async fn reset_form(
    State(state): State<AppState>,
    browser: Browser,
    Path(token): Path<String>,
    Query(query): Query<ResetQuery>,
) -> Page {
    reset_page(&state, &browser, &token, StatusCode::OK, None, query.removed.is_some()).await
}

async fn reset_page(
    state: &AppState,
    browser: &Browser,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
    removed: bool,
) -> Page {
    let recent = match state.recovery.recent_credentials(token).await {
        Ok(recent) => recent,
        Err(err) => return browser.error(state, &err),
    };
    let extra = context! {
        title => "Choose a new password", token => token, error => error, recent => recent,
        removed => removed, recent_days => crate::domain::recent_credentials::RECENT_DAYS,
    };
    browser.render(state, status, "reset_password.html", extra)
}

/// Removes one of the recently added credentials listed on the reset page; the reset link, which
/// proves the mailbox, authorises it and stays usable for the new password.
pub async fn remove_recent_credential(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    Form(form): Form<super::security::RemoveRecent>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let kind = crate::domain::recent_credentials::CredentialKind::parse(&form.kind)
        .ok_or_else(|| browser.error(&state, &crate::domain::Error::CredentialNotFound))?;
    state
        .recovery
        .remove_recent_credential(&token, kind, &form.id, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e))?;
    Ok(Redirect::to(&format!("/reset/{token}?removed=1")).into_response())
}

#[derive(Deserialize)]
pub struct ResetForm {
    csrf: String,
    new_password: String,
    confirm_password: String,
    /// An unchecked box is absent from the form, so absent means "keep devices signed in".
    sign_out_devices: Option<String>,
}

pub async fn reset(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Result<Page, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    if form.new_password != form.confirm_password {
        let error = Some("The two passwords are not the same.");
        return Err(reset_page(&state, &browser, &token, StatusCode::UNPROCESSABLE_ENTITY, error, false).await);
    }
    let sign_out = form.sign_out_devices.is_some();
    match state.recovery.reset(&token, &form.new_password, sign_out, address.as_deref()).await {
        Ok(()) => Ok(browser.message(
            &state,
            StatusCode::OK,
            "Your password was changed",
            if sign_out {
                "Every device was signed out. Sign in again with your new password."
            } else {
                "Your devices stayed signed in. Sign in with your new password."
            },
            Some(("/signin", "Sign in")),
        )),
        Err(err @ crate::domain::Error::InvalidLink) => Err(browser.error(&state, &err)),
        Err(err) => {
            let status = crate::http::error::status_of(&err);
            Err(reset_page(&state, &browser, &token, status, Some(&err.to_string()), false).await)
        }
    }
}

/// `GET /account/keep/{token}`: the mailed link that keeps an account its owner asked to delete;
/// keeping it takes a button press (mail scanners that follow links must not spend it).
pub async fn keep_form(State(state): State<AppState>, browser: Browser, Path(token): Path<String>) -> Page {
    browser.render(
        &state,
        StatusCode::OK,
        "keep_account.html",
        context! { title => "Keep your account", token => token },
    )
}

pub async fn keep(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(token): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Page, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    state.deletions.keep_by_link(&token, address.as_deref()).await.map_err(|e| browser.error(&state, &e))?;
    let body = "Your account will not be deleted. Sign in as before.";
    Ok(browser.message(&state, StatusCode::OK, "Your account is kept", body, Some(("/signin", "Sign in"))))
}

pub async fn verify_form(State(state): State<AppState>, browser: Browser, Path(token): Path<String>) -> Page {
    // Confirming takes a button press: mail scanners that follow links must not spend them.
    browser.render(
        &state,
        StatusCode::OK,
        "verify_email.html",
        context! { title => "Confirm your email address", token => token },
    )
}

pub async fn verify(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Page, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    // The browser that opens the link stays signed in; a first proof signs out every other.
    state.accounts.verify_email(&token, browser.session.as_ref()).await.map_err(|e| browser.error(&state, &e))?;
    Ok(browser.message(
        &state,
        StatusCode::OK,
        "Email address confirmed",
        "Thank you: this email address is now confirmed for your account.",
        Some(("/security", "Continue")),
    ))
}
