//! Operator actions run from the command line against the configured database, alongside running servers.
//!
//! Every action is audited. Revocations written here reach running nodes like any other rule: at once
//! through PostgreSQL notifications, otherwise at their next poll (well within a second).

use std::path::Path;

use anyhow::bail;
use serde_json::json;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::domain::account_deletion::AccountDeletions;
use crate::domain::account_status::AccountStatus;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::audit_export::{ChainHead, ExportedEvent};
use crate::domain::decoys::{Decoy, Decoys};
use crate::domain::incident::{ForcedResets, IncidentResponse, IncidentText};
use crate::domain::invites::{InviteView, Invites, NewInvite};
use crate::domain::key_rotation::{KeyRotation, KeyUsage};
use crate::domain::operators::Operators;
use crate::domain::policy::{SignupMode, SignupPolicy};
use crate::domain::profile::Role;
use crate::domain::revocation::{Revocation, Revocations, Scope};
use crate::domain::{Accounts, Clients, Recovery, SecondFactors};
use crate::keys::{KeyPurpose, Keyring};
use crate::server;

/// The domain services an admin command works with, and who the audit log names for it.
pub struct Console {
    pub(crate) audit: AuditLog,
    pub(crate) actor: Actor,
    /// The keyring as loaded, swapped in place when a command rewrites the key file.
    pub(crate) keyring: std::sync::Arc<crate::keys::Keyring>,
    pub(crate) operators: Operators,
    pub(crate) incident: IncidentResponse,
    status: AccountStatus,
    deletions: AccountDeletions,
    invites: Invites,
    signup: SignupPolicy,
    accounts: Accounts,
    revocations: Revocations,
    factors: SecondFactors,
    clients: Clients,
    honeytokens: Decoys,
    key_rotation: KeyRotation,
}

impl Console {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let core = server::open_for_operator(config).await?;
        let operator = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into());
        let (audit, revocations, keyring) = (core.audit.clone(), core.revocations.clone(), core.keyring.clone());
        let accounts = Accounts::new(&core);
        let providers = config.sso.providers.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
        let recovery = Recovery::new(&core, accounts.clone(), providers);
        let factors = SecondFactors::new(&core, accounts.clone());
        let clients = Clients::new(core.store.clone(), keyring.clone(), audit.clone(), core.clock.clone());
        let honeytokens = Decoys::new(&core, accounts.clone());
        let key_rotation = KeyRotation::new(core.store.clone(), keyring.clone());
        let operators = Operators::new(&core, accounts.clone(), factors.clone());
        let incident = IncidentResponse::new(&core, accounts.clone(), factors.clone(), recovery, operators.clone());
        Ok(Self {
            audit,
            actor: Actor::Admin(operator),
            keyring,
            operators,
            incident,
            status: AccountStatus::new(&core),
            deletions: AccountDeletions::new(&core, accounts.clone()),
            invites: Invites::new(&core),
            signup: core.signup,
            accounts,
            revocations,
            factors,
            clients,
            honeytokens,
            key_rotation,
        })
    }

    /// Writes one revocation rule; returns a line describing it. Channel and global revocations
    /// (and a channel of one account) answer leaks, so by default a client that proves it holds its
    /// session's DPoP key recovers silently; `final_revocation` denies that too.
    pub async fn revoke(
        &self,
        scope: Scope,
        issued_before: Option<i64>,
        reason: Option<String>,
        final_revocation: bool,
    ) -> anyhow::Result<String> {
        let recoverable =
            matches!(scope, Scope::Channel(_) | Scope::UserChannel { .. } | Scope::Global) && !final_revocation;
        if let Some(id) = scope.user() {
            self.operators.user(id).await?;
        }
        let rule = self
            .revocations
            .revoke(Revocation {
                scope,
                issued_before,
                except_session: None,
                recoverable,
                reason: reason.unwrap_or_else(|| "revoked by an administrator".into()),
                actor: self.actor.clone(),
                address: None,
            })
            .await?;
        let recovery = if rule.recoverable { "; DPoP-bound clients may recover silently" } else { "" };
        Ok(format!("revoked: {} — every token issued at or before {}{recovery}", rule.scope, rfc3339(rule.not_before)))
    }

    /// Makes every listed account (id, username or email, one per line) choose a new password at
    /// its next sign-in; optionally signs it out everywhere and mails it the incident notice.
    pub async fn force_password_reset(
        &self,
        list: &str,
        sign_out_devices: bool,
        notify: bool,
        text: &IncidentText,
    ) -> anyhow::Result<ForcedResets> {
        Ok(self.incident.force_password_reset(list, sign_out_devices, notify, text, &self.actor).await?)
    }

    /// The id of an account named by id or username.
    pub async fn user_id(&self, id_or_username: &str) -> anyhow::Result<String> {
        Ok(self.operators.user(id_or_username).await?.id)
    }

    pub async fn list_users(&self, limit: i64, offset: i64) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self.operators.list(limit, offset, &self.actor).await?)
    }

    pub async fn list_honeytokens(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self.operators.list_decoys(&self.actor).await?)
    }

    pub async fn show_user(&self, id_or_username: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.operators.show(id_or_username, &self.actor).await?)
    }

    /// Plants `count` decoy accounts with their devices and tokens; the run is audited (how many,
    /// never which).
    pub async fn seed_honeytokens(&self, count: usize) -> anyhow::Result<Vec<Decoy>> {
        let decoys = self.honeytokens.seed(count).await?;
        let tokens: usize = decoys.iter().map(|d| d.tokens.len()).sum();
        let details = json!({ "accounts": decoys.len(), "tokens": tokens });
        self.audit.record(AuditLog::event(kind::HONEYTOKENS_SEEDED, &self.actor, None, None, details)).await?;
        Ok(decoys)
    }

    /// The OAuth client registry.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Who the audit log names for actions taken here.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Grants or withdraws the `admin` role (which `mfa.require = "admins"` applies to).
    pub async fn set_role(&self, id_or_username: &str, role: &str) -> anyhow::Result<String> {
        let Some(role) = Role::parse(role) else { bail!("unknown role {role:?}: use `user` or `admin`") };
        let user = self.operators.user(id_or_username).await?;
        self.accounts.set_role(&user.id, role, &self.actor).await?;
        Ok(format!("{} ({}) now has the role {}", user.username, user.id, role.as_str()))
    }

    /// Removes every second factor of an account whose owner lost them all (after the operator
    /// checked who is asking); the owner is mailed, and the password alone signs in again.
    pub async fn reset_second_factors(&self, id_or_username: &str, reason: &str) -> anyhow::Result<String> {
        let user = self.operators.user(id_or_username).await?;
        let removed = self.factors.reset_for_owner(&user.id, &self.actor, reason).await?;
        Ok(format!("{} ({}): {removed} second-factor record(s) removed; the owner was mailed", user.username, user.id))
    }

    /// Refuses to change keys kept in `KEYWARDEN_KEYRING`: they are changed where they are kept.
    pub fn ensure_key_file() -> anyhow::Result<()> {
        if std::env::var_os(server::KEYRING_ENV).is_some() {
            bail!("the keyring comes from {}: change it where it is kept", server::KEYRING_ENV);
        }
        Ok(())
    }

    /// Adds a new key for each of `purposes` to the key file, active from `active_from` (Unix ms).
    /// Their check values are recorded first, so servers accept the file even once none of the
    /// keys they started with is left in it; each rotation is audited (never the key itself), and
    /// this console uses the new keys at once. Returns the new key ids, in order.
    pub async fn rotate_keys(
        &self,
        key_file: &Path,
        purposes: &[KeyPurpose],
        active_from: i64,
    ) -> anyhow::Result<Vec<String>> {
        Self::ensure_key_file()?;
        let keyring = Keyring::load(key_file)?;
        let ids: Vec<String> = purposes.iter().map(|purpose| keyring.rotate(*purpose, active_from)).collect();
        self.key_rotation.check_matches_database(&keyring).await?;
        keyring.replace(key_file)?;
        for (purpose, id) in purposes.iter().zip(&ids) {
            let details = json!({ "purpose": purpose.name(), "key_id": id, "active_from": rfc3339(active_from) });
            self.audit.record(AuditLog::event(kind::KEY_ROTATED, &self.actor, None, None, details)).await?;
        }
        self.keyring.replace_with(Keyring::load(key_file)?);
        Ok(ids)
    }

    /// Removes keys from the key file; whatever only they protected dies. Refused while live rows
    /// depend on one of them, unless `force`. Each retirement is audited with the rows it cost;
    /// returns those counts, in order.
    pub async fn retire_keys(
        &self,
        key_file: &Path,
        keys: &[(KeyPurpose, String)],
        force: bool,
    ) -> anyhow::Result<Vec<i64>> {
        Self::ensure_key_file()?;
        let usage = self.key_rotation.usage().await?;
        let rows: Vec<i64> = keys
            .iter()
            .map(|(purpose, id)| {
                usage.iter().filter(|u| u.purpose == purpose.name() && u.key_id == *id).map(|u| u.rows).sum()
            })
            .collect();
        if let (false, Some(((purpose, id), rows))) = (force, keys.iter().zip(&rows).find(|(_, rows)| **rows > 0)) {
            bail!(
                "{rows} live row(s) still depend on {} key {id}: retiring it kills them (run `keys rewrap` for \
                 data and blind-index keys, wait for tokens to expire or passwords to move), or pass --force",
                purpose.name()
            );
        }
        let keyring = Keyring::load(key_file)?;
        for (purpose, id) in keys {
            keyring.retire(*purpose, id)?;
        }
        keyring.replace(key_file)?;
        for ((purpose, id), rows) in keys.iter().zip(&rows) {
            let details = json!({ "purpose": purpose.name(), "key_id": id, "rows_lost": rows });
            self.audit.record(AuditLog::event(kind::KEY_RETIRED, &self.actor, None, None, details)).await?;
        }
        self.keyring.replace_with(Keyring::load(key_file)?);
        Ok(rows)
    }

    /// Every key with the live rows it protects.
    pub async fn key_usage(&self) -> anyhow::Result<Vec<KeyUsage>> {
        Ok(self.key_rotation.usage().await?)
    }

    pub async fn rewrap_remaining(&self) -> anyhow::Result<i64> {
        Ok(self.key_rotation.remaining().await?)
    }

    /// Re-wraps batch after batch until nothing moves or nothing remains, telling `progress`
    /// `(done, remaining, total)` after each batch; audited. Returns what moved and what remains.
    pub async fn rewrap_all(&self, batch: i64, mut progress: impl FnMut(u64, i64, i64)) -> anyhow::Result<(u64, i64)> {
        let total = self.key_rotation.remaining().await?;
        let mut done = 0;
        let remaining = loop {
            let moved = self.key_rotation.rewrap_batch(batch).await?;
            done += moved;
            let remaining = self.key_rotation.remaining().await?;
            progress(done, remaining, total);
            if moved == 0 || remaining == 0 {
                break remaining;
            }
        };
        let details = json!({ "moved": done, "remaining": remaining });
        self.audit.record(AuditLog::event(kind::KEYS_REWRAPPED, &self.actor, None, None, details)).await?;
        Ok((done, remaining))
    }

    /// `admin users disable`: ends every session of the account and keeps it from signing in.
    pub async fn disable_user(&self, user: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let user = self.operators.user(user).await?;
        Ok(if self.status.disable(&user, reason, &self.actor).await? {
            format!("disabled {} ({}): every session ended, sign-in refused until enabled", user.username, user.id)
        } else {
            format!("{} ({}) was already disabled", user.username, user.id)
        })
    }

    /// `admin users delete`: after the grace period, or `now`.
    pub async fn delete_user(&self, user: &str, now: bool, reason: Option<&str>) -> anyhow::Result<String> {
        let user = self.operators.user(user).await?;
        let scheduled = self.deletions.by_operator(&user, now, reason, &self.actor).await?;
        Ok(if now {
            format!(
                "erased {} ({}): every session ended, nothing of it is left but its audit trail",
                user.username, user.id
            )
        } else {
            format!(
                "{} ({}) will be erased at {}: every session ended; signing in before then keeps it",
                user.username,
                user.id,
                rfc3339(scheduled.due_at)
            )
        })
    }

    /// `admin users enable`.
    pub async fn enable_user(&self, user: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let user = self.operators.user(user).await?;
        Ok(if self.status.enable(&user, reason, &self.actor).await? {
            format!("enabled {} ({}): it can sign in again", user.username, user.id)
        } else {
            format!("{} ({}) was not disabled", user.username, user.id)
        })
    }

    /// `admin users unlock`: the account's sign-in counters cleared.
    pub async fn unlock_user(&self, user: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let user = self.operators.user(user).await?;
        let cleared = self.status.unlock(&user, reason, &self.actor).await?;
        Ok(format!("unlocked {} ({}): {cleared} counter(s) cleared", user.username, user.id))
    }

    /// `admin invites create`.
    pub async fn create_invite(&self, email: Option<&str>, ttl_secs: i64, uses: i64) -> anyhow::Result<NewInvite> {
        Ok(self.invites.create(email, ttl_secs, uses, &self.actor).await?)
    }

    pub async fn list_invites(&self) -> anyhow::Result<Vec<InviteView>> {
        Ok(self.invites.list().await?)
    }

    pub async fn revoke_invite(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.invites.revoke(id, &self.actor).await?)
    }

    pub fn signup_mode(&self) -> SignupMode {
        self.signup.mode
    }

    /// `admin users find --email`: the account with that exact address, if any.
    pub async fn find_user_by_email(&self, address: &str) -> anyhow::Result<Option<serde_json::Value>> {
        Ok(self.operators.find_by_email(address, &self.actor).await?)
    }

    /// Checks the audit chain (and, given a published head, that the log still holds it); returns
    /// the number of events checked and the problems found.
    pub async fn verify_audit(&self, head: Option<&ChainHead>) -> anyhow::Result<(u64, Vec<String>)> {
        let mut report = self.audit.verify().await?;
        if let Some(head) = head {
            if !self.audit.holds(head).await? {
                report.problems.push(format!(
                    "the log no longer holds the published head {}: events were deleted or rewritten",
                    head.seq
                ));
            }
        }
        Ok((report.events_checked, report.problems))
    }

    /// The chain head, to publish.
    pub async fn audit_head(&self) -> anyhow::Result<ChainHead> {
        Ok(self.audit.head().await?)
    }

    /// Writes the events from `since` to before `until` (Unix ms) to `write`; audited afterwards
    /// (the export's own event is the first one after it).
    pub async fn export_audit(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        write: impl FnMut(&ExportedEvent) -> std::io::Result<()>,
    ) -> anyhow::Result<u64> {
        let count = self.audit.export(since, until, write).await?;
        let details = json!({ "events": count, "since": since.map(rfc3339), "until": until.map(rfc3339) });
        self.audit.record(AuditLog::event(kind::AUDIT_EXPORTED, &self.actor, None, None, details)).await?;
        Ok(count)
    }
}
