//! Device-key tokens, plex.tv's 2025 JWT scheme: a signed-in device registers an Ed25519 public key,
//! then trades a JWT signed with it (carrying a nonce from us) for a short-lived token we sign. Without
//! the private key no new token can be had, and a key is only as alive as the sign-in it was
//! registered with: "Sign out of all devices" ends the key's tokens and its power to mint more.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::core::Core;
use crate::domain::error::{Error, Result};
use crate::domain::freshness::Freshness;
use crate::domain::sessions::Sessions;
use crate::keys::signing::{Signer, SigningAlg};
use crate::keys::Keyring;
use crate::store::{DeviceKeyRecord, DynStore};

/// How long a token minted here works (plex.tv's are a week; clients refresh a day before the end).
pub const DEVICE_JWT_TTL_SECS: i64 = 7 * 24 * 3600;
/// How long a nonce may wait for the JWT that carries it.
const NONCE_TTL_SECS: i64 = 300;
/// The longest a device's own JWT may claim to live.
const CLIENT_JWT_MAX_SECS: u64 = 600;
/// Nonces are spent in the table that spends client-assertion ids, under this name.
const NONCE_SPENDER: &str = "plex:nonce";
/// The audience and issuer plex.tv clients expect.
const PLEX: &str = "plex.tv";

#[derive(Debug, serde::Deserialize)]
struct ClientClaims {
    iss: String,
    nonce: String,
    #[serde(default)]
    scope: String,
}

#[derive(Clone)]
pub struct DeviceKeys {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
    sessions: Sessions,
    signer: Arc<Signer>,
    freshness: Freshness,
}

impl DeviceKeys {
    pub fn new(core: &Core, sessions: Sessions, signer: Arc<Signer>) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
            sessions,
            signer,
            freshness: core.freshness.clone(),
        }
    }

    /// A nonce for the next client JWT: random, with its expiry, MACed under the token-hash key so
    /// that nothing needs storing until it is spent.
    pub fn nonce(&self) -> String {
        let mut random = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let body = format!("{}.{}", URL_SAFE_NO_PAD.encode(random), self.clock.now_ms() / 1000 + NONCE_TTL_SECS);
        let mac = self.keyring.token_digest(&format!("plex-nonce:{body}"));
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac.digest))
    }

    /// The expiry of a nonce we issued and that has not expired.
    fn check_nonce(&self, nonce: &str) -> Option<i64> {
        let (body, mac) = nonce.rsplit_once('.')?;
        let expires: i64 = body.split_once('.')?.1.parse().ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let ours = self
            .keyring
            .token_digests(&format!("plex-nonce:{body}"))
            .iter()
            .any(|candidate| bool::from(candidate.digest.ct_eq(&mac)));
        (ours && expires > self.clock.now_ms() / 1000).then_some(expires)
    }

    /// Registers the device's public key for the session of the token presented. A key mints
    /// tokens of its own, so it is a new credential: fresh authentication, proven address.
    pub async fn register(&self, who: &Authenticated, token: &str, jwk: &Value, address: Option<&str>) -> Result<()> {
        let kid = check_public_jwk(jwk)?;
        self.freshness.require_for_new_credential(who).await?;
        let anchor = self.sessions.plex_token_record(token).await?;
        let key = DeviceKeyRecord {
            kid: kid.clone(),
            user_id: who.user_id.clone(),
            device_id: who.device_id.clone(),
            jwk: jwk.to_string(),
            anchor_digest: anchor.digest,
            created_at: self.clock.now_ms(),
            last_used_at: None,
        };
        if !self.store.register_device_key(&key).await? {
            return Err(Error::InvalidDevice("this key is registered to another account"));
        }
        let details = json!({ "kid": kid, "device_id": who.device_id });
        let event = AuditLog::event(
            kind::DEVICE_KEY_REGISTERED,
            &Actor::User(who.user_id.clone()),
            Some(&who.user_id),
            address,
            details,
        );
        self.audit.record(event).await?;
        Ok(())
    }

    /// Trades a device's JWT for a token signed by us: the key must be registered and its sign-in
    /// alive, the JWT signed by it for `plex.tv` by the device it was registered from, short-lived,
    /// and carrying a nonce of ours not used before.
    pub async fn exchange(&self, client_jwt: &str) -> Result<String> {
        let header = jsonwebtoken::decode_header(client_jwt).map_err(|_| Error::InvalidToken)?;
        let kid = header.kid.filter(|_| header.alg == Algorithm::EdDSA).ok_or(Error::InvalidToken)?;
        let key = self.store.device_key(&kid).await?.ok_or(Error::InvalidToken)?;
        let anchor = self.store.token_by_digest(&key.anchor_digest).await?.ok_or(Error::TokenRevoked)?;
        // Revocation judges every token by its session's start, so the tokens this key minted
        // later cannot carry it past a revocation that came after its registration.
        if !self.sessions.is_alive(&anchor) {
            return Err(Error::TokenRevoked);
        }
        let jwk: Jwk = serde_json::from_str(&key.jwk).map_err(|e| Error::Internal(e.to_string()))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| Error::Internal(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 60;
        validation.set_audience(&[PLEX]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        let data =
            jsonwebtoken::decode::<Value>(client_jwt, &decoding, &validation).map_err(|_| Error::InvalidToken)?;
        let lifetime =
            data.claims["exp"].as_u64().zip(data.claims["iat"].as_u64()).map(|(exp, iat)| exp.saturating_sub(iat));
        if lifetime.is_none_or(|secs| secs > CLIENT_JWT_MAX_SECS) {
            return Err(Error::InvalidToken);
        }
        let claims: ClientClaims = serde_json::from_value(data.claims).map_err(|_| Error::InvalidToken)?;
        let device = self.store.devices_of(&key.user_id).await?.into_iter().find(|d| d.id == key.device_id);
        let device = device.filter(|d| d.client_identifier == claims.iss).ok_or(Error::InvalidToken)?;
        let nonce_expires = self.check_nonce(&claims.nonce).ok_or(Error::InvalidToken)?;
        if !self.store.use_client_assertion(NONCE_SPENDER, &claims.nonce, nonce_expires * 1000).await? {
            return Err(Error::InvalidToken);
        }
        let now = self.clock.now_ms() / 1000;
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let token_claims = json!({
            "iss": PLEX, "aud": [PLEX, device.client_identifier], "sub": key.user_id, "iat": now,
            "exp": now + DEVICE_JWT_TTL_SECS, "thumbprint": kid, "scope": claims.scope,
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let token =
            self.signer.sign(SigningAlg::EdDsa, "JWT", &token_claims).map_err(|e| Error::Internal(e.to_string()))?;
        let digest = self.sessions.add_plex_token(&anchor, &token, DEVICE_JWT_TTL_SECS).await?;
        // The key now lives as long as its newest token's sign-in.
        self.store.move_device_key_anchor(&kid, &key.anchor_digest, &digest, self.clock.now_ms()).await?;
        Ok(token)
    }

    /// The public keys our device tokens are signed with (Ed25519 only: that is what clients verify).
    pub fn keys(&self) -> Value {
        let keys: Vec<Value> = self.signer.jwks()["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| k["kty"] == "OKP")
            .cloned()
            .collect();
        json!({ "keys": keys })
    }
}

/// An Ed25519 public JWK with a key id; returns the id. A private key (`d`) is refused outright.
fn check_public_jwk(jwk: &Value) -> Result<String> {
    const BAD: Error = Error::InvalidDevice("jwk must be an Ed25519 public key (OKP) with a kid");
    if jwk.get("d").is_some() || jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(BAD);
    }
    let x = jwk["x"].as_str().and_then(|x| URL_SAFE_NO_PAD.decode(x).ok()).ok_or(BAD)?;
    let kid =
        jwk["kid"].as_str().filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()));
    match (x.len(), kid) {
        (32, Some(kid)) => Ok(kid.to_owned()),
        _ => Err(BAD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ed25519_public_keys_with_an_id_register() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let good = json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1" });
        assert_eq!(check_public_jwk(&good).unwrap(), "k1");
        for bad in [
            json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
            json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "d": x }),
            json!({ "kty": "EC", "crv": "P-256", "x": x, "kid": "k1" }),
            json!({ "kty": "OKP", "crv": "Ed25519", "x": "short", "kid": "k1" }),
        ] {
            assert!(check_public_jwk(&bad).is_err(), "{bad}");
        }
    }
}
