//! The `/security` page: devices, "Sign out of all devices", password change, recent events.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use super::step_up::{step_up_proof, stepped_up};
use super::PageError;
use super::{Browser, CsrfOnly, Page};
use crate::clock::human;
use crate::domain::caller::Authenticated;
use crate::domain::second_factors::{Factor, StepUp, TotpEnrolment};
use crate::domain::Error;
use crate::http::extract::ClientAddress;
use crate::http::AppState;

#[derive(Debug, Deserialize)]
pub struct Notice {
    welcome: Option<String>,
    done: Option<String>,
    removed: Option<String>,
}

/// The signed-in browser's session, or a redirect to sign in and come back. A session that must
/// first enrol a second factor is sent to `/security`, where that is all it can do.
pub(super) fn signed_in(browser: &Browser) -> Result<Authenticated, Redirect> {
    match signed_in_to_enrol(browser)? {
        who if who.enrolment_only => Err(Redirect::to("/security")),
        who => Ok(who),
    }
}

/// The signed-in browser's session, also one limited to enrolling a second factor.
pub(super) fn signed_in_to_enrol(browser: &Browser) -> Result<Authenticated, Redirect> {
    browser.session.clone().ok_or_else(|| Redirect::to("/signin?next=/security"))
}

pub async fn page(
    State(state): State<AppState>,
    browser: Browser,
    Query(notice): Query<Notice>,
) -> Result<Page, PageError> {
    let who = signed_in_to_enrol(&browser)?;
    // An address a sign-in provider vouched for needs no confirmation mail.
    let welcome = match notice.welcome {
        Some(_) => {
            Some(state.accounts.profile(&who.user_id).await.map_err(|e| browser.error(&state, &e).into_response())?)
        }
        None => None,
    };
    let message = match (welcome.map(|p| p.email_verified), notice.done.as_deref()) {
        (Some(true), _) => Some("Welcome! Your account is ready."),
        (Some(false), _) => Some("Welcome! We have sent you an email to confirm your address."),
        (_, Some("device")) => Some("The device was signed out."),
        (_, Some("everywhere")) => Some("Every device was signed out."),
        (_, Some("password")) => Some("Your password was changed."),
        (_, Some("totp-off")) => Some("The authenticator app was turned off."),
        (_, Some("passkey-added")) => Some("The passkey was added."),
        (_, Some("passkey-renamed")) => Some("The passkey was renamed."),
        (_, Some("passkey-removed")) => Some("The passkey was removed."),
        (_, Some("app")) => Some("The app's access was removed and it was signed out."),
        (_, Some("email")) => Some("We sent a link to your new address. The change happens when you open it."),
        (_, Some("sso-linked")) => Some("The sign-in provider was linked: you can now sign in with it."),
        (_, Some("sso-unlinked")) => Some("The sign-in provider was unlinked."),
        (_, Some("confirmed")) => Some("Thank you: you can now change how you sign in for a few minutes."),
        (_, Some("verification-sent")) => Some("We sent a new link to your address; the earlier ones no longer work."),
        _ => None,
    };
    // After signing out everywhere, what was added lately, to undo what a thief may have added.
    let recent = match notice.done.as_deref() {
        Some("everywhere") => {
            state.recent_credentials.of(&who.user_id).await.map_err(|e| browser.error(&state, &e).into_response())?
        }
        _ => Vec::new(),
    };
    let extra = context! {
        message => message, recent => recent, removed => notice.removed.is_some(),
        recent_days => crate::domain::recent_credentials::RECENT_DAYS,
    };
    render(&state, &browser, &who, StatusCode::OK, extra).await.map_err(PageError::from)
}

/// "Send the link again" for an address not yet proven; enrolment-only sessions may ask too.
pub async fn resend_verification(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    Form(form): Form<super::CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in_to_enrol(&browser)?;
    state.accounts.resend_verification(&who).await.map_err(|e| browser.error(&state, &e).into_response())?;
    Ok(Redirect::to("/security?done=verification-sent").into_response())
}

/// The Remove button of a credential added lately (on `/security` and on the reset page).
#[derive(Deserialize)]
pub struct RemoveRecent {
    pub(super) csrf: String,
    pub(super) kind: String,
    pub(super) id: String,
}

/// Removes a credential listed after "Sign out of all devices". Like every removal it needs a fresh
/// confirmation: the session asking may be the thief's.
pub async fn remove_recent_credential(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<RemoveRecent>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let failed = |e: &Error| match e {
        Error::StepUpRequired => confirm_first("/security?done=everywhere").into_response(),
        other => browser.error(&state, other).into_response(),
    };
    state.freshness.require(&who).await.map_err(|e| failed(&e))?;
    let kind = crate::domain::recent_credentials::CredentialKind::parse(&form.kind)
        .ok_or_else(|| failed(&Error::CredentialNotFound))?;
    state
        .recent_credentials
        .remove(&who.user_id, kind, &form.id, "security_page", address.as_deref())
        .await
        .map_err(|e| failed(&e))?;
    Ok(Redirect::to("/security?done=everywhere&removed=1").into_response())
}

/// The security page with a notice (`message`) or a form's error (`error`) in `extra`.
async fn render(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    status: StatusCode,
    extra: minijinja::Value,
) -> Result<Page, Page> {
    let overview = state.security.of(who).await.map_err(|e| browser.error(state, &e))?;
    let events: Vec<_> = overview
        .events
        .into_iter()
        .map(|e| context! { at => humanise(&e.event.at), what => e.what, address => e.event.address })
        .collect();
    let devices: Vec<_> = overview
        .devices
        .into_iter()
        .map(|view| {
            let d = view.device;
            context! {
                id => d.id, name => d.name, product => d.product, platform => d.platform,
                last_seen_at => human(d.last_seen_at), last_address => d.last_address, current => view.current,
            }
        })
        .collect();
    let passkeys: Vec<_> = overview
        .factors
        .passkeys
        .iter()
        .map(|p| {
            context! {
                id => p.id, name => p.name, created => human(p.created_at), last_used => p.last_used_at.map(human),
            }
        })
        .collect();
    let apps: Vec<_> = overview
        .apps
        .into_iter()
        .map(|app| {
            let can: Vec<&str> = app.scope.iter().filter_map(|s| super::oauth::scope_description(s)).collect();
            context! { client_id => app.client_id, name => app.name, can => can, since => human(app.granted_at) }
        })
        .collect();
    let identities: Vec<_> = overview
        .identities
        .iter()
        .map(|i| {
            context! {
                id => i.id, provider_id => i.provider_id, provider_name => i.provider_name, label => i.label,
                linked => human(i.linked_at), last_used => i.last_used_at.map(human),
            }
        })
        .collect();
    let profile = overview.profile;
    let page = context! {
        title => "Security", wide => true, devices => devices, events => events, factors => overview.factors,
        passkeys => passkeys, enrolment_only => who.enrolment_only, email => profile.email,
        pending_email => profile.pending_email, has_factor => overview.has_factor, apps => apps,
        has_password => profile.has_password, providers => state.sso.buttons(), identities => identities,
        unlinked => overview.unlinked, fresh => overview.fresh, email_verified => profile.email_verified,
        username => profile.username, deletion_days => state.deletions.grace_days(),
    };
    // Linking sends the browser from a form here on to a provider, which `form-action` must allow.
    let targets = state.sso.form_origins();
    Ok(browser
        .render(state, status, "security.html", context! { ..extra, ..page })
        .allow_form_target((!targets.is_empty()).then(|| targets.join(" "))))
}

/// An RFC 3339 event time as `2026-11-23 20:36 UTC`.
fn humanise(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| human(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()))
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// "Remove access" for an app the person allowed.
pub async fn withdraw_app(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(client_id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    state
        .oauth
        .withdraw(&who, &client_id, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e).into_response())?;
    Ok(Redirect::to("/security?done=app").into_response())
}

pub async fn sign_out_device(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
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
) -> Result<Response, PageError> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let keep = form.keep_current.is_some();
    state
        .devices
        .sign_out_everywhere(&who, keep, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e).into_response())?;
    if keep {
        return Ok(Redirect::to("/security?done=everywhere").into_response());
    }
    // Signed in again, the person lands where what was added lately is listed.
    let cleared = browser.without_session(&state);
    Ok((cleared, Redirect::to("/signin?next=%2Fsecurity%3Fdone%3Deverywhere")).into_response())
}

/// `POST /security/export` ("Download my data"): the account's data as a JSON file.
pub async fn export_data(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let document = state
        .data_exports
        .export(&who, address.as_deref())
        .await
        .map_err(|e| browser.error(&state, &e).into_response())?;
    let disposition = [(axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"account-data.json\"")];
    Ok((disposition, axum::Json(document)).into_response())
}

#[derive(Deserialize)]
pub struct DeleteAccount {
    csrf: String,
    /// The account's username, typed to confirm.
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    factor_code: String,
    #[serde(default)]
    password: String,
}

/// `POST /security/delete` ("Delete my account"): the username typed to confirm, and a fresh
/// proof (the password or a code) unless the session has one; signs the browser out.
pub async fn delete_account(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<DeleteAccount>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let refuse = |err: &Error| browser.error(&state, err).into_response();
    let profile = state.accounts.profile(&who.user_id).await.map_err(|e| refuse(&e))?;
    if !form.confirm.trim().eq_ignore_ascii_case(&profile.username) {
        return Err(refuse(&Error::DeletionNotConfirmed).into());
    }
    let who = super::step_up::stepped_up(&state, &who, &form.factor_code, &form.password, "", "", address.as_deref())
        .await
        .map_err(|e| refuse(&e))?;
    let scheduled = state.deletions.request(&who, address.as_deref()).await.map_err(|e| refuse(&e))?;
    let body = format!(
        "Every device was signed out. Your account will be erased on {}. Until then, signing in again \
         or the link we emailed you keeps it.",
        crate::clock::human(scheduled.due_at)
    );
    let page = browser.message(&state, StatusCode::OK, "Your account will be deleted", &body, None);
    Ok((browser.without_session(&state), page).into_response())
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
) -> Result<Response, PageError> {
    // The form is checked first, so a forged post is refused as such whatever the session.
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    if form.new_password != form.confirm_password {
        let error = "The two new passwords are not the same.".to_owned();
        return Err(refuse_with(&state, &browser, &who, "password_error", StatusCode::UNPROCESSABLE_ENTITY, error)
            .await
            .into());
    }
    let sign_out = form.sign_out_devices.is_some();
    let changed =
        state.recovery.change(&who, &form.current_password, &form.new_password, sign_out, address.as_deref()).await;
    match changed {
        Ok(()) => Ok(Redirect::to("/security?done=password").into_response()),
        Err(err) => Err(refuse(&state, &browser, &who, "password_error", &err).await.into()),
    }
}

/// Re-shows the security page with a form's refusal beside that form (`field` names its slot in
/// the template); faults of keywarden itself get the error page instead.
pub(super) async fn refuse(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    field: &str,
    err: &Error,
) -> Response {
    if err.is_internal() {
        return browser.error(state, err).into_response();
    }
    if matches!(err, Error::StepUpRequired) {
        return confirm_first("/security").into_response();
    }
    refuse_with(state, browser, who, field, crate::http::error::status_of(err), err.to_string()).await
}

/// The confirm step: where a form that needs a fresh authentication sends the browser, which comes
/// back to `next` once the person confirmed it is them.
pub(super) fn confirm_first(next: &str) -> Redirect {
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
    Redirect::to(&format!("/security/confirm?{query}"))
}

#[derive(Debug, Deserialize)]
pub struct ConfirmQuery {
    #[serde(default)]
    next: String,
}

/// `GET /security/confirm?next=…`: a password, a code, a passkey or (for an account that signs in
/// through a provider only) a new trip to the provider.
pub async fn confirm_form(
    State(state): State<AppState>,
    browser: Browser,
    Query(query): Query<ConfirmQuery>,
) -> Result<Page, PageError> {
    let who = signed_in_to_enrol(&browser)?;
    confirm_page(&state, &browser, &who, &query.next, None).await.map_err(PageError::from)
}

async fn confirm_page(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    next: &str,
    error: Option<&Error>,
) -> Result<Page, Page> {
    let next = local_next(state, next);
    let profile = state.accounts.profile(&who.user_id).await.map_err(|e| browser.error(state, &e))?;
    let factors = state.factors.status(&who.user_id).await.map_err(|e| browser.error(state, &e))?;
    let identities = state.sso.identities(&who.user_id).await.map_err(|e| browser.error(state, &e))?;
    let identities: Vec<_> = identities
        .iter()
        .map(|i| context! { provider_id => i.provider_id, provider_name => i.provider_name })
        .collect();
    let status = error.map_or(StatusCode::OK, crate::http::error::status_of);
    let extra = context! {
        title => "Confirm it is you", next => next, error => error.map(ToString::to_string),
        has_factor => factors.totp || !factors.passkeys.is_empty(), has_password => profile.has_password,
        passkeys => !factors.passkeys.is_empty(), identities => identities,
    };
    let page = browser.render(state, status, "confirm.html", extra);
    Ok(match error {
        Some(err) => page.retry_after_of(err),
        None => page,
    })
}

/// Only a path on this site: the confirm step sends nobody elsewhere.
fn local_next(state: &AppState, next: &str) -> String {
    let next = state.pages.safe_next(next);
    if next.starts_with('/') {
        next
    } else {
        "/security".to_owned()
    }
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
}

/// `POST /security/confirm`: steps the session up, then back to where the person was going.
pub async fn confirm(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in_to_enrol(&browser)?;
    let proof = step_up_proof(&form.code, &form.password, &form.ceremony_id, &form.webauthn_response);
    let stepped = match proof {
        Ok(Some(proof)) => state.factors.step_up(&who, proof, address.as_deref()).await,
        Ok(None) => Err(Error::InvalidFactor("enter your password or a code, or use your passkey")),
        Err(err) => Err(err),
    };
    match stepped {
        Ok(_) => Ok(Redirect::to(&local_next(&state, &form.next)).into_response()),
        Err(err) if err.is_internal() => Err(browser.error(&state, &err).into()),
        Err(err) => {
            Err(confirm_page(&state, &browser, &who, &form.next, Some(&err)).await.unwrap_or_else(|page| page).into())
        }
    }
}

async fn refuse_with(
    state: &AppState,
    browser: &Browser,
    who: &Authenticated,
    field: &str,
    status: StatusCode,
    message: String,
) -> Response {
    let extra = minijinja::Value::from_iter([(field.to_owned(), message)]);
    render(state, browser, who, status, extra).await.unwrap_or_else(|page| page).into_response()
}

/// The enrolment page: a QR code (an SVG data URI, allowed by the CSP's `img-src data:`) and the key.
fn setup_page(
    state: &AppState,
    browser: &Browser,
    enrolment: &TotpEnrolment,
    status: StatusCode,
    error: Option<String>,
) -> Page {
    use base64::Engine as _;
    let qr = format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(enrolment.qr_svg.as_bytes())
    );
    let extra = context! {
        title => "Set up an authenticator app", qr => qr, secret => enrolment.secret.as_str(), error => error,
    };
    browser.render(state, status, "totp_setup.html", extra)
}

pub async fn begin_totp(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CsrfOnly>,
) -> Result<Page, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in_to_enrol(&browser)?;
    match state.factors.begin_totp(&who, address.as_deref()).await {
        Ok(enrolment) => Ok(setup_page(&state, &browser, &enrolment, StatusCode::OK, None)),
        Err(err) => Err(refuse(&state, &browser, &who, "factor_error", &err).await.into()),
    }
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    action: String,
}

pub async fn confirm_totp(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CodeForm>,
) -> Result<Page, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in_to_enrol(&browser)?;
    match state.factors.confirm_totp(&who, &form.code, address.as_deref()).await {
        Ok(codes) => Ok(recovery_codes_page(&state, &browser, &codes)),
        Err(err @ (Error::InvalidCode | Error::CodeAlreadyUsed)) => {
            let enrolment =
                state.factors.pending_enrolment(&who).await.map_err(|e| browser.error(&state, &e).into_response())?;
            Err(setup_page(&state, &browser, &enrolment, StatusCode::UNPROCESSABLE_ENTITY, Some(err.to_string()))
                .into())
        }
        Err(err) => Err(refuse(&state, &browser, &who, "factor_error", &err).await.into()),
    }
}

pub(super) fn recovery_codes_page(state: &AppState, browser: &Browser, codes: &[zeroize::Zeroizing<String>]) -> Page {
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    browser.render(
        state,
        StatusCode::OK,
        "recovery_codes.html",
        context! { title => "Your recovery codes", codes => codes },
    )
}

/// New recovery codes or turning the app off, confirmed in the same form with a fresh code (step-up).
pub async fn manage_totp(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CodeForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let stepped_up = match Factor::guess(&form.code) {
        Ok(factor) => state.factors.step_up(&who, StepUp::Factor(factor), address.as_deref()).await,
        Err(err) => Err(err),
    };
    let fresh = match stepped_up {
        Ok(fresh) => fresh,
        Err(err) => return Err(refuse(&state, &browser, &who, "factor_error", &err).await.into()),
    };
    let done = match form.action.as_str() {
        "recovery_codes" => state
            .factors
            .regenerate_recovery_codes(&fresh, address.as_deref())
            .await
            .map(|codes| recovery_codes_page(&state, &browser, &codes).into_response()),
        "disable" => state
            .factors
            .disable_totp(&fresh, address.as_deref())
            .await
            .map(|()| Redirect::to("/security?done=totp-off").into_response()),
        _ => Err(Error::InvalidFactor("choose what to do")),
    };
    match done {
        Ok(response) => Ok(response),
        Err(err) => Err(refuse(&state, &browser, &who, "factor_error", &err).await.into()),
    }
}

#[derive(Deserialize)]
pub struct ChangeEmailForm {
    csrf: String,
    #[serde(default)]
    new_email: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    webauthn_response: String,
}

/// Starts a change of address, confirmed in the same form (a code, a passkey, or the password for
/// an account without a second factor); the new address gets a link, the current one a notice.
pub async fn change_email(
    State(state): State<AppState>,
    browser: Browser,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ChangeEmailForm>,
) -> Result<Response, PageError> {
    browser.check_form(&state, &headers, &form.csrf)?;
    let who = signed_in(&browser)?;
    let (code, password) = (&form.code, &form.password);
    let fresh =
        stepped_up(&state, &who, code, password, &form.ceremony_id, &form.webauthn_response, address.as_deref());
    let requested = match fresh.await {
        Ok(fresh) => state.accounts.request_email_change(&fresh, &form.new_email, address.as_deref()).await,
        Err(err) => Err(err),
    };
    match requested {
        Ok(()) => Ok(Redirect::to("/security?done=email").into_response()),
        Err(Error::StepUpRequired) => {
            let err = Error::InvalidFactor("confirm it is you: enter your password, a code, or use your passkey");
            Err(refuse(&state, &browser, &who, "email_error", &err).await.into())
        }
        Err(err) => Err(refuse(&state, &browser, &who, "email_error", &err).await.into()),
    }
}
