//! Password change and reset.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress};
use super::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    #[schema(format = Password, min_length = 1)]
    pub current_password: String,
    #[schema(format = Password, min_length = 8, max_length = 256)]
    pub new_password: String,
    /// Sign out every other device (the one making this request stays signed in).
    #[serde(default)]
    pub sign_out_devices: bool,
}

#[utoipa::path(post, path = "/api/v1/password/change", tag = "passwords", security(("bearer" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "Password changed; with `sign_out_devices`, every other device's tokens are dead"),
        (status = 403, description = "`wrong_password`", body = ErrorBody),
        (status = 422, description = "`password_too_short`, `password_too_long`, `password_too_common`", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    state
        .recovery
        .change(&who, &body.current_password, &body.new_password, body.sign_out_devices, address.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub status: &'static str,
}

#[utoipa::path(post, path = "/api/v1/password/reset-request", tag = "passwords", request_body = ResetRequest,
    responses(
        (status = 202, description = "Always the same answer: if the address has an account, a single-use link valid 30 minutes is mailed to it", body = Accepted),
        (status = 422, description = "`invalid_email`: not an email address at all", body = ErrorBody),
    ))]
pub async fn request_reset(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    state.recovery.request_reset(&body.email, address).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })))
}

fn signed_out_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPassword {
    /// The `kw_pr_…` token from the emailed link.
    #[schema(min_length = 1)]
    pub token: String,
    #[schema(format = Password, min_length = 8, max_length = 256)]
    pub new_password: String,
    /// "Sign out connected devices after password change"; on unless set to false.
    #[serde(default = "signed_out_by_default")]
    #[schema(default = true)]
    pub sign_out_devices: bool,
}

#[utoipa::path(post, path = "/api/v1/password/reset", tag = "passwords", request_body = ResetPassword,
    responses(
        (status = 204, description = "Password set; the link is spent; with `sign_out_devices` (default) every existing token is dead"),
        (status = 400, description = "`invalid_link`: unknown, expired, superseded or already used", body = ErrorBody),
        (status = 422, description = "`password_too_short`, `password_too_long`, `password_too_common`", body = ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<ResetPassword>,
) -> Result<StatusCode, ApiError> {
    state.recovery.reset(&body.token, &body.new_password, body.sign_out_devices, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
