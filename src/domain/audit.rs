//! The tamper-evident audit log: security events chained by keyed MACs, and the check that finds edits.
//!
//! Each event's MAC covers the previous event's MAC, its sequence number and every field, under a
//! key that is not in the database (derived from the token-hash key). Editing, inserting or deleting
//! a row breaks the chain at that row; without the key the chain cannot be recomputed to hide it.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::error::Result;
use crate::clock::now_ms;
use crate::keys::Keyring;
use crate::mail::DeliveryLog;
use crate::store::{AuditRecord, AuditSealer, AuditStore, NewAuditEvent, QueuedMail};

/// Event kinds, stable strings that reports and alerts match on.
pub mod kind {
    pub const ACCOUNT_CREATED: &str = "account.created";
    pub const SIGN_IN: &str = "sign_in.success";
    pub const SIGN_IN_FAILED: &str = "sign_in.failure";
    pub const NEW_DEVICE: &str = "device.new";
    pub const SIGNED_OUT: &str = "session.signed_out";
    pub const REFRESH_TOKEN_REUSED: &str = "session.refresh_token_reused";
    pub const SESSION_RECOVERED: &str = "session.recovered";
    pub const DEVICE_SIGNED_OUT: &str = "device.signed_out";
    pub const SIGNED_OUT_EVERYWHERE: &str = "sessions.signed_out_everywhere";
    pub const REVOCATION: &str = "revocation.rule_added";
    pub const EMAIL_VERIFIED: &str = "account.email_verified";
    /// The address was proven for the first time and what was set up before was removed.
    pub const UNPROVEN_ACCOUNT_SECURED: &str = "account.unproven_account_secured";
    pub const PASSWORD_CHANGED: &str = "password.changed";
    pub const PASSWORD_RESET: &str = "password.reset";
    pub const PASSWORD_RESET_REQUESTED: &str = "password.reset_requested";
    pub const PASSWORD_RESET_FORCED: &str = "password.reset_forced";
    pub const ADMIN_USERS_LISTED: &str = "admin.users_listed";
    pub const ADMIN_USER_VIEWED: &str = "admin.user_viewed";
    pub const TOTP_ENROLMENT_STARTED: &str = "mfa.totp_enrolment_started";
    pub const TOTP_ENABLED: &str = "mfa.totp_enabled";
    pub const TOTP_DISABLED: &str = "mfa.totp_disabled";
    pub const RECOVERY_CODES_REGENERATED: &str = "mfa.recovery_codes_regenerated";
    pub const RECOVERY_CODE_USED: &str = "mfa.recovery_code_used";
    pub const SECOND_FACTOR_FAILED: &str = "mfa.failure";
    pub const STEPPED_UP: &str = "session.stepped_up";
    pub const PASSKEY_ADDED: &str = "mfa.passkey_added";
    pub const PASSKEY_RENAMED: &str = "mfa.passkey_renamed";
    pub const PASSKEY_REMOVED: &str = "mfa.passkey_removed";
    pub const SECOND_FACTORS_RESET: &str = "mfa.reset_by_operator";
    pub const ROLE_CHANGED: &str = "account.role_changed";
    pub const EMAIL_CHANGE_REQUESTED: &str = "account.email_change_requested";
    pub const EMAIL_CHANGED: &str = "account.email_changed";
    pub const MAIL_SENT: &str = "mail.sent";
    pub const CLIENT_REGISTERED: &str = "oauth.client_registered";
    pub const CLIENT_REMOVED: &str = "oauth.client_removed";
    pub const CLIENT_SECRET_ROTATED: &str = "oauth.client_secret_rotated";
    pub const OAUTH_CONSENT_GRANTED: &str = "oauth.consent_granted";
    pub const OAUTH_CONSENT_WITHDRAWN: &str = "oauth.consent_withdrawn";
    pub const OAUTH_TOKENS_ISSUED: &str = "oauth.tokens_issued";
    pub const OAUTH_CODE_REUSED: &str = "oauth.code_reused";
    pub const OAUTH_TOKEN_REVOKED: &str = "oauth.token_revoked";
    pub const DEVICE_LINK_DECIDED: &str = "oauth.device_link_decided";
    pub const KEY_ROTATED: &str = "keys.rotated";
    pub const KEY_RETIRED: &str = "keys.retired";
    pub const KEYS_REWRAPPED: &str = "keys.rewrapped";
    pub const BREACH_RESPONSE_STARTED: &str = "breach_response.started";
    pub const BREACH_RESPONSE_FINISHED: &str = "breach_response.finished";
    pub const SSO_LINKED: &str = "sso.linked";
    pub const SSO_UNLINKED: &str = "sso.unlinked";
    pub const PIN_LINKED: &str = "device.pin_linked";
    pub const CLAIM_TOKEN_ISSUED: &str = "device.claim_token_issued";
    pub const SERVER_CLAIMED: &str = "device.server_claimed";
    pub const WEBHOOKS_CHANGED: &str = "account.webhooks_changed";
    pub const ACCOUNT_DISABLED: &str = "account.disabled";
    pub const ACCOUNT_ENABLED: &str = "account.enabled";
    pub const ACCOUNT_UNLOCKED: &str = "account.unlocked";
    pub const DATA_EXPORTED: &str = "account.data_exported";
    pub const ACCOUNT_DELETION_REQUESTED: &str = "account.deletion_requested";
    pub const ACCOUNT_DELETION_CANCELLED: &str = "account.deletion_cancelled";
    /// The account was erased; the event names it by id only.
    pub const ACCOUNT_ERASED: &str = "account.erased";
    pub const INVITE_CREATED: &str = "invite.created";
    pub const INVITE_REVOKED: &str = "invite.revoked";
    pub const DEVICE_KEY_REGISTERED: &str = "device.key_registered";
    pub const DEVICE_KEY_REMOVED: &str = "device.key_removed";
    /// A throttle started backing off: too many wrong guesses for one account, address or device.
    pub const THROTTLED: &str = "throttle.blocked";
    /// A security alert (credential stuffing, a honeytoken used): also logged, counted and sent to admins.
    pub const ALERT: &str = "alert.raised";
    /// Decoy accounts were planted (how many, never which).
    pub const HONEYTOKENS_SEEDED: &str = "honeytokens.seeded";
    pub const HONEYTOKENS_LISTED: &str = "honeytokens.listed";
    /// The audit log was exported (how many events, which period).
    pub const AUDIT_EXPORTED: &str = "audit.exported";

    /// Event kinds in words for the person reading their own history.
    pub fn in_words(kind: &str) -> &'static str {
        match kind {
            ACCOUNT_CREATED => "Account created",
            EMAIL_VERIFIED => "Email address confirmed",
            SIGN_IN => "Signed in",
            SIGN_IN_FAILED => "Failed sign-in attempt",
            NEW_DEVICE => "New device",
            DEVICE_SIGNED_OUT => "Device signed out",
            SIGNED_OUT => "Signed out",
            REFRESH_TOKEN_REUSED => "A stolen token was used: the session was ended",
            SESSION_RECOVERED => "Session restored after a security incident",
            SIGNED_OUT_EVERYWHERE => "Signed out of all devices",
            REVOCATION => "Sessions revoked",
            PASSWORD_CHANGED => "Password changed",
            PASSWORD_RESET => "Password reset",
            PASSWORD_RESET_REQUESTED => "Password reset requested",
            PASSWORD_RESET_FORCED => "New password required by an administrator",
            MAIL_SENT => "Email sent",
            ADMIN_USER_VIEWED => "An administrator looked at your account",
            TOTP_ENROLMENT_STARTED => "Authenticator app setup started",
            TOTP_ENABLED => "Authenticator app turned on",
            TOTP_DISABLED => "Authenticator app turned off",
            RECOVERY_CODES_REGENERATED => "New recovery codes made",
            RECOVERY_CODE_USED => "Recovery code used",
            SECOND_FACTOR_FAILED => "Wrong two-step verification code",
            STEPPED_UP => "Identity confirmed for a sensitive change",
            EMAIL_CHANGE_REQUESTED => "Email address change requested",
            EMAIL_CHANGED => "Email address changed",
            SECOND_FACTORS_RESET => "Two-step verification removed by an administrator",
            ROLE_CHANGED => "Account role changed",
            PASSKEY_ADDED => "Passkey added",
            PASSKEY_RENAMED => "Passkey renamed",
            PASSKEY_REMOVED => "Passkey removed",
            OAUTH_CONSENT_GRANTED => "An app was allowed to use your account",
            OAUTH_CONSENT_WITHDRAWN => "An app's access was removed",
            OAUTH_TOKENS_ISSUED => "An app signed you in",
            OAUTH_CODE_REUSED => "A sign-in code was replayed; the app's session was ended",
            DEVICE_LINK_DECIDED => "A device link was answered",
            OAUTH_TOKEN_REVOKED => "An app signed out",
            SSO_LINKED => "A sign-in provider was linked",
            SSO_UNLINKED => "A sign-in provider was unlinked",
            DEVICE_KEY_REGISTERED => "A device registered its key",
            PIN_LINKED => "A device was linked with its code",
            CLAIM_TOKEN_ISSUED => "A media server claim code was made",
            SERVER_CLAIMED => "A media server was claimed",
            WEBHOOKS_CHANGED => "Webhooks changed",
            ACCOUNT_DISABLED => "Account disabled by an administrator",
            ACCOUNT_ENABLED => "Account enabled again by an administrator",
            ACCOUNT_UNLOCKED => "Sign-in lock lifted by an administrator",
            DATA_EXPORTED => "A copy of your data was downloaded",
            ACCOUNT_DELETION_REQUESTED => "Account deletion requested",
            ACCOUNT_DELETION_CANCELLED => "Account deletion cancelled",
            DEVICE_KEY_REMOVED => "A device key was removed",
            UNPROVEN_ACCOUNT_SECURED => "Address confirmed: what was set up before was removed",
            _ => "Security event",
        }
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    Admin(String),
    Anonymous,
    System,
    /// An OAuth client acting on its own tokens.
    Client(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Admin(who) => write!(f, "admin:{who}"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::System => f.write_str("system"),
            Self::Client(id) => write!(f, "client:{id}"),
        }
    }
}

/// An event as shown to its user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SecurityEvent {
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    pub kind: String,
    pub address: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub events_checked: u64,
    pub problems: Vec<String>,
}

#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    keyring: Arc<Keyring>,
}

/// The bytes an event's MAC covers, each field length-prefixed so no two events encode alike.
fn mac_input(prev_hash: &[u8], seq: i64, event: &NewAuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(b) => {
            out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX - 1).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    };
    field(Some(prev_hash));
    field(Some(&seq.to_be_bytes()));
    field(Some(&event.at.to_be_bytes()));
    field(Some(event.kind.as_bytes()));
    field(Some(event.actor.as_bytes()));
    field(event.user_id.as_deref().map(str::as_bytes));
    field(event.address.as_deref().map(str::as_bytes));
    field(Some(event.details.as_bytes()));
    out
}

impl AuditSealer for AuditLog {
    fn key_id(&self) -> String {
        self.keyring.active_audit_key_id()
    }

    fn seal(&self, key_id: &str, prev_hash: &[u8], seq: i64, event: &NewAuditEvent) -> Vec<u8> {
        // The key id comes from `key_id()` just before, so the key is present.
        self.keyring.audit_mac(key_id, &mac_input(prev_hash, seq, event)).unwrap_or_default()
    }
}

/// Each delivered message is an audit event (`mail.sent`) of the account it went to.
#[async_trait::async_trait]
impl DeliveryLog for AuditLog {
    async fn delivered(&self, mail: &QueuedMail) -> crate::mail::Result<()> {
        let details = serde_json::json!({ "kind": mail.kind, "message_id": mail.id, "attempts": mail.attempts + 1 });
        let event = Self::event(kind::MAIL_SENT, &Actor::System, mail.user_id.as_deref(), None, details);
        self.store.append_audit(&event, self).await?;
        Ok(())
    }
}

impl AuditLog {
    pub fn new(store: Arc<dyn AuditStore>, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    pub(super) fn store(&self) -> &dyn AuditStore {
        self.store.as_ref()
    }

    /// An event happening now. `details` must never carry a secret or an email address.
    pub fn event(
        kind: &str,
        actor: &Actor,
        user_id: Option<&str>,
        address: Option<&str>,
        details: Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: now_ms(),
            kind: kind.to_owned(),
            actor: actor.to_string(),
            user_id: user_id.map(str::to_owned),
            address: address.map(str::to_owned),
            details: details.to_string(),
        }
    }

    pub async fn record(&self, event: NewAuditEvent) -> Result<i64> {
        Ok(self.store.append_audit(&event, self).await?)
    }

    /// The newest events of one account, for its owner.
    pub async fn events_of(&self, user_id: &str, limit: i64) -> Result<Vec<SecurityEvent>> {
        let records = self.store.audit_events_of(user_id, limit).await?;
        Ok(records
            .into_iter()
            .map(|r| SecurityEvent {
                seq: r.seq,
                at: crate::clock::rfc3339(r.at),
                kind: r.kind,
                address: r.address,
                details: serde_json::from_str(&r.details).unwrap_or(Value::Null),
            })
            .collect())
    }

    /// Walks the whole chain and reports every event that is missing, altered or out of place.
    /// The head is read first and the walk stops there, so events that running servers append
    /// during the check are left for the next one instead of looking like tampering.
    pub async fn verify(&self) -> Result<Verification> {
        const PAGE: i64 = 1000;
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let mut report = Verification::default();
        let (mut last_seq, mut last_hash) = (0_i64, Vec::new());
        'walk: loop {
            let page = self.store.audit_events_after(last_seq, PAGE).await?;
            let done = page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
            for record in page {
                if record.seq > head_seq {
                    break 'walk;
                }
                check_link(&self.keyring, &record, last_seq, &last_hash, &mut report);
                report.events_checked += 1;
                last_seq = record.seq;
                last_hash = record.hash;
            }
            if done {
                break;
            }
        }
        if head_seq != last_seq || head_hash != last_hash {
            report.problems.push(format!(
                "the log ends at event {last_seq} but {head_seq} events were appended: events after {last_seq} were deleted or the head was altered"
            ));
        }
        Ok(report)
    }
}

/// Checks one event against the one before it (`last_seq`, `last_hash`): its place, its link and its
/// MAC; what is wrong goes into `report`.
pub(super) fn check_link(
    keyring: &Keyring,
    record: &AuditRecord,
    last_seq: i64,
    last_hash: &[u8],
    report: &mut Verification,
) {
    let seq = record.seq;
    if seq != last_seq + 1 {
        report.problems.push(format!("events {} to {} are missing", last_seq + 1, seq - 1));
    }
    if record.prev_hash != last_hash {
        report.problems.push(format!("event {seq} does not follow the event before it"));
    }
    let event = NewAuditEvent {
        at: record.at,
        kind: record.kind.clone(),
        actor: record.actor.clone(),
        user_id: record.user_id.clone(),
        address: record.address.clone(),
        details: record.details.clone(),
    };
    match keyring.audit_mac(&record.key_id, &mac_input(&record.prev_hash, seq, &event)) {
        None => report
            .problems
            .push(format!("event {seq} was sealed with key {} which is not in the keyring", record.key_id)),
        Some(mac) if !bool::from(subtle::ConstantTimeEq::ct_eq(mac.as_slice(), record.hash.as_slice())) => {
            report.problems.push(format!("event {seq} was altered"));
        }
        Some(_) => {}
    }
}
