//! Passkeys (WebAuthn, checked by webauthn-rs): challenges, registration, and verifying answers.
//!
//! Only public keys and signature counters are stored (P1): a stolen database cannot answer a
//! challenge. Every challenge is kept on the server and can be answered once, before it expires.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CredentialID, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use super::error::{Error, Result};
use crate::clock::Clock;
use crate::store::{FactorStore, NewCeremony, PasskeyRecord};

/// Adding a passkey to a signed-in account.
const REGISTER: &str = "register";
/// Proving a known account holds one of its passkeys: the second factor, or a step-up.
const AUTHENTICATE: &str = "authenticate";
/// Passwordless sign-in: the account is only known from the answer.
const DISCOVER: &str = "discover";

const NAME_MAX: usize = 64;

/// Builds the relying party passkeys are bound to.
pub fn relying_party(id: &str, origins: &[Url], name: &str, any_port: bool) -> anyhow::Result<Webauthn> {
    let (first, others) = origins.split_first().ok_or_else(|| anyhow::anyhow!("passkeys need an origin"))?;
    let mut builder = WebauthnBuilder::new(id, first)?.rp_name(name).allow_any_port(any_port);
    for origin in others {
        builder = builder.append_allowed_origin(origin);
    }
    Ok(builder.build()?)
}

/// A challenge for the browser: `options` is what `navigator.credentials.create()` or `.get()` takes
/// (`{"publicKey": …}`, binary fields in base64url); the answer comes back with `ceremony_id`.
#[derive(Debug, Clone, Serialize)]
pub struct Ceremony {
    pub ceremony_id: String,
    pub options: serde_json::Value,
}

/// A browser's answer to an authentication challenge.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// Which challenge it answers; a sign-in's second factor takes it from the sign-in itself.
    pub ceremony_id: Option<String>,
    pub credential: Box<PublicKeyCredential>,
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(r: &PasskeyRecord) -> Self {
        Self { id: r.id.clone(), name: r.name.clone(), created_at: r.created_at, last_used_at: r.last_used_at }
    }
}

/// A passkey the browser just created, verified and ready to store.
pub struct NewPasskey {
    pub user_handle: String,
    pub passkey: Passkey,
}

/// What a registration challenge remembers: webauthn-rs's state and the account's user handle.
#[derive(Serialize, Deserialize)]
struct Registration {
    user_handle: String,
    state: PasskeyRegistration,
}

#[derive(Clone)]
pub struct Passkeys {
    clock: Clock,
    store: Arc<dyn FactorStore>,
    webauthn: Option<Arc<Webauthn>>,
    ttl_ms: i64,
}

/// A person's name for a passkey ("Work laptop"): 1 to 64 printable characters.
pub fn clean_name(name: &str) -> Result<String> {
    let name = name.trim();
    let unprintable = name.chars().any(|c| c.is_control() || super::identity::is_layout_control(c));
    if name.is_empty() || name.chars().count() > NAME_MAX || unprintable {
        return Err(Error::InvalidPasskeyName);
    }
    Ok(name.to_owned())
}

/// Why the browser's answer was refused goes to the log; the client learns only that it was.
fn rejected(err: WebauthnError) -> Error {
    tracing::info!(error = %err, "passkey answer refused");
    Error::PasskeyRejected
}

fn decode(record: &PasskeyRecord) -> Result<Passkey> {
    serde_json::from_str(&record.passkey).map_err(|e| Error::Internal(format!("stored passkey {}: {e}", record.id)))
}

impl Passkeys {
    pub fn new(store: Arc<dyn FactorStore>, webauthn: Option<Arc<Webauthn>>, ttl_secs: i64, clock: Clock) -> Self {
        Self { clock, store, webauthn, ttl_ms: ttl_secs * 1000 }
    }

    /// Whether this server can use passkeys at all (see `passkeys.rp_id`).
    pub fn available(&self) -> bool {
        self.webauthn.is_some()
    }

    fn relying_party(&self) -> Result<&Webauthn> {
        self.webauthn.as_deref().ok_or(Error::PasskeysUnavailable)
    }

    pub async fn list(&self, user_id: &str) -> Result<Vec<PasskeyView>> {
        Ok(self.store.passkeys_of(user_id).await?.iter().map(PasskeyView::from).collect())
    }

    pub async fn count(&self, user_id: &str) -> Result<usize> {
        Ok(self.store.passkeys_of(user_id).await?.len())
    }

    /// A challenge to create a passkey for this account. It asks for a discoverable credential with
    /// user verification, so the passkey alone signs in; authenticators already registered are
    /// excluded, so one device is not added twice.
    pub async fn registration_options(&self, user_id: &str, username: &str) -> Result<Ceremony> {
        let webauthn = self.relying_party()?;
        let existing = self.store.passkeys_of(user_id).await?;
        let user_handle = existing.first().map_or_else(|| Uuid::new_v4().to_string(), |p| p.user_handle.clone());
        let handle = Uuid::parse_str(&user_handle).map_err(|e| Error::Internal(format!("user handle: {e}")))?;
        let exclude: Vec<CredentialID> = existing.iter().map(|p| CredentialID::from(p.credential_id.clone())).collect();
        let (options, state) = webauthn
            .start_passkey_registration(handle, username, username, Some(exclude))
            .map_err(|e| Error::Internal(format!("passkey registration: {e}")))?;
        let mut options = serde_json::to_value(options).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
            selection["residentKey"] = "required".into();
            selection["requireResidentKey"] = true.into();
        }
        self.open(REGISTER, Some(user_id), &Registration { user_handle, state }, options).await
    }

    /// Verifies the browser's new credential against its challenge.
    pub async fn finish_registration(
        &self,
        user_id: &str,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<NewPasskey> {
        let webauthn = self.relying_party()?;
        let registration: Registration = self.take(ceremony_id, REGISTER, Some(user_id)).await?;
        let passkey = webauthn.finish_passkey_registration(credential, &registration.state).map_err(rejected)?;
        Ok(NewPasskey { user_handle: registration.user_handle, passkey })
    }

    /// A challenge any of this account's passkeys can answer; `None` if it has none (or passkeys
    /// are off here).
    pub async fn authentication_options(&self, user_id: &str) -> Result<Option<Ceremony>> {
        let Some(webauthn) = self.webauthn.as_deref() else {
            return Ok(None);
        };
        let records = self.store.passkeys_of(user_id).await?;
        if records.is_empty() {
            return Ok(None);
        }
        let passkeys = records.iter().map(decode).collect::<Result<Vec<_>>>()?;
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| Error::Internal(format!("passkey authentication: {e}")))?;
        let options = serde_json::to_value(options).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(self.open(AUTHENTICATE, Some(user_id), &state, options).await?))
    }

    /// Checks that `user_id` answered its challenge with one of its own passkeys.
    pub async fn verify(&self, user_id: &str, assertion: &Assertion) -> Result<()> {
        let webauthn = self.relying_party()?;
        let ceremony_id = assertion.ceremony_id.as_deref().ok_or(Error::InvalidCeremony)?;
        let state: PasskeyAuthentication = self.take(ceremony_id, AUTHENTICATE, Some(user_id)).await?;
        let result = webauthn.finish_passkey_authentication(&assertion.credential, &state).map_err(rejected)?;
        let records = self.store.passkeys_of(user_id).await?;
        let record = records
            .iter()
            .find(|r| r.credential_id.as_slice() == result.cred_id().as_slice())
            .ok_or(Error::PasskeyRejected)?;
        let mut passkey = decode(record)?;
        passkey.update_credential(&result);
        self.used(record, &passkey).await
    }

    /// A challenge for passwordless sign-in: the browser offers whichever passkey the person picks.
    pub async fn discovery_options(&self) -> Result<Ceremony> {
        let webauthn = self.relying_party()?;
        let (mut options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::Internal(format!("passkey sign-in: {e}")))?;
        // Asked for by a button, not by autofill of the username field.
        options.mediation = None;
        let options = serde_json::to_value(options).map_err(|e| Error::Internal(e.to_string()))?;
        self.open(DISCOVER, None, &state, options).await
    }

    /// Finds whose passkey answered a passwordless challenge, and checks the answer; returns the account.
    pub async fn discover(&self, assertion: &Assertion) -> Result<String> {
        let webauthn = self.relying_party()?;
        let ceremony_id = assertion.ceremony_id.as_deref().ok_or(Error::InvalidCeremony)?;
        let state: DiscoverableAuthentication = self.take(ceremony_id, DISCOVER, None).await?;
        let (handle, credential_id) =
            webauthn.identify_discoverable_authentication(&assertion.credential).map_err(rejected)?;
        let record = self.store.passkey_by_credential(credential_id).await?.ok_or(Error::PasskeyRejected)?;
        // The authenticator's user handle must be the one this credential was registered with.
        if Uuid::parse_str(&record.user_handle).ok() != Some(handle) {
            return Err(Error::PasskeyRejected);
        }
        let mut passkey = decode(&record)?;
        let result =
            webauthn.finish_discoverable_authentication_v2(&assertion.credential, state, &passkey).map_err(rejected)?;
        passkey.update_credential(&result);
        self.used(&record, &passkey).await?;
        Ok(record.user_id)
    }

    async fn used(&self, record: &PasskeyRecord, passkey: &Passkey) -> Result<()> {
        let json = serde_json::to_string(passkey).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.passkey_used(&record.id, &json, self.clock.now_ms()).await?;
        Ok(())
    }

    async fn open(
        &self,
        purpose: &'static str,
        user_id: Option<&str>,
        state: &impl Serialize,
        options: serde_json::Value,
    ) -> Result<Ceremony> {
        let ceremony = NewCeremony {
            id: Uuid::new_v4().simple().to_string(),
            user_id: user_id.map(str::to_owned),
            purpose,
            state: serde_json::to_string(state).map_err(|e| Error::Internal(e.to_string()))?,
            expires_at: self.clock.now_ms() + self.ttl_ms,
        };
        self.store.create_ceremony(&ceremony).await?;
        Ok(Ceremony { ceremony_id: ceremony.id, options })
    }

    /// Spends a challenge: it must be for this purpose and account, and not expired.
    async fn take<S: DeserializeOwned>(&self, id: &str, purpose: &str, user_id: Option<&str>) -> Result<S> {
        let record = self.store.take_ceremony(id).await?.ok_or(Error::InvalidCeremony)?;
        if record.purpose != purpose || record.user_id.as_deref() != user_id || record.expires_at <= self.clock.now_ms()
        {
            return Err(Error::InvalidCeremony);
        }
        serde_json::from_str(&record.state).map_err(|e| Error::Internal(format!("ceremony state: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_names_are_short_printable_text() {
        assert_eq!(clean_name("  Work laptop ").unwrap(), "Work laptop");
        assert!(matches!(clean_name(""), Err(Error::InvalidPasskeyName)));
        assert!(matches!(clean_name("a\u{7}b"), Err(Error::InvalidPasskeyName)));
        assert!(matches!(clean_name(&"x".repeat(65)), Err(Error::InvalidPasskeyName)));
    }

    #[test]
    fn the_relying_party_needs_an_origin_on_its_domain() {
        let origin = Url::parse("https://id.example.com").unwrap();
        assert!(relying_party("example.com", std::slice::from_ref(&origin), "keywarden", false).is_ok());
        assert!(relying_party("other.com", &[origin], "keywarden", false).is_err());
        assert!(relying_party("example.com", &[], "keywarden", false).is_err());
    }
}
