//! People deleting their own accounts: a request with a fresh authentication ends every session at
//! once (OAuth clients hear it by back-channel logout) and sets when the account is erased; until
//! then a sign-in or the mailed link keeps it. Erasing removes everything that names the account
//! but its audit trail, which names it by id only. Operators can delete too, with or without the wait.

use serde_json::json;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::error::{Error, Result};
use super::revocation::Revocation;
use super::throttle::{Purpose, Subject};
use super::tokens::TokenKind;
use crate::clock::rfc3339;
use crate::mail::Notice;
use crate::store::{NewOneTimeToken, UserRecord};

/// A scheduled deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When the account is erased (Unix ms).
    pub due_at: i64,
}

#[derive(Clone)]
pub struct AccountDeletions {
    core: Core,
    accounts: Accounts,
}

impl AccountDeletions {
    pub fn new(core: &Core, accounts: Accounts) -> Self {
        Self { core: core.clone(), accounts }
    }

    /// How many days a deleted account can still be kept.
    pub fn grace_days(&self) -> i64 {
        (self.core.deletion.grace_secs + 86_399) / 86_400
    }

    /// The signed-in owner deletes the account. It needs a fresh authentication (a stolen session
    /// cannot do this); the deletion waits `deletion.grace_secs`, mailed with the link that cancels it.
    pub async fn request(&self, who: &Authenticated, address: Option<&str>) -> Result<Scheduled> {
        self.core.freshness.require(who).await?;
        // Like "sign out of all devices", each request writes a rule every node keeps and mails
        // the owner: counted, so a session cannot repeat it without end.
        let subject = [Subject::Account(&who.user_id)];
        self.core.throttle.count_attempt(Purpose::SignOutEverywhere, &subject).await?;
        let user = self.core.store.user_by_id(&who.user_id).await?.ok_or(Error::InvalidToken)?;
        self.schedule(&user, &Actor::User(user.id.clone()), None, address).await
    }

    /// An operator deletes an account: after the grace period like its owner would, or now.
    pub async fn by_operator(
        &self,
        user: &UserRecord,
        now: bool,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<Scheduled> {
        if now {
            self.end_everything(user, actor, reason.unwrap_or("deleted by an administrator")).await?;
            self.erase(&user.id, actor, reason).await?;
            return Ok(Scheduled { due_at: self.core.clock.now_ms() });
        }
        self.schedule(user, actor, reason, None).await
    }

    async fn schedule(
        &self,
        user: &UserRecord,
        actor: &Actor,
        reason: Option<&str>,
        address: Option<&str>,
    ) -> Result<Scheduled> {
        if let Some(due_at) = user.deletion_due_at {
            return Ok(Scheduled { due_at });
        }
        let now = self.core.clock.now_ms();
        let due_at = now + self.core.deletion.grace_secs * 1000;
        self.core.store.schedule_deletion(&user.id, Some(due_at)).await?;
        self.end_everything(user, actor, "account deletion requested").await?;
        let details = json!({ "due_at": rfc3339(due_at), "reason": reason });
        let event = AuditLog::event(kind::ACCOUNT_DELETION_REQUESTED, actor, Some(&user.id), address, details);
        self.core.audit.record(event).await?;
        let link = self.keep_link(&user.id, now, due_at).await?;
        let notice = Notice::DeletionScheduled { link, days: self.grace_days(), address: address.map(str::to_owned) };
        self.accounts.notify(&user.id, notice).await?;
        Ok(Scheduled { due_at })
    }

    /// Every session ends now, on every node; OAuth clients that asked for it are told.
    async fn end_everything(&self, user: &UserRecord, actor: &Actor, reason: &str) -> Result<()> {
        let now = self.core.clock.now_ms();
        self.core.store.end_sessions_and_tell(&user.id, now).await?;
        self.core.revocations.revoke(Revocation::whole_account(&user.id, reason, actor)).await?;
        Ok(())
    }

    /// The single-use link that keeps the account, valid until it is erased.
    async fn keep_link(&self, user_id: &str, now: i64, due_at: i64) -> Result<String> {
        let token = TokenKind::KeepAccount.mint();
        let digest = self.core.keyring.token_digest(&token);
        let stored = NewOneTimeToken {
            digest: digest.digest,
            digest_key_id: digest.key_id,
            purpose: TokenKind::KeepAccount.as_str(),
            user_id: user_id.to_owned(),
            issued_at: now,
            expires_at: due_at,
        };
        self.core.store.issue_one_time_token(&stored, true).await?;
        Ok(self.core.mailer.url(&format!("/account/keep/{}", token.as_str())))
    }

    /// The mailed link: the account is kept (it signs in again as before).
    pub async fn keep_by_link(&self, token: &str, address: Option<&str>) -> Result<()> {
        if TokenKind::of(token) != Some(TokenKind::KeepAccount) {
            return Err(Error::InvalidLink);
        }
        let now = self.core.clock.now_ms();
        let (store, purpose) = (&self.core.store, TokenKind::KeepAccount.as_str());
        let spend = |digest: Vec<u8>| async move { store.consume_one_time_token(&digest, purpose, now).await };
        let user_id = self.core.keyring.find_by_token_digest(token, spend).await?.ok_or(Error::InvalidLink)?;
        self.accounts.keep(&user_id, "link", address).await
    }

    /// Erases every account whose time has come; how many.
    pub async fn erase_due(&self) -> Result<usize> {
        let due = self.core.store.deletions_due(self.core.clock.now_ms(), 100).await?;
        for user_id in &due {
            self.erase(user_id, &Actor::System, None).await?;
        }
        Ok(due.len())
    }

    async fn erase(&self, user_id: &str, actor: &Actor, reason: Option<&str>) -> Result<()> {
        let event = AuditLog::event(kind::ACCOUNT_ERASED, actor, Some(user_id), None, json!({ "reason": reason }));
        if self.core.store.erase_user(user_id, &event, &self.core.audit).await? {
            self.core.validations().forget_user(user_id);
            tracing::info!(%user_id, "account erased");
        }
        Ok(())
    }
}
