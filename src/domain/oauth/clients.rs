//! OAuth clients: the registry of apps that may ask keywarden to sign people in, and their secrets.
//!
//! A client's id is also the channel of every token issued to it, so `admin revoke --channel ID`
//! ends exactly that app's sessions. Secrets are `kw_cs_` tokens, shown once and stored only as
//! keyed digests (P1); redirect URIs are matched exactly, never by prefix.

use std::sync::Arc;

use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::device_info::{CHANNEL_DEVICE, CHANNEL_WEB};
use crate::domain::error::{Error, Result};
use crate::domain::tokens::TokenKind;
use crate::keys::signing::SigningAlg;
use crate::keys::Keyring;
use crate::store::{ClientRecord, OAuthStore, StoreError};

/// Whether a client can keep a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A server-side app: authenticates at the token endpoint with its secret.
    Confidential,
    /// An app on people's devices or in their browsers: no secret, PKCE (S256) instead.
    Public,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confidential => "confidential",
            Self::Public => "public",
        }
    }
}

/// A client as an operator registers it.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub id: String,
    pub name: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// Where Security Event Tokens (RFC 8417) about its accounts are pushed, such as the RISC
    /// `account-purged` event when an account it knows is erased.
    pub security_event_uri: Option<String>,
    /// The platform's own apps (the site, the forum) skip the consent screen.
    pub first_party: bool,
    /// How its ID tokens are signed.
    pub id_token_alg: SigningAlg,
    /// Public keys (a JWKS, as JSON text) for `private_key_jwt`: such a client gets no secret.
    pub jwks: Option<String>,
}

/// A first-party client kept in the configuration file (`[[oauth.clients]]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredClient {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    #[serde(default)]
    pub security_event_uri: Option<String>,
    /// The confidential client's secret, a `kw_cs_` value from `keywarden admin clients
    /// generate-secret`; better kept in `secret_file`, readable by keywarden only.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    #[serde(default = "default_alg")]
    pub id_token_alg: SigningAlg,
    /// Configured clients are the platform's own apps: no consent screen unless this is false.
    #[serde(default = "default_true")]
    pub first_party: bool,
}

fn default_alg() -> SigningAlg {
    SigningAlg::Es256
}

fn default_true() -> bool {
    true
}

/// A registered client, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub kind: ClientKind,
    pub redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub security_event_uri: Option<String>,
    pub first_party: bool,
    pub created_at: i64,
    pub secret_rotated_at: Option<i64>,
    pub id_token_alg: SigningAlg,
    /// The public keys it signs `private_key_jwt` assertions with, if it authenticates that way.
    pub jwks: Option<serde_json::Value>,
}

impl Client {
    /// Exact comparison, as OAuth 2.0 Security BCP §4.1.3 asks: no prefixes, no wildcards. The one
    /// exception is RFC 8252 §7.3: a native app listening on a loopback IP address may name any port.
    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|allowed| allowed == uri || same_loopback_redirect(allowed, uri))
    }

    pub fn is_public(&self) -> bool {
        self.kind == ClientKind::Public
    }
}

#[derive(Clone)]
pub struct Clients {
    clock: Clock,
    store: Arc<dyn OAuthStore>,
    keyring: Arc<Keyring>,
    audit: AuditLog,
}

impl Clients {
    pub fn new(store: Arc<dyn OAuthStore>, keyring: Arc<Keyring>, audit: AuditLog, clock: Clock) -> Self {
        Self { clock, store, keyring, audit }
    }

    /// Registers a client; a confidential one gets its secret, returned this once.
    pub async fn register(&self, new: NewClient, actor: &Actor) -> Result<(Client, Option<Zeroizing<String>>)> {
        let first_party = new.first_party;
        let mut record = self.validated_record(new)?;
        let needs_secret = record.kind == ClientKind::Confidential.as_str() && record.jwks.is_none();
        let secret = needs_secret.then(|| TokenKind::ClientSecret.mint());
        if let Some(secret) = &secret {
            let digest = self.keyring.token_digest(secret);
            record.secret_digest = Some(digest.digest);
            record.secret_key_id = Some(digest.key_id);
        }
        self.store.create_client(&record).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::ClientIdTaken,
            other => Error::from(other),
        })?;
        let details = json!({ "client_id": record.id, "kind": record.kind, "first_party": first_party });
        self.audit.record(AuditLog::event(kind::CLIENT_REGISTERED, actor, None, None, details)).await?;
        Ok((Client::try_from(record)?, secret))
    }

    /// The record of a new client after checking its id, name and URIs; without a secret yet.
    fn validated_record(&self, new: NewClient) -> Result<ClientRecord> {
        let id = client_id(&new.id)?;
        let name = new.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::InvalidClient("the name must be 1 to 100 printable characters"));
        }
        for uri in &new.redirect_uris {
            redirect_uri(uri, new.kind)?;
        }
        if let Some(uri) = &new.backchannel_logout_uri {
            server_uri(uri)
                .ok_or(Error::InvalidClient("the back-channel logout URI must be https (or http on loopback)"))?;
        }
        if let Some(uri) = &new.security_event_uri {
            server_uri(uri)
                .ok_or(Error::InvalidClient("the security event URI must be https (or http on loopback)"))?;
        }
        let jwks = new.jwks.as_deref().map(|text| public_jwks(text, new.kind)).transpose()?;
        Ok(ClientRecord {
            id,
            name,
            kind: new.kind.as_str().to_owned(),
            secret_key_id: None,
            secret_digest: None,
            redirect_uris: serde_json::to_string(&new.redirect_uris).map_err(|e| Error::Internal(e.to_string()))?,
            backchannel_logout_uri: new.backchannel_logout_uri,
            security_event_uri: new.security_event_uri,
            first_party: i64::from(new.first_party),
            created_at: self.clock.now_ms(),
            secret_rotated_at: None,
            id_token_alg: new.id_token_alg.as_str().to_owned(),
            jwks,
        })
    }

    /// Registers or updates the clients of the configuration, so the file is the truth for them.
    /// A confidential one needs its secret (`secret` or `secret_file`, a `kw_cs_` value).
    pub async fn sync_configured(&self, configured: &[ConfiguredClient]) -> Result<()> {
        for wanted in configured {
            let kind = if wanted.public { ClientKind::Public } else { ClientKind::Confidential };
            let secret = match (&wanted.secret, &wanted.secret_file) {
                (Some(secret), None) => Some(Zeroizing::new(secret.trim().to_owned())),
                (None, Some(path)) => Some(Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|_| Error::InvalidClient("a configured client's secret_file cannot be read"))?
                        .trim()
                        .to_owned(),
                )),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(Error::InvalidClient("give a configured client secret or secret_file, not both"))
                }
            };
            match (&secret, kind) {
                (Some(s), ClientKind::Confidential) if TokenKind::of(s) == Some(TokenKind::ClientSecret) => {}
                (_, ClientKind::Confidential) => return Err(Error::InvalidClient(
                    "a configured confidential client needs a secret from `keywarden admin clients generate-secret`",
                )),
                (Some(_), ClientKind::Public) => return Err(Error::InvalidClient("a public client has no secret")),
                (None, ClientKind::Public) => {}
            }
            let new = NewClient {
                id: wanted.id.clone(),
                name: wanted.name.clone(),
                kind,
                redirect_uris: wanted.redirect_uris.clone(),
                backchannel_logout_uri: wanted.backchannel_logout_uri.clone(),
                security_event_uri: wanted.security_event_uri.clone(),
                first_party: wanted.first_party,
                id_token_alg: wanted.id_token_alg,
                jwks: None,
            };
            let mut record = self.validated_record(new)?;
            if let Some(secret) = &secret {
                let digest = self.keyring.token_digest(secret);
                record.secret_digest = Some(digest.digest);
                record.secret_key_id = Some(digest.key_id);
            }
            let before = self.store.client(&record.id).await?;
            let changed = before.as_ref().is_none_or(|b| {
                (&b.name, &b.kind, &b.redirect_uris, &b.backchannel_logout_uri, &b.security_event_uri)
                    != (
                        &record.name,
                        &record.kind,
                        &record.redirect_uris,
                        &record.backchannel_logout_uri,
                        &record.security_event_uri,
                    )
                    || (b.first_party, &b.id_token_alg) != (record.first_party, &record.id_token_alg)
                    || secret.as_ref().is_some_and(|s| !self.secret_matches(b, s))
            });
            if changed {
                self.store.upsert_client(&record).await?;
                let details = json!({ "client_id": record.id, "kind": record.kind, "first_party": wanted.first_party, "source": "config" });
                self.audit
                    .record(AuditLog::event(kind::CLIENT_REGISTERED, &Actor::System, None, None, details))
                    .await?;
            }
        }
        Ok(())
    }

    fn secret_matches(&self, record: &ClientRecord, secret: &str) -> bool {
        let Some(stored) = &record.secret_digest else { return false };
        TokenKind::of(secret) == Some(TokenKind::ClientSecret)
            && self.keyring.token_digests(secret).iter().any(|d| bool::from(d.digest.ct_eq(stored)))
    }

    pub async fn list(&self) -> Result<Vec<Client>> {
        self.store.clients().await?.into_iter().map(Client::try_from).collect()
    }

    pub async fn get(&self, id: &str) -> Result<Client> {
        Client::try_from(self.store.client(id).await?.ok_or(Error::ClientNotFound)?)
    }

    pub async fn remove(&self, id: &str, actor: &Actor) -> Result<()> {
        if !self.store.remove_client(id).await? {
            return Err(Error::ClientNotFound);
        }
        self.audit.record(AuditLog::event(kind::CLIENT_REMOVED, actor, None, None, json!({ "client_id": id }))).await?;
        Ok(())
    }

    /// A new secret for a confidential client; the old one stops working at once.
    pub async fn rotate_secret(&self, id: &str, actor: &Actor) -> Result<Zeroizing<String>> {
        let secret = TokenKind::ClientSecret.mint();
        let digest = self.keyring.token_digest(&secret);
        if !self.store.set_client_secret(id, &digest.digest, &digest.key_id, self.clock.now_ms()).await? {
            // Either no such client or a public one, which has no secret to rotate.
            return Err(self.get(id).await.err().unwrap_or(Error::InvalidClient("a public client has no secret")));
        }
        let details = json!({ "client_id": id });
        self.audit.record(AuditLog::event(kind::CLIENT_SECRET_ROTATED, actor, None, None, details)).await?;
        Ok(secret)
    }

    /// The confidential client whose id and secret these are; any mismatch is the same refusal.
    pub async fn authenticate(&self, id: &str, secret: &str) -> Result<Client> {
        let record = self.store.client(id).await?.ok_or(Error::InvalidClientCredentials)?;
        if !self.secret_matches(&record, secret) {
            return Err(Error::InvalidClientCredentials);
        }
        Client::try_from(record)
    }
}

impl TryFrom<ClientRecord> for Client {
    type Error = Error;

    fn try_from(r: ClientRecord) -> Result<Self> {
        let redirect_uris = serde_json::from_str(&r.redirect_uris).map_err(|e| Error::Internal(e.to_string()))?;
        let kind = if r.kind == "public" { ClientKind::Public } else { ClientKind::Confidential };
        Ok(Self {
            id: r.id,
            name: r.name,
            kind,
            redirect_uris,
            backchannel_logout_uri: r.backchannel_logout_uri,
            security_event_uri: r.security_event_uri,
            first_party: r.first_party != 0,
            created_at: r.created_at,
            secret_rotated_at: r.secret_rotated_at,
            // The column only ever holds values written from `SigningAlg`.
            id_token_alg: SigningAlg::parse(&r.id_token_alg).unwrap_or(SigningAlg::Es256),
            jwks: r
                .jwks
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| Error::Internal(e.to_string()))?,
        })
    }
}

/// A JWKS of public keys only (RFC 7517), usable for verifying assertions; compacted.
fn public_jwks(text: &str, kind: ClientKind) -> Result<String> {
    const PRIVATE_MEMBERS: [&str; 6] = ["d", "p", "q", "dp", "dq", "qi"];
    if kind != ClientKind::Confidential {
        return Err(Error::InvalidClient("only confidential clients authenticate with private_key_jwt"));
    }
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(text).map_err(|_| Error::InvalidClient("the JWKS is not a valid JSON Web Key Set"))?;
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|_| Error::InvalidClient("the JWKS is not JSON"))?;
    let keys = raw["keys"].as_array().cloned().unwrap_or_default();
    if set.keys.is_empty() || keys.iter().any(|k| PRIVATE_MEMBERS.iter().any(|m| k.get(*m).is_some())) {
        return Err(Error::InvalidClient("the JWKS must hold at least one key, and public keys only"));
    }
    if set.keys.iter().any(|k| jsonwebtoken::DecodingKey::from_jwk(k).is_err()) {
        return Err(Error::InvalidClient("a key of the JWKS cannot verify signatures"));
    }
    Ok(raw.to_string())
}

/// 1 to 64 of `a-z 0-9 . _ -`; never a built-in channel's name, since the id names the channel.
fn client_id(id: &str) -> Result<String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !valid {
        return Err(Error::InvalidClient("a client id must be 1 to 64 of a-z, 0-9, '.', '_' and '-'"));
    }
    if [CHANNEL_WEB, CHANNEL_DEVICE, "api"].contains(&id) {
        return Err(Error::InvalidClient("this client id is reserved for a built-in channel"));
    }
    Ok(id.to_owned())
}

/// Both are `http://127.0.0.1` or `http://[::1]` URLs that differ in their port only.
fn same_loopback_redirect(registered: &str, requested: &str) -> bool {
    let (Ok(registered), Ok(requested)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = |url: &url::Url| match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    registered.scheme() == "http"
        && requested.scheme() == "http"
        && loopback_ip(&registered)
        && registered.host() == requested.host()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
        && requested.username().is_empty()
        && requested.fragment().is_none()
}

/// An `https` URL, or `http` on a loopback address, without a fragment.
fn server_uri(uri: &str) -> Option<url::Url> {
    let url = url::Url::parse(uri).ok()?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    (scheme_ok && url.fragment().is_none() && url.username().is_empty()).then_some(url)
}

/// Redirect URIs (RFC 6749 §3.1.2, RFC 8252 §7): absolute, no fragment; `https`, `http` on loopback,
/// or — for public apps on devices — a private-use scheme named after a domain (`com.example.app:/cb`).
fn redirect_uri(uri: &str, kind: ClientKind) -> Result<()> {
    if server_uri(uri).is_some() {
        return Ok(());
    }
    let private_use = url::Url::parse(uri)
        .ok()
        .filter(|url| url.scheme().contains('.') && url.fragment().is_none() && kind == ClientKind::Public);
    private_use.map(|_| ()).ok_or(Error::InvalidClient(
        "a redirect URI must be https, http on loopback, or (public apps) a private-use scheme like com.example.app:/cb, \
         without a fragment",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_checked_by_kind() {
        for good in ["https://forum.example.com/cb", "http://127.0.0.1:8765/cb", "http://localhost/cb"] {
            assert!(redirect_uri(good, ClientKind::Confidential).is_ok(), "{good}");
        }
        assert!(redirect_uri("com.example.app:/oauth", ClientKind::Public).is_ok());
        for bad in [
            "http://forum.example.com/cb",
            "https://x.example/cb#frag",
            "com.example.app:/oauth",
            "/cb",
            "javascript:x",
        ] {
            assert!(redirect_uri(bad, ClientKind::Confidential).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_ip_redirects_may_name_any_port_and_nothing_else_differs() {
        let client = Client {
            id: "cli".into(),
            name: "CLI".into(),
            kind: ClientKind::Public,
            redirect_uris: vec!["http://127.0.0.1/callback".into(), "https://app.example/cb".into()],
            backchannel_logout_uri: None,
            security_event_uri: None,
            first_party: false,
            created_at: 0,
            secret_rotated_at: None,
            id_token_alg: SigningAlg::Es256,
            jwks: None,
        };
        assert!(client.allows_redirect("http://127.0.0.1:53127/callback"));
        assert!(client.allows_redirect("http://127.0.0.1/callback"));
        for bad in [
            "http://127.0.0.1:53127/callback/x",
            "http://127.0.0.1:53127/other",
            "http://localhost:53127/callback",
            "http://127.0.0.2:53127/callback",
            "https://app.example:8443/cb",
            "http://127.0.0.1:53127/callback?x=1",
        ] {
            assert!(!client.allows_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn client_ids_are_plain_and_not_channels() {
        assert!(client_id("forum").is_ok());
        for bad in ["", "web", "device", "api", "Forum", "a b", &"x".repeat(65)] {
            assert!(client_id(bad).is_err(), "{bad:?}");
        }
    }
}
