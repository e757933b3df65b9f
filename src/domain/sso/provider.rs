//! An upstream OpenID Connect provider as configured (`[[sso.providers]]`), and what is cached of it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey};
use zeroize::Zeroizing;

/// How long a provider's discovery document is trusted before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// One `[[sso.providers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Short name used in URLs (`/sso/{id}/callback`): lower-case letters, digits and `-`.
    pub id: String,
    /// What the button says: "Sign in with {name}".
    pub name: String,
    /// The provider's issuer URL; its `/.well-known/openid-configuration` describes the rest.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (better than `client_secret` in the config file).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// A PEM private key (PKCS#8, EC P-256 or RSA): keywarden authenticates with `private_key_jwt`.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The `kid` the provider knows that key by.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Scopes asked for; `openid` is always added.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// An SVG or PNG file shown on the button.
    #[serde(default)]
    pub icon: Option<PathBuf>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// How keywarden proves itself at the provider's token endpoint.
pub(crate) enum ClientAuth {
    Secret(Zeroizing<String>),
    PrivateKey { key: Box<EncodingKey>, alg: Algorithm, kid: Option<String> },
}

/// The parts of a provider's discovery document keywarden uses.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the provider names itself in its answers, which defeats mix-up attacks.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Default)]
struct Cache {
    metadata: Option<(Metadata, Instant)>,
    jwks: Option<(JwkSet, Instant)>,
}

/// A validated provider with its cached discovery document and keys.
pub struct Provider {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub(crate) auth: ClientAuth,
    pub scope: String,
    /// The icon as a `data:` URI (the pages' CSP allows images from `data:` and our own origin).
    pub icon: Option<String>,
    cache: Mutex<Cache>,
}

impl Provider {
    /// Checks an entry and reads its files; the message names what is wrong.
    pub fn from_settings(settings: &ProviderSettings) -> Result<Self, String> {
        let id = &settings.id;
        let valid_id = !id.is_empty()
            && id.len() <= 32
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_id {
            return Err(format!("sso provider id {id:?}: use 1 to 32 lower-case letters, digits and '-'"));
        }
        let name = settings.name.trim();
        if name.is_empty() || name.chars().count() > 40 {
            return Err(format!("sso provider {id}: name must have 1 to 40 characters"));
        }
        let issuer = url::Url::parse(&settings.issuer).map_err(|e| format!("sso provider {id}: issuer: {e}"))?;
        let loopback = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
            return Err(format!("sso provider {id}: the issuer must be an https URL"));
        }
        if settings.client_id.trim().is_empty() {
            return Err(format!("sso provider {id}: client_id is empty"));
        }
        let auth = match (&settings.client_secret, &settings.client_secret_file, &settings.private_key_file) {
            (Some(secret), None, None) => ClientAuth::Secret(Zeroizing::new(secret.trim().to_owned())),
            (None, Some(path), None) => ClientAuth::Secret(Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("sso provider {id}: cannot read client_secret_file: {e}"))?
                    .trim()
                    .to_owned(),
            )),
            (None, None, Some(path)) => {
                let pem = Zeroizing::new(
                    std::fs::read(path).map_err(|e| format!("sso provider {id}: cannot read private_key_file: {e}"))?,
                );
                let (key, alg) = match EncodingKey::from_ec_pem(&pem) {
                    Ok(key) => (key, Algorithm::ES256),
                    Err(_) => EncodingKey::from_rsa_pem(&pem).map(|key| (key, Algorithm::RS256)).map_err(|_| {
                        format!("sso provider {id}: private_key_file is not a PEM EC P-256 or RSA private key")
                    })?,
                };
                ClientAuth::PrivateKey { key: Box::new(key), alg, kid: settings.private_key_id.clone() }
            }
            _ => {
                return Err(format!(
                    "sso provider {id}: give exactly one of client_secret, client_secret_file or private_key_file"
                ))
            }
        };
        if let ClientAuth::Secret(secret) = &auth {
            if secret.is_empty() {
                return Err(format!("sso provider {id}: the client secret is empty"));
            }
        }
        let mut scopes = vec!["openid".to_owned()];
        for scope in &settings.scopes {
            if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
                return Err(format!("sso provider {id}: invalid scope {scope:?}"));
            }
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let icon = settings.icon.as_ref().map(|path| icon_data_uri(id, path)).transpose()?;
        Ok(Self {
            id: id.clone(),
            name: name.to_owned(),
            issuer: settings.issuer.clone(),
            client_id: settings.client_id.trim().to_owned(),
            auth,
            scope: scopes.join(" "),
            icon,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The discovery document, if fetched less than an hour ago.
    pub(crate) fn cached_metadata(&self) -> Option<Metadata> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.metadata.as_ref().filter(|(_, at)| at.elapsed() < METADATA_TTL).map(|(m, _)| m.clone())
    }

    pub(crate) fn remember_metadata(&self, metadata: Metadata) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.metadata = Some((metadata, Instant::now()));
    }

    /// The provider's keys as last fetched, and how long ago.
    pub(crate) fn cached_jwks(&self) -> Option<(JwkSet, Duration)> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.jwks.as_ref().map(|(set, at)| (set.clone(), at.elapsed()))
    }

    pub(crate) fn remember_jwks(&self, jwks: JwkSet) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.jwks = Some((jwks, Instant::now()));
    }
}

fn icon_data_uri(id: &str, path: &std::path::Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("sso provider {id}: cannot read icon: {e}"))?;
    let mime = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => return Err(format!("sso provider {id}: the icon must be an .svg or .png file")),
    };
    if bytes.len() > 64 * 1024 {
        return Err(format!("sso provider {id}: the icon is larger than 64 KiB"));
    }
    Ok(format!("data:{mime};base64,{}", STANDARD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            id: "corp".into(),
            name: "Corp".into(),
            issuer: "https://id.corp.example".into(),
            client_id: "keywarden".into(),
            client_secret: Some("s3cret".into()),
            client_secret_file: None,
            private_key_file: None,
            private_key_id: None,
            scopes: default_scopes(),
            icon: None,
        }
    }

    #[test]
    fn a_valid_entry_asks_for_openid_once() {
        let provider = Provider::from_settings(&settings()).unwrap();
        assert_eq!(provider.scope, "openid email profile");
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        let cases: [(ProviderSettings, &str); 5] = [
            (ProviderSettings { id: "Corp!".into(), ..settings() }, "lower-case"),
            (ProviderSettings { issuer: "http://id.corp.example".into(), ..settings() }, "https"),
            (ProviderSettings { client_secret: None, ..settings() }, "exactly one"),
            (ProviderSettings { client_secret_file: Some("/nonexistent".into()), ..settings() }, "exactly one"),
            (ProviderSettings { scopes: vec!["a\"b".into()], ..settings() }, "invalid scope"),
        ];
        for (bad, reason) in cases {
            let err = Provider::from_settings(&bad).err().expect("accepted");
            assert!(err.contains(reason), "{err}");
        }
        let loopback = ProviderSettings { issuer: "http://127.0.0.1:9000".into(), ..settings() };
        assert!(Provider::from_settings(&loopback).is_ok());
    }
}
