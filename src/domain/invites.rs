//! Invitations to sign up (`signup.mode = "invite"`): operators make them (for anyone or for one
//! address, for one use or N, for a while), list and revoke them; a sign-up spends one use.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::audit::{kind, Actor, AuditLog};
use super::core::Core;
use super::error::{Error, Result};
use super::identity::Email;
use super::tokens::TokenKind;
use crate::clock::{rfc3339, Clock};
use crate::keys::Keyring;
use crate::store::{DynStore, InviteRecord};

/// The longest an invitation may wait (a year), and the most uses one may have.
pub const MAX_TTL_SECS: i64 = 365 * 24 * 3600;
pub const MAX_USES: i64 = 10_000;

/// The authenticated data bound to an invitation's sealed address.
fn email_context(invite_id: &str) -> Vec<u8> {
    format!("keywarden:invite:{invite_id}:email").into_bytes()
}

/// A new invitation, its code shown once.
#[derive(Debug)]
pub struct NewInvite {
    pub id: String,
    pub code: Zeroizing<String>,
    pub expires_at: i64,
    pub uses: i64,
}

/// An invitation as operators list it (never its code).
#[derive(Debug, Clone, Serialize)]
pub struct InviteView {
    pub id: String,
    pub email: Option<String>,
    pub uses: i64,
    pub uses_left: i64,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub created_by: String,
    /// Usable now: not revoked, not expired, uses left.
    pub live: bool,
}

#[derive(Clone)]
pub struct Invites {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
}

impl Invites {
    pub fn new(core: &Core) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
        }
    }

    /// Makes an invitation for `email` (or anyone), good for `ttl_secs` and `uses` sign-ups; audited.
    pub async fn create(&self, email: Option<&str>, ttl_secs: i64, uses: i64, actor: &Actor) -> Result<NewInvite> {
        if !(60..=MAX_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::InvalidInvite("an invitation lasts between a minute and a year"));
        }
        if !(1..=MAX_USES).contains(&uses) {
            return Err(Error::InvalidInvite("an invitation has between 1 and 10000 uses"));
        }
        let email = email.map(Email::parse).transpose()?;
        let id = uuid::Uuid::now_v7().to_string();
        let code = TokenKind::Invite.mint();
        let digest = self.keyring.token_digest(&code);
        let sealed = email.as_ref().map(|e| self.keyring.seal(e.as_str().as_bytes(), &email_context(&id)));
        let now = self.clock.now_ms();
        let record = InviteRecord {
            id: id.clone(),
            code_digest: digest.digest,
            digest_key_id: digest.key_id,
            email_key_id: sealed.as_ref().map(|s| s.key_id.clone()),
            email_sealed: sealed.map(|s| s.bytes),
            email_index: email.as_ref().map(|e| self.keyring.blind_index(e.as_str()).digest),
            uses,
            uses_left: uses,
            created_at: now,
            expires_at: now + ttl_secs * 1000,
            revoked_at: None,
            created_by: actor.to_string(),
        };
        self.store.create_invite(&record).await?;
        let details = json!({ "invite_id": id, "for_one_address": email.is_some(), "uses": uses, "expires_at": rfc3339(record.expires_at) });
        self.audit.record(AuditLog::event(kind::INVITE_CREATED, actor, None, None, details)).await?;
        Ok(NewInvite { id, code, expires_at: record.expires_at, uses })
    }

    pub async fn list(&self) -> Result<Vec<InviteView>> {
        let now = self.clock.now_ms();
        Ok(self
            .store
            .invites()
            .await?
            .into_iter()
            .map(|r| {
                let email = match (&r.email_sealed, &r.email_key_id) {
                    (Some(bytes), Some(key_id)) => self
                        .keyring
                        .open(
                            &crate::keys::Sealed { key_id: key_id.clone(), bytes: bytes.clone() },
                            &email_context(&r.id),
                        )
                        .ok()
                        .map(|plain| String::from_utf8_lossy(&plain).into_owned()),
                    _ => None,
                };
                InviteView {
                    live: r.revoked_at.is_none() && r.expires_at > now && r.uses_left > 0,
                    id: r.id,
                    email,
                    uses: r.uses,
                    uses_left: r.uses_left,
                    created_at: rfc3339(r.created_at),
                    expires_at: rfc3339(r.expires_at),
                    revoked_at: r.revoked_at.map(rfc3339),
                    created_by: r.created_by,
                }
            })
            .collect())
    }

    /// Revokes an invitation (its unused uses die); audited. False if there was nothing to revoke.
    pub async fn revoke(&self, id: &str, actor: &Actor) -> Result<bool> {
        let revoked = self.store.revoke_invite(id, self.clock.now_ms()).await?;
        if revoked {
            self.audit
                .record(AuditLog::event(kind::INVITE_REVOKED, actor, None, None, json!({ "invite_id": id })))
                .await?;
        }
        Ok(revoked)
    }
}

/// Spends one use of the invitation `code` for a sign-up with `email`: a code that is unknown,
/// revoked, expired, used up or for another address is refused (the use is given back when it
/// was taken for another address).
pub(crate) async fn take(
    store: &DynStore,
    keyring: &Keyring,
    code: &str,
    email: &Email,
    now: i64,
) -> Result<InviteRecord> {
    if TokenKind::of(code.trim()) != Some(TokenKind::Invite) {
        return Err(Error::InvalidInvite("this invitation is not valid: check the link"));
    }
    let take = |digest: Vec<u8>| async move { store.take_invite(&digest, now).await };
    let invite = keyring
        .find_by_token_digest(code.trim(), take)
        .await?
        .ok_or(Error::InvalidInvite("this invitation is not valid any more: it was used, revoked or has expired"))?;
    if let Some(index) = &invite.email_index {
        let matches = keyring.blind_indexes(email.as_str()).iter().any(|k| &k.digest == index);
        if !matches {
            store.return_invite(&invite.id).await?;
            return Err(Error::InvalidInvite("this invitation is for another email address"));
        }
    }
    Ok(invite)
}
