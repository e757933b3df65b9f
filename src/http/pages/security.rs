//! The `/security` page: devices, "Sign out of all devices", password change, recent events.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::{Browser, CsrfOnly, Page};
use crate::domain::clock::human;
use crate::domain::sessions::Authenticated;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

#[derive(Debug, Deserialize)]
pub struct Notice {
    welcome: Option<String>,
    done: Option<String>,
}

/// The signed-in browser's session, or a redirect to sign in and come back.
fn signed_in(browser: &Browser) -> Result<Authenticated, Redirect> {
    browser.session.clone().ok_or_else(|| Redirect::to("/signin?next=/security"))
}

pub async fn page(
    State(state): State<AppState>,
    browser: Browser,
    Query(notice): Query<Notice>,
) -> Result<Page, Response> {
    let who = signed_in(&browser).map_err(IntoResponse::into_response)?;
    let message = match (notice.welcome.is_some(), notice.done.as_deref()) {
        (true, _) => Some("Welcome! We have sent you an email to confirm your address."),
        (_, Some("device")) => Some("The device was signed out."),
        (_, Some("everywhere")) => Some("Every device was signed out."),
        (_, Some("password")) => Some("Your password was changed."),
        _ => None,
    };
    render(&state, &browser, &who, StatusCode::OK, context! { message => message })
        .await
        .map_err(IntoResponse::into_response)
}

/// The security page with a notice (`message`) or a form's error (`error`) in `extra`.
async fn render(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    status: StatusCode,
    extra: minijinja::Value,
) -> Result<Page, Page> {
    let devices = state.devices.list(who).await.map_err(|e| browser.error(state, &e))?;
    let events = state.audit.events_of(&who.user_id, 20).await.map_err(|e| browser.error(state, &e))?;
    let events: Vec<_> = events
        .into_iter()
        .map(|e| context! { at => humanise(&e.at), what => describe_event(&e.kind), address => e.address })
        .collect();
    let devices: Vec<_> = devices
        .into_iter()
        .map(|view| {
            let d = view.device;
            context! {
                id => d.id, name => d.name, product => d.product, platform => d.platform,
                last_seen_at => human(d.last_seen_at), last_address => d.last_address, current => view.current,
            }
        })
        .collect();
    let page = context! { title => "Security", wide => true, devices => devices, events => events };
    Ok(browser.render(state, status, "security.html", context! { ..extra, ..page }))
}

/// An RFC 3339 event time as `2026-11-23 20:36 UTC`.
fn humanise(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| human(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()))
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// Event kinds in words for the person reading their own history.
fn describe_event(kind: &str) -> &str {
    match kind {
        "account.created" => "Account created",
        "account.email_verified" => "Email address confirmed",
        "sign_in.success" => "Signed in",
        "sign_in.failure" => "Failed sign-in attempt",
        "device.new" => "New device",
        "device.signed_out" => "Device signed out",
        "session.signed_out" => "Signed out",
        "session.refresh_token_reused" => "A stolen token was used: the session was ended",
        "session.recovered" => "Session restored after a security incident",
        "sessions.signed_out_everywhere" => "Signed out of all devices",
        "revocation.rule_added" => "Sessions revoked",
        "password.changed" => "Password changed",
        "password.reset" => "Password reset",
        "password.reset_requested" => "Password reset requested",
        "password.reset_forced" => "New password required by an administrator",
        "mail.sent" => "Email sent",
        "admin.user_viewed" => "An administrator looked at your account",
        other => other,
    }
}

pub async fn sign_out_device(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, Response> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf).map_err(IntoResponse::into_response)?;
    let who = signed_in(&browser).map_err(IntoResponse::into_response)?;
    let address = address.map(|a| a.to_string());
    state
        .devices
        .sign_out_device(&who, &id, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e).into_response())?;
    Ok(Redirect::to("/security?done=device").into_response())
}

#[derive(Deserialize)]
pub struct SignOutEverywhere {
    csrf: String,
    keep_current: Option<String>,
}

pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<SignOutEverywhere>,
) -> Result<Response, Response> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf).map_err(IntoResponse::into_response)?;
    let who = signed_in(&browser).map_err(IntoResponse::into_response)?;
    let keep = form.keep_current.is_some();
    let address = address.map(|a| a.to_string());
    state
        .devices
        .sign_out_everywhere(&who, keep, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e).into_response())?;
    if keep {
        return Ok(Redirect::to("/security?done=everywhere").into_response());
    }
    let cleared = browser.without_session(&state);
    Ok((cleared, Redirect::to("/signin")).into_response())
}

#[derive(Deserialize)]
pub struct ChangePassword {
    csrf: String,
    current_password: String,
    new_password: String,
    confirm_password: String,
    sign_out_devices: Option<String>,
}

/// Changes the password; a refusal re-shows the security page with the reason beside the form.
pub async fn change_password(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ChangePassword>,
) -> Result<Response, Response> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf).map_err(IntoResponse::into_response)?;
    let who = signed_in(&browser).map_err(IntoResponse::into_response)?;
    let refused = async |status: StatusCode, error: String| {
        let extra = context! { password_error => error };
        render(&state, &browser, &who, status, extra).await.unwrap_or_else(|page| page).into_response()
    };
    if form.new_password != form.confirm_password {
        let error = "The two new passwords are not the same.".to_owned();
        return Err(refused(StatusCode::UNPROCESSABLE_ENTITY, error).await);
    }
    let address = address.map(|a| a.to_string());
    let sign_out = form.sign_out_devices.is_some();
    let changed =
        state.recovery.change(&who, &form.current_password, &form.new_password, sign_out, address.as_deref()).await;
    match changed {
        Ok(()) => Ok(Redirect::to("/security?done=password").into_response()),
        Err(err) if err.is_internal() => Err(browser.error(&state, &err).into_response()),
        Err(err) => Err(refused(crate::http::error::status_of(&err), err.to_string()).await),
    }
}
