//! The one domain error type: every failure a client can see has a stable code and a human message.

use crate::keys::KeyringError;
use crate::mail::MailError;
use crate::store::{StoreError, UniqueField};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("that is not a valid email address")]
    InvalidEmail,
    #[error("{0}")]
    InvalidUsername(&'static str),
    #[error("this username is already taken")]
    UsernameTaken,
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error("the password must have at least {0} characters")]
    PasswordTooShort(usize),
    #[error("the password must have at most {0} characters")]
    PasswordTooLong(usize),
    #[error("this password is too common or too easy to guess; choose another")]
    PasswordTooCommon,
    #[error("{0}")]
    InvalidDevice(&'static str),
    #[error("the login or the password is wrong")]
    InvalidCredentials,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("this refresh token was already used; every token of its session has been revoked")]
    RefreshTokenReused,
    #[error("this link is invalid, has expired or was already used; ask for a new one")]
    InvalidLink,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("this account must choose a new password: use the link we emailed you, or ask for one at /reset")]
    PasswordResetRequired,
    #[error("no such device on this account")]
    DeviceNotFound,
    #[error("no account with id or username {0:?}")]
    NoSuchAccount(String),
    #[error("no such credential on this account")]
    CredentialNotFound,
    #[error("invalid DPoP proof: {0}")]
    InvalidDpopProof(&'static str),
    #[error("this token is bound to a key: present it as `Authorization: DPoP …` with a DPoP proof from that key")]
    DpopProofRequired,
    #[error("send a DPoP proof carrying the nonce from the DPoP-Nonce header")]
    UseDpopNonce,
    #[error("this account has a second factor: finish signing in with POST /api/v1/sessions/mfa")]
    MfaRequired {
        mfa_token: String,
        methods: Vec<&'static str>,
        /// A passkey challenge for `navigator.credentials.get()`, when the account has passkeys.
        webauthn_options: Option<serde_json::Value>,
    },
    #[error("this sign-in attempt has expired, was finished, or had too many wrong codes; sign in again")]
    InvalidMfaToken,
    #[error("the code is wrong or has expired")]
    InvalidCode,
    #[error("this code was already used; wait for the next one from your app")]
    CodeAlreadyUsed,
    #[error("{0}")]
    InvalidFactor(&'static str),
    #[error(
        "confirm it is you first: POST /api/v1/sessions/step-up with a code from your authenticator app or a \
         recovery code (or your password if you have no second factor)"
    )]
    StepUpRequired,
    #[error("confirm your email address first: open the link we mailed you when you signed up")]
    EmailNotVerified,
    #[error("an authenticator app is already set up; remove it before adding another")]
    TotpAlreadyEnabled,
    #[error("no authenticator app is being set up or in use on this account")]
    TotpNotEnrolled,
    #[error("passkeys are not available on this server: it is not reached at a domain name (see passkeys.rp_id)")]
    PasskeysUnavailable,
    #[error("this passkey request has expired or was already answered; start again")]
    InvalidCeremony,
    #[error("the passkey's answer could not be verified")]
    PasskeyRejected,
    #[error("no such passkey on this account")]
    PasskeyNotFound,
    #[error("this passkey is already registered")]
    PasskeyAlreadyRegistered,
    #[error("a passkey name must be 1 to 64 printable characters")]
    InvalidPasskeyName,
    #[error(
        "this account must set up two-step verification first: add an authenticator app \
         (POST /api/v1/mfa/totp) or a passkey (POST /api/v1/mfa/passkeys/options)"
    )]
    MfaEnrolmentRequired,
    #[error("two-step verification is required for this account: add another method before removing the last one")]
    SecondFactorRequired,
    #[error("this is already the account's email address")]
    EmailUnchanged,
    #[error("the account's email address is already confirmed")]
    EmailAlreadyVerified,
    #[error("{0}")]
    InvalidClient(&'static str),
    #[error("a client with this id is already registered")]
    ClientIdTaken,
    #[error("no such client")]
    ClientNotFound,
    #[error("client authentication failed")]
    InvalidClientCredentials,
    #[error(
        "this token was issued to an OAuth client: it works at that client's endpoints (/oauth/userinfo), not here"
    )]
    InsufficientScope,
    /// An OAuth 2.0 protocol error (RFC 6749 §5.2, §4.1.2.1; RFC 8628 §3.5) with its registered code.
    #[error("{description}")]
    OAuth { code: &'static str, description: String },
    #[error("that code is not valid or has expired: check it on your device and try again")]
    InvalidUserCode,
    #[error("Code not found or expired")]
    PinNotFound,
    #[error("this account is disabled: contact the people who run this service")]
    AccountDisabled,
    #[error("type your username exactly to confirm the deletion")]
    DeletionNotConfirmed,
    #[error("sign-up is closed here: ask the people who run this service for an account")]
    SignupClosed,
    #[error("sign-up here is by invitation: open the link in your invitation")]
    InviteRequired,
    #[error("{0}")]
    InvalidInvite(&'static str),
    #[error("this claim token is not valid: it was used, has expired or was never issued; get a new one")]
    InvalidClaimToken,
    #[error("webhooks: {0}")]
    InvalidWebhook(&'static str),
    #[error("no such sign-in provider")]
    UnknownProvider,
    #[error("this sign-in with another provider has expired, was already used or was not started in this browser; start again")]
    InvalidSsoState,
    #[error("the sign-in provider's answer was refused: {0}")]
    SsoFailed(String),
    #[error("the sign-in provider cannot be reached; try again later")]
    SsoUnavailable,
    #[error("this account at the provider is already linked to another account")]
    SsoIdentityTaken,
    #[error("no such linked account")]
    SsoIdentityNotFound,
    #[error("this account has no password: it signs in through its sign-in provider or with a passkey")]
    NoPassword,
    #[error("this is the account's last way to sign in: add a password, a passkey or another provider first")]
    LastSignInMethod,
    #[error("too many attempts; try again in {}", wait_in_words(*retry_after_secs))]
    RateLimited { retry_after_secs: u64 },
    #[error("the server is busy; try again shortly")]
    Overloaded { retry_after_secs: u64 },
    #[error("the database does not answer; try again in a moment")]
    DatabaseUnavailable,
    #[error("internal error")]
    Store(StoreError),
    #[error("internal error")]
    Keyring(#[from] KeyringError),
    /// The key file is not the one this database was used with (a start-up or operator error).
    #[error("{0}")]
    KeyringMismatch(String),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// The stable machine-readable code clients and scripts rely on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidEmail => "invalid_email",
            Self::InvalidUsername(_) => "invalid_username",
            Self::UsernameTaken => "username_taken",
            Self::EmailTaken => "email_taken",
            Self::PasswordTooShort(_) => "password_too_short",
            Self::PasswordTooLong(_) => "password_too_long",
            Self::PasswordTooCommon => "password_too_common",
            Self::InvalidDevice(_) => "invalid_device",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidLink => "invalid_link",
            Self::WrongPassword => "wrong_password",
            Self::PasswordResetRequired => "password_reset_required",
            Self::DeviceNotFound => "device_not_found",
            Self::NoSuchAccount(_) => "account_not_found",
            Self::CredentialNotFound => "credential_not_found",
            Self::InvalidDpopProof(_) => "invalid_dpop_proof",
            Self::DpopProofRequired => "dpop_proof_required",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::MfaRequired { .. } => "mfa_required",
            Self::InvalidMfaToken => "invalid_mfa_token",
            Self::InvalidCode => "invalid_code",
            Self::CodeAlreadyUsed => "code_already_used",
            Self::InvalidFactor(_) => "invalid_factor",
            Self::StepUpRequired => "step_up_required",
            Self::EmailNotVerified => "email_not_verified",
            Self::TotpAlreadyEnabled => "totp_already_enabled",
            Self::TotpNotEnrolled => "totp_not_enrolled",
            Self::PasskeysUnavailable => "passkeys_unavailable",
            Self::InvalidCeremony => "invalid_ceremony",
            Self::PasskeyRejected => "passkey_rejected",
            Self::PasskeyNotFound => "passkey_not_found",
            Self::PasskeyAlreadyRegistered => "passkey_already_registered",
            Self::InvalidPasskeyName => "invalid_passkey_name",
            Self::MfaEnrolmentRequired => "mfa_enrolment_required",
            Self::SecondFactorRequired => "second_factor_required",
            Self::EmailUnchanged => "email_unchanged",
            Self::EmailAlreadyVerified => "email_already_verified",
            Self::InvalidClient(_) => "invalid_client_metadata",
            Self::ClientIdTaken => "client_id_taken",
            Self::ClientNotFound => "client_not_found",
            Self::InvalidClientCredentials => "invalid_client",
            Self::InsufficientScope => "insufficient_scope",
            Self::OAuth { code, .. } => code,
            Self::InvalidUserCode => "invalid_user_code",
            Self::UnknownProvider => "unknown_provider",
            Self::PinNotFound => "pin_not_found",
            Self::InvalidClaimToken => "invalid_claim_token",
            Self::AccountDisabled => "account_disabled",
            Self::SignupClosed => "signup_closed",
            Self::DeletionNotConfirmed => "deletion_not_confirmed",
            Self::InviteRequired => "invite_required",
            Self::InvalidInvite(_) => "invalid_invite",
            Self::InvalidWebhook(_) => "invalid_webhook",
            Self::InvalidSsoState => "invalid_sso_state",
            Self::SsoFailed(_) => "sso_failed",
            Self::SsoUnavailable => "sso_unavailable",
            Self::SsoIdentityTaken => "sso_identity_taken",
            Self::SsoIdentityNotFound => "sso_identity_not_found",
            Self::LastSignInMethod => "last_sign_in_method",
            Self::NoPassword => "no_password",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::Store(_) | Self::Keyring(_) | Self::Internal(_) => "internal_error",
            Self::KeyringMismatch(_) => "keyring_mismatch",
        }
    }

    /// Failures of keywarden itself rather than of the request; they are logged, never shown.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Keyring(_) | Self::KeyringMismatch(_) | Self::Internal(_))
    }

    /// The server could not serve now (busy, or its database out of reach): nothing was learnt
    /// about the request, which may succeed when retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Overloaded { .. } | Self::DatabaseUnavailable)
    }

    /// An OAuth protocol error with its registered code and a human description.
    pub fn oauth(code: &'static str, description: impl Into<String>) -> Self {
        Self::OAuth { code, description: description.into() }
    }

    pub(crate) fn from_conflict(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(UniqueField::Username) => Self::UsernameTaken,
            StoreError::Conflict(UniqueField::Email) => Self::EmailTaken,
            other => Self::Store(other),
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            // What went wrong is the same for every request meanwhile: it is logged once per
            // interval (`Outages`), not with each answer.
            StoreError::Unavailable(cause) => {
                crate::domain::outages::database_unavailable(&cause);
                Self::DatabaseUnavailable
            }
            other => Self::Store(other),
        }
    }
}

impl From<MailError> for Error {
    fn from(err: MailError) -> Self {
        match err {
            MailError::InvalidRecipient => Self::InvalidEmail,
            MailError::Message(message) => Self::Internal(message),
            MailError::Store(err) => Self::from(err),
        }
    }
}

impl Error {
    /// Seconds a client should wait before retrying, for the errors that have an answer to that.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Overloaded { retry_after_secs } | Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::DatabaseUnavailable => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

/// The wait suggested while the database does not answer: recovery is automatic and quick.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "1 second", "40 seconds", "3 minutes", "2 hours": a wait as people read it (rounded up).
fn wait_in_words(secs: u64) -> String {
    let (amount, unit) = match secs {
        0..=59 => (secs.max(1), "second"),
        60..=3599 => (secs.div_ceil(60), "minute"),
        _ => (secs.div_ceil(3600), "hour"),
    };
    format!("{amount} {unit}{}", if amount == 1 { "" } else { "s" })
}

#[cfg(test)]
mod wait_tests {
    #[test]
    fn waits_read_naturally() {
        assert_eq!(super::wait_in_words(1), "1 second");
        assert_eq!(super::wait_in_words(45), "45 seconds");
        assert_eq!(super::wait_in_words(61), "2 minutes");
        assert_eq!(super::wait_in_words(900), "15 minutes");
        assert_eq!(super::wait_in_words(3600), "1 hour");
    }
}
