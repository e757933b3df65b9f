//! The HTTP surface: one router, thin handlers, and the layers every request passes through.

pub mod api;
pub mod devices;
pub mod dialect;
pub mod email;
pub mod error;
pub mod extract;
pub mod mfa;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod passkeys;
pub mod passwords;
pub mod plex;
pub mod serve;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use ipnet::IpNet;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::error::ApiError;
use crate::domain::alerts::Alerts;
use crate::domain::dpop::DpopVerifier;
use crate::domain::freshness::Freshness;
use crate::domain::password::PasswordHasher;
use crate::domain::policy::TokenPolicy;
use crate::domain::readiness::Readiness;
use crate::domain::security_overview::SecurityOverviews;
use crate::domain::{
    Accounts, AuditLog, Claims, DeviceKeys, Devices, OAuth, Pins, Recovery, Revocations, SecondFactors, Sessions, Sso,
    Webhooks,
};
use crate::keys::signing::Signer;
use crate::keys::Keyring;
use crate::mail::Mailer;
use crate::obs::metrics::{Metrics, RequestLabels};

/// What every handler can reach: one shared handle, so a request (and each layer and extractor that
/// takes the state) costs one reference count, not a copy of every service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The node's services, built once at start.
pub struct Services {
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub oauth: OAuth,
    pub sso: Sso,
    pub pins: Pins,
    pub claims: Claims,
    /// People deleting their accounts (and keeping them after all).
    pub deletions: crate::domain::account_deletion::AccountDeletions,
    /// "Download my data".
    pub data_exports: crate::domain::data_export::DataExports,
    pub webhooks: Webhooks,
    pub device_keys: DeviceKeys,
    pub factors: SecondFactors,
    /// Whether a session proved its person just now (for what pages offer).
    pub freshness: Freshness,
    pub devices: Devices,
    pub recovery: Recovery,
    /// What an account gained lately, listed after "Sign out of all devices".
    pub recent_credentials: crate::domain::recent_credentials::RecentCredentials,
    pub revocations: Revocations,
    pub alerts: Alerts,
    pub audit: AuditLog,
    pub mailer: Mailer,
    pub readiness: Readiness,
    /// What the security page shows.
    pub security: SecurityOverviews,
    pub hasher: Arc<PasswordHasher>,
    pub metrics: Arc<Metrics>,
    pub trusted_proxies: Arc<Vec<IpNet>>,
    pub dpop: DpopVerifier,
    pub keyring: Arc<Keyring>,
    /// The keys that sign ID tokens, re-derived when the key file changes.
    pub signer: Arc<Signer>,
    pub pages: Arc<pages::Pages>,
    pub token_policy: TokenPolicy,
    /// Who may create an account (what `/signup` offers).
    pub signup: crate::domain::policy::SignupPolicy,
    /// The configured public URL, which DPoP proofs must name; `None` means this request's host.
    pub public_url: Option<String>,
}

pub fn router(state: AppState, max_body_bytes: usize, http: &serve::HttpSettings, hsts: bool) -> Router {
    let api = Router::new()
        .route("/accounts", post(api::create_account))
        .route("/sessions", post(api::create_session))
        .route("/sessions/current", delete(api::delete_current_session))
        .route("/sessions/mfa", post(mfa::finish_sign_in))
        .route("/sessions/step-up", post(mfa::step_up))
        .route("/mfa", get(mfa::factors))
        .route("/mfa/totp", post(mfa::begin_totp).delete(mfa::disable_totp))
        .route("/mfa/totp/confirm", post(mfa::confirm_totp))
        .route("/mfa/recovery-codes", post(mfa::regenerate_recovery_codes))
        .route("/mfa/passkeys", get(passkeys::list).post(passkeys::add))
        .route("/mfa/passkeys/options", post(passkeys::registration_options))
        .route("/mfa/passkeys/{id}", patch(passkeys::rename).delete(passkeys::remove))
        .route("/sessions/passkey", post(passkeys::sign_in))
        .route("/sessions/passkey/options", post(passkeys::sign_in_options))
        .route("/sessions/step-up/options", post(passkeys::step_up_options))
        .route("/token/refresh", post(api::refresh_token))
        .route("/sessions/revoke-all", post(devices::revoke_all_sessions))
        .route("/devices", get(devices::list_devices))
        .route("/devices/{id}", delete(devices::delete_device))
        .route("/security-events", get(devices::security_events))
        .route("/me", get(api::me))
        .route("/account/export", get(api::export_account))
        .route("/account", delete(api::delete_account))
        .route("/email/verify", post(email::verify_email))
        .route("/email/change", post(email::change_email))
        .route("/email/verification", post(email::resend_verification))
        .route("/password/change", post(passwords::change_password))
        .route("/password/reset-request", post(passwords::request_reset))
        .route("/password/reset", post(passwords::reset_password))
        .route("/openapi.json", get(ops::openapi));

    let router = Router::new()
        .nest("/api/v1", api)
        .merge(pages::router())
        .merge(plex::router())
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route("/oauth/jwks", get(oauth::jwks))
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/device_authorization", post(oauth::device_authorization))
        .route("/oauth/userinfo", get(oauth::userinfo).post(oauth::userinfo))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // One layer for the whole stack: axum wraps (and clones, per request) each route in every
    // `Router::layer`, so nine layers would cost nine boxed services per request.
    let hsts = hsts.then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        )
    });
    let limits =
        dialect::Limits { max_body_bytes, max_uri_bytes: http.max_uri_bytes, max_header_bytes: http.max_header_bytes };
    let layers = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        // Token responses must not be cached (RFC 6749 §5.1); nothing here is worth caching anyway.
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(middleware::from_fn_with_state((state.clone(), limits), dialect::speak))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error").into_response()
        }))
        .layer(
            // Spans name the route template, never the raw URI or headers, which may carry tokens.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
                    let method = crate::obs::metrics::method_label(request.method());
                    tracing::info_span!("request", method, route)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // A 5xx is logged where its cause is known, once per interval for outages
                // (`domain::outages`), not as an ERROR line per answer.
                .on_failure(()),
        )
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, http.request_timeout()))
        .layer(middleware::from_fn_with_state(state.clone(), offer_dpop_nonce))
        .layer(middleware::from_fn_with_state(state.clone(), record_latency))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Pages may not be framed, sniffed or loaded over plain HTTP once seen over https.
        .option_layer(hsts)
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(pages::CONTENT_SECURITY_POLICY),
        ));
    router.layer(layers).with_state(state)
}

async fn record_latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = crate::obs::metrics::method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Every answer to a request with a DPoP proof carries a fresh nonce for the next proof (RFC 9449 §8).
async fn offer_dpop_nonce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let had_proof = request.headers().contains_key("dpop");
    let mut response = next.run(request).await;
    if had_proof {
        if let Ok(nonce) = HeaderValue::from_str(&state.dpop.nonce()) {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
    }
    response
}

/// Browsers get a page that helps them on; API clients get the usual JSON error.
async fn not_found(State(state): State<AppState>, browser: pages::Browser, headers: HeaderMap) -> Response {
    if pages::wants_html(&headers) {
        let home = if browser.session.is_some() { ("/security", "Go to your account") } else { ("/signin", "Sign in") };
        let body = "There is no page at this address. The link may be mistyped or out of date.";
        return browser.message(&state, StatusCode::NOT_FOUND, "Page not found", body, Some(home)).into_response();
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not accept that method")
}
