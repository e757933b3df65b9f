//! `/link`: where a person approves a device that shows a short code (RFC 8628, issue 6).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::oauth::scope_description;
use super::{Browser, Page};
use crate::domain::oauth::PendingLink;
use crate::domain::sessions::Authenticated;
use crate::domain::Error;
use crate::domain::Pins;
use crate::http::extract::ClientAddress;
use crate::http::AppState;
use crate::store::PlexPinRecord;

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

async fn confirmation(state: &AppState, browser: &Browser, who: &Authenticated, link: &PendingLink) -> Page {
    let username = state.accounts.profile(&who.user_id).await.map(|p| p.username).unwrap_or_default();
    let mut scopes: Vec<&str> = link.scope.iter().filter_map(scope_description).collect();
    if scopes.is_empty() {
        // A PIN-linked device (plex.tv style) gets an account token, not scoped access.
        scopes.push("use your account as you, until you sign it out from your security page");
    }
    let extra = context! {
        title => "Link a device", username => username, scopes => scopes,
        link => context! { client_name => link.client_name.clone(), device_name => link.device_name.clone(), user_code => link.user_code.clone() },
    };
    browser.render(state, StatusCode::OK, "link.html", extra)
}

/// A plex.tv-style PIN as the confirmation shows a device waiting: it gets an account token, not
/// scoped access, so its scope is empty.
fn pin_link(code: &str, pin: PlexPinRecord) -> PendingLink {
    PendingLink {
        user_code: code.trim().to_ascii_uppercase(),
        client_name: if pin.product.is_empty() { "A device".to_owned() } else { pin.product },
        device_name: pin.device_name,
        scope: crate::domain::oauth::Scope::default(),
    }
}

async fn look_up(state: &AppState, browser: &Browser, who: &Authenticated, code: &str) -> Response {
    if Pins::looks_like_pin(code) {
        return match state.pins.find(who, code).await {
            Ok(pin) => confirmation(state, browser, who, &pin_link(code, pin)).await.into_response(),
            Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
            Err(err) => entry_page(state, browser, code, Some(&err)),
        };
    }
    match state.oauth.find_link(who, code).await {
        Ok(link) => confirmation(state, browser, who, &link).await.into_response(),
        Err(err) if err.is_internal() => browser.error(state, &err).into_response(),
        Err(err) => entry_page(state, browser, code, Some(&err)),
    }
}

/// `GET /link[?code=WDJB-MJHT]`: the code form, or straight to the confirmation.
pub async fn form(State(state): State<AppState>, browser: Browser, Query(query): Query<CodeQuery>) -> Response {
    let code = query.code.as_deref().filter(|c| !c.is_empty());
    let who = match signed_in(&browser, code) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    match code {
        Some(code) => look_up(&state, &browser, who, code).await,
        None => entry_page(&state, &browser, "", None),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    code: String,
    #[serde(default)]
    decision: String,
}

/// `POST /link`: the typed code.
pub async fn find(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(page) = browser.check_form(&state, &headers, &form.csrf) {
        return page.into_response();
    }
    let who = match signed_in(&browser, Some(&form.code)) {
        Ok(who) => who,
        Err(redirect) => return redirect.into_response(),
    };
    look_up(&state, &browser, who, &form.code).await
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
    let address = address.map(|a| a.to_string());
    let decided = if Pins::looks_like_pin(&form.code) {
        // A PIN nobody approves simply expires; "Cancel" needs no record.
        let found = if approve {
            state.pins.approve(who, &form.code, address.as_deref()).await
        } else {
            state.pins.find(who, &form.code).await
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
        Err(err) if err.is_internal() => browser.error(&state, &err).into_response(),
        Err(err) => entry_page(&state, &browser, &form.code, Some(&err)),
    }
}
