//! What operators do to an account's standing: disable it (every token dies at once, on every
//! node, and no new session starts), enable it again, and lift its sign-in locks. Each is audited
//! with the operator's reason.

use serde_json::json;

use super::audit::{kind, Actor, AuditLog};
use super::core::Core;
use super::error::Result;
use super::revocation::Revocation;
use crate::store::UserRecord;

#[derive(Clone)]
pub struct AccountStatus {
    core: Core,
}

/// What an operator wrote as the reason, or what the audit log says without one.
fn reason_or(reason: Option<&str>, default: &str) -> String {
    reason.map(str::trim).filter(|r| !r.is_empty()).unwrap_or(default).to_owned()
}

impl AccountStatus {
    pub fn new(core: &Core) -> Self {
        Self { core: core.clone() }
    }

    /// Disables the account: no session starts for it (sign-in answers `account_disabled`, but
    /// only after the credentials were right) and one revocation rule ends every token it has, on
    /// every node, as "sign out of all devices" does — without the silent recovery a key-bound
    /// client would otherwise get. False if it was disabled already.
    pub async fn disable(&self, user: &UserRecord, reason: Option<&str>, actor: &Actor) -> Result<bool> {
        let now = self.core.clock.now_ms();
        if !self.core.store.set_disabled(&user.id, Some(now)).await? {
            return Ok(false);
        }
        let reason = reason_or(reason, "disabled by an administrator");
        let revocation = Revocation::whole_account(&user.id, &format!("account disabled: {reason}"), actor);
        self.core.revocations.revoke(revocation).await?;
        let event = AuditLog::event(kind::ACCOUNT_DISABLED, actor, Some(&user.id), None, json!({ "reason": reason }));
        self.core.audit.record(event).await?;
        Ok(true)
    }

    /// Lets the account sign in again (its old tokens stay dead). False if it was not disabled.
    pub async fn enable(&self, user: &UserRecord, reason: Option<&str>, actor: &Actor) -> Result<bool> {
        if !self.core.store.set_disabled(&user.id, None).await? {
            return Ok(false);
        }
        let reason = reason_or(reason, "enabled by an administrator");
        let event = AuditLog::event(kind::ACCOUNT_ENABLED, actor, Some(&user.id), None, json!({ "reason": reason }));
        self.core.audit.record(event).await?;
        Ok(true)
    }

    /// Clears the account's failure counters — its own for every purpose and its known devices' —
    /// so a locked-out owner can sign in at once. Counters of source addresses stay: they are not
    /// the account's. Returns how many were cleared.
    pub async fn unlock(&self, user: &UserRecord, reason: Option<&str>, actor: &Actor) -> Result<u64> {
        let devices = self.core.store.devices_of(&user.id).await?;
        let subjects: Vec<String> = std::iter::once(format!(":acct:{}", user.id))
            .chain(devices.iter().map(|d| format!(":dev:{}", d.id)))
            .collect();
        let cleared = self.core.store.throttle_clear_subjects(&subjects).await?;
        let reason = reason_or(reason, "unlocked by an administrator");
        let details = json!({ "reason": reason, "counters_cleared": cleared });
        self.core.audit.record(AuditLog::event(kind::ACCOUNT_UNLOCKED, actor, Some(&user.id), None, details)).await?;
        Ok(cleared)
    }
}
