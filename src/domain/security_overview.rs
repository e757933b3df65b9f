//! Everything an account's owner sees on the security page, gathered in one place: devices, recent
//! security events in words, second factors, allowed apps, linked providers and whether the
//! session proved its person just now.

use super::audit::{kind, AuditLog, SecurityEvent};
use super::caller::Authenticated;
use super::devices::{DeviceView, Devices};
use super::error::Result;
use super::freshness::Freshness;
use super::oauth::{AllowedApp, OAuth};
use super::profile::Profile;
use super::second_factors::{FactorStatus, SecondFactors};
use super::sso::{LinkedIdentity, ProviderButton, Sso};
use super::Accounts;

/// How many of the newest security events the page lists.
const EVENTS_SHOWN: i64 = 20;

/// One security event as its account's owner reads it.
#[derive(Debug, Clone)]
pub struct EventInWords {
    pub event: SecurityEvent,
    /// What happened, in words (`kind::in_words`).
    pub what: &'static str,
}

/// The security page's model.
#[derive(Debug)]
pub struct SecurityOverview {
    pub profile: Profile,
    pub devices: Vec<DeviceView>,
    pub events: Vec<EventInWords>,
    pub factors: FactorStatus,
    /// An authenticator app or at least one passkey.
    pub has_factor: bool,
    pub apps: Vec<AllowedApp>,
    pub identities: Vec<LinkedIdentity>,
    /// The providers this account could link and has not.
    pub unlinked: Vec<ProviderButton>,
    /// The session proved its person recently enough for sensitive changes.
    pub fresh: bool,
}

#[derive(Clone)]
pub struct SecurityOverviews {
    accounts: Accounts,
    devices: Devices,
    audit: AuditLog,
    factors: SecondFactors,
    oauth: OAuth,
    sso: Sso,
    freshness: Freshness,
}

impl SecurityOverviews {
    pub fn new(
        accounts: Accounts,
        devices: Devices,
        audit: AuditLog,
        factors: SecondFactors,
        oauth: OAuth,
        sso: Sso,
        freshness: Freshness,
    ) -> Self {
        Self { accounts, devices, audit, factors, oauth, sso, freshness }
    }

    /// The overview for the signed-in person.
    pub async fn of(&self, who: &Authenticated) -> Result<SecurityOverview> {
        let profile = self.accounts.profile(&who.user_id).await?;
        let devices = self.devices.list(who).await?;
        let events = self.audit.events_of(&who.user_id, EVENTS_SHOWN).await?;
        let events =
            events.into_iter().map(|event| EventInWords { what: kind::in_words(&event.kind), event }).collect();
        let factors = self.factors.status(&who.user_id).await?;
        let has_factor = factors.totp || !factors.passkeys.is_empty();
        let apps = self.oauth.allowed_apps(&who.user_id).await?;
        let identities = self.sso.identities(&who.user_id).await?;
        let unlinked =
            self.sso.buttons().into_iter().filter(|p| !identities.iter().any(|i| i.provider_id == p.id)).collect();
        let fresh = self.freshness.is_fresh(who).await?;
        Ok(SecurityOverview { profile, devices, events, factors, has_factor, apps, identities, unlinked, fresh })
    }
}
