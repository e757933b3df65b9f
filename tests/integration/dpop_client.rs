//! A DPoP client key for tests: a P-256 key pair that signs proofs (RFC 9449 §4.2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde_json::json;
use sha2::{Digest, Sha256};

pub struct DpopKey {
    encoding: EncodingKey,
    jwk: Jwk,
}

/// What to put in a proof; tests vary one field at a time to break it.
pub struct ProofFor<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub access_token: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub iat_offset_secs: i64,
    pub omit_ath: bool,
}

impl<'a> ProofFor<'a> {
    pub fn new(method: &'a str, url: &'a str) -> Self {
        Self { method, url, access_token: None, nonce: None, iat_offset_secs: 0, omit_ath: false }
    }

    pub fn with_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }
}

impl DpopKey {
    pub fn generate() -> Self {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let jwk: Jwk = serde_json::from_str(&secret.public_key().to_jwk_string()).unwrap();
        Self { encoding: EncodingKey::from_ec_der(der.as_bytes()), jwk }
    }

    pub fn proof(&self, what: ProofFor<'_>) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": what.method,
            "htu": what.url,
            "iat": now + what.iat_offset_secs,
        });
        if let (Some(token), false) = (what.access_token, what.omit_ath) {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = what.nonce {
            claims["nonce"] = json!(nonce);
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}
