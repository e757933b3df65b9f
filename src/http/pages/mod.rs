//! keywarden's own web pages: server-rendered, usable without JavaScript, safe by default.
//!
//! Browsers hold a `kw_ws_` session token in an HttpOnly, SameSite=Lax cookie (stored hashed like
//! every token, channel `web`). Every form carries a CSRF token: an HMAC, under the token-hash key,
//! of a random per-browser cookie and the session, so a forged form from another site has neither.
//! Cross-site POSTs are refused outright when the browser says so (`Sec-Fetch-Site`).

mod account;
mod link;
mod oauth;
mod passkeys;
mod security;
mod sso;
mod step_up;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use minijinja::{context, Environment, Value};
use rand::RngCore;

use super::AppState;
use crate::config::PagesConfig;
use crate::domain::caller::Authenticated;
use crate::domain::Error;

pub const SESSION_COOKIE: &str = "kw_session";
pub const CSRF_COOKIE: &str = "kw_csrf";
/// The browser's device token (see `domain::known_devices`).
pub const DEVICE_COOKIE: &str = "kw_device";
pub const DEVICE_COOKIE_MAX_AGE_SECS: i64 = 400 * 24 * 3600;

/// No inline script or style, nothing from elsewhere, no framing (issue 4 §3).
/// Sent with every answer (see `http::router`): a page may widen `form-action` to the one client it
/// is about to send the browser back to.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../../templates/pages/layout.html")),
    ("signin.html", include_str!("../../../templates/pages/signin.html")),
    ("signup.html", include_str!("../../../templates/pages/signup.html")),
    ("security.html", include_str!("../../../templates/pages/security.html")),
    ("message.html", include_str!("../../../templates/pages/message.html")),
    ("reset_request.html", include_str!("../../../templates/pages/reset_request.html")),
    ("reset_password.html", include_str!("../../../templates/pages/reset_password.html")),
    ("verify_email.html", include_str!("../../../templates/pages/verify_email.html")),
    ("keep_account.html", include_str!("../../../templates/pages/keep_account.html")),
    ("signin_mfa.html", include_str!("../../../templates/pages/signin_mfa.html")),
    ("totp_setup.html", include_str!("../../../templates/pages/totp_setup.html")),
    ("recovery_codes.html", include_str!("../../../templates/pages/recovery_codes.html")),
    ("consent.html", include_str!("../../../templates/pages/consent.html")),
    ("link.html", include_str!("../../../templates/pages/link.html")),
    ("signout_confirm.html", include_str!("../../../templates/pages/signout_confirm.html")),
    ("sso_finish.html", include_str!("../../../templates/pages/sso_finish.html")),
    ("sso_link.html", include_str!("../../../templates/pages/sso_link.html")),
    ("confirm.html", include_str!("../../../templates/pages/confirm.html")),
    ("confirm_fields.html", include_str!("../../../templates/pages/confirm_fields.html")),
    ("recent_credentials.html", include_str!("../../../templates/pages/recent_credentials.html")),
];

const STYLESHEET: &str = include_str!("../../../static/keywarden.css");
const SCRIPT: &str = include_str!("../../../static/keywarden.js");

/// The page templates and what every page shows.
pub struct Pages {
    env: Environment<'static>,
    product: String,
    /// Whether cookies get the `Secure` attribute (on unless keywarden is served over plain HTTP).
    secure_cookies: bool,
    /// Our stylesheet with the configured colours appended.
    stylesheet: String,
    /// Origins other than ours that `next` may point at, canonical (`scheme://host[:port]`).
    redirect_origins: Vec<String>,
    auth_forward_to_self: bool,
}

impl Pages {
    pub fn new(product: &str, secure_cookies: bool, config: &PagesConfig) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        let stylesheet = format!("{STYLESHEET}{}", config.theme()?.css());
        let redirect_origins = config.redirect_origins()?;
        Ok(Self {
            env,
            product: product.to_owned(),
            secure_cookies,
            stylesheet,
            redirect_origins,
            auth_forward_to_self: config.auth_forward_to_self,
        })
    }

    /// A message page for a request no handler saw (refused by the HTTP layer): no session, no forms.
    pub fn bare_message(&self, status: StatusCode, heading: &str, body: &str) -> Page {
        let context = context! {
            product => self.product.clone(), csrf => "", signed_in => false,
            title => heading, heading => heading, body => body, link => Value::from(()),
        };
        let html = self.env.get_template("message.html").and_then(|t| t.render(context)).unwrap_or_else(|e| {
            tracing::error!(error = %e, "page template failed");
            "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned()
        });
        Page { status, html, jar: Box::default(), form_target: None, retry_after: None }
    }

    /// Where `/auth` may send a browser once a plex.tv-style app's PIN is approved (`forwardUrl`):
    /// an `http(s)` URL of the app, without credentials in it; never keywarden itself (one of
    /// `own_origins`), unless `pages.auth_forward_to_self` says so.
    pub fn auth_forward(&self, raw: &str, own_origins: &[String]) -> Option<url::Url> {
        let url = url::Url::parse(raw.trim()).ok()?;
        let web = matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty());
        let clean = url.username().is_empty() && url.password().is_none();
        let ours = own_origins.contains(&url.origin().ascii_serialization());
        (web && clean && (self.auth_forward_to_self || !ours)).then_some(url)
    }

    /// Where to send a browser after it signs in: a path on this site, or a URL on a configured
    /// origin; anything else (`//host`, other schemes, backslash tricks) goes to `/security`.
    pub fn safe_next(&self, next: &str) -> String {
        const HOME: &str = "/security";
        if next.starts_with('/') {
            let local = !next.starts_with("//") && !next.contains('\\') && !next.chars().any(char::is_control);
            return if local { next.to_owned() } else { HOME.to_owned() };
        }
        match url::Url::parse(next) {
            Ok(url) if url.username().is_empty() && url.password().is_none() => {
                let origin = url.origin().ascii_serialization();
                if self.redirect_origins.contains(&origin) {
                    url.to_string()
                } else {
                    HOME.to_owned()
                }
            }
            _ => HOME.to_owned(),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/security") }))
        .route("/signin", get(account::signin_form).post(account::signin))
        .route("/signin/mfa", post(account::signin_mfa))
        .route("/signin/passkey", post(passkeys::sign_in))
        .route("/signin/passkey/options", post(passkeys::sign_in_options))
        .route("/signup", get(account::signup_form).post(account::signup))
        .route("/signout", post(account::signout))
        .route("/reset", get(account::reset_request_form).post(account::reset_request))
        .route("/reset/{token}", get(account::reset_form).post(account::reset))
        .route("/reset/{token}/remove", post(account::remove_recent_credential))
        .route("/verify-email/{token}", get(account::verify_form).post(account::verify))
        .route("/security", get(security::page))
        .route("/security/devices/{id}/signout", post(security::sign_out_device))
        .route("/security/signout-all", post(security::sign_out_everywhere))
        .route("/security/export", post(security::export_data))
        .route("/security/delete", post(security::delete_account))
        .route("/account/keep/{token}", get(account::keep_form).post(account::keep))
        .route("/security/recent/remove", post(security::remove_recent_credential))
        .route("/security/verify-email", post(security::resend_verification))
        .route("/security/apps/{client_id}/remove", post(security::withdraw_app))
        .route("/security/password", post(security::change_password))
        .route("/security/email", post(security::change_email))
        .route("/security/totp", post(security::begin_totp))
        .route("/security/totp/confirm", post(security::confirm_totp))
        .route("/security/totp/manage", post(security::manage_totp))
        .route("/security/passkeys", post(passkeys::add))
        .route("/security/passkeys/options", post(passkeys::registration_options))
        .route("/security/passkeys/{id}/rename", post(passkeys::rename))
        .route("/security/passkeys/{id}/remove", post(passkeys::remove))
        .route("/security/step-up/options", post(passkeys::step_up_options))
        .route("/security/confirm", get(security::confirm_form).post(security::confirm))
        .route("/static/keywarden.css", get(stylesheet))
        .route("/static/keywarden.js", get(script))
        .route("/recover", post(account::recover))
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/oauth/authorize/decision", post(oauth::decide))
        .route("/oauth/logout", get(oauth::end_session))
        .route("/link", get(link::form).post(link::find))
        .route("/auth", get(link::app_sign_in))
        .route("/auth/", get(link::app_sign_in))
        .route("/link/confirm", post(link::confirm))
        .route("/sso/{provider}/start", get(sso::start))
        .route("/sso/{provider}/callback", get(sso::callback))
        .route("/sso/finish", get(sso::finish_form).post(sso::finish))
        .route("/sso/link", get(sso::link_form).post(sso::link))
        .route("/security/sso/{provider}/link", post(sso::link_provider))
        .route("/security/sso/{provider}/reauth", post(sso::reauth))
        .route("/security/sso/identities/{id}/unlink", post(sso::unlink))
}

/// Whether the request comes from a browser that wants a page rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

async fn stylesheet(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        state.pages.stylesheet.clone(),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        SCRIPT,
    )
}

/// What a page handler answers instead of what it was asked for: a page (an error, a refusal,
/// the form again) or a redirect (to sign in, to confirm first).
pub enum PageError {
    Page(Page),
    Redirect(Redirect),
    Response(Response),
}

impl From<Page> for PageError {
    fn from(page: Page) -> Self {
        Self::Page(page)
    }
}

impl From<Redirect> for PageError {
    fn from(redirect: Redirect) -> Self {
        Self::Redirect(redirect)
    }
}

impl From<Response> for PageError {
    fn from(response: Response) -> Self {
        Self::Response(response)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::Page(page) => page.into_response(),
            Self::Redirect(redirect) => redirect.into_response(),
            Self::Response(response) => response,
        }
    }
}

/// A page to send back: rendered HTML with a status, plus cookies to set.
pub struct Page {
    status: StatusCode,
    html: String,
    jar: Box<CookieJar>,
    /// An origin besides ours that this page's forms may end at (after redirects).
    form_target: Option<String>,
    /// Seconds to wait, for a page that answers 429 or 503.
    retry_after: Option<u64>,
}

impl Page {
    /// Lets this page's forms end at `origin`: Chrome applies `form-action` to every redirect after
    /// a submission, and a sign-in or consent form for an OAuth client ends at the client's
    /// redirect URI. The origin must come from a validated authorization request.
    pub fn allow_form_target(mut self, origin: Option<String>) -> Self {
        self.form_target = origin;
        self
    }

    /// Says when to try again (`Retry-After`) if `err` is one that has an answer to that.
    pub fn retry_after_of(mut self, err: &Error) -> Self {
        if let Some(secs) = err.retry_after_secs() {
            self.retry_after = Some(secs);
        }
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let policy = match &self.form_target {
            Some(origin)
                if origin
                    .split(' ')
                    .all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_graphic() && c != ';' && c != ',')) =>
            {
                CONTENT_SECURITY_POLICY.replace("form-action 'self'", &format!("form-action 'self' {origin}"))
            }
            _ => CONTENT_SECURITY_POLICY.to_owned(),
        };
        let csp = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        let mut response =
            (self.status, [(header::CONTENT_SECURITY_POLICY, csp)], *self.jar, Html(self.html)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A form whose only field is its CSRF token (sign-out buttons, confirmations).
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}

/// What a page handler knows about the browser: its cookies, its CSRF secret and its session.
pub struct Browser {
    pub jar: CookieJar,
    csrf_secret: String,
    pub session: Option<Authenticated>,
    /// A session cookie was sent but no longer works (signed out, expired or revoked).
    pub stale_session: bool,
}

impl FromRequestParts<AppState> for Browser {
    /// Only when the session cannot be checked now (the database is out of reach): a friendly
    /// "try again" page, rather than treating a signed-in person as signed out.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Ok(mut jar) = CookieJar::from_request_parts(parts, state).await;
        let secure = state.pages.secure_cookies;
        let csrf_secret = match cookie_value(&jar, CSRF_COOKIE, secure) {
            Some(secret) if secret.len() >= 32 => secret,
            _ => {
                let mut random = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut random);
                let secret = URL_SAFE_NO_PAD.encode(random);
                jar = jar.add(cookie(CSRF_COOKIE, secret.clone(), state.pages.secure_cookies, None));
                secret
            }
        };
        let presented = cookie_value(&jar, SESSION_COOKIE, secure);
        let session = match &presented {
            Some(value) => match state.sessions.authenticate_browser(value).await {
                Ok(session) => Some(session),
                Err(err) if err.is_unavailable() => {
                    let status = super::error::status_of(&err);
                    let page = state.pages.bare_message(status, "Please try again in a moment", &err.to_string());
                    return Err(page.retry_after_of(&err).into_response());
                }
                Err(_) => None,
            },
            None => None,
        };
        let stale_session = session.is_none() && presented.is_some();
        Ok(Self { jar, csrf_secret, session, stale_session })
    }
}

/// The name a cookie goes by: over https with the `__Host-` prefix, which the browser keeps only
/// for cookies this very host set (Secure, `Path=/`, no `Domain`), so a sibling subdomain cannot
/// plant one.
pub fn cookie_name(name: &'static str, secure: bool) -> std::borrow::Cow<'static, str> {
    if secure {
        format!("__Host-{name}").into()
    } else {
        name.into()
    }
}

/// The value of one of keywarden's cookies, under the name it goes by.
pub fn cookie_value(jar: &CookieJar, name: &'static str, secure: bool) -> Option<String> {
    jar.get(&cookie_name(name, secure)).map(|c| c.value().to_owned())
}

pub fn cookie(name: &'static str, value: String, secure: bool, max_age_secs: Option<i64>) -> Cookie<'static> {
    let mut cookie = Cookie::build((cookie_name(name, secure), value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure);
    if let Some(secs) = max_age_secs {
        cookie = cookie.max_age(time::Duration::seconds(secs));
    }
    cookie.build()
}

impl Browser {
    /// The CSRF token for forms on this page: bound to this browser's secret and its session.
    pub fn csrf_token(&self, state: &AppState) -> String {
        let session = self.session.as_ref().map_or("", |s| s.session_id.as_str());
        let digest = state.keyring.token_digest(&format!("csrf:{}:{session}", self.csrf_secret));
        URL_SAFE_NO_PAD.encode(&digest.digest)
    }

    /// The device token an earlier sign-in left in this browser.
    pub fn device_token(&self, state: &AppState) -> Option<String> {
        cookie_value(&self.jar, DEVICE_COOKIE, state.pages.secure_cookies)
    }

    /// The browser's cookies with the page session cookie removed, for sign-out.
    pub fn without_session(&self, state: &AppState) -> CookieJar {
        self.jar.clone().remove(cookie(SESSION_COOKIE, String::new(), state.pages.secure_cookies, None))
    }

    /// Refuses a state-changing request whose form token does not match, or that the browser
    /// itself reports as cross-site.
    pub fn check_form(&self, state: &AppState, headers: &HeaderMap, presented: &str) -> Result<(), Page> {
        let cross_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site");
        let expected = self.csrf_token(state);
        let matches = bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), presented.as_bytes()));
        if cross_site || !matches {
            return Err(self.message(
                state,
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this site or was open too long. Go back, reload the page and try again.",
                Some(("/security", "Back")),
            ));
        }
        Ok(())
    }

    /// Renders a template with what every page shows.
    pub fn render(&self, state: &AppState, status: StatusCode, template: &str, extra: Value) -> Page {
        let base = context! {
            product => state.pages.product.clone(),
            csrf => self.csrf_token(state),
            signed_in => self.session.is_some(),
        };
        let merged = context! { ..extra, ..base };
        let html = state.pages.env.get_template(template).and_then(|t| t.render(merged)).unwrap_or_else(|e| {
            tracing::error!(error = %e, template, "page template failed");
            "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned()
        });
        Page { status, html, jar: Box::new(self.jar.clone()), form_target: None, retry_after: None }
    }

    pub fn message(
        &self,
        state: &AppState,
        status: StatusCode,
        heading: &str,
        body: &str,
        link: Option<(&str, &str)>,
    ) -> Page {
        let link = link.map(|(href, label)| context! { href => href, label => label });
        self.render(
            state,
            status,
            "message.html",
            context! { title => heading, heading => heading, body => body, link => link },
        )
    }

    /// A friendly page for any domain error, with a status that matches it.
    pub fn error(&self, state: &AppState, err: &Error) -> Page {
        let status = super::error::status_of(err);
        let (heading, link) = match err {
            Error::InvalidLink => ("This link no longer works", Some(("/reset", "Ask for a new link"))),
            Error::Overloaded { .. } => ("We are very busy", None),
            Error::DatabaseUnavailable => ("Please try again in a moment", None),
            e if e.is_internal() => ("Something went wrong", None),
            _ => ("That did not work", Some(("/security", "Back"))),
        };
        self.message(state, status, heading, &err.to_string(), link).retry_after_of(err)
    }
}

#[cfg(test)]
mod tests {
    use super::Pages;
    use crate::config::PagesConfig;

    #[test]
    fn only_local_paths_and_configured_origins_are_followed() {
        let config =
            PagesConfig { redirect_origins: vec!["https://forum.example.com".into()], ..PagesConfig::default() };
        let pages = Pages::new("keywarden", false, &config).unwrap();
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "evil",
            "https://forum.example.com.evil.example/",
            "https://user@forum.example.com/",
            "http://forum.example.com/",
            "/\tjavascript:x",
        ] {
            assert_eq!(pages.safe_next(bad), "/security", "{bad:?}");
        }
        assert_eq!(pages.safe_next("/security?x=1"), "/security?x=1");
        assert_eq!(pages.safe_next("https://forum.example.com/t/42?page=2"), "https://forum.example.com/t/42?page=2");
        assert_eq!(pages.safe_next("https://FORUM.example.com:443/"), "https://forum.example.com/");
    }
}
