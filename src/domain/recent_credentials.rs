//! The credentials an account gained lately, listed where its owner takes the account back (the
//! password-reset page, and after "sign out of all devices"), each removable in one click: what a
//! thief holding a stolen session could have added.

use serde::Serialize;
use serde_json::json;

use super::audit::{kind, Actor, AuditLog};
use super::error::{Error, Result};
use super::validation_cache::ValidationCache;
use crate::clock::{human, Clock};
use crate::store::DynStore;

/// How far back the list goes.
pub const RECENT_DAYS: i64 = 30;

/// What kind of credential it is; its name is what forms post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Passkey,
    AuthenticatorApp,
    Provider,
    DeviceKey,
}

impl CredentialKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "passkey" => Self::Passkey,
            "authenticator_app" => Self::AuthenticatorApp,
            "provider" => Self::Provider,
            "device_key" => Self::DeviceKey,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentCredential {
    pub kind: CredentialKind,
    pub id: String,
    /// What the owner sees: the passkey's name, the provider's id, the device key's id.
    pub name: String,
    pub added_at: i64,
    /// `added_at` as people read it.
    pub added: String,
}

#[derive(Clone)]
pub struct RecentCredentials {
    clock: Clock,
    store: DynStore,
    audit: AuditLog,
    validations: ValidationCache,
}

impl RecentCredentials {
    pub fn new(store: DynStore, audit: AuditLog, validations: ValidationCache, clock: Clock) -> Self {
        Self { clock, store, audit, validations }
    }

    /// The account's credentials added in the last [`RECENT_DAYS`], newest first.
    pub async fn of(&self, user_id: &str) -> Result<Vec<RecentCredential>> {
        let since = self.clock.now_ms() - RECENT_DAYS * 86_400_000;
        let entry = |kind, id: &str, name: &str, added_at: i64| RecentCredential {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
            added_at,
            added: human(added_at),
        };
        let mut recent = Vec::new();
        for passkey in self.store.passkeys_of(user_id).await? {
            recent.push(entry(CredentialKind::Passkey, &passkey.id, &passkey.name, passkey.created_at));
        }
        if let Some(at) = self.store.totp_of(user_id).await?.and_then(|t| t.confirmed_at) {
            recent.push(entry(CredentialKind::AuthenticatorApp, "totp", "Authenticator app", at));
        }
        for identity in self.store.sso_identities_of(user_id).await? {
            recent.push(entry(CredentialKind::Provider, &identity.id, &identity.provider, identity.created_at));
        }
        for key in self.store.device_keys_of(user_id).await? {
            recent.push(entry(CredentialKind::DeviceKey, &key.kid, &key.kid, key.created_at));
        }
        recent.retain(|c| c.added_at >= since);
        recent.sort_by_key(|c| std::cmp::Reverse(c.added_at));
        Ok(recent)
    }

    /// Removes one of them, as its owner (proven by the caller: a reset link, or a fresh session).
    /// Audited like the removals on the security page, naming where it was done (`from`).
    pub async fn remove(
        &self,
        user_id: &str,
        kind: CredentialKind,
        id: &str,
        from: &str,
        address: Option<&str>,
    ) -> Result<()> {
        let (removed, event, details) = match kind {
            CredentialKind::Passkey => {
                (self.store.remove_passkey(user_id, id).await?, kind::PASSKEY_REMOVED, json!({ "passkey_id": id }))
            }
            CredentialKind::AuthenticatorApp => {
                (self.store.remove_totp(user_id).await?, kind::TOTP_DISABLED, json!({}))
            }
            CredentialKind::Provider => {
                (self.store.unlink_sso_identity(user_id, id).await?, kind::SSO_UNLINKED, json!({ "identity_id": id }))
            }
            CredentialKind::DeviceKey => {
                (self.store.remove_device_key(user_id, id).await?, kind::DEVICE_KEY_REMOVED, json!({ "kid": id }))
            }
        };
        if !removed {
            return Err(Error::CredentialNotFound);
        }
        self.validations.forget_user(user_id);
        let details = json!({ "removed_from": from, "credential": details });
        let actor = Actor::User(user_id.to_owned());
        self.audit.record(AuditLog::event(event, &actor, Some(user_id), address, details)).await?;
        Ok(())
    }
}
