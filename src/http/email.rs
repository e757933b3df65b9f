//! The account's email address: confirming it, and moving the account to a new one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress, EnrollingCaller, OptionalCaller};
use super::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyEmail {
    /// The `kw_ev_…` token from the link mailed at sign-up, or the `kw_ec_…` token from the link
    /// mailed to a new address.
    #[schema(min_length = 1)]
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/email/verify", tag = "accounts", request_body = VerifyEmail,
    responses(
        (status = 204, description = "The account's email address is verified; for a change's link, the new address is now the account's. The first proof of an account's address removes what was set up on it before (second factors, passkeys, device keys, linked providers of an account with a password) and signs out every session except the caller's, when the request carries the account's access token"),
        (status = 400, description = "`invalid_link`", body = ErrorBody),
        (status = 409, description = "`email_taken`: another account took the new address meanwhile", body = ErrorBody),
    ))]
pub async fn verify_email(
    State(state): State<AppState>,
    OptionalCaller(caller): OptionalCaller,
    ApiJson(body): ApiJson<VerifyEmail>,
) -> Result<StatusCode, ApiError> {
    state.accounts.verify_email(&body.token, caller.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationSent {
    /// Always `verification_sent`.
    pub status: &'static str,
}

#[utoipa::path(post, path = "/api/v1/email/verification", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 202, description = "A new verification link (valid 48 hours) was mailed to the account's address; older links no longer work", body = VerificationSent),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 409, description = "`email_already_verified`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: asked too often; see Retry-After", body = ErrorBody),
    ))]
pub async fn resend_verification(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
) -> Result<(StatusCode, Json<VerificationSent>), ApiError> {
    state.accounts.resend_verification(&who).await?;
    Ok((StatusCode::ACCEPTED, Json(VerificationSent { status: "verification_sent" })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeEmail {
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub new_email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeEmailAccepted {
    /// Always `confirmation_sent`: the change happens when the link mailed to the new address is used.
    pub status: &'static str,
}

#[utoipa::path(post, path = "/api/v1/email/change", tag = "accounts", security(("bearer" = [])),
    request_body = ChangeEmail,
    responses(
        (status = 202, description = "A link valid 24 hours was mailed to the new address, and the current address was told", body = ChangeEmailAccepted),
        (status = 403, description = "`step_up_required`: POST /api/v1/sessions/step-up first", body = ErrorBody),
        (status = 409, description = "`email_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `email_unchanged`", body = ErrorBody),
    ))]
pub async fn change_email(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<ChangeEmail>,
) -> Result<(StatusCode, Json<ChangeEmailAccepted>), ApiError> {
    state.accounts.request_email_change(&who, &body.new_email, address.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(ChangeEmailAccepted { status: "confirmation_sent" })))
}
