//! `keywarden admin breach-response`: the database-breach answer in one audited, resumable run —
//! revoke tokens, rotate (and retire) every key, force new passwords, clear second factors if
//! asked, and mail each affected account the incident notice once.
//!
//! The run keeps its plan in a JSON file beside the key file, saved after every step, and appends
//! each handled account to a journal beside it, so a run that stops (a crash, Ctrl-C) continues
//! where it left off when started again with `--resume FILE`. `--dry-run` prints the plan and changes nothing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::{now_ms, rfc3339};
use crate::domain::audit::{kind, AuditLog};
use crate::domain::honeytokens;
use crate::domain::incident::{AccountResponse, IncidentText};
use crate::domain::revocation::Scope;
use crate::keys::{KeyPurpose, Keyring};
use crate::ops::admin::Console;
use crate::ops::progress::Progress;

/// Which accounts the response is for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Affected {
    All,
    /// Ids resolved from the `--users` file when the plan was made.
    Listed(Vec<String>),
}

/// What the operator asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Options {
    pub affected: Affected,
    pub rotate_keys: bool,
    /// `all` or one channel.
    pub revoke: Option<String>,
    pub force_password_reset: bool,
    pub reset_second_factors: bool,
    pub notify: bool,
    pub what_happened: String,
    pub what_we_did: String,
}

/// The plan and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub started_at: String,
    pub options: Options,
    pub revoked: bool,
    /// The keys that were active before the rotation: retired once values moved off them.
    pub old_keys: Vec<(String, String)>,
    pub rotated: bool,
    pub rewrapped: bool,
    pub retired: bool,
    /// Accounts handled so far, in the order of `users`.
    pub users_done: usize,
    pub users: Vec<String>,
    pub finished: bool,
}

impl Plan {
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let temporary = path.with_extension("json.new");
        std::fs::write(&temporary, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write the plan {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot write the plan {}", path.display()))
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the plan {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a breach-response plan", path.display()))
    }

    /// The steps, as `--dry-run` prints them.
    fn describe(&self) -> Vec<String> {
        let o = &self.options;
        let who = match &o.affected {
            Affected::All => format!("every account ({})", self.users.len()),
            Affected::Listed(ids) => format!("{} listed account(s)", ids.len()),
        };
        let mut steps = Vec::new();
        match (o.revoke.as_deref(), &o.affected) {
            (Some("all"), Affected::All) => steps.push("revoke every token of every account (one rule)".to_owned()),
            (Some("all"), Affected::Listed(_)) => steps.push(format!("revoke every token of {who}")),
            (Some(channel), Affected::All) => steps.push(format!("revoke every token of the channel {channel:?}")),
            (Some(channel), Affected::Listed(_)) => steps.push(format!("revoke the {channel:?} tokens of {who}")),
            (None, _) => {}
        }
        if o.rotate_keys {
            steps.push("rotate the pepper, token-hash, data, blind-index and signing keys (active at once)".into());
            steps.push("re-seal encrypted fields and re-index emails under the new keys".into());
            steps.push("retire the old keys: tokens, links and codes hashed with them die".into());
        }
        if o.force_password_reset {
            steps.push(format!("require a new password of {who}"));
        }
        if o.reset_second_factors {
            steps.push(format!("remove the second factors of {who}: they enrol again"));
        }
        if o.notify {
            steps.push(format!("mail {who} the incident notice with a fresh reset link, once each"));
        }
        steps
    }
}

/// Accounts between saves of the plan's progress (the journal records every one).
const PLAN_SAVE_EVERY: usize = 500;

/// Where a new plan is written: beside the key file.
pub fn plan_path(key_file: &Path, id: &str) -> PathBuf {
    key_file.with_file_name(format!("breach-response-{id}.json"))
}

impl Console {
    /// Makes the plan: resolves the affected accounts (decoys are never part of it).
    pub async fn plan_breach_response(&self, options: Options) -> anyhow::Result<Plan> {
        let users = match &options.affected {
            Affected::Listed(ids) => ids.clone(),
            Affected::All => {
                let mut ids = Vec::new();
                self.operators.each_page(|page| ids.extend(page.into_iter().map(|u| u.id))).await?;
                ids
            }
        };
        let users = users.into_iter().filter(|id| !honeytokens::is_decoy_account(&self.keyring, id)).collect();
        let now = now_ms();
        Ok(Plan {
            id: time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
            started_at: rfc3339(now),
            options,
            revoked: false,
            old_keys: Vec::new(),
            rotated: false,
            rewrapped: false,
            retired: false,
            users_done: 0,
            users,
            finished: false,
        })
    }

    /// Resolves `--users` lines (id, username or email) to account ids; unknown lines are an error.
    pub async fn resolve_users(&self, list: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match self.operators.find(line).await? {
                Some(user) => ids.push(user.id),
                None => unknown.push(line.to_owned()),
            }
        }
        if !unknown.is_empty() {
            bail!("{} line(s) match no account: {}", unknown.len(), unknown.join(", "));
        }
        // An account named twice (by username and by email, say) is handled, and mailed, once.
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        Ok(ids)
    }

    pub fn describe_breach_response(&self, plan: &Plan) -> Vec<String> {
        plan.describe()
    }

    /// Runs (or continues) the plan, saving it at `path` after each step and account.
    pub async fn run_breach_response(&self, plan: &mut Plan, path: &Path, key_file: &Path) -> anyhow::Result<()> {
        plan.save(path)?;
        if plan.users_done == 0 && !plan.revoked && !plan.rotated {
            let details = json!({ "plan": plan.id, "steps": plan.describe(), "accounts": plan.users.len() });
            self.audit.record(AuditLog::event(kind::BREACH_RESPONSE_STARTED, &self.actor, None, None, details)).await?;
        }
        let reason = format!("breach response {}", plan.id);
        if let (Some(revoke), false) = (plan.options.revoke.clone(), plan.revoked) {
            match (revoke.as_str(), &plan.options.affected) {
                ("all", Affected::All) => {
                    self.revoke(Scope::Global, None, Some(reason.clone()), true).await?;
                }
                (revoke, Affected::Listed(ids)) => {
                    let mut progress = Progress::new("revoking");
                    for (i, id) in ids.iter().enumerate() {
                        let user = id.clone();
                        let scope = match revoke {
                            "all" => Scope::User(user),
                            channel => Scope::UserChannel { user, channel: channel.to_owned() },
                        };
                        self.revoke(scope, None, Some(reason.clone()), true).await?;
                        progress.update(i + 1, ids.len());
                    }
                    progress.finish();
                }
                (channel, Affected::All) => {
                    self.revoke(Scope::Channel(channel.to_owned()), None, Some(reason.clone()), true).await?;
                }
            }
            plan.revoked = true;
            plan.save(path)?;
            eprintln!("tokens revoked");
        }
        if plan.options.rotate_keys {
            self.rotate_every_key(plan, path, key_file).await?;
        }
        let total = plan.users.len();
        let text = IncidentText {
            what_happened: plan.options.what_happened.clone(),
            what_we_did: plan.options.what_we_did.clone(),
        };
        // Each handled account is appended to a journal beside the plan, so that a resumed run
        // mails nobody twice without rewriting the whole plan (and its account list) per account.
        let journal_path = path.with_extension("done");
        let handled: std::collections::HashSet<String> = match std::fs::read_to_string(&journal_path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Default::default(),
        };
        let mut journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .with_context(|| format!("cannot write {}", journal_path.display()))?;
        let mut progress = Progress::new("accounts");
        while plan.users_done < total {
            let id = plan.users[plan.users_done].clone();
            if handled.contains(&id) {
                plan.users_done += 1;
                continue;
            }
            if let Some(user) = self.operators.user_if_any(&id).await? {
                let o = &plan.options;
                let response = AccountResponse {
                    force_password_reset: o.force_password_reset,
                    // A revocation rule covers the accounts already; one per account is not needed.
                    sign_out: false,
                    reset_second_factors: o.reset_second_factors,
                    notify: o.notify,
                };
                self.incident.respond_to_account(&user, &response, &text, &reason, &self.actor).await?;
            }
            writeln!(journal, "{id}").and_then(|()| journal.flush()).context("cannot write the journal")?;
            plan.users_done += 1;
            if plan.users_done % PLAN_SAVE_EVERY == 0 {
                plan.save(path)?;
            }
            progress.update(plan.users_done, total);
        }
        progress.finish();
        plan.finished = true;
        plan.save(path)?;
        let details = json!({ "plan": plan.id, "accounts": total, "keys_rotated": plan.options.rotate_keys });
        self.audit.record(AuditLog::event(kind::BREACH_RESPONSE_FINISHED, &self.actor, None, None, details)).await?;
        Ok(())
    }

    /// New keys for every purpose, active at once; values moved to them; the old keys retired.
    async fn rotate_every_key(&self, plan: &mut Plan, path: &Path, key_file: &Path) -> anyhow::Result<()> {
        Self::ensure_key_file().context("rotate the keys where the keyring is kept, then run without --rotate-keys")?;
        if !plan.rotated {
            let keyring = Keyring::load(key_file)?;
            plan.old_keys = KeyPurpose::ALL.iter().map(|p| (p.name().to_owned(), keyring.active_id(*p))).collect();
            plan.save(path)?;
            self.rotate_keys(key_file, &KeyPurpose::ALL, now_ms()).await?;
            plan.rotated = true;
            plan.save(path)?;
            eprintln!("new keys active: {:?}", self.keyring.active_ids());
        }
        if !plan.rewrapped {
            let mut progress = Progress::new("re-wrapping");
            self.rewrap_all(500, |done, _, total| {
                let total = usize::try_from(total).unwrap_or_default();
                progress.update(usize::try_from(done).unwrap_or_default().min(total), total);
            })
            .await?;
            progress.finish();
            plan.rewrapped = true;
            plan.save(path)?;
        }
        if !plan.retired {
            // A resumed run may find some already gone.
            let old: Vec<(KeyPurpose, String)> = plan
                .old_keys
                .iter()
                .filter_map(|(name, id)| {
                    KeyPurpose::ALL.into_iter().find(|p| p.name() == name).map(|p| (p, id.clone()))
                })
                .filter(|(purpose, id)| self.keyring.has_key(*purpose, id))
                .collect();
            self.retire_keys(key_file, &old, true).await?;
            plan.retired = true;
            plan.save(path)?;
            eprintln!("old keys retired: the copied database is useless against the new ones");
        }
        Ok(())
    }
}
