//! Who is calling: the account, session and device behind a valid token, and how it was presented.

use super::dpop::Proof;
use crate::store::TokenRecord;

/// Who presented a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user_id: String,
    pub session_id: String,
    pub device_id: String,
    pub channel: String,
    /// When the session last proved its person (Unix ms; 0 for never), for fresh authentication.
    pub verified_at: i64,
    /// Whether that proof included a second factor or a passkey.
    pub verified_second_factor: bool,
    /// The session may only enrol a second factor (`mfa.require` and the account has none yet).
    pub enrolment_only: bool,
    /// The OAuth client the token was issued to, and what the user granted it; `None` for
    /// keywarden's own clients (pages, apps and devices that sign in with the API).
    pub client_id: Option<String>,
    pub scope: Option<String>,
}

impl From<TokenRecord> for Authenticated {
    /// Who a stored token speaks for.
    fn from(record: TokenRecord) -> Self {
        Self {
            user_id: record.user_id,
            session_id: record.session_id,
            device_id: record.device_id,
            channel: record.channel,
            verified_at: record.verified_at,
            verified_second_factor: record.verified_second_factor != 0,
            enrolment_only: record.enrolment_only != 0,
            client_id: record.client_id,
            scope: record.scope,
        }
    }
}

/// How an access token was presented.
#[derive(Debug, Clone, Default)]
pub struct Presentation {
    /// `Authorization: DPoP …` rather than `Bearer …`.
    pub dpop_scheme: bool,
    /// The verified proof sent with it (its `ath` already matched the token).
    pub proof: Option<Proof>,
}
