//! Outgoing mail: templated notices, a durable encrypted queue in the database, delivery with retries.
//!
//! Sending never blocks a request: a notice is rendered, sealed under the data key (a queued reset
//! link is a credential) and stored; a delivery task hands it to SMTP or the file outbox and retries
//! with exponential back-off, so an outage of the mail server loses nothing.

pub mod templates;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::templates::Templates;
pub use self::transport::{Security, SmtpConfig, Transport};
use crate::clock::{now_ms, rfc3339};
use crate::keys::{Keyring, Sealed};
use crate::store::{MailQueueStore, QueuedMail, StoreError};

/// Why a notice could not be queued or the queue not worked.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the recipient's address is not a valid mailbox")]
    InvalidRecipient,
    #[error("cannot render or build the message: {0}")]
    Message(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = MailError> = std::result::Result<T, E>;

/// Where delivered mail is recorded: the domain's audit log, which sits above the mailer.
#[async_trait::async_trait]
pub trait DeliveryLog: Send + Sync {
    async fn delivered(&self, mail: &QueuedMail) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// One `.eml` file per message in the outbox directory.
    #[default]
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    pub transport: TransportKind,
    /// The `From:` of every message.
    pub from: String,
    /// Where the outbox transport writes; unset means `data_dir/outbox`.
    pub outbox_dir: Option<PathBuf>,
    pub smtp: SmtpConfig,
    /// First retry delay after a failed delivery; doubles each time, up to an hour.
    pub retry_base_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            transport: TransportKind::Outbox,
            from: "keywarden <no-reply@localhost>".into(),
            outbox_dir: None,
            smtp: SmtpConfig::default(),
            retry_base_secs: 5,
        }
    }
}

/// A message keywarden sends to a user.
#[derive(Debug, Clone)]
pub enum Notice {
    VerifyEmail {
        link: String,
        hours: i64,
    },
    PasswordReset {
        link: String,
        minutes: i64,
    },
    PasswordChanged {
        signed_out_devices: bool,
        address: Option<String>,
    },
    NewSignIn {
        device_name: String,
        product: String,
        platform: String,
        address: Option<String>,
    },
    SignedOutEverywhere {
        kept_current: bool,
    },
    DeviceSignedOut {
        device_name: String,
    },
    SecurityIncident {
        link: String,
        minutes: i64,
        what_happened: String,
        what_we_did: String,
    },
    /// A second factor was added, removed or used: `change` is `totp_enabled`, `totp_disabled`,
    /// `passkey_added`, `passkey_removed`, `factors_reset`, `recovery_codes_regenerated` or
    /// `recovery_code_used` (with the codes `remaining`).
    SecondFactorChanged {
        change: &'static str,
        address: Option<String>,
        remaining: i64,
    },
    /// To the new address: the link that makes it the account's.
    ConfirmEmailChange {
        link: String,
        hours: i64,
    },
    /// To the current address: someone asked to move the account to `new_email` (masked).
    EmailChangeRequested {
        new_email: String,
        address: Option<String>,
    },
    /// To the old address, after the new one was confirmed.
    EmailChanged {
        new_email: String,
    },
    /// To every admin: a security alert (credential stuffing, a honeytoken used).
    SecurityAlert {
        alert: String,
        severity: String,
        summary: String,
    },
    /// A code to finish a sign-in from a new device while a credential-stuffing surge lasts.
    SignInCode {
        code: String,
        minutes: i64,
        device_name: String,
        address: Option<String>,
    },
    /// A reset was asked for an account that has no password: how it signs in instead.
    NoPasswordToReset {
        providers: Vec<String>,
        link: String,
    },
    /// The address was proven for the first time, and what was set up before it was removed.
    UnprovenAccountSecured {
        removed: crate::store::RemovedOnFirstProof,
    },
    /// The owner asked to delete the account: when it is erased, and the link that keeps it.
    DeletionScheduled {
        link: String,
        days: i64,
        address: Option<String>,
    },
    /// A copy of the account's data was downloaded.
    DataExported {
        address: Option<String>,
    },
    /// An account at a sign-in provider was linked to or unlinked from the account.
    SignInProviderChanged {
        provider: String,
        linked: bool,
        address: Option<String>,
    },
}

impl Notice {
    /// The stable kind recorded with the queued message and in the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::PasswordReset { .. } => "password_reset",
            Self::PasswordChanged { .. } => "password_changed",
            Self::NewSignIn { .. } => "new_sign_in",
            Self::SignedOutEverywhere { .. } => "signed_out_everywhere",
            Self::DeviceSignedOut { .. } => "device_signed_out",
            Self::SecurityIncident { .. } => "security_incident",
            Self::SecondFactorChanged { .. } => "second_factor_changed",
            Self::ConfirmEmailChange { .. } => "email_change",
            Self::EmailChangeRequested { .. } => "email_change_requested",
            Self::EmailChanged { .. } => "email_changed",
            Self::NoPasswordToReset { .. } => "no_password_to_reset",
            Self::SecurityAlert { .. } => "security_alert",
            Self::SignInCode { .. } => "sign_in_code",
            Self::SignInProviderChanged { .. } => "sign_in_provider_changed",
            Self::UnprovenAccountSecured { .. } => "unproven_account_secured",
            Self::DataExported { .. } => "data_exported",
            Self::DeletionScheduled { .. } => "deletion_scheduled",
        }
    }

    fn template(&self) -> &'static str {
        match self {
            Self::DeviceSignedOut { .. } => "signed_out_everywhere",
            Self::EmailChangeRequested { .. } => "email_changed",
            other => other.kind(),
        }
    }

    fn subject(&self, product: &str) -> String {
        match self {
            Self::VerifyEmail { .. } => format!("Confirm your email address for {product}"),
            Self::PasswordReset { .. } => format!("Reset your {product} password"),
            Self::PasswordChanged { .. } => format!("Your {product} password was changed"),
            Self::NewSignIn { .. } => format!("New sign-in to your {product} account"),
            Self::SignedOutEverywhere { .. } => format!("All devices were signed out of your {product} account"),
            Self::DeviceSignedOut { .. } => format!("A device was signed out of your {product} account"),
            Self::SecurityIncident { .. } => format!("Important: action required for your {product} account"),
            Self::SecondFactorChanged { change: "recovery_code_used", .. } => {
                format!("A recovery code was used for your {product} account")
            }
            Self::SecondFactorChanged { .. } => format!("Two-factor settings of your {product} account changed"),
            Self::ConfirmEmailChange { .. } => format!("Confirm your new email address for {product}"),
            Self::EmailChangeRequested { .. } => format!("A change of your {product} email address was requested"),
            Self::EmailChanged { .. } => format!("The email address of your {product} account was changed"),
            Self::NoPasswordToReset { .. } => format!("Your {product} account has no password to reset"),
            Self::SecurityAlert { severity, alert, .. } => format!("[{product} {severity}] security alert: {alert}"),
            Self::SignInCode { code, .. } => format!("{code} is your {product} sign-in code"),
            Self::SignInProviderChanged { provider, linked: true, .. } => {
                format!("{provider} can now sign in to your {product} account")
            }
            Self::SignInProviderChanged { provider, .. } => {
                format!("{provider} can no longer sign in to your {product} account")
            }
            Self::UnprovenAccountSecured { .. } => {
                format!("Your {product} account was secured when your address was confirmed")
            }
            Self::DataExported { .. } => format!("A copy of your {product} account's data was downloaded"),
            Self::DeletionScheduled { .. } => format!("Your {product} account will be deleted"),
        }
    }

    fn context(&self) -> serde_json::Value {
        match self {
            Self::VerifyEmail { link, hours } => json!({ "link": link, "hours": hours }),
            Self::PasswordReset { link, minutes } => json!({ "link": link, "minutes": minutes }),
            Self::PasswordChanged { signed_out_devices, address } => {
                json!({ "signed_out_devices": signed_out_devices, "address": address })
            }
            Self::NewSignIn { device_name, product, platform, address } => {
                json!({ "device_name": device_name, "product_name": product, "platform": platform, "address": address })
            }
            Self::SignedOutEverywhere { kept_current } => json!({ "kept_current": kept_current }),
            Self::DeviceSignedOut { device_name } => json!({ "device_name": device_name }),
            Self::SecurityIncident { link, minutes, what_happened, what_we_did } => {
                json!({ "link": link, "minutes": minutes, "what_happened": what_happened, "what_we_did": what_we_did })
            }
            Self::SecondFactorChanged { change, address, remaining } => {
                json!({ "change": change, "address": address, "remaining": remaining })
            }
            Self::ConfirmEmailChange { link, hours } => json!({ "link": link, "hours": hours }),
            Self::EmailChangeRequested { new_email, address } => {
                json!({ "new_email": new_email, "address": address, "done": false })
            }
            Self::EmailChanged { new_email } => json!({ "new_email": new_email, "done": true }),
            Self::NoPasswordToReset { providers, link } => json!({ "providers": providers, "link": link }),
            Self::SecurityAlert { alert, severity, summary } => {
                json!({ "alert": alert, "severity": severity, "summary": summary })
            }
            Self::SignInCode { code, minutes, device_name, address } => {
                json!({ "code": code, "minutes": minutes, "device_name": device_name, "address": address })
            }
            Self::SignInProviderChanged { provider, linked, address } => {
                json!({ "provider": provider, "linked": linked, "address": address })
            }
            Self::UnprovenAccountSecured { removed } => json!({ "removed": removed }),
            Self::DataExported { address } => json!({ "address": address }),
            Self::DeletionScheduled { link, days, address } => {
                json!({ "link": link, "days": days, "address": address })
            }
        }
    }
}

/// Who a notice goes to.
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    pub email: &'a str,
}

/// The sealed content of a queued message.
#[derive(Serialize, Deserialize)]
struct Sealable {
    from: String,
    to: String,
    message: String,
}

#[derive(Clone)]
pub struct Mailer(std::sync::Arc<MailerParts>);

impl std::ops::Deref for Mailer {
    type Target = MailerParts;

    fn deref(&self) -> &MailerParts {
        &self.0
    }
}

/// What every handle to the mailer shares.
pub struct MailerParts {
    store: Arc<dyn MailQueueStore>,
    keyring: Arc<Keyring>,
    delivered: Arc<dyn DeliveryLog>,
    templates: Arc<Templates>,
    from: Mailbox,
    product: String,
    public_url: String,
    retry_base: Duration,
    queued: Arc<Notify>,
}

pub(crate) fn mail_context(id: &str) -> Vec<u8> {
    format!("keywarden:mail:{id}").into_bytes()
}

/// Delivery errors may quote addresses back; keep them out of logs and of the database.
fn redact_addresses(text: &str) -> String {
    text.split_whitespace()
        .map(|word| if word.contains('@') { "<address>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Mailer {
    pub fn new(
        store: Arc<dyn MailQueueStore>,
        keyring: Arc<Keyring>,
        delivered: Arc<dyn DeliveryLog>,
        config: &MailConfig,
        product: &str,
        public_url: &str,
    ) -> anyhow::Result<Self> {
        let from: Mailbox =
            config.from.parse().map_err(|e| anyhow::anyhow!("invalid mail.from {:?}: {e}", config.from))?;
        Ok(Self(std::sync::Arc::new(MailerParts {
            store,
            keyring,
            delivered,
            templates: Arc::new(Templates::load()?),
            from,
            product: product.to_owned(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            retry_base: Duration::from_secs(config.retry_base_secs.max(1)),
            queued: Arc::new(Notify::new()),
        })))
    }

    /// A link into keywarden's own pages.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Renders a notice and queues it durably; delivery happens in the background.
    pub async fn send(&self, to: &Recipient<'_>, notice: Notice) -> Result<()> {
        let mut context = notice.context();
        let base = json!({
            "product": self.product,
            "username": to.username,
            "security_url": self.url("/security"),
            "reset_url": self.url("/reset"),
            "at": rfc3339(now_ms()),
            "subject": notice.subject(&self.product),
        });
        if let (Some(context), Some(base)) = (context.as_object_mut(), base.as_object()) {
            context.extend(base.clone());
        }
        let rendered = self
            .templates
            .render(notice.template(), &minijinja::Value::from_serialize(&context))
            .map_err(|e| MailError::Message(format!("mail template {}: {e}", notice.template())))?;
        let recipient: Mailbox = to.email.parse().map_err(|_| MailError::InvalidRecipient)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(notice.subject(&self.product))
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
            .map_err(|e| MailError::Message(format!("cannot build message: {e}")))?;
        let id = uuid::Uuid::now_v7().to_string();
        let sealable = Sealable {
            from: self.from.email.to_string(),
            to: to.email.to_owned(),
            message: B64.encode(message.formatted()),
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&sealable).map_err(|e| MailError::Message(e.to_string()))?);
        let sealed = self.keyring.seal(&plain, &mail_context(&id));
        let now = now_ms();
        let queued = QueuedMail {
            id,
            kind: notice.kind().to_owned(),
            user_id: Some(to.user_id.to_owned()),
            sealed: sealed.bytes,
            key_id: sealed.key_id,
            created_at: now,
            next_attempt_at: now,
            attempts: 0,
        };
        self.store.enqueue_mail(&queued).await?;
        self.queued.notify_one();
        Ok(())
    }

    /// Delivers every message that is due; returns how many were delivered.
    pub async fn deliver_due(&self, transport: &Transport) -> Result<usize> {
        let mut delivered = 0;
        loop {
            let now = now_ms();
            let batch = self.store.claim_due_mail(now, now + 120_000, 20).await?;
            if batch.is_empty() {
                return Ok(delivered);
            }
            for mail in batch {
                match self.deliver_one(transport, &mail).await {
                    Ok(()) => {
                        self.store.mail_delivered(&mail.id).await?;
                        delivered += 1;
                        self.delivered.delivered(&mail).await?;
                    }
                    Err(error) => {
                        let error = redact_addresses(&error);
                        let exponent = u32::try_from(mail.attempts.clamp(0, 12)).unwrap_or(12);
                        let delay = (self.retry_base * 2u32.pow(exponent)).min(Duration::from_secs(3600));
                        let next = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(3_600_000);
                        tracing::warn!(message_id = %mail.id, kind = %mail.kind, attempts = mail.attempts + 1, %error, retry_in = ?delay, "mail delivery failed");
                        self.store.mail_failed(&mail.id, next, &error).await?;
                    }
                }
            }
        }
    }

    async fn deliver_one(&self, transport: &Transport, mail: &QueuedMail) -> std::result::Result<(), String> {
        let sealed = Sealed { key_id: mail.key_id.clone(), bytes: mail.sealed.clone() };
        let plain = self.keyring.open(&sealed, &mail_context(&mail.id)).map_err(|e| e.to_string())?;
        let content: Sealable = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        let message = B64.decode(&content.message).map_err(|e| e.to_string())?;
        let envelope = lettre::address::Envelope::new(
            Some(content.from.parse().map_err(|_| "invalid sender".to_owned())?),
            vec![content.to.parse().map_err(|_| "invalid recipient".to_owned())?],
        )
        .map_err(|e| e.to_string())?;
        transport.deliver(&mail.id, &envelope, &message).await
    }

    /// Delivers queued mail as it arrives and at least every `poll`, until aborted.
    pub fn spawn_delivery(&self, transport: Transport, poll: Duration) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(err) = this.deliver_due(&transport).await {
                    tracing::warn!(error = %err, "mail delivery pass failed");
                }
                tokio::select! {
                    _ = this.queued.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_redacted_from_delivery_errors() {
        assert_eq!(
            super::redact_addresses("550 no such user <eve@example.com> here"),
            "550 no such user <address> here"
        );
    }
}
