//! The asymmetric keys that sign ID tokens and logout tokens (ES256 and EdDSA), seeded by the
//! keyring's signing secrets, and the JWKS that publishes their public halves.
//!
//! Each signing secret seeds one P-256 key and one Ed25519 key (HKDF-SHA256 with a label per
//! algorithm), so the key file holds one 32-byte secret per generation. The active secret's keys
//! sign; every key still in the ring is published, so tokens signed before a rotation keep
//! verifying until the operator retires the old key.

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use std::sync::Arc;

use crate::keys::Keyring;

/// The JWS algorithms keywarden signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum SigningAlg {
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 2] = [Self::Es256, Self::EdDsa];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    fn jws(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    fn kid_suffix(self) -> &'static str {
        match self {
            Self::Es256 => "es256",
            Self::EdDsa => "eddsa",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot build a signing key: {0}")]
    Key(String),
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

struct KeyPair {
    kid: String,
    alg: SigningAlg,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

/// Signs with the active keys and verifies with any key in the ring; re-derived when the keyring changes.
pub struct Signer {
    /// Active keys first (one per algorithm), then the older ones.
    keys: std::sync::RwLock<Arc<Vec<KeyPair>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kids", &self.keys().iter().map(|k| k.kid.clone()).collect::<Vec<_>>()).finish()
    }
}

/// 32 bytes expanded from a signing secret for one algorithm (and attempt, for P-256 scalars).
fn seed(secret: &[u8; 32], label: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 expands up to 8160 bytes: 32 cannot fail.
    let _ = Hkdf::<Sha256>::new(None, secret).expand(label.as_bytes(), out.as_mut());
    out
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ed25519_pair(id: &str, secret: &[u8; 32]) -> Result<KeyPair, SigningError> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed(secret, "keywarden signing ed25519 v1"));
    let der = signing.to_pkcs8_der().map_err(|e| SigningError::Key(e.to_string()))?;
    let x = b64(signing.verifying_key().as_bytes());
    let alg = SigningAlg::EdDsa;
    let kid = format!("{id}-{}", alg.kid_suffix());
    Ok(KeyPair {
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding: DecodingKey::from_ed_components(&x).map_err(|e| SigningError::Key(e.to_string()))?,
        jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": alg.as_str(), "use": "sig" }),
        kid,
        alg,
    })
}

fn p256_pair(id: &str, secret: &[u8; 32]) -> Result<KeyPair, SigningError> {
    // A scalar of zero or at least the group order is refused; the next attempt is a fresh seed.
    let key = (0..16)
        .find_map(|attempt| {
            p256::SecretKey::from_slice(&*seed(secret, &format!("keywarden signing p256 v1 {attempt}"))).ok()
        })
        .ok_or_else(|| SigningError::Key("no valid P-256 scalar".into()))?;
    let der = key.to_pkcs8_der().map_err(|e| SigningError::Key(e.to_string()))?;
    let public = key.public_key().to_jwk();
    let (x, y) = match serde_json::to_value(&public).map_err(|e| SigningError::Key(e.to_string()))? {
        Value::Object(map) => (map.get("x").cloned().unwrap_or_default(), map.get("y").cloned().unwrap_or_default()),
        _ => return Err(SigningError::Key("unexpected P-256 JWK".into())),
    };
    let (xs, ys) = (x.as_str().unwrap_or_default(), y.as_str().unwrap_or_default());
    let alg = SigningAlg::Es256;
    let kid = format!("{id}-{}", alg.kid_suffix());
    Ok(KeyPair {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        decoding: DecodingKey::from_ec_components(xs, ys).map_err(|e| SigningError::Key(e.to_string()))?,
        jwk: json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": alg.as_str(), "use": "sig" }),
        kid,
        alg,
    })
}

/// One key pair per algorithm for every signing secret, the active secret's first.
fn derive(keyring: &Keyring) -> Result<Vec<KeyPair>, SigningError> {
    let mut keys = Vec::new();
    for (id, secret) in keyring.signing_secrets() {
        keys.push(p256_pair(&id, &secret)?);
        keys.push(ed25519_pair(&id, &secret)?);
    }
    Ok(keys)
}

impl Signer {
    pub fn from_keyring(keyring: &Keyring) -> Result<Self, SigningError> {
        Ok(Self { keys: std::sync::RwLock::new(Arc::new(derive(keyring)?)) })
    }

    /// Takes the keyring's signing keys as they are now (a reloaded file, a newly active key).
    pub fn reload(&self, keyring: &Keyring) -> Result<(), SigningError> {
        let fresh = Arc::new(derive(keyring)?);
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn keys(&self) -> Arc<Vec<KeyPair>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A compact JWS of `claims` under the active key for `alg`, with `typ` in its header.
    pub fn sign<T: Serialize>(&self, alg: SigningAlg, typ: &str, claims: &T) -> Result<String, SigningError> {
        let keys = self.keys();
        let key = keys.iter().find(|k| k.alg == alg).ok_or_else(|| SigningError::Key("no active key".into()))?;
        let header = Header { typ: Some(typ.to_owned()), kid: Some(key.kid.clone()), ..Header::new(alg.jws()) };
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// The claims of a token this server signed with any key still in the ring, checking the
    /// signature and the issuer only: the caller decides what else matters (an expired ID token
    /// is still a fine `id_token_hint`).
    pub fn verify<T: DeserializeOwned>(&self, token: &str, issuer: &str) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let keys = self.keys();
        let key = keys.iter().find(|k| Some(&k.kid) == header.kid.as_ref() && k.alg.jws() == header.alg)?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation).ok().map(|data| data.claims)
    }

    /// The public keys as a JSON Web Key Set (RFC 7517).
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys().iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Claims {
        iss: String,
        sub: String,
    }

    #[test]
    fn tokens_signed_before_a_rotation_still_verify() {
        let ring = Keyring::generate();
        let claims = Claims { iss: "https://id.example".into(), sub: "u1".into() };
        let before = Signer::from_keyring(&ring).unwrap();
        let es = before.sign(SigningAlg::Es256, "JWT", &claims).unwrap();
        let ed = before.sign(SigningAlg::EdDsa, "JWT", &claims).unwrap();
        ring.rotate(crate::keys::KeyPurpose::Signing, 0);
        let after = Signer::from_keyring(&ring).unwrap();
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 4);
        assert_eq!(after.verify::<Claims>(&es, "https://id.example"), Some(claims));
        assert!(after.verify::<Claims>(&ed, "https://id.example").is_some());
        assert!(after.verify::<Claims>(&ed, "https://other.example").is_none());
        let fresh = after.sign(SigningAlg::Es256, "JWT", &Claims { iss: "https://id.example".into(), sub: "u".into() });
        assert_ne!(
            jsonwebtoken::decode_header(&fresh.unwrap()).unwrap().kid,
            jsonwebtoken::decode_header(&es).unwrap().kid
        );
    }

    #[test]
    fn the_same_secret_gives_the_same_keys_and_another_keyring_cannot_forge() {
        let ring = Keyring::generate();
        let a = Signer::from_keyring(&ring).unwrap();
        let b = Signer::from_keyring(&Keyring::from_toml(&ring.to_toml()).unwrap()).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        let claims = Claims { iss: "i".into(), sub: "s".into() };
        let forged =
            Signer::from_keyring(&Keyring::generate()).unwrap().sign(SigningAlg::EdDsa, "JWT", &claims).unwrap();
        assert!(a.verify::<Claims>(&forged, "i").is_none());
    }
}
