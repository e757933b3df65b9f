//! Security alerts — recorded in the audit log, logged, and handed to hooks (the metric, every
//! admin's mailbox, the operator's webhook) — and the credential-stuffing detector that raises one.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::{kind, Actor, AuditLog};
use super::error::Result;
use super::throttle::{account_prefix, address_prefix, Purpose};
use crate::clock::Clock;
use crate::store::DynStore;

/// The alert state a credential-stuffing surge raises; while it holds, new devices take an extra step.
pub const CREDENTIAL_STUFFING: &str = "credential_stuffing";
/// A decoy account or token was used: the database (or a copy of it) is in someone else's hands.
pub const HONEYTOKEN_USED: &str = "honeytoken_used";

/// The `[alerts]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Each alert is POSTed here as JSON (with a Slack-style `text` field).
    pub webhook_url: Option<String>,
    /// Mail each alert to every account with the `admin` role.
    pub mail_admins: bool,
    pub stuffing: StuffingSettings,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self { webhook_url: None, mail_admins: true, stuffing: StuffingSettings::default() }
    }
}

/// `[alerts.stuffing]`: when failed sign-ins across many accounts from many addresses mean an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StuffingSettings {
    pub enabled: bool,
    /// Accounts (or unknown login names) with failed password sign-ins within the window.
    pub accounts: i64,
    /// Source addresses with failed password sign-ins within the window.
    pub addresses: i64,
    pub window_secs: i64,
    /// How often each node looks.
    pub check_every_secs: u64,
    /// While a surge lasts, a password sign-in from a device the account has not seen before must
    /// also type a code mailed to the account.
    pub new_device_step: bool,
    /// How long the surge state (and the extra step) lasts after the last check that saw it.
    pub hold_secs: i64,
}

impl Default for StuffingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            accounts: 20,
            addresses: 10,
            window_secs: 300,
            check_every_secs: 10,
            new_device_step: true,
            hold_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub details: Value,
}

/// Somewhere an alert goes besides the audit log and the log.
#[async_trait]
pub trait AlertHook: Send + Sync {
    async fn alerted(&self, alert: &Alert);
}

#[derive(Clone)]
pub struct Alerts {
    clock: Clock,
    store: DynStore,
    audit: AuditLog,
    settings: AlertSettings,
    hooks: Arc<RwLock<Vec<Arc<dyn AlertHook>>>>,
}

impl Alerts {
    pub fn new(store: DynStore, audit: AuditLog, settings: AlertSettings, clock: Clock) -> Self {
        Self { clock, store, audit, settings, hooks: Arc::default() }
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    pub fn add_hook(&self, hook: Arc<dyn AlertHook>) {
        if let Ok(mut hooks) = self.hooks.write() {
            hooks.push(hook);
        }
    }

    /// Raises an alert at once: audit event, error log, then every hook.
    pub async fn raise(&self, alert: Alert, user_id: Option<&str>, address: Option<&str>) -> Result<()> {
        tracing::error!(alert = alert.kind, severity = alert.severity.as_str(), summary = %alert.summary, "SECURITY ALERT");
        let details = json!({
            "alert": alert.kind, "severity": alert.severity, "summary": alert.summary, "details": alert.details,
        });
        self.audit.record(AuditLog::event(kind::ALERT, &Actor::System, user_id, address, details)).await?;
        let hooks: Vec<Arc<dyn AlertHook>> = self.hooks.read().map(|h| h.clone()).unwrap_or_default();
        for hook in hooks {
            hook.alerted(&alert).await;
        }
        Ok(())
    }

    /// Whether a credential-stuffing surge holds and new devices must take the extra step.
    pub async fn new_device_step_required(&self) -> Result<bool> {
        let stuffing = self.settings.stuffing;
        if !stuffing.enabled || !stuffing.new_device_step {
            return Ok(false);
        }
        Ok(self.store.alert_state_until(CREDENTIAL_STUFFING).await?.is_some_and(|until| until > self.clock.now_ms()))
    }

    /// Looks for a surge of failed sign-ins across many accounts from many addresses. The first
    /// node to see it raises the alert (once per surge); later checks keep the state up.
    pub async fn check_for_stuffing(&self) -> Result<bool> {
        let stuffing = self.settings.stuffing;
        if !stuffing.enabled {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        let since = now - stuffing.window_secs * 1000;
        let (accounts, failures) = self.store.throttles_failing(&account_prefix(Purpose::SignIn), since).await?;
        let (addresses, _) = self.store.throttles_failing(&address_prefix(Purpose::SignIn), since).await?;
        if accounts < stuffing.accounts || addresses < stuffing.addresses {
            return Ok(false);
        }
        let until = now + stuffing.hold_secs * 1000;
        if self.store.raise_alert_state(CREDENTIAL_STUFFING, now, until).await? {
            let step = if stuffing.new_device_step { "; new devices must now confirm a mailed code" } else { "" };
            let alert = Alert {
                kind: CREDENTIAL_STUFFING,
                severity: Severity::Critical,
                summary: format!(
                    "credential stuffing: failed sign-ins for {accounts} accounts from {addresses} addresses in the last {} s{step}",
                    stuffing.window_secs
                ),
                details: json!({
                    "accounts": accounts, "addresses": addresses, "failures": failures,
                    "window_secs": stuffing.window_secs, "new_device_step": stuffing.new_device_step,
                }),
            };
            self.raise(alert, None, None).await?;
        } else {
            self.store.extend_alert_state(CREDENTIAL_STUFFING, until).await?;
        }
        Ok(true)
    }

    /// Runs the detector until the task is dropped.
    pub fn spawn_stuffing_watch(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_secs(this.settings.stuffing.check_every_secs.max(1));
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = this.check_for_stuffing().await {
                    tracing::warn!(error = %err, "credential-stuffing check failed");
                }
            }
        })
    }
}
