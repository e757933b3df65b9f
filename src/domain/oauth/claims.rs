//! What clients learn about a person and a token: ID tokens, userinfo (OpenID Connect Core §5),
//! introspection (RFC 7662) and revocation (RFC 7009).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ClientCredentials, OAuth, Scope};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;
use crate::domain::tokens::TokenKind;
use crate::store::TokenRecord;

/// The claims about the person that a scope releases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// An ID token's claims (OpenID Connect Core §2). Times are in seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The session at keywarden the tokens belong to; back-channel logout names it again.
    pub sid: String,
    #[serde(flatten)]
    pub user: UserClaims,
}

/// RFC 7662 §2.2. An inactive token says nothing else.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 9449 §6.2: the key a DPoP-bound token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<serde_json::Value>,
}

impl OAuth {
    /// The claims `scope` releases about an account.
    pub async fn user_claims(&self, user_id: &str, scope: &Scope) -> Result<UserClaims> {
        let profile = self.accounts.profile(user_id).await?;
        let mut claims = UserClaims { sub: profile.id, ..UserClaims::default() };
        if scope.has("profile") {
            claims.preferred_username = Some(profile.username.clone());
            claims.name = Some(profile.username);
        }
        if scope.has("email") {
            claims.email = Some(profile.email);
            claims.email_verified = Some(profile.email_verified);
        }
        Ok(claims)
    }

    /// An ID token for `client` when the grant includes `openid`.
    pub(super) async fn id_token_if_openid(
        &self,
        client: &Client,
        user_id: &str,
        session_id: &str,
        scope: &Scope,
        auth_time_ms: i64,
        nonce: Option<&str>,
    ) -> Result<Option<String>> {
        if !scope.has("openid") {
            return Ok(None);
        }
        let now = self.clock.now_ms() / 1000;
        let claims = IdTokenClaims {
            iss: self.issuer.clone(),
            aud: client.id.clone(),
            azp: client.id.clone(),
            exp: now + self.settings.id_token_ttl_secs,
            iat: now,
            auth_time: auth_time_ms / 1000,
            nonce: nonce.map(str::to_owned),
            sid: session_id.to_owned(),
            user: self.user_claims(user_id, scope).await?,
        };
        let token =
            self.signer.sign(client.id_token_alg, "JWT", &claims).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(token))
    }

    /// OpenID Connect userinfo for the holder of a client's access token with `openid`.
    pub async fn userinfo(&self, who: &Authenticated) -> Result<UserClaims> {
        let scope = Scope::parse(who.scope.as_deref().unwrap_or_default())?;
        if !scope.has("openid") {
            return Err(Error::oauth("insufficient_scope", "the token was not granted the openid scope"));
        }
        self.user_claims(&who.user_id, &scope).await
    }

    /// A stored access or refresh token, whatever state it is in.
    async fn find_any(&self, token: &str) -> Result<Option<(TokenKind, TokenRecord)>> {
        let Some(kind @ (TokenKind::Access | TokenKind::Refresh)) = TokenKind::of(token) else { return Ok(None) };
        match self.sessions.find(token, kind).await {
            Ok(record) => Ok(Some((kind, record))),
            Err(e) if e.is_internal() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// RFC 7662: a client learns about its own tokens only; anything else is simply inactive.
    pub async fn introspect(&self, credentials: &ClientCredentials, token: &str) -> Result<Introspection> {
        let client = self.authenticate_client(credentials).await?;
        if client.is_public() {
            return Err(Error::oauth("invalid_client", "only confidential clients may introspect tokens"));
        }
        if let Some(answer) = self.introspect_service_token(&client, token) {
            return Ok(answer);
        }
        let Some((kind, record)) = self.find_any(token).await? else { return Ok(Introspection::default()) };
        if record.client_id.as_deref() != Some(client.id.as_str()) || !self.sessions.is_alive(&record) {
            return Ok(Introspection::default());
        }
        // The username only: no need to open the sealed email for it.
        let username = self.store.user_by_id(&record.user_id).await?.map(|u| u.username);
        let token_type = match (kind, record.dpop_jkt.is_some()) {
            (TokenKind::Access, true) => Some("DPoP"),
            (TokenKind::Access, false) => Some("Bearer"),
            _ => None,
        };
        Ok(Introspection {
            active: true,
            scope: record.scope.clone(),
            client_id: record.client_id.clone(),
            username,
            token_type,
            exp: Some(record.expires_at / 1000),
            iat: Some(record.issued_at / 1000),
            sub: Some(record.user_id.clone()),
            aud: record.client_id.clone(),
            iss: Some(self.issuer.clone()),
            sid: Some(record.session_id.clone()),
            cnf: record.dpop_jkt.map(|jkt| json!({ "jkt": jkt })),
        })
    }

    /// RFC 7009: ends the session of a client's own access or refresh token (every token of the
    /// grant dies with it). Unknown tokens and other clients' tokens change nothing and are not
    /// reported, so the endpoint cannot be used to probe for tokens.
    pub async fn revoke(&self, credentials: &ClientCredentials, token: &str, address: Option<&str>) -> Result<()> {
        let client = self.authenticate_client(credentials).await?;
        if self.signer.verify::<serde_json::Value>(token, &self.issuer).is_some() {
            return Err(Error::oauth(
                "unsupported_token_type",
                "client credentials tokens cannot be revoked one by one: they expire within minutes (revoke the channel)",
            ));
        }
        let Some((_, record)) = self.find_any(token).await? else { return Ok(()) };
        if record.client_id.as_deref() != Some(client.id.as_str()) || record.session_revoked_at.is_some() {
            return Ok(());
        }
        self.store.revoke_session(&record.session_id, self.clock.now_ms()).await?;
        self.revocations.validations().forget_session(&record.session_id);
        let details = json!({ "client_id": client.id, "session_id": record.session_id });
        let actor = Actor::Client(client.id.clone());
        self.audit
            .record(AuditLog::event(kind::OAUTH_TOKEN_REVOKED, &actor, Some(&record.user_id), address, details))
            .await?;
        Ok(())
    }
}
