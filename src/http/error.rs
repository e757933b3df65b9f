//! The one place where errors become HTTP responses: `{"error": code, "message": text}`.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Error;

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, such as `invalid_credentials`.
    pub error: &'static str,
    /// Human-readable explanation; wording may change.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after_secs: Option<u64>,
    /// Fields beside `error` and `message` (the `mfa_token` and `methods` of `mfa_required`).
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None, extra: None }
    }

    /// Tells the client when to try again.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `Content-Type: application/json`",
        )
    }

    /// A body that could not be read: too large, too slow, or cut off.
    pub fn from_body(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if body_timed_out(&rejection) {
            Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body took too long to arrive")
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        } else {
            Self::new(StatusCode::BAD_REQUEST, "invalid_request", "the request body could not be read")
        }
    }

    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing_token", "send an access token as `Authorization: Bearer …`")
    }
}

/// The HTTP status that matches a domain error.
pub fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::InvalidEmail
        | Error::InvalidUsername(_)
        | Error::InvalidDevice(_)
        | Error::PasswordTooShort(_)
        | Error::PasswordTooLong(_)
        | Error::PasswordTooCommon
        | Error::InvalidFactor(_)
        | Error::InvalidPasskeyName
        | Error::EmailUnchanged
        | Error::InvalidClient(_)
        | Error::DeletionNotConfirmed => StatusCode::UNPROCESSABLE_ENTITY,
        Error::UsernameTaken | Error::EmailTaken | Error::EmailAlreadyVerified => StatusCode::CONFLICT,
        Error::InvalidCredentials
        | Error::InvalidToken
        | Error::TokenExpired
        | Error::TokenRevoked
        | Error::RefreshTokenReused
        | Error::InvalidDpopProof(_)
        | Error::DpopProofRequired
        | Error::UseDpopNonce
        | Error::MfaRequired { .. }
        | Error::InvalidMfaToken
        | Error::InvalidCode
        | Error::CodeAlreadyUsed
        | Error::PasskeyRejected
        | Error::InvalidClientCredentials => StatusCode::UNAUTHORIZED,
        Error::StepUpRequired
        | Error::EmailNotVerified
        | Error::MfaEnrolmentRequired
        | Error::InsufficientScope
        | Error::AccountDisabled
        | Error::SignupClosed
        | Error::InviteRequired
        | Error::InvalidInvite(_) => StatusCode::FORBIDDEN,
        Error::OAuth { code, .. } => match *code {
            "invalid_client" | "invalid_token" => StatusCode::UNAUTHORIZED,
            "insufficient_scope" => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        },
        Error::TotpAlreadyEnabled
        | Error::TotpNotEnrolled
        | Error::PasskeysUnavailable
        | Error::PasskeyAlreadyRegistered
        | Error::SecondFactorRequired
        | Error::ClientIdTaken
        | Error::SsoIdentityTaken
        | Error::LastSignInMethod
        | Error::NoPassword => StatusCode::CONFLICT,
        Error::UnknownProvider | Error::SsoIdentityNotFound | Error::PinNotFound => StatusCode::NOT_FOUND,
        Error::InvalidSsoState => StatusCode::BAD_REQUEST,
        Error::SsoFailed(_) => StatusCode::UNAUTHORIZED,
        Error::SsoUnavailable => StatusCode::BAD_GATEWAY,
        Error::DeviceNotFound
        | Error::NoSuchAccount(_)
        | Error::CredentialNotFound
        | Error::PasskeyNotFound
        | Error::ClientNotFound => StatusCode::NOT_FOUND,
        Error::InvalidLink | Error::InvalidCeremony => StatusCode::BAD_REQUEST,
        Error::WrongPassword | Error::PasswordResetRequired => StatusCode::FORBIDDEN,
        Error::Overloaded { .. } | Error::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::InvalidUserCode | Error::InvalidClaimToken | Error::InvalidWebhook(_) => StatusCode::BAD_REQUEST,
        Error::Store(_) | Error::Keyring(_) | Error::KeyringMismatch(_) | Error::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = status_of(&err);
        if err.is_internal() {
            // Details go to the log only; they never carry secrets (tokens and emails are not in errors).
            tracing::error!(error = %InternalDetail(&err), "internal error");
        }
        let retry_after_secs = err.retry_after_secs();
        let extra = match &err {
            Error::MfaRequired { mfa_token, methods, webauthn_options } => {
                let mut fields = serde_json::Map::new();
                fields.insert("mfa_token".into(), mfa_token.as_str().into());
                fields.insert("methods".into(), methods.clone().into());
                if let Some(options) = webauthn_options {
                    fields.insert("webauthn_options".into(), options.clone());
                }
                Some(fields)
            }
            _ => None,
        };
        Self { status, code: err.code(), message: err.to_string(), retry_after_secs, extra }
    }
}

struct InternalDetail<'a>(&'a Error);

impl std::fmt::Display for InternalDetail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Error::Store(e) => write!(f, "{e}"),
            Error::Keyring(e) => write!(f, "{e}"),
            other => write!(f, "{other}"),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.body_text())
            }
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", "the request body is not valid JSON")
            }
            JsonRejection::MissingJsonContentType(_) => Self::unsupported_media_type(),
            JsonRejection::BytesRejection(e) => Self::from_body(e),
            other => Self::new(StatusCode::BAD_REQUEST, "invalid_request", other.body_text()),
        }
    }
}

/// Whether reading a body failed because its next piece did not arrive in time (`[http]`).
pub fn body_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.extra {
            None => (self.status, Json(ErrorBody { error: self.code, message: self.message })).into_response(),
            Some(mut fields) => {
                fields.insert("error".into(), self.code.into());
                fields.insert("message".into(), self.message.into());
                (self.status, Json(fields)).into_response()
            }
        };
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // Wrong passwords and second-factor codes are not token problems: no challenge header for them.
        let about_credentials = matches!(
            self.code,
            "invalid_credentials" | "mfa_required" | "invalid_mfa_token" | "invalid_code" | "code_already_used"
        );
        if self.status == StatusCode::UNAUTHORIZED && !about_credentials {
            // RFC 6750 §3: tell bearer clients why their token was refused.
            let value = match self.code {
                "missing_token" => HeaderValue::from_static("Bearer realm=\"keywarden\""),
                // RFC 9449 §7.1: DPoP failures are told with the DPoP scheme.
                "invalid_dpop_proof" | "dpop_proof_required" => {
                    HeaderValue::from_static("DPoP realm=\"keywarden\", error=\"invalid_dpop_proof\"")
                }
                "use_dpop_nonce" => HeaderValue::from_static("DPoP realm=\"keywarden\", error=\"use_dpop_nonce\""),
                _ => HeaderValue::from_static("Bearer realm=\"keywarden\", error=\"invalid_token\""),
            };
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
