//! `/link`: where a person approves a device that shows a short code (RFC 8628, issue 6).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::oauth::scope_description;
use super::step_up::step_up_proof;
use super::Browser;
use crate::domain::caller::Authenticated;
use crate::domain::oauth::PendingLink;
use crate::domain::plex::pins::{Pins, WaitingDevice};
use crate::domain::Error;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

#[derive(Debug, Deserialize)]
pub struct CodeQuery {
    code: Option<String>,
    /// Where a plex.tv-style app wants the browser back after its PIN is approved (from `/auth`).
    forward: Option<String>,
}

/// Where the browser goes after approving, when an app asked through `/auth` and it is allowed
/// (see `Pages::auth_forward`).
fn forward_target(state: &AppState, headers: &HeaderMap, raw: Option<&str>) -> Option<url::Url> {
    let raw = raw.filter(|r| !r.trim().is_empty())?;
    let mut own: Vec<String> = state
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .into_iter()
        .collect();
    if let Some(host) = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) {
        own.extend(["http", "https"].map(|scheme| format!("{scheme}://{}", host.to_ascii_lowercase())));
    }
    let target = state.pages.auth_forward(raw, &own);
    if target.is_none() {
        tracing::warn!("an app's forwardUrl was refused: not an http(s) URL of another site");
    }
    target
}

/// `/link?code=…` (with the allowed `forward`), to come back to.
fn link_path(code: &str, forward: Option<&url::Url>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", code);
    if let Some(forward) = forward {
        query.append_pair("forward", forward.as_str());
    }
    format!("/link?{}", query.finish())
}

/// The signed-in person, or where the browser must go first (sign-in, then back here).
fn signed_in<'a>(
    browser: &'a Browser,
    code: Option<&str>,
    forward: Option<&url::Url>,
) -> Result<&'a Authenticated, Redirect> {
    match &browser.session {
        Some(who) if who.enrolment_only => Err(Redirect::to("/security")),
        Some(who) => Ok(who),
        None => {
            let next = match code {
                Some(code) => link_path(code, forward),
                None => "/link".to_owned(),
            };
            let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &next).finish();
            Err(Redirect::to(&format!("/signin?{query}")))
        }
    }
}

/// The code form again, with what went wrong; too many wrong codes say when to try again.
fn entry_page(state: &AppState, browser: &Browser, code: &str, error: Option<&Error>) -> Response {
    let status = error.map_or(StatusCode::OK, crate::http::error::status_of);
    let extra = context! { title => "Link a device", code => code, error => error.map(ToString::to_string) };
    let page = browser.render(state, status, "link.html", extra);
    match error {
        Some(err) => page.retry_after_of(err).into_response(),
        None => page.into_response(),
    }
}

/// "Link this device?", with the fields that confirm it is the owner when the session is not fresh
/// (an approval gives the device a session of its own, see `Freshness`).
async fn confirmation(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    link: &PendingLink,
    forward: Option<&url::Url>,
    error: Option<&Error>,
) -> Response {
    let (profile, fresh, has_factor) = match (
        state.accounts.profile(&who.user_id).await,
        state.freshness.is_fresh(who).await,
        state.freshness.has_second_factor(&who.user_id).await,
    ) {
        (Ok(profile), Ok(fresh), Ok(has_factor)) => (profile, fresh, has_factor),
        (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => return browser.error(state, &err).into_response(),
    };
    let mut scopes: Vec<&str> = link.scope.iter().filter_map(scope_description).collect();
    if scopes.is_empty() {
        // A PIN-linked device (plex.tv style) gets an account token, not scoped access.
        scopes.push("use your account as you, until you sign it out from your security page");
    }
    let back = link_path(&link.user_code, forward);
    let confirm_url = format!(
        "/security/confirm?{}",
        url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &back).finish()
    );
    let status = error.map_or(StatusCode::OK, crate::http::error::status_of);
    let extra = context! {
        title => "Link a device", username => profile.username, scopes => scopes, fresh => fresh,
        has_factor => has_factor, has_password => profile.has_password, confirm_url => confirm_url,
        error => error.map(ToString::to_string),
        link => context! { client_name => link.client_name.clone(), device_name => link.device_name.clone(), user_code => link.user_code.clone() },
        forward => forward.map(url::Url::as_str), forward_host => forward.and_then(url::Url::host_str),
        app_sign_in => link.scope.iter().next().is_none(),
    };
    // The approval's answer is a redirect to the app: the form may go there.
    let target = forward.map(|f| f.origin().ascii_serialization());
    let page = browser.render(state, status, "link.html", extra).allow_form_target(target);
    match error {
        Some(err) => page.retry_after_of(err).into_response(),
        None => page.into_response(),
    }
}

/// A plex.tv-style PIN as the confirmation shows a device waiting: it gets an account token, not
/// scoped access, so its scope is empty.
fn pin_link(code: &str, pin: WaitingDevice) -> PendingLink {
    PendingLink {
        user_code: code.trim().to_ascii_uppercase(),
        client_name: if pin.product.is_empty() { "A device".to_owned() } else { pin.product },
        device_name: pin.device_name,
        scope: crate::domain::oauth::Scope::default(),
    }
}

async fn look_up(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    code: &str,
    forward: Option<&url::Url>,
    address: Option<&str>,
) -> Response {
    if Pins::looks_like_pin(code) {
        return match state.pins.find(who, code, address).await {
            Ok(pin) => confirmation(state, browser, who, &pin_link(code, pin), forward, None).await,
            Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
            Err(err) => entry_page(state, browser, code, Some(&err)),
        };
    }
    match state.oauth.find_link(who, code, address).await {
        Ok(link) => confirmation(state, browser, who, &link, None, None).await,
        Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
        Err(err) => entry_page(state, browser, code, Some(&err)),
    }
}

/// `GET /auth` (and `/auth/`): where plex.tv-style apps send a browser to sign in
/// (`/auth#!?clientID=…&code=…&forwardUrl=…`). The request is in the fragment, so the page's script
/// reads it and goes on to `/link?code=…&forward=…`.
pub async fn app_sign_in(State(state): State<AppState>, browser: Browser) -> Response {
    let body = "Opening the sign-in for your app… If nothing happens, turn on JavaScript, or type the code your app shows at /link.";
    browser.message(&state, StatusCode::OK, "Sign in", body, Some(("/link", "Enter a code"))).into_response()
}

/// `GET /link[?code=WDJB-MJHT]`: the code form, or straight to the confirmation.
pub async fn form(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Query(query): Query<CodeQuery>,
) -> Response {
    let code = query.code.as_deref().filter(|c| !c.is_empty());
    let forward = forward_target(&state, &headers, query.forward.as_deref());
    let who = match signed_in(&browser, code, forward.as_ref()) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    match code {
        Some(code) => look_up(&state, &browser, who, code, forward.as_ref(), address.as_deref()).await,
        None => entry_page(&state, &browser, "", None),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
    #[serde(default)]
    decision: String,
    /// A step-up proof for a session that is not fresh: a code from the app or a recovery code…
    #[serde(default)]
    factor_code: String,
    /// …or the password, for an account without a second factor.
    #[serde(default)]
    password: String,
    #[serde(default)]
    forward: String,
}

/// `POST /link`: the typed code.
pub async fn find(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(page) = browser.check_form(&state, &headers, &form.csrf) {
        return page.into_response();
    }
    let forward = forward_target(&state, &headers, Some(&form.forward));
    let who = match signed_in(&browser, Some(&form.code), forward.as_ref()) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    look_up(&state, &browser, who, &form.code, forward.as_ref(), address.as_deref()).await
}

/// `POST /link/confirm`: "Link this device" or "Cancel".
pub async fn confirm(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(page) = browser.check_form(&state, &headers, &form.csrf) {
        return page.into_response();
    }
    let forward = forward_target(&state, &headers, Some(&form.forward));
    let forward = forward.as_ref().filter(|_| Pins::looks_like_pin(&form.code));
    let who = match signed_in(&browser, Some(&form.code), forward) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    let approve = form.decision == "allow";
    let stepped_up = match step_up_proof(&form.factor_code, &form.password, "", "") {
        Ok(Some(proof)) if approve => state.factors.step_up(who, proof, address.as_deref()).await,
        Ok(_) => Ok(who.clone()),
        Err(err) => Err(err),
    };
    let who = match stepped_up {
        Ok(fresh) => fresh,
        Err(err) => return refuse_link(&state, &browser, who, &form.code, forward, address.as_deref(), &err).await,
    };
    let who = &who;
    let decided = if Pins::looks_like_pin(&form.code) {
        // A PIN nobody approves simply expires; "Cancel" needs no record.
        let found = if approve {
            state.pins.approve(who, &form.code, address.as_deref()).await
        } else {
            state.pins.find(who, &form.code, address.as_deref()).await
        };
        found.map(|pin| pin_link(&form.code, pin))
    } else {
        state.oauth.decide_link(who, &form.code, approve, address.as_deref()).await
    };
    match decided {
        // The app asked for its page back (`/auth`): it collects the token by polling the PIN.
        Ok(_) if approve && forward.is_some() => {
            Redirect::to(forward.map_or("/security", url::Url::as_str)).into_response()
        }
        Ok(link) if approve => {
            let body = format!(
                "{} is linked to your account and will sign in by itself in a few seconds. You can sign it out at any time from this page.",
                link.device_name
            );
            browser
                .message(&state, StatusCode::OK, "Device linked", &body, Some(("/security", "Go to your devices")))
                .into_response()
        }
        Ok(link) => {
            let body = format!("{} was not linked. You can close this page.", link.device_name);
            browser.message(&state, StatusCode::OK, "Not linked", &body, Some(("/security", "Back"))).into_response()
        }
        Err(err) => refuse_link(&state, &browser, who, &form.code, forward, address.as_deref(), &err).await,
    }
}

/// A refused approval: a wrong or missing confirmation shows the confirmation again with the
/// reason; any other refusal goes back to the code form.
async fn refuse_link(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    code: &str,
    forward: Option<&url::Url>,
    address: Option<&str>,
    err: &Error,
) -> Response {
    if err.is_internal() {
        return browser.error(state, err).into_response();
    }
    let confirming = matches!(
        err,
        Error::StepUpRequired
            | Error::WrongPassword
            | Error::InvalidCode
            | Error::CodeAlreadyUsed
            | Error::InvalidFactor(_)
            | Error::NoPassword
    );
    if !confirming {
        return entry_page(state, browser, code, Some(err));
    }
    let err = match err {
        Error::StepUpRequired => {
            &Error::InvalidFactor("linking a device needs a recent check that it is you: enter your password or a code")
        }
        other => other,
    };
    let link = if Pins::looks_like_pin(code) {
        state.pins.find(who, code, address).await.map(|pin| pin_link(code, pin))
    } else {
        state.oauth.find_link(who, code, address).await
    };
    match link {
        Ok(link) => confirmation(state, browser, who, &link, forward, Some(err)).await,
        Err(other) if other.is_internal() => browser.error(state, &other).into_response(),
        Err(other) => entry_page(state, browser, code, Some(&other)),
    }
}
