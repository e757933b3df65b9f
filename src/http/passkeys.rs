//! Passkey endpoints: registering, listing, renaming and removing passkeys, and passwordless sign-in.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::api::{DeviceBody, TokenResponse};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress, EnrollingCaller, TokenRequestProof, UserAgent};
use super::AppState;
use crate::domain::device_info::DeviceInfo;
use crate::domain::passkeys::{Assertion, Ceremony, PasskeyView};
use crate::domain::sessions::{Issue, PasskeySignIn};
use crate::obs::metrics::Outcome;

#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyResponse {
    /// Send it back with the browser's answer.
    pub ceremony_id: String,
    /// `{"publicKey": …}` for `navigator.credentials.create()` / `.get()`; binary fields in base64url.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

impl From<Ceremony> for CeremonyResponse {
    fn from(c: Ceremony) -> Self {
        Self { ceremony_id: c.ceremony_id, options: c.options }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyResponse {
    pub id: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl From<PasskeyView> for PasskeyResponse {
    fn from(p: PasskeyView) -> Self {
        Self { id: p.id, name: p.name, created_at: p.created_at, last_used_at: p.last_used_at }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyResponse>,
}

#[utoipa::path(get, path = "/api/v1/mfa/passkeys", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's passkeys, oldest first", body = PasskeyList),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 403, description = "`step_up_required`: sign in again or POST /api/v1/sessions/step-up (with the second factor if the account has one) first; `email_not_verified`: prove the address with the mailed link first", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
) -> Result<Json<PasskeyList>, ApiError> {
    let passkeys = state.factors.passkeys().list(&who.user_id).await?;
    Ok(Json(PasskeyList { passkeys: passkeys.into_iter().map(Into::into).collect() }))
}

#[utoipa::path(post, path = "/api/v1/mfa/passkeys/options", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 200, description = "A challenge for `navigator.credentials.create()`; it works once, for `mfa.challenge_ttl_secs`", body = CeremonyResponse),
        (status = 403, description = "`step_up_required`: sign in again or POST /api/v1/sessions/step-up (with the second factor if the account has one) first; `email_not_verified`: prove the address with the mailed link first", body = ErrorBody),
        (status = 409, description = "`passkeys_unavailable`: this server is not reached at a domain name", body = ErrorBody),
    ))]
pub async fn registration_options(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
) -> Result<Json<CeremonyResponse>, ApiError> {
    Ok(Json(state.factors.passkey_options(&who).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AddPasskeyRequest {
    #[schema(min_length = 1)]
    pub ceremony_id: String,
    /// What the person calls it ("Work laptop"), 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, binary fields in base64url.
    #[schema(value_type = Object)]
    pub webauthn_response: RegisterPublicKeyCredential,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddedPasskeyResponse {
    pub passkey: PasskeyResponse,
    /// Present when this is the account's first second factor: ten single-use codes, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/mfa/passkeys", tag = "mfa", security(("bearer" = [])),
    request_body = AddPasskeyRequest,
    responses(
        (status = 201, description = "The passkey is registered: it signs in alone, and is a second factor after the password", body = AddedPasskeyResponse),
        (status = 400, description = "`invalid_ceremony`: expired, already answered, or not this account's", body = ErrorBody),
        (status = 401, description = "`passkey_rejected`, or a token problem", body = ErrorBody),
        (status = 409, description = "`passkey_already_registered`, `passkeys_unavailable`", body = ErrorBody),
        (status = 422, description = "`invalid_passkey_name`, `invalid_request`", body = ErrorBody),
    ))]
pub async fn add(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<AddPasskeyRequest>,
) -> Result<(StatusCode, Json<AddedPasskeyResponse>), ApiError> {
    let added = state
        .factors
        .add_passkey(&who, &body.ceremony_id, &body.name, &body.webauthn_response, address.as_deref())
        .await?;
    let recovery_codes = added.recovery_codes.map(|codes| codes.iter().map(|c| c.to_string()).collect());
    Ok((StatusCode::CREATED, Json(AddedPasskeyResponse { passkey: added.passkey.into(), recovery_codes })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenamePasskeyRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

#[utoipa::path(patch, path = "/api/v1/mfa/passkeys/{id}", tag = "mfa", security(("bearer" = [])),
    request_body = RenamePasskeyRequest,
    params(("id" = String, Path, description = "The passkey's id")),
    responses(
        (status = 200, description = "Renamed", body = PasskeyResponse),
        (status = 404, description = "`passkey_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_passkey_name`", body = ErrorBody),
    ))]
pub async fn rename(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenamePasskeyRequest>,
) -> Result<Json<PasskeyResponse>, ApiError> {
    Ok(Json(state.factors.rename_passkey(&who, &id, &body.name, address.as_deref()).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/mfa/passkeys/{id}", tag = "mfa", security(("bearer" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
    responses(
        (status = 204, description = "Removed; with no second factor left, the recovery codes are removed too"),
        (status = 403, description = "`step_up_required`: removing any passkey needs a fresh sign-in or step-up", body = ErrorBody),
        (status = 404, description = "`passkey_not_found`", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.factors.remove_passkey(&who, &id, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/sessions/passkey/options", tag = "sessions",
    responses(
        (status = 200, description = "A challenge for `navigator.credentials.get()` that any passkey of any account can answer", body = CeremonyResponse),
        (status = 409, description = "`passkeys_unavailable`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many challenges from this address; `Retry-After` says when to ask again", body = ErrorBody),
    ))]
pub async fn sign_in_options(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
) -> Result<Json<CeremonyResponse>, ApiError> {
    Ok(Json(state.factors.passkey_sign_in_options(address.as_deref()).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeySignInRequest {
    #[schema(min_length = 1)]
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, binary fields in base64url.
    #[schema(value_type = Object)]
    pub webauthn_response: PublicKeyCredential,
    pub device: Option<DeviceBody>,
}

#[utoipa::path(post, path = "/api/v1/sessions/passkey", tag = "sessions", request_body = PasskeySignInRequest,
    responses(
        (status = 201, description = "Signed in with a passkey alone; the session counts as verified with two factors", body = TokenResponse),
        (status = 400, description = "`invalid_ceremony`", body = ErrorBody),
        (status = 401, description = "`passkey_rejected`: not a passkey registered here, or its answer did not verify", body = ErrorBody),
        (status = 403, description = "`account_disabled`: an operator disabled the account", body = ErrorBody),
        (status = 422, description = "`invalid_device`, `invalid_request`", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    UserAgent(user_agent): UserAgent,
    TokenRequestProof(dpop): TokenRequestProof,
    ApiJson(body): ApiJson<PasskeySignInRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let request = PasskeySignIn {
        assertion: Assertion { ceremony_id: Some(body.ceremony_id), credential: Box::new(body.webauthn_response) },
        device: body.device.map(DeviceInfo::from),
        address,
        user_agent,
        dpop,
        issue: Issue::TokenPair,
    };
    let result = state.sessions.sign_in_with_passkey(request).await;
    state.metrics.sign_ins.get_or_create(&Outcome::of(&result, "success")).inc();
    Ok((StatusCode::CREATED, Json(result?.into())))
}

#[utoipa::path(post, path = "/api/v1/sessions/step-up/options", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 200, description = "A challenge for one of the caller's passkeys; answer it in POST /api/v1/sessions/step-up", body = CeremonyResponse),
        (status = 404, description = "`passkey_not_found`: the account has no passkey", body = ErrorBody),
    ))]
pub async fn step_up_options(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<CeremonyResponse>, ApiError> {
    Ok(Json(state.factors.step_up_options(&who).await?.into()))
}
