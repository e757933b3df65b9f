//! The token endpoint's grants (RFC 6749 §4.1.3, §6): authorization codes with PKCE and refresh
//! tokens, both rotating into ordinary keywarden sessions of the client's channel.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::authorize::{pkce_shaped, CodeGrant};
use super::{ClientCredentials, OAuth, Scope};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::dpop::Proof;
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;
use crate::domain::tokens::TokenKind;
use crate::store::{DeviceSighting, OAuthCodeRecord, OAuthGrant, SessionStart, Verified};

/// A token request, whatever its grant.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub device_code: Option<String>,
    pub client: ClientCredentials,
    /// A verified DPoP proof sent with the request: the tokens are bound to its key.
    pub dpop: Option<Proof>,
    pub address: Option<String>,
}

/// The successful answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: Zeroizing<String>,
    /// `Bearer`, or `DPoP` for key-bound tokens.
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Zeroizing<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

/// RFC 8628 §3.4.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What a grant gives, and to whom.
pub(super) struct Issue<'a> {
    pub client: &'a Client,
    pub user_id: &'a str,
    /// The device on `/security`: client identifier, product, platform, name.
    pub device: (String, String, String, String),
    pub scope: &'a Scope,
    pub auth_time: i64,
    pub nonce: Option<&'a str>,
    pub dpop: Option<&'a Proof>,
    pub address: Option<&'a str>,
    pub grant_type: &'static str,
}

/// What a grant is redeemed with, spent in the transaction that starts its session.
pub(super) enum Redemption<'a> {
    Code(&'a [u8]),
    DeviceCode(&'a [u8]),
}

fn invalid_grant(description: &str) -> Error {
    Error::oauth("invalid_grant", description)
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::oauth("invalid_request", format!("{name} is missing")))
}

impl OAuth {
    pub async fn token(&self, request: TokenRequest) -> Result<TokenResponse> {
        let grant_type = required(&request.grant_type, "grant_type")?.to_owned();
        let client = self.authenticate_client(&request.client).await?;
        match grant_type.as_str() {
            "authorization_code" => self.exchange_code(&client, request).await,
            "refresh_token" => self.refresh(&client, request).await,
            DEVICE_CODE_GRANT => self.exchange_device_code(&client, request).await,
            "client_credentials" => self.client_credentials(&client, request.dpop.map(|p| p.jkt)),
            other => Err(Error::oauth("unsupported_grant_type", format!("grant_type {other:?} is not supported"))),
        }
    }

    async fn exchange_code(&self, client: &Client, request: TokenRequest) -> Result<TokenResponse> {
        let code = required(&request.code, "code")?;
        let record = self.find_code(code).await?.ok_or_else(|| invalid_grant("the code is not valid"))?;
        if record.client_id != client.id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        let now = self.clock.now_ms();
        if record.used_at.is_some() {
            self.code_reused(&record, request.address.as_deref()).await?;
            return Err(invalid_grant("the code was already used; the tokens it gave have been revoked"));
        }
        if record.expires_at <= now {
            return Err(invalid_grant("the code has expired"));
        }
        let grant: CodeGrant = serde_json::from_str(&record.grant_json).map_err(|e| Error::Internal(e.to_string()))?;
        if request.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
            return Err(invalid_grant("redirect_uri differs from the authorization request's"));
        }
        check_pkce(grant.code_challenge.as_deref(), request.code_verifier.as_deref())?;
        if let Some(jkt) = &grant.dpop_jkt {
            match &request.dpop {
                Some(proof) if proof.jkt == *jkt => {}
                _ => {
                    return Err(Error::oauth(
                        "invalid_dpop_proof",
                        "the code is bound to a DPoP key: send a proof from it",
                    ))
                }
            }
        }

        let scope = Scope::parse(&grant.scope)?;
        let device = grant.device;
        let issue = Issue {
            client,
            user_id: &record.user_id,
            device: (device.client_id, device.product, device.platform, device.name),
            scope: &scope,
            auth_time: grant.auth_time,
            nonce: grant.nonce.as_deref(),
            dpop: request.dpop.as_ref(),
            address: request.address.as_deref(),
            grant_type: "authorization_code",
        };
        match self.issue(issue, Redemption::Code(&record.digest)).await? {
            Some(tokens) => Ok(tokens),
            None => {
                // Spent by a concurrent request between our read and our write: the same as a reuse.
                let record = self.find_code(code).await?.unwrap_or(record);
                self.code_reused(&record, request.address.as_deref()).await?;
                Err(invalid_grant("the code was already used; the tokens it gave have been revoked"))
            }
        }
    }

    /// Starts the session a grant gives, spending what it was redeemed with in the same
    /// transaction; `None` if that was spent first.
    pub(super) async fn issue(&self, issue: Issue<'_>, redemption: Redemption<'_>) -> Result<Option<TokenResponse>> {
        let now = self.clock.now_ms();
        let client = issue.client;
        let session_id = uuid::Uuid::now_v7().to_string();
        let (access, refresh, tokens) = self.sessions.mint_pair(&session_id, issue.user_id, now);
        let (client_identifier, product, platform, name) = issue.device;
        let start = SessionStart {
            session_id: session_id.clone(),
            new_device_id: uuid::Uuid::now_v7().to_string(),
            device: DeviceSighting {
                user_id: issue.user_id.to_owned(),
                client_identifier,
                product,
                platform,
                name,
                address: issue.address.map(str::to_owned),
                seen_at: now,
            },
            channel: client.id.clone(),
            dpop_jkt: issue.dpop.map(|p| p.jkt.clone()),
            enrolment_only: false,
            // An app's session never acts on the account itself: nothing it holds is fresh.
            verified: Verified::default(),
            grant: Some(OAuthGrant {
                client_id: client.id.clone(),
                scope: issue.scope.to_string(),
                auth_time: issue.auth_time,
            }),
            tokens,
        };
        let redeemed = match redemption {
            Redemption::Code(digest) => self.store.redeem_oauth_code(digest, now, &start).await?,
            Redemption::DeviceCode(digest) => self.store.redeem_device_code(digest, &start).await?,
        };
        let Some(device_id) = redeemed else { return Ok(None) };
        let details = json!({
            "client_id": client.id, "session_id": session_id, "device_id": device_id, "scope": issue.scope.to_string(),
            "grant_type": issue.grant_type, "dpop": start.dpop_jkt.is_some(),
        });
        let actor = Actor::User(issue.user_id.to_owned());
        let event = AuditLog::event(kind::OAUTH_TOKENS_ISSUED, &actor, Some(issue.user_id), issue.address, details);
        self.audit.record(event).await?;
        tracing::info!(user_id = %issue.user_id, client_id = %client.id, %session_id, grant_type = issue.grant_type, "tokens issued to a client");
        let id_token = self
            .id_token_if_openid(client, issue.user_id, &session_id, issue.scope, issue.auth_time, issue.nonce)
            .await?;
        Ok(Some(TokenResponse {
            access_token: access,
            token_type: if start.dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: self.tokens.access_ttl_secs,
            refresh_token: Some(refresh),
            id_token,
            scope: issue.scope.to_string(),
        }))
    }

    async fn refresh(&self, client: &Client, request: TokenRequest) -> Result<TokenResponse> {
        let token = required(&request.refresh_token, "refresh_token")?;
        let record = self.sessions.find(token, TokenKind::Refresh).await.map_err(|e| {
            if e.is_internal() {
                e
            } else {
                invalid_grant("the refresh token is not valid")
            }
        })?;
        if record.client_id.as_deref() != Some(client.id.as_str()) {
            return Err(invalid_grant("the refresh token was issued to another client"));
        }
        let (user_id, scope, auth_time) =
            (record.user_id.clone(), record.scope.clone(), record.auth_time.unwrap_or(record.issued_at));
        let issued = self.sessions.refresh_found(record, request.dpop.as_ref()).await.map_err(|e| match e {
            Error::InvalidToken | Error::TokenExpired | Error::TokenRevoked | Error::RefreshTokenReused => {
                invalid_grant(&e.to_string())
            }
            Error::InvalidDpopProof(_) | Error::DpopProofRequired => Error::oauth("invalid_dpop_proof", e.to_string()),
            other => other,
        })?;
        let scope = Scope::parse(scope.as_deref().unwrap_or_default())?;
        let id_token = self.id_token_if_openid(client, &user_id, &issued.session_id, &scope, auth_time, None).await?;
        Ok(TokenResponse {
            access_token: issued.access_token,
            token_type: issued.token_type,
            expires_in: issued.expires_in,
            refresh_token: Some(issued.refresh_token),
            id_token,
            scope: scope.to_string(),
        })
    }

    async fn find_code(&self, code: &str) -> Result<Option<OAuthCodeRecord>> {
        if TokenKind::of(code) != Some(TokenKind::AuthorizationCode) {
            return Ok(None);
        }
        let store = &self.store;
        Ok(self.keyring.find_by_token_digest(code, |digest| async move { store.oauth_code(&digest).await }).await?)
    }

    /// A code presented twice was intercepted or replayed: whatever it gave is ended (RFC 6749 §4.1.2).
    async fn code_reused(&self, record: &OAuthCodeRecord, address: Option<&str>) -> Result<()> {
        if let Some(session_id) = &record.session_id {
            self.store.end_session_and_tell(session_id, self.clock.now_ms()).await?;
            self.revocations.validations().forget_session(session_id);
        }
        tracing::warn!(user_id = %record.user_id, client_id = %record.client_id, "authorization code reused: its session was revoked");
        let details = json!({ "client_id": record.client_id, "session_id": record.session_id });
        let event = AuditLog::event(kind::OAUTH_CODE_REUSED, &Actor::System, Some(&record.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }
}

/// RFC 7636 §4.6: the verifier's SHA-256 must be the challenge; a verifier without a challenge is
/// refused too (RFC 9700 §2.1.1), so a downgrade cannot go unnoticed.
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<()> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (Some(challenge), Some(verifier)) if pkce_shaped(verifier) => {
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                Ok(())
            } else {
                Err(invalid_grant("the code_verifier does not match the code_challenge"))
            }
        }
        (Some(_), _) => Err(invalid_grant("a code_verifier of 43 to 128 characters is required")),
        (None, Some(_)) => Err(invalid_grant("the authorization request had no code_challenge")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_pkce;

    #[test]
    fn pkce_follows_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_pkce(Some(challenge), Some(verifier)).is_ok());
        assert!(check_pkce(Some(challenge), Some(&verifier.replace('d', "e"))).is_err());
        assert!(check_pkce(Some(challenge), None).is_err());
        assert!(check_pkce(None, Some(verifier)).is_err());
        assert!(check_pkce(None, None).is_ok());
    }
}
