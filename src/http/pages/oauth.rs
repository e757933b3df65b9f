//! The OAuth authorization endpoint as pages: sign-in hand-off, the consent screen, and the
//! redirect back to the client.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::{Browser, Page};
use crate::clock::now_ms;
use crate::domain::oauth::{AuthorizationRequest, AuthorizeError, EndSessionRequest, Next, ValidRequest};
use crate::domain::Error;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

/// What each scope means, in the words the consent screen uses.
pub(super) fn scope_description(scope: &str) -> Option<&'static str> {
    match scope {
        "openid" => Some("know who you are on this site (your account id)"),
        "profile" => Some("see your username"),
        "email" => Some("see your email address"),
        "offline_access" => Some("stay signed in while you are away"),
        _ => None,
    }
}

fn bad_request(state: &AppState, browser: &Browser, err: &Error) -> Response {
    let body = format!("The app that sent you here made a request we cannot accept: {err}");
    browser.message(state, StatusCode::BAD_REQUEST, "This sign-in link does not work", &body, None).into_response()
}

/// `GET /oauth/authorize` (RFC 6749 §4.1.1).
pub async fn authorize(
    State(state): State<AppState>,
    browser: Browser,
    query: Result<Query<AuthorizationRequest>, QueryRejection>,
) -> Response {
    let Ok(Query(request)) = query else {
        let err = Error::oauth("invalid_request", "the request's parameters are malformed or repeated");
        return bad_request(&state, &browser, &err);
    };
    let valid = match state.oauth.validate(&request).await {
        Ok(valid) => valid,
        Err(AuthorizeError::NotRedirectable(err)) if err.is_internal() => {
            return browser.error(&state, &err).into_response()
        }
        Err(AuthorizeError::NotRedirectable(err)) => return bad_request(&state, &browser, &err),
        Err(AuthorizeError::Redirect(response)) => return Redirect::to(&response.location()).into_response(),
    };
    match state.oauth.authorize(&valid, browser.session.as_ref()).await {
        Ok(Next::SignIn) => Redirect::to(&sign_in_then_return(&request, &valid)).into_response(),
        Ok(Next::Enrol) => Redirect::to("/security").into_response(),
        Ok(Next::Consent) => consent_page(&state, &browser, &request, &valid).await.into_response(),
        Ok(Next::Redirect(response)) => Redirect::to(&response.location()).into_response(),
        Err(err) => browser.error(&state, &err).into_response(),
    }
}

/// `/signin?next=…` that comes back to this request. `prompt=login` becomes "a sign-in newer than
/// now", so the request does not send the person to sign in again and again.
fn sign_in_then_return(request: &AuthorizationRequest, valid: &ValidRequest) -> String {
    let mut request = request.clone();
    if valid.prompt_login {
        if request.kw_auth_after.is_none() {
            request.kw_auth_after = Some(now_ms().to_string());
        }
        let rest: Vec<&str> = request
            .prompt
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|p| !p.is_empty() && *p != "login")
            .collect();
        request.prompt = (!rest.is_empty()).then(|| rest.join(" "));
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(request.params()).finish();
    let next = format!("/oauth/authorize?{query}");
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &next).finish();
    format!("/signin?{query}")
}

async fn consent_page(
    state: &AppState,
    browser: &Browser,
    request: &AuthorizationRequest,
    valid: &ValidRequest,
) -> Page {
    let username = match &browser.session {
        Some(who) => state.accounts.profile(&who.user_id).await.map(|p| p.username).unwrap_or_default(),
        None => String::new(),
    };
    let scopes: Vec<&str> = valid.scope.iter().filter_map(scope_description).collect();
    let destination = url::Url::parse(&valid.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| valid.redirect_uri.clone());
    let extra = context! {
        title => format!("Allow {}", valid.client.name), client_name => valid.client.name.clone(), username => username,
        scopes => scopes, destination => destination, params => request.params(),
    };
    browser
        .render(state, StatusCode::OK, "consent.html", extra)
        .allow_form_target(crate::domain::oauth::redirect_origin(&valid.redirect_uri))
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: String,
    decision: String,
    #[serde(flatten)]
    request: AuthorizationRequest,
}

/// `POST /oauth/authorize/decision`: the consent screen's Allow or Deny.
pub async fn decide(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request(&state, &browser, &Error::oauth("invalid_request", "the form is incomplete"));
    };
    if let Err(page) = browser.check_form(&state, &headers, &form.csrf) {
        return page.into_response();
    }
    let valid = match state.oauth.validate(&form.request).await {
        Ok(valid) => valid,
        Err(AuthorizeError::NotRedirectable(err)) => return bad_request(&state, &browser, &err),
        Err(AuthorizeError::Redirect(response)) => return Redirect::to(&response.location()).into_response(),
    };
    let Some(who) = &browser.session else {
        return Redirect::to(&sign_in_then_return(&form.request, &valid)).into_response();
    };
    match state.oauth.decide(&valid, who, form.decision == "allow", address.as_deref()).await {
        Ok(response) => Redirect::to(&response.location()).into_response(),
        Err(err) => browser.error(&state, &err).into_response(),
    }
}

/// `GET|POST /oauth/logout` (RP-Initiated Logout 1.0): ends the client's session named by its ID
/// token and signs this browser out of keywarden if it is the same person's; then back to the
/// client, or a page that says so.
pub async fn end_session(
    State(state): State<AppState>,
    browser: Browser,
    ClientAddress(address): ClientAddress,
    request: Result<Query<EndSessionRequest>, QueryRejection>,
) -> Response {
    let Ok(Query(request)) = request else {
        return bad_request(
            &state,
            &browser,
            &Error::oauth("invalid_request", "the request's parameters are malformed"),
        );
    };
    if request.id_token_hint.is_none() {
        // Without a hint anyone could link here: the person confirms with a form (CSRF-protected).
        if browser.session.is_none() {
            let body = "You are not signed in here.";
            return browser
                .message(&state, StatusCode::OK, "Signed out", body, Some(("/signin", "Sign in")))
                .into_response();
        }
        let client_name = match request.client_id.as_deref() {
            Some(id) => state.oauth.clients().get(id).await.ok().map(|c| c.name),
            None => None,
        };
        let extra = context! { title => "Sign out?", client_name => client_name };
        return browser.render(&state, StatusCode::OK, "signout_confirm.html", extra).into_response();
    }
    let ended = match state.oauth.end_session(&request).await {
        Ok(ended) => ended,
        Err(err) if err.is_internal() => return browser.error(&state, &err).into_response(),
        Err(Error::ClientNotFound) => {
            return bad_request(&state, &browser, &Error::oauth("invalid_request", "unknown client"))
        }
        Err(err) => return bad_request(&state, &browser, &err),
    };
    let mut jar = browser.jar.clone();
    if let Some(who) = browser.session.as_ref().filter(|who| who.user_id == ended.user_id) {
        if let Err(err) = state.sessions.sign_out(who, address.as_deref()).await {
            return browser.error(&state, &err).into_response();
        }
        jar = browser.without_session(&state);
    }
    match ended.redirect {
        Some(uri) => (jar, Redirect::to(&uri)).into_response(),
        None => {
            let body = format!("You are signed out of {} and of this site.", ended.client_name);
            let page = browser.message(&state, StatusCode::OK, "Signed out", &body, Some(("/signin", "Sign in again")));
            (jar, page).into_response()
        }
    }
}

/// The client origin a sign-in form may end at when `next` continues an authorization request:
/// only the redirect URI of a valid request for a registered client.
pub(super) async fn form_target(state: &AppState, next: &str) -> Option<String> {
    let query = next.strip_prefix("/oauth/authorize?")?;
    let request: AuthorizationRequest = serde_urlencoded_query(query)?;
    let valid = state.oauth.validate(&request).await.ok()?;
    crate::domain::oauth::redirect_origin(&valid.redirect_uri)
}

fn serde_urlencoded_query(query: &str) -> Option<AuthorizationRequest> {
    Query::<AuthorizationRequest>::try_from_uri(&format!("/?{query}").parse().ok()?).ok().map(|q| q.0)
}
