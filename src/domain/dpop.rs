//! DPoP (RFC 9449): proofs of possession that make a token seen in transit useless without its key.
//!
//! A client signs a short JWT for every request with a private key that never leaves it (a
//! non-extractable WebCrypto key, a key in an app's keystore). Tokens issued with a proof are bound
//! to that key's thumbprint; presenting them needs a fresh proof by the same key, for this method and
//! URL, carrying the token's hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use crate::clock::now_ms;
use crate::keys::Keyring;

/// Asymmetric algorithms accepted for proofs (RFC 9449 §4.2: never `none` or a MAC).
const ALGORITHMS: &[Algorithm] =
    &[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::PS256, Algorithm::RS256];
/// How far a proof's `iat` may be from now.
const IAT_WINDOW_SECS: i64 = 60;
/// A nonce stays valid for the bucket it was made in and the next one.
const NONCE_BUCKET_SECS: i64 = 300;
/// JWK members that only a private key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A proof that passed every check: the thumbprint of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request's URL without query or fragment.
    pub url: &'a str,
    /// The access token presented with the proof, if any (checked against `ath`).
    pub access_token: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Verifies proofs and issues nonces. Cheap to clone; all clones share one replay cache.
#[derive(Clone)]
pub struct DpopVerifier {
    keyring: Arc<Keyring>,
    require_nonce: bool,
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidDpopProof(reason)
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 of its required members in lexicographic order.
pub fn thumbprint(jwk: &Value) -> Result<String> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        Some("RSA") => &["e", "kty", "n"],
        _ => return Err(invalid("the proof's key type is not supported")),
    };
    let mut canonical = serde_json::Map::new();
    for member in members {
        let value = jwk.get(*member).and_then(Value::as_str).ok_or(invalid("the proof's key is incomplete"))?;
        canonical.insert((*member).to_owned(), Value::String(value.to_owned()));
    }
    // serde_json's map keeps keys sorted, which is exactly RFC 7638's canonical order.
    let json = Value::Object(canonical).to_string();
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

/// base64url(SHA-256(access token)): the `ath` claim binding a proof to the token it accompanies.
pub fn token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

impl DpopVerifier {
    pub fn new(keyring: Arc<Keyring>, require_nonce: bool) -> Self {
        Self { keyring, require_nonce, seen: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The nonce clients should put in their next proofs. Stateless: any node can check it.
    pub fn nonce(&self) -> String {
        self.nonce_for(now_ms() / 1000 / NONCE_BUCKET_SECS)
    }

    fn nonce_for(&self, bucket: i64) -> String {
        let digest = self.keyring.token_digest(&format!("dpop-nonce:{bucket}"));
        URL_SAFE_NO_PAD.encode(&digest.digest[..18])
    }

    fn nonce_is_fresh(&self, nonce: &str) -> bool {
        let bucket = now_ms() / 1000 / NONCE_BUCKET_SECS;
        [bucket, bucket - 1].iter().any(|b| {
            let expected = self.nonce_for(*b);
            bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), nonce.as_bytes()))
        })
    }

    /// Checks a proof (RFC 9449 §4.3) and returns the thumbprint of its key.
    pub fn verify(&self, proof: &str, expected: Expected<'_>) -> Result<Proof> {
        let header_json = proof
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .ok_or(invalid("the DPoP header is not a JWT"))?;
        if header_json.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(invalid("the proof's typ is not dpop+jwt"));
        }
        let jwk_json = header_json.get("jwk").ok_or(invalid("the proof carries no jwk"))?;
        if PRIVATE_MEMBERS.iter().any(|m| jwk_json.get(*m).is_some()) {
            return Err(invalid("the proof's jwk contains a private key"));
        }
        let header = jsonwebtoken::decode_header(proof).map_err(|_| invalid("the proof's header is malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("the proof's algorithm is not accepted"));
        }
        let jwk = header.jwk.ok_or(invalid("the proof carries no jwk"))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("the proof's jwk is not a usable public key"))?;
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(proof, &key, &validation)
            .map_err(|_| invalid("the proof's signature or claims are invalid"))?
            .claims;

        if !claims.htm.eq_ignore_ascii_case(expected.method) {
            return Err(invalid("the proof was made for another HTTP method"));
        }
        if !same_url(&claims.htu, expected.url) {
            return Err(invalid("the proof was made for another URL"));
        }
        let now_secs = now_ms() / 1000;
        if (claims.iat - now_secs).abs() > IAT_WINDOW_SECS {
            return Err(invalid("the proof is too old or from the future"));
        }
        match (&claims.nonce, self.require_nonce) {
            (Some(nonce), _) if !self.nonce_is_fresh(nonce) => return Err(Error::UseDpopNonce),
            (None, true) => return Err(Error::UseDpopNonce),
            _ => {}
        }
        match (expected.access_token, &claims.ath) {
            (Some(token), Some(ath)) if *ath == token_hash(token) => {}
            (Some(_), _) => return Err(invalid("the proof does not carry this access token's hash (ath)")),
            (None, _) => {}
        }
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(invalid("the proof's jti is missing or too long"));
        }
        let jkt = thumbprint(jwk_json)?;
        self.remember(&jkt, &claims.jti, now_secs)?;
        Ok(Proof { jkt })
    }

    /// Refuses a `jti` seen before from the same key within the `iat` window (RFC 9449 §11.1).
    fn remember(&self, jkt: &str, jti: &str, now_secs: i64) -> Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, expiry| *expiry > now_secs);
        }
        let key = format!("{jkt}:{jti}");
        if seen.get(&key).is_some_and(|expiry| *expiry > now_secs) {
            return Err(invalid("the proof was already used (replayed jti)"));
        }
        seen.insert(key, now_secs + 2 * IAT_WINDOW_SECS);
        Ok(())
    }
}

/// RFC 9449 §4.3: compare without query and fragment; scheme and host case-insensitively.
fn same_url(claimed: &str, actual: &str) -> bool {
    let strip = |u: &str| u.split(['?', '#']).next().unwrap_or_default().to_owned();
    let (claimed, actual) = (strip(claimed), strip(actual));
    let split = |u: &str| -> Option<(String, String)> {
        let (scheme, rest) = u.split_once("://")?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        Some((format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()), format!("/{path}")))
    };
    matches!((split(&claimed), split(&actual)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // The example key and thumbprint of RFC 7638 §3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        });
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn urls_compare_without_query_and_with_case_insensitive_host() {
        assert!(same_url("HTTPS://Server.Example/token?x=1", "https://server.example/token"));
        assert!(!same_url("https://server.example/token", "https://server.example/other"));
        assert!(!same_url("https://evil.example/token", "https://server.example/token"));
    }

    #[test]
    fn nonces_are_accepted_for_two_buckets_only() {
        let verifier = DpopVerifier::new(Arc::new(Keyring::generate()), true);
        assert!(verifier.nonce_is_fresh(&verifier.nonce()));
        let bucket = now_ms() / 1000 / NONCE_BUCKET_SECS;
        assert!(!verifier.nonce_is_fresh(&verifier.nonce_for(bucket - 2)));
        assert!(!verifier.nonce_is_fresh("made-up"));
    }
}
