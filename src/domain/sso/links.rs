//! Linked providers: listing, linking and unlinking an upstream account, and telling the owner.

use serde_json::json;

use super::id_token::UpstreamClaims;
use super::label_context;
use super::subject_key;
use super::LinkedIdentity;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::error::{Error, Result};
use crate::domain::Sso;
use crate::keys::Sealed;
use crate::mail::Notice;
use crate::store::{SsoIdentityRecord, StoreError};

impl Sso {
    /// The upstream accounts linked to an account.
    pub async fn identities(&self, user_id: &str) -> Result<Vec<LinkedIdentity>> {
        let records = self.store.sso_identities_of(user_id).await?;
        let mut linked = Vec::with_capacity(records.len());
        for record in records {
            let label = match (&record.label_key_id, &record.label_sealed) {
                (Some(key_id), Some(bytes)) => {
                    let sealed = Sealed { key_id: key_id.clone(), bytes: bytes.clone() };
                    let plain = self.keyring.open(&sealed, &label_context(&record.id))?;
                    Some(String::from_utf8_lossy(&plain).into_owned())
                }
                _ => None,
            };
            linked.push(LinkedIdentity {
                provider_name: self.provider_name(&record.provider),
                provider_id: record.provider,
                id: record.id,
                label,
                linked_at: record.created_at,
                last_used_at: record.last_used_at,
            });
        }
        Ok(linked)
    }

    /// Unlinks an upstream account (after a fresh step-up), unless it is the last way in.
    pub async fn unlink(&self, who: &Authenticated, id: &str, address: Option<&str>) -> Result<()> {
        self.freshness.require(who).await?;
        let identities = self.store.sso_identities_of(&who.user_id).await?;
        let identity = identities.iter().find(|i| i.id == id).ok_or(Error::SsoIdentityNotFound)?;
        if !self.store.unlink_sso_identity(&who.user_id, id).await? {
            return Err(Error::LastSignInMethod);
        }
        self.tell_owner(who, &identity.provider, false, address).await
    }

    pub(super) async fn link(
        &self,
        provider: &str,
        claims: &UpstreamClaims,
        who: &Authenticated,
        address: Option<&str>,
    ) -> Result<()> {
        let identity = self.identity_record(provider, claims, &who.user_id, self.clock.now_ms());
        self.store.link_sso_identity(&identity).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::SsoIdentityTaken,
            other => Error::from(other),
        })?;
        tracing::info!(user_id = %who.user_id, provider, "sign-in provider linked");
        self.tell_owner(who, provider, true, address).await
    }

    /// Audits a link or unlink and mails the account's owner about it.
    pub(super) async fn tell_owner(
        &self,
        who: &Authenticated,
        provider: &str,
        linked: bool,
        address: Option<&str>,
    ) -> Result<()> {
        let kind = if linked { kind::SSO_LINKED } else { kind::SSO_UNLINKED };
        let actor = Actor::User(who.user_id.clone());
        let details = json!({ "provider": provider });
        self.audit.record(AuditLog::event(kind, &actor, Some(&who.user_id), address, details)).await?;
        let notice = Notice::SignInProviderChanged {
            provider: self.provider_name(provider),
            linked,
            address: address.map(str::to_owned),
        };
        self.accounts.notify(&who.user_id, notice).await
    }

    pub(super) fn identity_record(
        &self,
        provider: &str,
        claims: &UpstreamClaims,
        user_id: &str,
        now: i64,
    ) -> SsoIdentityRecord {
        let id = uuid::Uuid::now_v7().to_string();
        let index = self.keyring.blind_index(&subject_key(provider, &claims.sub));
        let label = claims.email.as_deref().map(|email| self.keyring.seal(email.as_bytes(), &label_context(&id)));
        SsoIdentityRecord {
            user_id: user_id.to_owned(),
            provider: provider.to_owned(),
            subject_index: index.digest,
            subject_index_key_id: index.key_id,
            label_key_id: label.as_ref().map(|l| l.key_id.clone()),
            label_sealed: label.map(|l| l.bytes),
            created_at: now,
            last_used_at: Some(now),
            id,
        }
    }
}
