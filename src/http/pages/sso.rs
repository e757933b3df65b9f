//! Sign-in with upstream providers on the pages: the trip out and back, the page that creates an
//! account or links one for a new upstream account, and linking and unlinking on `/security`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::Cookie;
use minijinja::context;
use serde::Deserialize;

use super::account::{form_proof, second_step_page, signed_in_cookies};
use super::security::{refuse, signed_in};
use super::step_up::stepped_up;
use super::PageError;
use super::{cookie, Browser, Page};
use crate::domain::caller::Authenticated;
use crate::domain::sso::{Arrival, Callback, Departure, Outcome, Purpose};
use crate::domain::Error;
use crate::http::extract::{ClientAddress, UserAgent};
use crate::http::AppState;

/// The `state` of the trip this browser is on; the answer must bring the same one back.
const STATE_COOKIE: &str = "kw_sso";
/// The unlinked upstream account this browser is choosing an account for.
const PENDING_COOKIE: &str = "kw_sso_pending";
/// Both live as long as a trip may take.
const TRIP_SECS: i64 = 600;

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// "Sign in with …": a plain link, so no form's `form-action` limits where it may lead.
pub async fn start(
    State(state): State<AppState>,
    browser: Browser,
    Path(provider): Path<String>,
    Query(query): Query<StartQuery>,
    ClientAddress(address): ClientAddress,
) -> Result<Response, Page> {
    state.sso.count_trip(address.as_deref()).await.map_err(|e| failed(&state, &browser, &e).retry_after_of(&e))?;
    let next = state.pages.safe_next(query.next.as_deref().unwrap_or("/security"));
    let departure = state.sso.depart(&provider, Purpose::SignIn, None, &next).await;
    Ok(leave(&state, &browser, departure.map_err(|e| failed(&state, &browser, &e))?))
}

/// Sends the browser to the provider with the trip's `state` in a cookie.
fn leave(state: &AppState, browser: &Browser, departure: Departure) -> Response {
    let bound = cookie(STATE_COOKIE, departure.state.to_string(), state.pages.secure_cookies, Some(TRIP_SECS));
    (browser.jar.clone().add(bound), Redirect::to(&departure.url)).into_response()
}

/// A refused trip: what went wrong, and a way to start again.
fn failed(state: &AppState, browser: &Browser, err: &Error) -> Page {
    if err.is_internal() {
        return browser.error(state, err);
    }
    let status = crate::http::error::status_of(err);
    browser.message(
        state,
        status,
        "Signing in with that provider did not work",
        &err.to_string(),
        Some(("/signin", "Back to sign in")),
    )
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    state: String,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// The provider sends the browser back here (`/sso/{provider}/callback`).
pub async fn callback(
    State(state): State<AppState>,
    browser: Browser,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, Page> {
    let callback = Callback {
        state: query.state,
        browser_state: super::cookie_value(&browser.jar, STATE_COOKIE, state.pages.secure_cookies),
        code: query.code,
        error: query.error,
        iss: query.iss,
    };
    let arrival = Arrival {
        address,
        user_agent,
        // A redirect from the provider is a plain navigation: no proof can come with it.
        dpop: None,
        current: browser.session.clone(),
    };
    // The trip is over whatever happens: its state cookie goes.
    let jar = browser.jar.clone().remove(cookie(STATE_COOKIE, String::new(), state.pages.secure_cookies, None));
    let browser = Browser { jar, ..browser };
    let outcome = state.sso.arrive(&provider, callback, arrival).await.map_err(|e| failed(&state, &browser, &e))?;
    match outcome {
        Outcome::SignIn { attempt: Ok(issued), next } => {
            let next = if issued.mfa_enrolment_required { "/security".to_owned() } else { next };
            let cookies = signed_in_cookies(browser.jar.clone(), &state, &issued);
            Ok((cookies, Redirect::to(&next)).into_response())
        }
        Outcome::SignIn { attempt: Err(Error::MfaRequired { mfa_token, methods, webauthn_options }), next } => {
            Ok(second_step_page(&state, &browser, &next, mfa_token, &methods, webauthn_options).into_response())
        }
        Outcome::SignIn { attempt: Err(err), .. } => Err(failed(&state, &browser, &err)),
        Outcome::Unlinked { pending } => {
            let kept = cookie(PENDING_COOKIE, pending.to_string(), state.pages.secure_cookies, Some(TRIP_SECS));
            Ok((browser.jar.add(kept), Redirect::to("/sso/finish")).into_response())
        }
        Outcome::Linked { next } => Ok((browser.jar, Redirect::to(&next)).into_response()),
        Outcome::Reauthenticated { next } => Ok((browser.jar, Redirect::to(&next)).into_response()),
    }
}

fn pending_token(state: &AppState, browser: &Browser) -> Result<String, Error> {
    super::cookie_value(&browser.jar, PENDING_COOKIE, state.pages.secure_cookies).ok_or(Error::InvalidSsoState)
}

/// The page for a new upstream account: create an account, or sign in to link an existing one.
pub async fn finish_form(State(state): State<AppState>, browser: Browser) -> Result<Page, Page> {
    let token = pending_token(&state, &browser).map_err(|e| failed(&state, &browser, &e))?;
    let view = state.sso.pending(&token).await.map_err(|e| failed(&state, &browser, &e))?;
    let email = view.email.clone().unwrap_or_default();
    Ok(finish_page(&state, &browser, &view, &view.suggested_username, &email, None, StatusCode::OK))
}

fn finish_page(
    state: &AppState,
    browser: &Browser,
    view: &crate::domain::sso::PendingView,
    username: &str,
    email: &str,
    error: Option<String>,
    status: StatusCode,
) -> Page {
    let extra = context! {
        title => "Finish signing in", provider => view.provider_name, provider_email => view.email,
        email_verified => view.email_verified, username => username, email => email, error => error,
    };
    browser.render(state, status, "sso_finish.html", extra)
}

#[derive(Deserialize)]
pub struct FinishForm {
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    dpop: String,
}

/// Creates the account for the new upstream account and signs it in.
pub async fn finish(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    Form(form): Form<FinishForm>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let token = pending_token(&state, &browser).map_err(|e| failed(&state, &browser, &e))?;
    let arrival =
        Arrival { address, user_agent, dpop: form_proof(&state, &headers, "/sso/finish", &form.dpop), current: None };
    match state.sso.create_account(&token, &form.username, &form.email, arrival).await {
        Ok((issued, next)) => {
            let jar = signed_in_cookies(browser.jar.clone().remove(forget_pending(&state)), &state, &issued);
            let next = if issued.mfa_enrolment_required || next == "/security" {
                "/security?welcome=1".to_owned()
            } else {
                next
            };
            Ok((jar, Redirect::to(&next)).into_response())
        }
        Err(err @ (Error::InvalidSsoState | Error::SsoIdentityTaken)) => Err(failed(&state, &browser, &err)),
        Err(err) if err.is_internal() => Err(browser.error(&state, &err)),
        Err(err) => {
            let view = state.sso.pending(&token).await.map_err(|e| failed(&state, &browser, &e))?;
            let status = crate::http::error::status_of(&err);
            Err(finish_page(&state, &browser, &view, &form.username, &form.email, Some(err.to_string()), status))
        }
    }
}

fn forget_pending(state: &AppState) -> Cookie<'static> {
    cookie(PENDING_COOKIE, String::new(), state.pages.secure_cookies, None)
}

/// "Link to my account": shown after the person signed in to the account the upstream account joins.
pub async fn link_form(State(state): State<AppState>, browser: Browser) -> Result<Response, Page> {
    let Some(who) = browser.session.clone() else {
        return Ok(Redirect::to("/signin?next=/sso/link").into_response());
    };
    let token = pending_token(&state, &browser).map_err(|e| failed(&state, &browser, &e))?;
    let view = state.sso.pending(&token).await.map_err(|e| failed(&state, &browser, &e))?;
    let profile = state.accounts.profile(&who.user_id).await.map_err(|e| browser.error(&state, &e))?;
    let fresh = state.freshness.is_fresh(&who).await.map_err(|e| browser.error(&state, &e))?;
    let extra = context! {
        title => "Link your account", provider => view.provider_name, provider_email => view.email,
        username => profile.username, fresh => fresh,
    };
    Ok(browser.render(&state, StatusCode::OK, "sso_link.html", extra).into_response())
}

pub async fn link(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<super::CsrfOnly>,
) -> Result<Response, Page> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let Some(who) = browser.session.clone() else {
        return Ok(Redirect::to("/signin?next=/sso/link").into_response());
    };
    let token = pending_token(&state, &browser).map_err(|e| failed(&state, &browser, &e))?;
    let next =
        state.sso.link_pending(&token, &who, address.as_deref()).await.map_err(|e| failed(&state, &browser, &e))?;
    let jar = browser.jar.clone().remove(forget_pending(&state));
    let next = if next == "/security" { "/security?done=sso-linked".to_owned() } else { next };
    Ok((jar, Redirect::to(&next)).into_response())
}

/// A form on `/security` that needs the person to confirm it is them: a code, a passkey, the
/// password, or nothing when the session just confirmed with its provider.
#[derive(Deserialize)]
pub struct ConfirmedForm {
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
}

/// Steps the session up with the proof in the form, if it carries one.
async fn confirmed(
    state: &AppState,
    who: &Authenticated,
    form: &ConfirmedForm,
    address: Option<&str>,
) -> Result<Authenticated, Error> {
    stepped_up(state, who, &form.code, &form.password, &form.ceremony_id, &form.webauthn_response, address).await
}

/// "Link" on `/security`: confirms it is the account's owner, then goes to the provider.
pub async fn link_provider(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(provider): Path<String>,
    Form(form): Form<ConfirmedForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let departure = match confirmed(&state, &who, &form, address.as_deref()).await {
        Ok(fresh) => state.sso.depart(&provider, Purpose::Link, Some(&fresh), "/security?done=sso-linked").await,
        Err(err) => Err(err),
    };
    match departure {
        Ok(departure) => Ok(leave(&state, &browser, departure)),
        Err(err) => Err(refuse(&state, &browser, &who, "sso_error", &explain_step_up(err)).await.into()),
    }
}

/// "Confirm with …" on `/security`: a fresh sign-in at the provider, for an account that has
/// neither a password nor a second factor to confirm sensitive changes with.
pub async fn reauth(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Path(provider): Path<String>,
    Form(form): Form<super::CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    match state.sso.depart(&provider, Purpose::Reauth, Some(&who), "/security?done=confirmed").await {
        Ok(departure) => Ok(leave(&state, &browser, departure)),
        Err(err) => Err(refuse(&state, &browser, &who, "sso_error", &err).await.into()),
    }
}

/// "Unlink" on `/security`.
pub async fn unlink(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<ConfirmedForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let unlinked = match confirmed(&state, &who, &form, address.as_deref()).await {
        Ok(fresh) => state.sso.unlink(&fresh, &id, address.as_deref()).await,
        Err(err) => Err(err),
    };
    match unlinked {
        Ok(()) => Ok(Redirect::to("/security?done=sso-unlinked").into_response()),
        Err(err) => Err(refuse(&state, &browser, &who, "sso_error", &explain_step_up(err)).await.into()),
    }
}

fn explain_step_up(err: Error) -> Error {
    match err {
        Error::StepUpRequired => Error::InvalidFactor(
            "confirm it is you first: enter your password or a code, use your passkey, or confirm with your provider",
        ),
        other => other,
    }
}
