//! Talking to a provider: its discovery document and keys, and the exchange of a code for verified claims.

use jsonwebtoken::jwk::JwkSet;
use serde_json::json;

use super::id_token;
use super::id_token::{Refusal, UpstreamClaims};
use super::provider::{ClientAuth, Metadata, Provider};
use super::random_text;
use super::upstream;
use super::upstream::Reply;
use super::JWKS_REFETCH_AFTER;
use crate::domain::error::{Error, Result};
use crate::domain::Sso;

pub(super) fn unreachable(provider: &Provider, err: &upstream::Unreachable) -> Error {
    tracing::warn!(provider = %provider.id, error = %err, "a sign-in provider could not be reached");
    Error::SsoUnavailable
}

/// RFC 6749 §2.3.1: client credentials are form-encoded before they go into HTTP Basic.
pub(super) fn form_urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A `private_key_jwt` client assertion (RFC 7523) for the provider's token endpoint.
pub(super) fn client_assertion(
    client_id: &str,
    audience: &str,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: Option<String>,
) -> Result<String> {
    // Checked by the provider against its own clock, the real one.
    let now = crate::clock::now_ms() / 1000;
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": audience, "jti": random_text().as_str(),
        "iat": now, "exp": now + 60,
    });
    let header = jsonwebtoken::Header { kid, ..jsonwebtoken::Header::new(alg) };
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| Error::Internal(e.to_string()))
}

impl Sso {
    /// The provider's discovery document, fetched at most hourly; its issuer must be the one configured.
    pub(super) async fn metadata(&self, provider: &Provider) -> Result<Metadata> {
        if let Some(metadata) = provider.cached_metadata() {
            return Ok(metadata);
        }
        let url = format!("{}/.well-known/openid-configuration", provider.issuer.trim_end_matches('/'));
        let reply = self.get(provider, &url, None).await?;
        if !reply.ok() {
            tracing::warn!(provider = %provider.id, status = reply.status, "provider discovery failed");
            return Err(Error::SsoUnavailable);
        }
        let metadata: Metadata = serde_json::from_value(reply.body)
            .map_err(|_| Error::SsoFailed("the provider's discovery document is incomplete".into()))?;
        if metadata.issuer != provider.issuer {
            return Err(Error::SsoFailed("the provider's discovery document names another issuer".into()));
        }
        provider.remember_metadata(metadata.clone());
        Ok(metadata)
    }

    /// The provider's signing keys; fetched again when a token names a key we do not know.
    pub(super) async fn jwks(&self, provider: &Provider, metadata: &Metadata, refresh: bool) -> Result<JwkSet> {
        match provider.cached_jwks() {
            Some((keys, age)) if !refresh || age < JWKS_REFETCH_AFTER => return Ok(keys),
            _ => {}
        }
        let reply = self.get(provider, &metadata.jwks_uri, None).await?;
        if !reply.ok() {
            return Err(Error::SsoUnavailable);
        }
        let keys: JwkSet = serde_json::from_value(reply.body)
            .map_err(|_| Error::SsoFailed("the provider's key set is malformed".into()))?;
        provider.remember_jwks(keys.clone());
        Ok(keys)
    }

    /// Exchanges the code (with the PKCE verifier and our client credentials) and checks the ID token.
    pub(super) async fn redeem(
        &self,
        provider: &Provider,
        metadata: &Metadata,
        code: &str,
        verifier: &str,
        nonce_digest: &[u8],
    ) -> Result<UpstreamClaims> {
        let redirect_uri = self.redirect_uri(&provider.id);
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.to_owned()),
        ];
        let methods = metadata.token_endpoint_auth_methods_supported.as_deref().unwrap_or_default();
        let basic = match &provider.auth {
            ClientAuth::Secret(secret)
                if !methods.is_empty() && !methods.iter().any(|m| m == "client_secret_basic") =>
            {
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_secret", secret.to_string()));
                None
            }
            ClientAuth::Secret(secret) => Some((form_urlencode(&provider.client_id), form_urlencode(secret))),
            ClientAuth::PrivateKey { key, alg, kid } => {
                let assertion =
                    client_assertion(&provider.client_id, &metadata.token_endpoint, key, *alg, kid.clone())?;
                form.push(("client_id", provider.client_id.clone()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", assertion));
                None
            }
        };
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let basic_ref = basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let reply = self
            .upstream
            .post_form(&metadata.token_endpoint, &pairs, basic_ref)
            .await
            .map_err(|e| unreachable(provider, &e))?;
        if !reply.ok() {
            // Usually keywarden's own settings (a wrong or expired client secret: `invalid_client`),
            // which the operator must hear of; the provider's words hold no secret of ours.
            let refusal = reply.oauth_error();
            tracing::warn!(provider = %provider.id, status = reply.status, error = %refusal, "the sign-in provider refused the code exchange");
            return Err(Error::SsoFailed(format!("the code exchange was refused ({refusal})")));
        }
        let id_token = reply
            .body
            .get("id_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::SsoFailed("the provider sent no ID token".into()))?;
        let check =
            |keys: &JwkSet| id_token::verify(id_token, keys, &provider.issuer, &provider.client_id, nonce_digest);
        let keys = self.jwks(provider, metadata, false).await?;
        let mut claims = match check(&keys) {
            Err(Refusal::UnknownKey) => check(&self.jwks(provider, metadata, true).await?),
            other => other,
        }
        .map_err(|refusal| {
            tracing::warn!(provider = %provider.id, %refusal, "upstream ID token refused");
            Error::SsoFailed(refusal.to_string())
        })?;
        // Many providers put the email in userinfo only (Core §5.4 with a code flow).
        let access_token = reply.body.get("access_token").and_then(|v| v.as_str());
        if let (None, Some(userinfo), Some(access_token)) = (&claims.email, &metadata.userinfo_endpoint, access_token) {
            let reply = self.get(provider, userinfo, Some(access_token)).await?;
            if reply.ok() {
                let more: UpstreamClaims = serde_json::from_value(reply.body)
                    .map_err(|_| Error::SsoFailed("the provider's userinfo answer is malformed".into()))?;
                // Core §5.3.2: a userinfo answer about someone else must not be used.
                if more.sub != claims.sub {
                    return Err(Error::SsoFailed("the userinfo answer is about another account".into()));
                }
                claims = UpstreamClaims { sub: claims.sub, ..more };
            }
        }
        Ok(claims)
    }

    pub(super) async fn get(&self, provider: &Provider, url: &str, bearer: Option<&str>) -> Result<Reply> {
        self.upstream.get_json(url, bearer).await.map_err(|e| unreachable(provider, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(form_urlencode("a b:c%"), "a+b%3Ac%25");
    }
}
