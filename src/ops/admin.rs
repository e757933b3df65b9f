//! Operator actions run from the command line against the configured database, alongside running servers.
//!
//! Every action is audited. Revocations written here reach running nodes like any other rule: at once
//! through PostgreSQL notifications, otherwise at their next poll (well within a second).

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::json;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::decoys::{Decoy, Decoys};
use crate::domain::identity::Email;
use crate::domain::key_rotation::{KeyRotation, KeyUsage};
use crate::domain::policy::TokenPolicy;
use crate::domain::profile::Role;
use crate::domain::recovery::RESET_TTL_MINUTES;
use crate::domain::revocation::{Revocation, Revocations, Scope};
use crate::domain::{Accounts, Clients, Recovery, SecondFactors};
use crate::keys::{KeyPurpose, Keyring};
use crate::mail::Notice;
use crate::server;
use crate::store::{self, DynStore, UserRecord};

/// The store and keyring an admin command works with.
pub struct Console {
    pub(crate) store: DynStore,
    pub(crate) audit: AuditLog,
    pub(crate) actor: Actor,
    /// The keyring as loaded, swapped in place when a command rewrites the key file.
    pub(crate) keyring: std::sync::Arc<crate::keys::Keyring>,
    tokens: TokenPolicy,
    accounts: Accounts,
    recovery: Recovery,
    revocations: Revocations,
    factors: SecondFactors,
    clients: Clients,
    honeytokens: Decoys,
    key_rotation: KeyRotation,
}

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

impl Console {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let store = store::open(&config.database_url()).await.context("cannot open the database")?;
        store.migrate().await.context("cannot apply database migrations")?;
        let keyring = server::load_keyring(config, store.as_ref(), false).await?;
        let operator = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into());
        let core = server::build_core(config, store.clone(), keyring.clone())?;
        let (audit, revocations) = (core.audit.clone(), core.revocations.clone());
        let accounts = Accounts::new(&core);
        let providers = config.sso.providers.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
        let recovery = Recovery::new(&core, accounts.clone(), providers);
        let factors = SecondFactors::new(&core, accounts.clone());
        let clients = Clients::new(store.clone(), keyring.clone(), audit.clone());
        let honeytokens = Decoys::new(&core, accounts.clone());
        let key_rotation = KeyRotation::new(store.clone(), keyring.clone());
        Ok(Self {
            store,
            audit,
            actor: Actor::Admin(operator),
            keyring,
            tokens: config.tokens,
            accounts,
            recovery,
            revocations,
            factors,
            clients,
            honeytokens,
            key_rotation,
        })
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
    ) -> anyhow::Result<ForcedResets> {
        let mut done = ForcedResets::default();
        let response = AccountResponse {
            force_password_reset: true,
            sign_out: sign_out_devices,
            reset_second_factors: false,
            notify,
        };
        // An account named twice (by username and by email, say) is handled, and mailed, once.
        let mut handled = std::collections::HashSet::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let Some(user) = self.find(line).await? else {
                done.unknown.push(line.to_owned());
                continue;
            };
            if !handled.insert(user.id.clone()) {
                continue;
            }
            self.respond_to_account(&user, &response, text, "forced password reset").await?;
            done.flagged += 1;
            done.signed_out += usize::from(sign_out_devices);
            done.notified += usize::from(notify);
        }
        Ok(done)
    }

    /// What an incident asks of one account: a new password, signing out, new second factors,
    /// the notice (with a fresh reset link). Decoys are left alone.
    pub(crate) async fn respond_to_account(
        &self,
        user: &UserRecord,
        response: &AccountResponse,
        text: &IncidentText,
        reason: &str,
    ) -> anyhow::Result<()> {
        if crate::domain::honeytokens::is_decoy_account(&self.keyring, &user.id) {
            return Ok(());
        }
        if response.force_password_reset {
            let details = json!({ "sign_out_devices": response.sign_out, "notify": response.notify, "reason": reason });
            let event = AuditLog::event(kind::PASSWORD_RESET_FORCED, &self.actor, Some(&user.id), None, details);
            self.store.require_password_reset(&user.id, &event, &self.audit).await?;
        }
        if response.sign_out {
            self.revocations
                .revoke(Revocation {
                    scope: Scope::User(user.id.clone()),
                    issued_before: None,
                    except_session: None,
                    recoverable: false,
                    reason: reason.to_owned(),
                    actor: self.actor.clone(),
                    address: None,
                })
                .await?;
        }
        if response.reset_second_factors {
            self.factors.clear_for_incident(&user.id, &self.actor, reason).await?;
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

    /// An account by id, username or email address.
    pub(crate) async fn find(&self, key: &str) -> anyhow::Result<Option<UserRecord>> {
        if key.contains('@') {
            return match Email::parse(key) {
                Ok(email) => Ok(self.accounts.find_by_email(&email).await?),
                Err(_) => Ok(None),
            };
        }
        // A database that does not answer is an error, never "no such account".
        self.user_if_any(key).await
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
            self.user(id).await?;
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

    /// Finds an account by id or username.
    pub async fn user(&self, id_or_username: &str) -> anyhow::Result<UserRecord> {
        match self.user_if_any(id_or_username).await? {
            Some(user) => Ok(user),
            None => bail!("no account with id or username {id_or_username:?}"),
        }
    }

    async fn user_if_any(&self, id_or_username: &str) -> anyhow::Result<Option<UserRecord>> {
        if let Some(user) = self.store.user_by_id(id_or_username).await? {
            return Ok(Some(user));
        }
        Ok(self.store.user_by_username_key(&id_or_username.to_ascii_lowercase()).await?)
    }

    fn email(&self, user: &UserRecord) -> String {
        self.accounts.email_of(user).unwrap_or_else(|_| "<cannot decrypt>".into())
    }

    pub async fn list_users(&self, limit: i64, offset: i64) -> anyhow::Result<Vec<serde_json::Value>> {
        let users = self.store.list_users(limit, offset).await?;
        // Reading account data, emails included, is an administrator action like any other.
        let details = json!({ "limit": limit, "offset": offset, "accounts_shown": users.len() });
        self.audit.record(AuditLog::event(kind::ADMIN_USERS_LISTED, &self.actor, None, None, details)).await?;
        Ok(users.iter().map(|u| self.account_summary(u)).collect())
    }

    /// Every account in creation order, handed to `page` a thousand at a time (never all in memory).
    pub(crate) async fn each_page_of_users(&self, mut page: impl FnMut(Vec<UserRecord>)) -> anyhow::Result<()> {
        const PAGE: i64 = 1000;
        let mut offset = 0;
        loop {
            let users = self.store.list_users(PAGE, offset).await?;
            let count = i64::try_from(users.len())?;
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
            "created_at": rfc3339(user.created_at),
        })
    }

    /// The decoy accounts among all accounts. Only the keyring tells them apart, so this reads
    /// every account; the listing is audited (how many, never which: the audit log is readable
    /// by more people than the key file).
    pub async fn list_honeytokens(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut decoys = Vec::new();
        self.each_page_of_users(|users| {
            let decoy = |u: &&UserRecord| crate::domain::honeytokens::is_decoy_account(&self.keyring, &u.id);
            decoys.extend(users.iter().filter(decoy).map(|u| self.account_summary(u)));
        })
        .await?;
        let details = json!({ "accounts": decoys.len() });
        self.audit.record(AuditLog::event(kind::HONEYTOKENS_LISTED, &self.actor, None, None, details)).await?;
        Ok(decoys)
    }

    pub async fn show_user(&self, id_or_username: &str) -> anyhow::Result<serde_json::Value> {
        let user = self.user(id_or_username).await?;
        self.audit
            .record(AuditLog::event(kind::ADMIN_USER_VIEWED, &self.actor, Some(&user.id), None, json!({})))
            .await?;
        let devices = self.store.devices_of(&user.id).await?;
        let sessions = self.store.sessions_of(&user.id).await?;
        let events = self.audit.events_of(&user.id, 20).await?;
        let providers: Vec<_> = self
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
                    .filter(|s| s.device_id == d.id && s.last_used_at + self.tokens.refresh_ttl_secs * 1000 > now)
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
            "sign_in_providers": providers,
            "created_at": rfc3339(user.created_at),
            "devices": devices,
            "recent_events": events,
        }))
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
        let user = self.user(id_or_username).await?;
        self.accounts.set_role(&user.id, role, &self.actor).await?;
        Ok(format!("{} ({}) now has the role {}", user.username, user.id, role.as_str()))
    }

    /// Removes every second factor of an account whose owner lost them all (after the operator
    /// checked who is asking); the owner is mailed, and the password alone signs in again.
    pub async fn reset_second_factors(&self, id_or_username: &str, reason: &str) -> anyhow::Result<String> {
        let user = self.user(id_or_username).await?;
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
        server::check_keyring_matches_database(&keyring, self.store.as_ref()).await?;
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

    /// Checks the audit chain; returns the number of events checked and the problems found.
    pub async fn verify_audit(&self) -> anyhow::Result<(u64, Vec<String>)> {
        let report = self.audit.verify().await?;
        Ok((report.events_checked, report.problems))
    }
}
