//! What operators see of accounts: finding one by id, username or address, listing them, one
//! account's details, and the decoys among them. Every read of account data is audited.

use serde_json::json;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::core::Core;
use super::error::{Error, Result};
use super::identity::Email;
use super::profile::Role;
use super::second_factors::SecondFactors;
use crate::clock::rfc3339;
use crate::store::UserRecord;

#[derive(Clone)]
pub struct Operators {
    core: Core,
    accounts: Accounts,
    factors: SecondFactors,
}

impl Operators {
    pub fn new(core: &Core, accounts: Accounts, factors: SecondFactors) -> Self {
        Self { core: core.clone(), accounts, factors }
    }

    /// An account by id, username or email address.
    pub async fn find(&self, key: &str) -> Result<Option<UserRecord>> {
        if key.contains('@') {
            return match Email::parse(key) {
                Ok(email) => Ok(self.accounts.find_by_email(&email).await?),
                Err(_) => Ok(None),
            };
        }
        // A database that does not answer is an error, never "no such account".
        self.user_if_any(key).await
    }

    /// Finds an account by id or username.
    pub async fn user(&self, id_or_username: &str) -> Result<UserRecord> {
        match self.user_if_any(id_or_username).await? {
            Some(user) => Ok(user),
            None => Err(Error::NoSuchAccount(id_or_username.to_owned())),
        }
    }

    pub async fn user_if_any(&self, id_or_username: &str) -> Result<Option<UserRecord>> {
        if let Some(user) = self.core.store.user_by_id(id_or_username).await? {
            return Ok(Some(user));
        }
        Ok(self.core.store.user_by_username_key(&id_or_username.to_ascii_lowercase()).await?)
    }

    fn email(&self, user: &UserRecord) -> String {
        self.accounts.email_of(user).unwrap_or_else(|_| "<cannot decrypt>".into())
    }

    pub async fn list(&self, limit: i64, offset: i64, actor: &Actor) -> Result<Vec<serde_json::Value>> {
        let users = self.core.store.list_users(limit, offset).await?;
        // Reading account data, emails included, is an administrator action like any other.
        let details = json!({ "limit": limit, "offset": offset, "accounts_shown": users.len() });
        self.core.audit.record(AuditLog::event(kind::ADMIN_USERS_LISTED, actor, None, None, details)).await?;
        Ok(users.iter().map(|u| self.account_summary(u)).collect())
    }

    /// Every account in creation order, handed to `page` a thousand at a time (never all in memory).
    pub async fn each_page(&self, mut page: impl FnMut(Vec<UserRecord>)) -> Result<()> {
        const PAGE: i64 = 1000;
        let mut offset = 0;
        loop {
            let users = self.core.store.list_users(PAGE, offset).await?;
            let count = i64::try_from(users.len()).unwrap_or(PAGE);
            page(users);
            if count < PAGE {
                return Ok(());
            }
            offset += count;
        }
    }

    fn account_summary(&self, user: &UserRecord) -> serde_json::Value {
        json!({
            "id": user.id, "username": user.username, "email": self.email(user), "role": Role::of(user).as_str(),
            "created_at": rfc3339(user.created_at), "disabled": user.disabled_at.is_some(),
        })
    }

    /// The account with exactly this address, through the blind index (support's daily question);
    /// a look that finds one is audited as viewing it.
    pub async fn find_by_email(&self, address: &str, actor: &Actor) -> Result<Option<serde_json::Value>> {
        let Ok(email) = Email::parse(address) else { return Ok(None) };
        let Some(user) = self.accounts.find_by_email(&email).await? else { return Ok(None) };
        let details = json!({ "found_by": "email" });
        self.core.audit.record(AuditLog::event(kind::ADMIN_USER_VIEWED, actor, Some(&user.id), None, details)).await?;
        Ok(Some(self.account_summary(&user)))
    }

    /// The decoy accounts among all accounts. Only the keyring tells them apart, so this reads
    /// every account; the listing is audited (how many, never which: the audit log is readable
    /// by more people than the key file).
    pub async fn list_decoys(&self, actor: &Actor) -> Result<Vec<serde_json::Value>> {
        let mut decoys = Vec::new();
        self.each_page(|users| {
            let decoy = |u: &&UserRecord| crate::domain::honeytokens::is_decoy_account(&self.core.keyring, &u.id);
            decoys.extend(users.iter().filter(decoy).map(|u| self.account_summary(u)));
        })
        .await?;
        let details = json!({ "accounts": decoys.len() });
        self.core.audit.record(AuditLog::event(kind::HONEYTOKENS_LISTED, actor, None, None, details)).await?;
        Ok(decoys)
    }

    pub async fn show(&self, id_or_username: &str, actor: &Actor) -> Result<serde_json::Value> {
        let user = self.user(id_or_username).await?;
        self.core
            .audit
            .record(AuditLog::event(kind::ADMIN_USER_VIEWED, actor, Some(&user.id), None, json!({})))
            .await?;
        let devices = self.core.store.devices_of(&user.id).await?;
        let sessions = self.core.store.sessions_of(&user.id).await?;
        let events = self.core.audit.events_of(&user.id, 20).await?;
        let providers: Vec<_> = self
            .core
            .store
            .sso_identities_of(&user.id)
            .await?
            .iter()
            .map(|i| {
                json!({
                    "id": i.id, "provider": i.provider, "linked_at": rfc3339(i.created_at),
                    "last_used_at": i.last_used_at.map(rfc3339),
                })
            })
            .collect();
        let now = crate::clock::now_ms();
        let devices: Vec<_> = devices
            .iter()
            .map(|d| {
                let open_sessions = sessions
                    .iter()
                    .filter(|s| {
                        s.device_id == d.id && s.last_used_at + self.core.policy.longest_idle_secs() * 1000 > now
                    })
                    .count();
                json!({
                    "id": d.id, "name": d.name, "product": d.product, "platform": d.platform,
                    "client_identifier": d.client_identifier, "last_seen_at": rfc3339(d.last_seen_at),
                    "last_address": d.last_address, "open_sessions": open_sessions,
                })
            })
            .collect();
        Ok(json!({
            "id": user.id,
            "username": user.username,
            "email": self.email(&user),
            "role": Role::of(&user).as_str(),
            "second_factors": self.factors.methods(&user.id).await?,
            "has_password": !user.password_hash.is_empty(),
            "must_reset_password": user.must_reset_password != 0,
            "disabled_at": user.disabled_at.map(rfc3339),
            "sign_in_providers": providers,
            "created_at": rfc3339(user.created_at),
            "devices": devices,
            "recent_events": events,
        }))
    }
}
