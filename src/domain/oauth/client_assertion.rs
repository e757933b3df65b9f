//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): the client signs
//! a short-lived JWT with a key whose public half it registered; each assertion works once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{invalid_client, OAuth};
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Algorithms an assertion may be signed with.
pub const ASSERTION_ALGS: [Algorithm; 5] =
    [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];
/// An assertion must not claim to live longer than this: an hour (Authlib's default) and a minute of
/// clock skew. Each one still works only once.
const MAX_LIFETIME_SECS: i64 = 3660;

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    sub: String,
    exp: i64,
    jti: String,
}

/// The `iss` of an assertion, read before its signature is checked only to find its client.
fn claimed_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    json.get("iss")?.as_str().map(str::to_owned)
}

impl OAuth {
    /// The client that signed `assertion`: signature by one of its registered keys, `iss` and
    /// `sub` its id, `aud` our token endpoint or issuer, unexpired, short-lived, and never seen before.
    pub(super) async fn authenticate_assertion(&self, assertion: &str, client_id: Option<&str>) -> Result<Client> {
        let issuer = claimed_issuer(assertion).ok_or_else(invalid_client)?;
        if client_id.is_some_and(|id| id != issuer) {
            return Err(invalid_client());
        }
        let client = match self.clients.get(&issuer).await {
            Ok(client) => client,
            Err(e) if e.is_internal() => return Err(e),
            Err(_) => return Err(invalid_client()),
        };
        let keys: JwkSet =
            client.jwks.clone().and_then(|jwks| serde_json::from_value(jwks).ok()).ok_or_else(|| {
                Error::oauth("invalid_client", "this client does not authenticate with private_key_jwt")
            })?;
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid_client())?;
        if !ASSERTION_ALGS.contains(&header.alg) {
            return Err(Error::oauth("invalid_client", "the assertion's algorithm is not accepted"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[client.id.as_str()]);
        let token_endpoint = format!("{}/oauth/token", self.issuer);
        validation.set_audience(&[token_endpoint.as_str(), self.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        // A key named like the assertion's `kid`, or any key when either side names none.
        let candidates = keys
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.common.key_id.is_none() || k.common.key_id == header.kid);
        let claims = candidates
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .find_map(|key| jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).ok())
            .ok_or_else(|| Error::oauth("invalid_client", "the client assertion could not be verified"))?
            .claims;
        let now = self.clock.now_ms() / 1000;
        if claims.sub != client.id
            || claims.jti.is_empty()
            || claims.jti.len() > 256
            || claims.exp - now > MAX_LIFETIME_SECS
        {
            return Err(Error::oauth(
                "invalid_client",
                "the client assertion's sub, jti or lifetime is not acceptable",
            ));
        }
        if !self.store.use_client_assertion(&client.id, &claims.jti, claims.exp * 1000).await? {
            return Err(Error::oauth("invalid_client", "this client assertion was already used"));
        }
        Ok(client)
    }
}
