//! OpenID Connect Back-Channel Logout 1.0: the logout token that tells a client a person's session
//! with it ended, and the queue of such notices — which also carries the Security Event Token
//! (RFC 8417, OpenID RISC `account-purged`) that tells a client an account it knows was erased.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::OAuth;
use crate::domain::error::{Error, Result};
use crate::store::LogoutJob;

/// The event a logout token carries (Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token's claims. It has no `nonce`, so it can never pass for an ID token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogoutTokenClaims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub sub: String,
    /// The session of the ID tokens the client received (their `sid`).
    pub sid: String,
    pub events: Value,
}

/// The RISC event a Security Event Token carries when an account was erased.
pub const ACCOUNT_PURGED_EVENT: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";

/// A Security Event Token's claims (RFC 8417 §2.2): no `sub` of its own; the subject is in the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityEventClaims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub jti: String,
    pub events: Value,
}

/// A notice ready to send: where, and the signed token.
#[derive(Debug, Clone)]
pub struct LogoutNotice {
    pub uri: String,
    pub logout_token: String,
}

impl OAuth {
    /// The signed logout token for an ended session, or `None` if its client no longer wants one.
    pub async fn logout_notice(&self, job: &LogoutJob) -> Result<Option<LogoutNotice>> {
        let client = match self.clients.get(&job.client_id).await {
            Ok(client) => client,
            Err(Error::ClientNotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let Some(uri) = client.backchannel_logout_uri.clone() else { return Ok(None) };
        let now = self.clock.now_ms() / 1000;
        let claims = LogoutTokenClaims {
            iss: self.issuer.clone(),
            aud: client.id.clone(),
            iat: now,
            exp: now + 120,
            jti: uuid::Uuid::new_v4().to_string(),
            sub: job.user_id.clone(),
            sid: job.session_id.clone(),
            events: json!({ BACKCHANNEL_LOGOUT_EVENT: {} }),
        };
        let logout_token =
            self.signer.sign(client.id_token_alg, "logout+jwt", &claims).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(LogoutNotice { uri, logout_token }))
    }

    /// The signed `account-purged` Security Event Token for an erased account, or `None` if its
    /// client no longer wants such events. The subject is the account id the client knew (`sub`).
    pub async fn account_purged_notice(&self, job: &LogoutJob) -> Result<Option<LogoutNotice>> {
        let client = match self.clients.get(&job.client_id).await {
            Ok(client) => client,
            Err(Error::ClientNotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let Some(uri) = client.security_event_uri.clone() else { return Ok(None) };
        let subject = json!({ "subject_type": "iss_sub", "iss": self.issuer, "sub": job.user_id });
        let claims = SecurityEventClaims {
            iss: self.issuer.clone(),
            aud: client.id.clone(),
            iat: self.clock.now_ms() / 1000,
            jti: uuid::Uuid::new_v4().to_string(),
            events: json!({ ACCOUNT_PURGED_EVENT: { "subject": subject } }),
        };
        let token = self
            .signer
            .sign(client.id_token_alg, "secevent+jwt", &claims)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(LogoutNotice { uri, logout_token: token }))
    }
}

/// An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0 §2).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndSessionRequest {
    pub id_token_hint: Option<String>,
    pub client_id: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

/// What an RP-initiated logout ended, and where the browser goes next.
#[derive(Debug, Clone)]
pub struct EndedSession {
    /// The person whose session with the client ended: the browser is signed out too if it is theirs.
    pub user_id: String,
    pub client_name: String,
    /// The client's post-logout redirect with its `state`, if it asked for one.
    pub redirect: Option<String>,
}

/// The claims of an `id_token_hint` that matter here.
#[derive(Debug, Deserialize)]
struct HintClaims {
    aud: String,
    sub: String,
    sid: String,
}

impl OAuth {
    /// Ends the client's session named by its ID token. The hint may have expired, but must be
    /// ours; a post-logout redirect must be one of the client's registered redirect URIs.
    pub async fn end_session(&self, request: &EndSessionRequest) -> Result<EndedSession> {
        let hint = request
            .id_token_hint
            .as_deref()
            .ok_or_else(|| Error::oauth("invalid_request", "id_token_hint is missing"))?;
        let claims: HintClaims = self
            .signer
            .verify(hint, &self.issuer)
            .ok_or_else(|| Error::oauth("invalid_request", "id_token_hint is not an ID token from this server"))?;
        if request.client_id.as_deref().is_some_and(|id| id != claims.aud) {
            return Err(Error::oauth("invalid_request", "client_id differs from the ID token's audience"));
        }
        let client = self.clients.get(&claims.aud).await?;
        let redirect = match &request.post_logout_redirect_uri {
            Some(uri) if client.allows_redirect(uri) => {
                let mut url = url::Url::parse(uri).map_err(|e| Error::Internal(e.to_string()))?;
                if let Some(state) = &request.state {
                    url.query_pairs_mut().append_pair("state", state);
                }
                Some(url.to_string())
            }
            Some(_) => {
                return Err(Error::oauth(
                    "invalid_request",
                    "post_logout_redirect_uri is not registered for this client",
                ))
            }
            None => None,
        };
        let session = self.store.sessions_of(&claims.sub).await?.into_iter().find(|s| s.id == claims.sid);
        if session.is_some_and(|s| s.channel == client.id) {
            self.store.revoke_session(&claims.sid, self.clock.now_ms()).await?;
            self.revocations.validations().forget_session(&claims.sid);
            tracing::info!(user_id = %claims.sub, client_id = %client.id, session_id = %claims.sid, "signed out by the client");
        }
        Ok(EndedSession { user_id: claims.sub, client_name: client.name, redirect })
    }
}
