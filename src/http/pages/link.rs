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
}

/// The signed-in person, or where the browser must go first (sign-in, then back here).
fn signed_in<'a>(browser: &'a Browser, code: Option<&str>) -> Result<&'a Authenticated, Redirect> {
    match &browser.session {
        Some(who) if who.enrolment_only => Err(Redirect::to("/security")),
        Some(who) => Ok(who),
        None => {
            let next = match code {
                Some(code) => format!(
                    "/link?{}",
                    url::form_urlencoded::Serializer::new(String::new()).append_pair("code", code).finish()
                ),
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
    let back = format!(
        "/link?{}",
        url::form_urlencoded::Serializer::new(String::new()).append_pair("code", &link.user_code).finish()
    );
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
    };
    let page = browser.render(state, status, "link.html", extra);
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
    address: Option<&str>,
) -> Response {
    if Pins::looks_like_pin(code) {
        return match state.pins.find(who, code, address).await {
            Ok(pin) => confirmation(state, browser, who, &pin_link(code, pin), None).await,
            Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
            Err(err) => entry_page(state, browser, code, Some(&err)),
        };
    }
    match state.oauth.find_link(who, code, address).await {
        Ok(link) => confirmation(state, browser, who, &link, None).await,
        Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
        Err(err) => entry_page(state, browser, code, Some(&err)),
    }
}

/// `GET /link[?code=WDJB-MJHT]`: the code form, or straight to the confirmation.
pub async fn form(
    State(state): State<AppState>,
    browser: Browser,
    ClientAddress(address): ClientAddress,
    Query(query): Query<CodeQuery>,
) -> Response {
    let code = query.code.as_deref().filter(|c| !c.is_empty());
    let who = match signed_in(&browser, code) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    match code {
        Some(code) => look_up(&state, &browser, who, code, address.as_deref()).await,
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
    let who = match signed_in(&browser, Some(&form.code)) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    look_up(&state, &browser, who, &form.code, address.as_deref()).await
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
    let who = match signed_in(&browser, Some(&form.code)) {
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
        Err(err) => return refuse_link(&state, &browser, who, &form.code, address.as_deref(), &err).await,
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
        Err(err) => refuse_link(&state, &browser, who, &form.code, address.as_deref(), &err).await,
    }
}

/// A refused approval: a wrong or missing confirmation shows the confirmation again with the
/// reason; any other refusal goes back to the code form.
async fn refuse_link(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    code: &str,
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
        Ok(link) => confirmation(state, browser, who, &link, Some(err)).await,
        Err(other) if other.is_internal() => browser.error(state, &other).into_response(),
        Err(other) => entry_page(state, browser, code, Some(&other)),
    }
}
