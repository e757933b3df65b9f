//! The client credentials grant (RFC 6749 §4.4): a confidential client's own access token, with no
//! person behind it. It is a signed JWT (RFC 9068 `at+jwt`) kept nowhere, so a copied database
//! holds nothing to present; it lives minutes, and channel or global revocation rules kill it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::claims::Introspection;
use super::grants::TokenResponse;
use super::OAuth;
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;
use crate::domain::revocation::TokenFacts;
use crate::keys::signing::SigningAlg;

/// RFC 9068 §2.2, for a token whose subject is the client itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
}

impl OAuth {
    pub(super) fn client_credentials(&self, client: &Client, dpop_jkt: Option<String>) -> Result<TokenResponse> {
        if client.is_public() {
            return Err(Error::oauth("unauthorized_client", "public clients cannot use the client_credentials grant"));
        }
        let now = self.clock.now_ms() / 1000;
        let claims = ServiceTokenClaims {
            iss: self.issuer.clone(),
            sub: client.id.clone(),
            aud: self.issuer.clone(),
            client_id: client.id.clone(),
            iat: now,
            exp: now + self.tokens.access_ttl_secs,
            jti: uuid::Uuid::new_v4().to_string(),
            cnf: dpop_jkt.as_ref().map(|jkt| serde_json::json!({ "jkt": jkt })),
        };
        let token =
            self.signer.sign(SigningAlg::Es256, "at+jwt", &claims).map_err(|e| Error::Internal(e.to_string()))?;
        tracing::info!(client_id = %client.id, "client credentials token issued");
        Ok(TokenResponse {
            access_token: Zeroizing::new(token),
            token_type: if dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: self.tokens.access_ttl_secs,
            refresh_token: None,
            id_token: None,
            scope: String::new(),
        })
    }

    /// A client's own service token, as introspection reports it; `None` if it is not one of ours,
    /// belongs to another client, has expired or was revoked.
    pub(super) fn introspect_service_token(&self, client: &Client, token: &str) -> Option<Introspection> {
        let claims: ServiceTokenClaims = self.signer.verify(token, &self.issuer)?;
        let now = self.clock.now_ms();
        let facts = TokenFacts {
            issued_at: claims.iat * 1000,
            user_id: "",
            device_id: "",
            channel: &claims.client_id,
            session_id: &claims.jti,
        };
        // A stale node reports the token inactive rather than vouch for it.
        let alive =
            claims.exp * 1000 > now && self.revocations.is_current() && self.revocations.check(&facts).is_none();
        (alive && claims.client_id == client.id && claims.sub == client.id).then(|| Introspection {
            active: true,
            client_id: Some(claims.client_id.clone()),
            token_type: Some(if claims.cnf.is_some() { "DPoP" } else { "Bearer" }),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            cnf: claims.cnf,
            ..Introspection::default()
        })
    }
}
