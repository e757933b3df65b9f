//! Second-factor endpoints: TOTP enrolment, recovery codes, finishing a sign-in, and step-up.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webauthn_rs::prelude::PublicKeyCredential;
use zeroize::Zeroizing;

use super::api::TokenResponse;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller, ClientAddress, EnrollingCaller, TokenRequestProof};
use super::passkeys::PasskeyResponse;
use super::AppState;
use crate::domain::passkeys::Assertion;
use crate::domain::second_factors::{Factor, FactorStatus, StepUp};
use crate::domain::sessions::FinishSignIn;
use crate::obs::metrics::Outcome;

#[derive(Debug, Serialize, ToSchema)]
pub struct FactorsResponse {
    /// An authenticator app is set up and asked for at sign-in.
    pub totp: bool,
    /// An authenticator app is being set up but not yet confirmed.
    pub totp_pending: bool,
    pub recovery_codes_remaining: i64,
    /// The account's passkeys; each signs in alone and is a second factor after the password.
    pub passkeys: Vec<PasskeyResponse>,
    /// False when this server cannot use passkeys (it is not reached at a domain name).
    pub passkeys_available: bool,
}

impl From<FactorStatus> for FactorsResponse {
    fn from(s: FactorStatus) -> Self {
        Self {
            totp: s.totp,
            totp_pending: s.totp_pending,
            recovery_codes_remaining: s.recovery_codes_remaining,
            passkeys: s.passkeys.into_iter().map(Into::into).collect(),
            passkeys_available: s.passkeys_available,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/mfa", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's second factors", body = FactorsResponse),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
    ))]
pub async fn factors(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
) -> Result<Json<FactorsResponse>, ApiError> {
    Ok(Json(state.factors.status(&who.user_id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolmentResponse {
    /// The shared secret in base32, for typing into an app.
    pub secret: String,
    /// The `otpauth://totp/…` URI an app scans (also as the QR code on `/security`).
    pub otpauth_uri: String,
}

#[utoipa::path(post, path = "/api/v1/mfa/totp", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 201, description = "A new secret; it is not used until confirmed with a first code. Calling again replaces an unconfirmed secret.", body = TotpEnrolmentResponse),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody),
        (status = 403, description = "`step_up_required`: sign in again or POST /api/v1/sessions/step-up (with the second factor if the account has one) first; `email_not_verified`: prove the address with the mailed link first", body = ErrorBody),
        (status = 409, description = "`totp_already_enabled`", body = ErrorBody),
    ))]
pub async fn begin_totp(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
    ClientAddress(address): ClientAddress,
) -> Result<(StatusCode, Json<TotpEnrolmentResponse>), ApiError> {
    let enrolment = state.factors.begin_totp(&who, address.as_deref()).await?;
    let body =
        TotpEnrolmentResponse { secret: enrolment.secret.to_string(), otpauth_uri: enrolment.otpauth_uri.to_string() };
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// Six digits from the authenticator app.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    /// Ten single-use codes, shown this once; each signs in once when the app is lost.
    pub recovery_codes: Vec<String>,
}

fn codes_response(codes: Vec<Zeroizing<String>>) -> Json<RecoveryCodesResponse> {
    Json(RecoveryCodesResponse { recovery_codes: codes.iter().map(|c| c.to_string()).collect() })
}

#[utoipa::path(post, path = "/api/v1/mfa/totp/confirm", tag = "mfa", security(("bearer" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The app is active; the recovery codes are shown once", body = RecoveryCodesResponse),
        (status = 401, description = "`invalid_code`, or a token problem", body = ErrorBody),
        (status = 403, description = "`step_up_required`: sign in again or POST /api/v1/sessions/step-up (with the second factor if the account has one) first; `email_not_verified`: prove the address with the mailed link first", body = ErrorBody),
        (status = 409, description = "`totp_not_enrolled` (call POST /api/v1/mfa/totp first), `totp_already_enabled`", body = ErrorBody),
    ))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    EnrollingCaller(who): EnrollingCaller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodesResponse>, ApiError> {
    Ok(codes_response(state.factors.confirm_totp(&who, &body.code, address.as_deref()).await?))
}

#[utoipa::path(delete, path = "/api/v1/mfa/totp", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 204, description = "The app and its recovery codes are removed"),
        (status = 403, description = "`step_up_required`: POST /api/v1/sessions/step-up first", body = ErrorBody),
        (status = 409, description = "`totp_not_enrolled`", body = ErrorBody),
    ))]
pub async fn disable_totp(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
) -> Result<StatusCode, ApiError> {
    state.factors.disable_totp(&who, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/mfa/recovery-codes", tag = "mfa", security(("bearer" = [])),
    responses(
        (status = 200, description = "A new set; every earlier code stops working", body = RecoveryCodesResponse),
        (status = 403, description = "`step_up_required`: POST /api/v1/sessions/step-up first", body = ErrorBody),
        (status = 409, description = "`totp_not_enrolled`", body = ErrorBody),
    ))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Caller(who): Caller,
    ClientAddress(address): ClientAddress,
) -> Result<Json<RecoveryCodesResponse>, ApiError> {
    Ok(codes_response(state.factors.regenerate_recovery_codes(&who, address.as_deref()).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FinishSignInRequest {
    /// The `mfa_token` from the `mfa_required` answer of POST /api/v1/sessions.
    #[schema(min_length = 1)]
    pub mfa_token: String,
    /// Six digits from the authenticator app.
    #[serde(default)]
    pub code: Option<String>,
    /// One of the recovery codes, instead of `code`.
    #[serde(default)]
    pub recovery_code: Option<String>,
    /// Instead of a code: the `PublicKeyCredential` from `navigator.credentials.get()` answering the
    /// `webauthn_options` of the `mfa_required` answer.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub webauthn_response: Option<PublicKeyCredential>,
}

#[utoipa::path(post, path = "/api/v1/sessions/mfa", tag = "sessions", request_body = FinishSignInRequest,
    responses(
        (status = 201, description = "Signed in", body = TokenResponse),
        (status = 400, description = "`invalid_ceremony`: the passkey challenge was already answered; sign in again", body = ErrorBody),
        (status = 401, description = "`invalid_code`, `code_already_used`, `passkey_rejected`, `invalid_mfa_token` (expired, used, or too many wrong codes: sign in again), `dpop_proof_required`, `invalid_dpop_proof`", body = ErrorBody),
        (status = 403, description = "`account_disabled`: every factor was right but an operator disabled the account", body = ErrorBody),
        (status = 422, description = "`invalid_factor`: send exactly one of `code`, `recovery_code` and `webauthn_response`", body = ErrorBody),
    ))]
pub async fn finish_sign_in(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    TokenRequestProof(dpop): TokenRequestProof,
    ApiJson(body): ApiJson<FinishSignInRequest>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let passkey = body.webauthn_response.map(|c| Assertion { ceremony_id: None, credential: Box::new(c) });
    let factor = Factor::from_fields(body.code, body.recovery_code, passkey)?;
    let finish = FinishSignIn { mfa_token: body.mfa_token, factor, address, dpop };
    let result = state.sessions.finish_sign_in(finish).await;
    state.metrics.sign_ins.get_or_create(&Outcome::of(&result, "success")).inc();
    Ok((StatusCode::CREATED, Json(result?.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StepUpRequest {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub recovery_code: Option<String>,
    /// Only for accounts without a second factor.
    #[serde(default)]
    pub password: Option<String>,
    /// With `webauthn_response`: the challenge from POST /api/v1/sessions/step-up/options.
    #[serde(default)]
    pub ceremony_id: Option<String>,
    /// A passkey's answer (`navigator.credentials.get()`) to that challenge.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub webauthn_response: Option<PublicKeyCredential>,
}

#[utoipa::path(post, path = "/api/v1/sessions/step-up", tag = "sessions", security(("bearer" = [])),
    request_body = StepUpRequest,
    responses(
        (status = 204, description = "This session may take sensitive actions for the next `mfa.step_up_secs` seconds"),
        (status = 400, description = "`invalid_ceremony`", body = ErrorBody),
        (status = 401, description = "`invalid_code`, `code_already_used`, `passkey_rejected`, or a token problem", body = ErrorBody),
        (status = 403, description = "`wrong_password`", body = ErrorBody),
        (status = 422, description = "`invalid_factor`: a second factor for accounts that have one, else the password", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many wrong codes or passwords for this account or address; see Retry-After", body = ErrorBody),
    ))]
pub async fn step_up(
    State(state): State<AppState>,
    // A session limited to enrolling its first factor may need to step up to do that.
    EnrollingCaller(who): EnrollingCaller,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<StepUpRequest>,
) -> Result<StatusCode, ApiError> {
    let passkey = body.webauthn_response.map(|c| Assertion { ceremony_id: body.ceremony_id, credential: Box::new(c) });
    let proof = match body.password {
        Some(password) if body.code.is_none() && body.recovery_code.is_none() && passkey.is_none() => {
            StepUp::Password(Zeroizing::new(password))
        }
        Some(_) => {
            return Err(crate::domain::Error::InvalidFactor(
                "send one of `code`, `recovery_code`, `webauthn_response` or `password`",
            )
            .into())
        }
        None => StepUp::Factor(Factor::from_fields(body.code, body.recovery_code, passkey)?),
    };
    state.factors.step_up(&who, proof, address.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
