//! Devices a user is signed in on: listing them, signing one out, and "sign out of all devices".

use std::collections::BTreeSet;

use serde_json::json;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::error::{Error, Result};
use super::policy::TokenPolicy;
use super::revocation::{Revocation, Revocations, Scope, TokenFacts};
use super::throttle::{Purpose, Subject, Throttle};
use crate::clock::Clock;
use crate::mail::Notice;
use crate::store::{DeviceRecord, DynStore};

/// Addresses a media server may publish.
const MAX_CONNECTIONS: usize = 16;

/// A device with at least one live session.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub device: DeviceRecord,
    /// The channels its live sessions belong to (`web`, `device`, …).
    pub channels: BTreeSet<String>,
    /// The device the request came from.
    pub current: bool,
}

impl DeviceView {
    /// A media server: it said `X-Plex-Provides: server` (among what else it provides).
    pub fn is_media_server(&self) -> bool {
        self.device.provides.split(',').any(|p| p == "server")
    }
}

#[derive(Clone)]
pub struct Devices {
    clock: Clock,
    store: DynStore,
    revocations: Revocations,
    audit: AuditLog,
    accounts: Accounts,
    policy: TokenPolicy,
    throttle: Throttle,
}

impl Devices {
    pub fn new(core: &Core, accounts: Accounts) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            revocations: core.revocations.clone(),
            throttle: core.throttle.clone(),
            audit: core.audit.clone(),
            accounts,
            policy: core.policy,
        }
    }

    /// Records what a device says it provides (`X-Plex-Provides`: `server`, `player`, …).
    pub async fn record_provides(&self, device_id: &str, provides: &str) -> Result<()> {
        let cleaned: Vec<&str> = provides
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .take(16)
            .collect();
        Ok(self.store.set_device_provides(device_id, &cleaned.join(",")).await?)
    }

    /// A media server publishes the addresses it can be reached at: only for itself, the device
    /// its token belongs to, named by `client_identifier`.
    pub async fn publish_connections(
        &self,
        who: &Authenticated,
        client_identifier: &str,
        uris: &[String],
    ) -> Result<()> {
        let devices = self.store.devices_of(&who.user_id).await?;
        let own = devices.iter().any(|d| d.id == who.device_id && d.client_identifier == client_identifier);
        if !own {
            return Err(Error::DeviceNotFound);
        }
        let mut valid = Vec::new();
        for uri in uris.iter().take(MAX_CONNECTIONS) {
            let parsed =
                url::Url::parse(uri).map_err(|_| Error::InvalidDevice("a connection must be an http(s) URI"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || uri.len() > 256 {
                return Err(Error::InvalidDevice("a connection must be an http(s) URI"));
            }
            valid.push(uri.clone());
        }
        let json = serde_json::to_string(&valid).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(self.store.set_device_connections(&who.device_id, &json).await?)
    }

    /// The caller's devices that still hold a live session, most recently seen first.
    pub async fn list(&self, who: &Authenticated) -> Result<Vec<DeviceView>> {
        let now = self.clock.now_ms();
        let sessions = self.store.sessions_of(&who.user_id).await?;
        let live: Vec<_> = sessions
            .iter()
            .filter(|s| s.last_used_at + self.policy.longest_idle_secs() * 1000 > now)
            .filter(|s| {
                let facts = TokenFacts {
                    // A session's newest tokens were issued when it was last used.
                    issued_at: s.last_used_at,
                    user_id: &s.user_id,
                    device_id: &s.device_id,
                    channel: &s.channel,
                    session_id: &s.id,
                };
                self.revocations.check(&facts).is_none()
            })
            .collect();
        let devices = self.store.devices_of(&who.user_id).await?;
        Ok(devices
            .into_iter()
            .filter_map(|device| {
                let channels: BTreeSet<String> =
                    live.iter().filter(|s| s.device_id == device.id).map(|s| s.channel.clone()).collect();
                let current = device.id == who.device_id;
                (!channels.is_empty()).then_some(DeviceView { device, channels, current })
            })
            .collect())
    }

    /// Signs one of the caller's devices out: every token it holds dies at once (one rule).
    pub async fn sign_out_device(&self, who: &Authenticated, device_id: &str, address: Option<&str>) -> Result<()> {
        let revocation = Revocation {
            scope: Scope::Device(device_id.to_owned()),
            issued_before: None,
            except_session: None,
            recoverable: false,
            reason: "signed out by its owner".into(),
            actor: Actor::User(who.user_id.clone()),
            address: address.map(str::to_owned),
        };
        let (rule, stored, _) = self.revocations.prepare(revocation);
        let event = AuditLog::event(
            kind::DEVICE_SIGNED_OUT,
            &Actor::User(who.user_id.clone()),
            Some(&who.user_id),
            address,
            json!({ "device_id": device_id, "own_device": device_id == who.device_id }),
        );
        let device_name = self
            .store
            .devices_of(&who.user_id)
            .await?
            .into_iter()
            .find(|d| d.id == device_id)
            .map(|d| d.name)
            .ok_or(Error::DeviceNotFound)?;
        if !self.store.sign_out_device(&who.user_id, device_id, &stored, &event, &self.audit).await? {
            return Err(Error::DeviceNotFound);
        }
        self.revocations.enforce_locally(&rule);
        self.accounts.notify(&who.user_id, Notice::DeviceSignedOut { device_name }).await
    }

    /// "Sign out of all devices": one rule kills every token of the account issued until now,
    /// optionally sparing the caller's own session.
    pub async fn sign_out_everywhere(
        &self,
        who: &Authenticated,
        keep_current: bool,
        address: Option<&str>,
    ) -> Result<()> {
        // Each one writes a rule every node keeps and mails the owner: a stolen session may not
        // repeat it without end.
        self.throttle.count_attempt(Purpose::SignOutEverywhere, &[Subject::Account(&who.user_id)]).await?;
        let actor = Actor::User(who.user_id.clone());
        let (rule, stored, mut event) = self.revocations.prepare(Revocation {
            scope: Scope::User(who.user_id.clone()),
            issued_before: None,
            except_session: keep_current.then(|| who.session_id.clone()),
            recoverable: false,
            reason: "signed out of all devices by the owner".into(),
            actor,
            address: address.map(str::to_owned),
        });
        // One event tells the whole story: it is this action, not a generic rule.
        event.kind = kind::SIGNED_OUT_EVERYWHERE.to_owned();
        event.details = json!({ "kept_current_session": keep_current, "issued_before": stored.not_before }).to_string();
        self.store.add_revocation_rule(&stored, &event, &self.audit).await?;
        self.revocations.enforce_locally(&rule);
        self.accounts.notify(&who.user_id, Notice::SignedOutEverywhere { kept_current: keep_current }).await
    }
}
