//! "Download my data": one JSON document with what keywarden holds about an account — profile,
//! devices, sessions (never token material), second factors' metadata, linked providers, allowed
//! apps, webhooks and its security events. Counted per account, audited and announced by mail.

use serde_json::{json, Value};

use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::devices::Devices;
use super::error::Result;
use super::oauth::OAuth;
use super::plex::Webhooks;
use super::second_factors::SecondFactors;
use super::sso::Sso;
use super::throttle::{Purpose, Subject, Throttle};
use super::Accounts;
use crate::clock::{rfc3339, Clock};
use crate::mail::Notice;
use crate::store::DynStore;

/// How many of the account's security events an export carries at most (the newest).
const MAX_EVENTS: i64 = 10_000;

#[derive(Clone)]
pub struct DataExports {
    clock: Clock,
    store: DynStore,
    accounts: Accounts,
    devices: Devices,
    factors: SecondFactors,
    oauth: OAuth,
    sso: Sso,
    webhooks: Webhooks,
    audit: AuditLog,
    throttle: Throttle,
}

/// The services an export reads from.
pub struct Sources {
    pub accounts: Accounts,
    pub devices: Devices,
    pub factors: SecondFactors,
    pub oauth: OAuth,
    pub sso: Sso,
    pub webhooks: Webhooks,
}

impl DataExports {
    pub fn new(core: &super::core::Core, sources: Sources) -> Self {
        let Sources { accounts, devices, factors, oauth, sso, webhooks } = sources;
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            accounts,
            devices,
            factors,
            oauth,
            sso,
            webhooks,
            audit: core.audit.clone(),
            throttle: core.throttle.clone(),
        }
    }

    /// The signed-in person's data. Each export is counted against the account (it reads a lot and
    /// sends a mail), audited (`account.data_exported`) and mailed to the owner.
    pub async fn export(&self, who: &Authenticated, address: Option<&str>) -> Result<Value> {
        self.throttle.count_attempt(Purpose::DataExport, &[Subject::Account(&who.user_id)]).await?;
        let user_id = who.user_id.as_str();
        let profile = self.accounts.profile(user_id).await?;
        let devices: Vec<Value> = self
            .devices
            .list(who)
            .await?
            .into_iter()
            .map(|view| {
                let d = view.device;
                json!({
                    "id": d.id, "name": d.name, "product": d.product, "platform": d.platform,
                    "client_identifier": d.client_identifier, "provides": d.provides,
                    "first_seen_at": rfc3339(d.first_seen_at), "last_seen_at": rfc3339(d.last_seen_at),
                    "last_address": d.last_address, "channels": view.channels, "this_device": view.current,
                })
            })
            .collect();
        let sessions: Vec<Value> = self
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .map(|s| {
                json!({
                    "id": s.id, "device_id": s.device_id, "channel": s.channel,
                    "started_at": rfc3339(s.created_at), "last_used_at": rfc3339(s.last_used_at),
                })
            })
            .collect();
        let factors = self.factors.status(user_id).await?;
        let passkeys: Vec<Value> = factors
            .passkeys
            .iter()
            .map(|p| json!({ "id": p.id, "name": p.name, "added_at": rfc3339(p.created_at), "last_used_at": p.last_used_at.map(rfc3339) }))
            .collect();
        let providers: Vec<Value> = self
            .sso
            .identities(user_id)
            .await?
            .into_iter()
            .map(|i| json!({ "provider": i.provider_id, "name": i.provider_name, "account": i.label, "linked_at": rfc3339(i.linked_at), "last_used_at": i.last_used_at.map(rfc3339) }))
            .collect();
        let apps: Vec<Value> = self
            .oauth
            .allowed_apps(user_id)
            .await?
            .into_iter()
            .map(|a| json!({ "client_id": a.client_id, "name": a.name, "scope": a.scope, "allowed_at": rfc3339(a.granted_at) }))
            .collect();
        let events = self.audit.events_of(user_id, MAX_EVENTS).await?;
        let document = json!({
            "exported_at": rfc3339(self.clock.now_ms()),
            "profile": {
                "id": profile.id, "username": profile.username, "email": profile.email,
                "email_verified": profile.email_verified, "pending_email": profile.pending_email,
                "role": profile.role.as_str(), "has_password": profile.has_password,
                "created_at": rfc3339(profile.created_at),
            },
            "devices": devices,
            "sessions": sessions,
            "second_factors": {
                "authenticator_app": factors.totp, "recovery_codes_remaining": factors.recovery_codes_remaining,
                "passkeys": passkeys,
            },
            "sign_in_providers": providers,
            "allowed_apps": apps,
            "webhooks": self.webhooks.list(who).await?,
            "security_events": events,
        });
        let details = json!({ "events": document["security_events"].as_array().map_or(0, Vec::len) });
        let actor = Actor::User(who.user_id.clone());
        self.audit.record(AuditLog::event(kind::DATA_EXPORTED, &actor, Some(user_id), address, details)).await?;
        self.accounts.notify(user_id, Notice::DataExported { address: address.map(str::to_owned) }).await?;
        Ok(document)
    }
}
