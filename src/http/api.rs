//! The JSON API under `/api/v1`: accounts, password sign-in, token refresh, sign-out and `/me`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress, EnrollingCaller, TokenRequestProof, UserAgent};
use super::AppState;
use crate::domain::accounts::Registration;
use crate::domain::device_info::DeviceInfo;
use crate::domain::sessions::{Issue, IssuedTokens, SignIn};
use crate::obs::metrics::Outcome;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateAccount {
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
    #[schema(min_length = 3, max_length = 32)]
    pub username: String,
    #[schema(format = Password, min_length = 8, max_length = 256)]
    pub password: String,
    /// The code of an invitation (`kw_iv_…`, from the link's `invite`), needed when sign-up is by
    /// invitation.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub invite: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCreated {
    pub id: String,
    pub username: String,
}

#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = CreateAccount,
    responses(
        (status = 201, description = "Account created", body = AccountCreated),
        (status = 403, description = "`signup_closed` (`signup.mode = \"closed\"`), `invite_required` (by invitation, and no `invite` sent), `invalid_invite` (unknown, used, revoked, expired, or for another address)", body = ErrorBody),
        (status = 409, description = "`username_taken` or `email_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `invalid_username`, `password_too_short`, `password_too_long`, `password_too_common`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address; retry after `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "`overloaded`: retry after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn create_account(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<CreateAccount>,
) -> Result<(StatusCode, Json<AccountCreated>), ApiError> {
    let registration =
        Registration { email: body.email, username: body.username, password: body.password, invite: body.invite };
    let account = state.accounts.register(registration, address.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(AccountCreated { id: account.id, username: account.username })))
}

/// How an app or media server describes itself. Browsers may leave it out.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeviceBody {
    /// A stable identifier of this client instance, chosen by the client.
    #[schema(min_length = 1, max_length = 128)]
    pub client_id: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub product: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub platform: String,
    #[serde(default)]
    #[schema(max_length = 128)]
    pub name: String,
}

impl From<DeviceBody> for DeviceInfo {
    fn from(d: DeviceBody) -> Self {
        Self { client_id: d.client_id, product: d.product, platform: d.platform, name: d.name }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSession {
    /// Email address or username.
    #[schema(min_length = 1, max_length = 254)]
    pub login: String,
    #[schema(format = Password, min_length = 1)]
    pub password: String,
    pub device: Option<DeviceBody>,
    /// The `device_token` an earlier sign-in on this device returned: while someone is guessing
    /// this account's password and it is locked, a sign-in with it is not held back.
    pub device_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived bearer token, prefix `kw_at_`.
    pub access_token: String,
    /// Single-use refresh token, prefix `kw_rt_`.
    pub refresh_token: String,
    /// `Bearer`, or `DPoP` when the tokens are bound to the key of the DPoP proof sent with the request.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub session_id: String,
    pub device_id: String,
    /// `web` for browsers, `device` for apps and media servers.
    pub channel: String,
    /// True when a revoked session was replaced without a password because the client proved it
    /// holds the session's DPoP key (silent recovery after a leak).
    pub recovered: bool,
    /// True when the operator requires a second factor that the account lacks: the session can
    /// only enrol one (`POST /api/v1/mfa/totp`, `POST /api/v1/mfa/passkeys/options`), read
    /// `/api/v1/me` and sign out until then; every other call answers `403 mfa_enrolment_required`.
    pub mfa_enrolment_required: bool,
    /// Keep it with the device and send it with later sign-ins (`device_token`): it is no
    /// credential, only proof that this device signed in to this account before.
    pub device_token: String,
}

impl From<IssuedTokens> for TokenResponse {
    fn from(t: IssuedTokens) -> Self {
        Self {
            access_token: t.access_token.to_string(),
            refresh_token: t.refresh_token.to_string(),
            token_type: t.token_type,
            expires_in: t.expires_in,
            session_id: t.session_id,
            device_id: t.device_id,
            channel: t.channel,
            recovered: t.recovered,
            mfa_enrolment_required: t.mfa_enrolment_required,
            device_token: t.device_token,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses(
        (status = 201, description = "Signed in", body = TokenResponse),
        (status = 401, description = "`invalid_credentials`, the same for unknown accounts and wrong passwords; `mfa_required` with `mfa_token` and `methods` when the account has a second factor: finish with POST /api/v1/sessions/mfa", body = ErrorBody),
        (status = 403, description = "`account_disabled`: the credentials were right but an operator disabled the account", body = ErrorBody),
        (status = 422, description = "`invalid_device`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many wrong passwords for this account or from this address; retry after `Retry-After` seconds (a `device_token` from an earlier sign-in is not held back by the account's lock)", body = ErrorBody),
        (status = 503, description = "`overloaded`: retry after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    TokenRequestProof(dpop): TokenRequestProof,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let request = SignIn {
        login: body.login,
        password: Zeroizing::new(body.password),
        device: body.device.map(DeviceInfo::from),
        address,
        user_agent,
        dpop,
        issue: Issue::TokenPair,
        device_token: body.device_token,
    };
    let result = state.sessions.sign_in(request).await;
    state.metrics.sign_ins.get_or_create(&Outcome::of(&result, "success")).inc();
    Ok((StatusCode::CREATED, Json(result?.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(min_length = 1)]
    pub refresh_token: String,
}

#[utoipa::path(post, path = "/api/v1/token/refresh", tag = "sessions", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the presented refresh token is spent", body = TokenResponse),
        (status = 401, description = "`invalid_token`, `token_expired`, `token_revoked`, `refresh_token_reused` (the whole session is now revoked), `dpop_proof_required`, `invalid_dpop_proof`, `use_dpop_nonce`", body = ErrorBody),
    ))]
pub async fn refresh_token(
    State(state): State<AppState>,
    TokenRequestProof(dpop): TokenRequestProof,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let result = state.sessions.refresh(&body.refresh_token, dpop.as_ref()).await;
    state.metrics.token_refreshes.get_or_create(&Outcome::of(&result, "success")).inc();
    Ok(Json(result?.into()))
}

#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: every token of this session is dead"),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn delete_current_session(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
    ClientAddress(address): ClientAddress,
) -> Result<StatusCode, ApiError> {
    state.sessions.sign_out(&who, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub email: String,
    /// Whether the address was confirmed through the emailed link.
    pub email_verified: bool,
    /// `user` or `admin`.
    pub role: &'static str,
    /// A new address waiting for its confirmation link (`POST /api/v1/email/change`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_email: Option<String>,
    /// False for an account that signs in only through a sign-in provider or with a passkey.
    pub has_password: bool,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in account", body = Me),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, EnrollingCaller(who): EnrollingCaller) -> Result<Json<Me>, ApiError> {
    let profile = state.accounts.profile(&who.user_id).await?;
    Ok(Json(Me {
        id: profile.id,
        username: profile.username,
        email: profile.email,
        email_verified: profile.email_verified,
        role: profile.role.as_str(),
        pending_email: profile.pending_email,
        has_password: profile.has_password,
    }))
}

#[utoipa::path(get, path = "/api/v1/account/export", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "Everything keywarden holds about the signed-in account, as one JSON document: `profile`, `devices`, `sessions` (no token material), `second_factors` (metadata only), `sign_in_providers`, `allowed_apps`, `webhooks`, `security_events`. Audited and announced to the owner by mail.", body = Object),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many exports of this account lately; retry after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn export_account(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
) -> Result<Response, ApiError> {
    let document = state.data_exports.export(&who, address.as_deref()).await?;
    let disposition = [(header::CONTENT_DISPOSITION, "attachment; filename=\"account-data.json\"")];
    Ok((disposition, Json(document)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionScheduled {
    /// When the account is erased (RFC 3339); a sign-in or the mailed link before then keeps it.
    pub deletion_due_at: String,
}

#[utoipa::path(delete, path = "/api/v1/account", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 202, description = "The account's deletion is scheduled: every session ended (OAuth clients are told by back-channel logout), a mail with the link that keeps the account went out, and the account is erased at `deletion_due_at` unless its owner signs in or opens the link before", body = DeletionScheduled),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 403, description = "`step_up_required`: deleting the account needs a fresh authentication (POST /api/v1/sessions/step-up)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: asked too often lately (each request signs out every device and mails the owner); retry after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn delete_account(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
) -> Result<(StatusCode, Json<DeletionScheduled>), ApiError> {
    let scheduled = state.deletions.request(&who, address.as_deref()).await?;
    let body = DeletionScheduled { deletion_due_at: crate::clock::rfc3339(scheduled.due_at) };
    Ok((StatusCode::ACCEPTED, Json(body)))
}
