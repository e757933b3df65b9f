//! Answering an incident, account by account: forced password resets, signing out, clearing second
//! factors and the incident notice with a fresh reset link. Decoys are never touched.

use std::collections::HashSet;

use serde_json::json;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::core::Core;
use super::error::Result;
use super::honeytokens;
use super::operators::Operators;
use super::recovery::{Recovery, RESET_TTL_MINUTES};
use super::revocation::Revocation;
use super::second_factors::SecondFactors;
use crate::mail::Notice;
use crate::store::UserRecord;

/// What an incident response does to each account.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountResponse {
    pub force_password_reset: bool,
    pub sign_out: bool,
    pub reset_second_factors: bool,
    pub notify: bool,
}

/// What `force_password_reset` did.
#[derive(Debug, Default)]
pub struct ForcedResets {
    pub flagged: usize,
    pub signed_out: usize,
    pub notified: usize,
    /// Lines of the list that matched no account.
    pub unknown: Vec<String>,
}

/// The incident notice's wording; the defaults follow the 2025 notice this feature is modelled on.
#[derive(Debug, Clone)]
pub struct IncidentText {
    pub what_happened: String,
    pub what_we_did: String,
}

impl Default for IncidentText {
    fn default() -> Self {
        Self {
            what_happened: "An unauthorized party accessed a limited set of account data. Passwords are stored \
                            only in a form that cannot be read, but as a precaution we are asking you to choose \
                            a new one."
                .into(),
            what_we_did: "We contained the incident, signed out the affected sessions where needed, and \
                          required a new password for your account."
                .into(),
        }
    }
}

#[derive(Clone)]
pub struct IncidentResponse {
    core: Core,
    accounts: Accounts,
    factors: SecondFactors,
    recovery: Recovery,
    operators: Operators,
}

impl IncidentResponse {
    pub fn new(
        core: &Core,
        accounts: Accounts,
        factors: SecondFactors,
        recovery: Recovery,
        operators: Operators,
    ) -> Self {
        Self { core: core.clone(), accounts, factors, recovery, operators }
    }

    /// Makes every listed account (id, username or email, one per line) choose a new password at
    /// its next sign-in; optionally signs it out everywhere and mails it the incident notice with a
    /// fresh reset link. Lines that match no account are reported, not fatal.
    pub async fn force_password_reset(
        &self,
        list: &str,
        sign_out_devices: bool,
        notify: bool,
        text: &IncidentText,
        actor: &Actor,
    ) -> Result<ForcedResets> {
        let mut done = ForcedResets::default();
        let response = AccountResponse {
            force_password_reset: true,
            sign_out: sign_out_devices,
            reset_second_factors: false,
            notify,
        };
        // An account named twice (by username and by email, say) is handled, and mailed, once.
        let mut handled = HashSet::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let Some(user) = self.operators.find(line).await? else {
                done.unknown.push(line.to_owned());
                continue;
            };
            if !handled.insert(user.id.clone()) {
                continue;
            }
            self.respond_to_account(&user, &response, text, "forced password reset", actor).await?;
            done.flagged += 1;
            done.signed_out += usize::from(sign_out_devices);
            done.notified += usize::from(notify);
        }
        Ok(done)
    }

    /// What an incident asks of one account: a new password, signing out, new second factors,
    /// the notice (with a fresh reset link). Decoys are left alone.
    pub async fn respond_to_account(
        &self,
        user: &UserRecord,
        response: &AccountResponse,
        text: &IncidentText,
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        if honeytokens::is_decoy_account(&self.core.keyring, &user.id) {
            return Ok(());
        }
        if response.force_password_reset {
            let details = json!({ "sign_out_devices": response.sign_out, "notify": response.notify, "reason": reason });
            let event = AuditLog::event(kind::PASSWORD_RESET_FORCED, actor, Some(&user.id), None, details);
            self.core.store.require_password_reset(&user.id, &event, &self.core.audit).await?;
        }
        if response.sign_out {
            self.core.revocations.revoke(Revocation::whole_account(&user.id, reason, actor)).await?;
        }
        if response.reset_second_factors {
            self.factors.clear_for_incident(&user.id, actor, reason).await?;
        }
        if response.notify {
            let link = self.recovery.issue_reset_link(&user.id).await?;
            let notice = Notice::SecurityIncident {
                link,
                minutes: RESET_TTL_MINUTES,
                what_happened: text.what_happened.clone(),
                what_we_did: text.what_we_did.clone(),
            };
            self.accounts.notify(&user.id, notice).await?;
        }
        Ok(())
    }
}
