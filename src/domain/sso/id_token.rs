//! Checks an upstream provider's ID token: its signature against the provider's keys, then `iss`,
//! `aud`/`azp`, `exp`, `iat` and the `nonce` of this very trip (OpenID Connect Core §3.1.3.7).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Clock difference tolerated between keywarden and a provider.
const LEEWAY_SECS: u64 = 60;

/// Only asymmetric algorithms: an HMAC-signed token would be signed with our own client secret.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What keywarden keeps from a provider's ID token (and userinfo).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub email_verified: bool,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Some providers send `"email_verified": "true"`.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s == "true",
        _ => false,
    })
}

use serde::Deserialize as _;

#[derive(serde::Deserialize)]
struct Checked {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    /// Already checked by `jsonwebtoken`; read again only to count its values.
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(flatten)]
    claims: UpstreamClaims,
}

/// Why a token was refused; shown to the person (nothing secret in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token is signed with an algorithm we do not accept")]
    Algorithm,
    /// Asks for the provider's keys to be fetched again: it may have rotated them.
    #[error("the ID token is signed by a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature is not valid")]
    Signature,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is from another issuer")]
    Issuer,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
}

/// A nonce as stored with its trip: only its hash (the nonce itself travels through the browser).
pub fn nonce_digest(nonce: &str) -> Vec<u8> {
    Sha256::digest(nonce.as_bytes()).to_vec()
}

/// Verifies `token` and returns its claims.
pub fn verify(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    expected_nonce: &[u8],
) -> Result<UpstreamClaims, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(Refusal::Algorithm);
    }
    let jwk = select_key(keys, header.kid.as_deref(), header.alg).ok_or(Refusal::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Refusal::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Checked>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Refusal::Signature,
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Refusal::Expired,
            ErrorKind::InvalidIssuer => Refusal::Issuer,
            ErrorKind::InvalidAudience => Refusal::Audience,
            _ => Refusal::Malformed,
        }
    })?;
    let checked = data.claims;
    // With several audiences the token must say it was issued to us (Core §3.1.3.7 items 4–5).
    let several = checked.aud.as_array().is_some_and(|list| list.len() > 1);
    match checked.azp.as_deref() {
        Some(azp) if azp != client_id => return Err(Refusal::Audience),
        None if several => return Err(Refusal::Audience),
        _ => {}
    }
    let given = checked.nonce.as_deref().map(self::nonce_digest).ok_or(Refusal::Nonce)?;
    if !bool::from(given.ct_eq(expected_nonce)) {
        return Err(Refusal::Nonce);
    }
    if checked.claims.sub.is_empty() || checked.claims.sub.len() > 255 {
        return Err(Refusal::Malformed);
    }
    Ok(checked.claims)
}

/// The published key the token names, of a type that fits its algorithm.
fn select_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    let fits = |jwk: &&Jwk| {
        let family_fits = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
            }
            AlgorithmParameters::EllipticCurve(_) => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
            AlgorithmParameters::OctetKeyPair(_) => alg == Algorithm::EdDSA,
            AlgorithmParameters::OctetKey(_) => false,
        };
        let usable = !matches!(&jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption));
        family_fits && usable
    };
    let mut candidates = keys.keys.iter().filter(fits);
    match kid {
        Some(kid) => candidates.find(|jwk| jwk.common.key_id.as_deref() == Some(kid)),
        // Without a `kid` the provider must publish exactly one key that fits.
        None => {
            let first = candidates.next()?;
            candidates.next().is_none().then_some(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePrivateKey;
    use serde_json::json;

    fn key_pair(kid: &str) -> (EncodingKey, JwkSet) {
        let signing = SigningKey::random(&mut rand::rngs::OsRng);
        let der = signing.to_pkcs8_der().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let public = p256::PublicKey::from(signing.verifying_key()).to_jwk();
        let mut jwk: serde_json::Value = serde_json::from_str(&public.to_string()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!("ES256");
        (encoding, serde_json::from_value(json!({ "keys": [jwk] })).unwrap())
    }

    fn token(key: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
        let header = Header { kid: Some(kid.into()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    fn claims(nonce: &str) -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({ "iss": "https://op.example", "aud": "kw", "sub": "u1", "iat": now, "exp": now + 300,
                "nonce": nonce, "email": "a@example.com", "email_verified": "true" })
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let (key, keys) = key_pair("k1");
        let claims =
            verify(&token(&key, "k1", claims("n1")), &keys, "https://op.example", "kw", &nonce_digest("n1")).unwrap();
        assert_eq!(claims.sub, "u1");
        assert!(claims.email_verified);
    }

    #[test]
    fn every_check_refuses_what_it_should() {
        let (key, keys) = key_pair("k1");
        let (other_key, _) = key_pair("k1");
        let digest = nonce_digest("n1");
        let check = |t: String| verify(&t, &keys, "https://op.example", "kw", &digest);
        assert_eq!(check(token(&other_key, "k1", claims("n1"))), Err(Refusal::Signature));
        assert_eq!(check(token(&key, "k2", claims("n1"))), Err(Refusal::UnknownKey));
        assert_eq!(check(token(&key, "k1", claims("n2"))), Err(Refusal::Nonce));
        let mut c = claims("n1");
        c["nonce"] = serde_json::Value::Null;
        assert_eq!(check(token(&key, "k1", c)), Err(Refusal::Nonce));
        let mut c = claims("n1");
        c["iss"] = json!("https://evil.example");
        assert_eq!(check(token(&key, "k1", c)), Err(Refusal::Issuer));
        let mut c = claims("n1");
        c["aud"] = json!("someone-else");
        assert_eq!(check(token(&key, "k1", c)), Err(Refusal::Audience));
        let mut c = claims("n1");
        c["aud"] = json!(["kw", "someone-else"]);
        assert_eq!(check(token(&key, "k1", c)), Err(Refusal::Audience));
        let mut c = claims("n1");
        c["exp"] = json!(jsonwebtoken::get_current_timestamp() - 3600);
        assert_eq!(check(token(&key, "k1", c)), Err(Refusal::Expired));
        let hmac = jsonwebtoken::encode(
            &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
            &claims("n1"),
            &EncodingKey::from_secret(b"client-secret"),
        )
        .unwrap();
        assert_eq!(check(hmac), Err(Refusal::Algorithm));
    }
}
