//! Password change and reset, with "Sign out connected devices after password change".
//!
//! A reset link is single-use, valid 30 minutes, stored only as a keyed digest; a newer link or a
//! password change kills older ones. Signing out devices is one revocation rule written in the same
//! transaction as the new password, so no token issued before the change outlives it.

use std::sync::Arc;

use serde_json::json;
use zeroize::Zeroizing;

use super::accounts::Accounts;
use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::error::{Error, Result};
use super::honeytokens;
use super::identity::Email;
use super::password;
use super::recent_credentials::{CredentialKind, RecentCredential, RecentCredentials};
use super::revocation::{Revocation, Scope};
use super::throttle::{self, Purpose, Subject};
use super::tokens::TokenKind;
use crate::mail::{Notice, Recipient};
use crate::store::{NewOneTimeToken, PasswordChange, UserRecord};

/// How long a password-reset link works.
pub const RESET_TTL_MINUTES: i64 = 30;

#[derive(Clone)]
pub struct Recovery {
    core: Core,
    accounts: Accounts,
    /// The configured sign-in providers, `(id, name)`, for telling an account without a password
    /// how it signs in.
    providers: Arc<Vec<(String, String)>>,
    recent: RecentCredentials,
}

impl Recovery {
    pub fn new(core: &Core, accounts: Accounts, providers: Vec<(String, String)>) -> Self {
        let recent = RecentCredentials::new(
            core.store.clone(),
            core.audit.clone(),
            core.validations().clone(),
            core.clock.clone(),
        );
        Self { core: core.clone(), accounts, providers: Arc::new(providers), recent }
    }

    async fn provider_names_of(&self, user_id: &str) -> Result<Vec<String>> {
        let identities = self.core.store.sso_identities_of(user_id).await?;
        Ok(identities
            .iter()
            .map(|i| self.providers.iter().find(|(id, _)| *id == i.provider).map_or(&i.provider, |(_, n)| n).clone())
            .collect())
    }

    /// Answers at once, the same way for every address: the look-up, the link and the mail happen
    /// in the background, so neither the answer nor its timing tells whether an account exists.
    /// Many requests from one source address are refused (`rate_limited`); many for one account
    /// are answered the same way but mail nothing more, so nobody can flood an inbox.
    pub async fn request_reset(&self, email: &str, address: Option<String>) -> Result<()> {
        let email = Email::parse(email)?;
        if let Some(address) = address.as_deref() {
            self.core.throttle.count_attempt(Purpose::PasswordReset, &[Subject::Address(address)]).await?;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.send_reset_link(&email, address.as_deref()).await {
                tracing::error!(error = %err, "sending a password-reset link failed");
            }
        });
        Ok(())
    }

    async fn send_reset_link(&self, email: &Email, address: Option<&str>) -> Result<()> {
        let Some(user) = self.accounts.find_by_email(email).await? else { return Ok(()) };
        if honeytokens::is_decoy_account(&self.core.keyring, &user.id) {
            let what = "a password reset for a decoy's address";
            honeytokens::touched(&self.core.alerts, what, Some(&user.id), address);
            return Ok(());
        }
        // Every request counts, not only failures: each one would send a mail.
        let subject = [Subject::Account(&user.id)];
        if let Err(err) = self.core.throttle.count_attempt(Purpose::PasswordReset, &subject).await {
            if err.is_internal() {
                return Err(err);
            }
            tracing::info!(user_id = %user.id, "password-reset mail held back: too many requests for this account");
            return Ok(());
        }
        let to = Recipient { user_id: &user.id, username: &user.username, email: email.as_str() };
        if Accounts::stored_hash(&user).is_none() {
            // Nothing to reset: tell the owner how they sign in instead, and issue no link.
            let providers = self.provider_names_of(&user.id).await?;
            let notice = Notice::NoPasswordToReset { providers, link: self.core.mailer.url("/signin") };
            return Ok(self.core.mailer.send(&to, notice).await?);
        }
        let link = self.issue_reset_link(&user.id).await?;
        let details = json!({ "expires_in_minutes": RESET_TTL_MINUTES });
        let event =
            AuditLog::event(kind::PASSWORD_RESET_REQUESTED, &Actor::Anonymous, Some(&user.id), address, details);
        self.core.audit.record(event).await?;
        Ok(self.core.mailer.send(&to, Notice::PasswordReset { link, minutes: RESET_TTL_MINUTES }).await?)
    }

    /// A fresh reset link for the account; every older one dies.
    pub async fn issue_reset_link(&self, user_id: &str) -> Result<String> {
        let token = TokenKind::PasswordReset.mint();
        let digest = self.core.keyring.token_digest(&token);
        let now = self.core.clock.now_ms();
        let stored = NewOneTimeToken {
            digest: digest.digest,
            digest_key_id: digest.key_id,
            purpose: TokenKind::PasswordReset.as_str(),
            user_id: user_id.to_owned(),
            issued_at: now,
            expires_at: now + RESET_TTL_MINUTES * 60_000,
        };
        self.core.store.issue_one_time_token(&stored, true).await?;
        Ok(self.core.mailer.url(&format!("/reset/{}", token.as_str())))
    }

    /// Sets a new password from a reset link. `sign_out_devices` kills every existing token.
    pub async fn reset(
        &self,
        token: &str,
        new_password: &str,
        sign_out_devices: bool,
        address: Option<&str>,
    ) -> Result<()> {
        if TokenKind::of(token) != Some(TokenKind::PasswordReset) {
            return Err(Error::InvalidLink);
        }
        let digests = self.core.keyring.token_digests(token);
        // The policy is checked before the link is spent, so a refused password does not burn it.
        let user = self.link_owner(&digests).await?.ok_or(Error::InvalidLink)?;
        let email = self.accounts.email_of(&user)?;
        password::check_new(new_password, &user.username, &email)?;
        let hash = self.core.hasher.hash(&password::normalise(new_password)).await?;
        let now = self.core.clock.now_ms();
        let mut spent = false;
        for digest in &digests {
            let purpose = TokenKind::PasswordReset.as_str();
            if self.core.store.consume_one_time_token(&digest.digest, purpose, now).await? == Some(user.id.clone()) {
                spent = true;
                break;
            }
        }
        if !spent {
            return Err(Error::InvalidLink);
        }
        // A reset link proves the address: the first such proof takes the account over whole,
        // so whatever a squatter set up on it, sessions included, is gone.
        let first_proof = self.accounts.secure_first_proof(&user.id, None, true, address).await?.is_some();
        let sign_out_devices = sign_out_devices || first_proof;
        let actor = Actor::User(user.id.clone());
        let change = self.change_for(&user, hash, sign_out_devices, None, kind::PASSWORD_RESET, &actor, address);
        self.apply(&user, &email, change, sign_out_devices, address).await
    }

    /// Changes the caller's password after checking the current one.
    pub async fn change(
        &self,
        who: &Authenticated,
        current_password: &str,
        new_password: &str,
        sign_out_devices: bool,
        address: Option<&str>,
    ) -> Result<()> {
        let (user, email) = self.accounts.contact(&who.user_id).await?;
        let current = Zeroizing::new(password::normalise(current_password).to_string());
        let stored = Accounts::stored_hash(&user).ok_or(Error::NoPassword)?;
        // The current password is a secret check like any other: a stolen session guessing it is
        // counted on the account's and the address's sign-in counters.
        let subjects = throttle::against_account(&user.id, address);
        let check = async {
            let verification = self.core.hasher.verify(Some(&stored), &current).await?;
            if verification.matches {
                Ok(())
            } else {
                Err(Error::WrongPassword)
            }
        };
        self.core.throttle.guard(Purpose::SignIn, &subjects, Some(&user.id), address, check).await?;
        password::check_new(new_password, &user.username, &email)?;
        let hash = self.core.hasher.hash(&password::normalise(new_password)).await?;
        let actor = Actor::User(user.id.clone());
        let keep = Some(who.session_id.clone());
        let change = self.change_for(&user, hash, sign_out_devices, keep, kind::PASSWORD_CHANGED, &actor, address);
        self.apply(&user, &email, change, sign_out_devices, address).await
    }

    /// The owner of a live reset link, which proves its mailbox without being spent.
    async fn reset_link_owner(&self, token: &str) -> Result<UserRecord> {
        if TokenKind::of(token) != Some(TokenKind::PasswordReset) {
            return Err(Error::InvalidLink);
        }
        self.link_owner(&self.core.keyring.token_digests(token)).await?.ok_or(Error::InvalidLink)
    }

    /// What was added to the account in the last 30 days, for the reset page: the owner taking
    /// the account back sees what a thief could have added.
    pub async fn recent_credentials(&self, token: &str) -> Result<Vec<RecentCredential>> {
        let user = self.reset_link_owner(token).await?;
        self.recent.of(&user.id).await
    }

    /// Removes one of those, on the strength of the reset link (which stays usable).
    pub async fn remove_recent_credential(
        &self,
        token: &str,
        kind: CredentialKind,
        id: &str,
        address: Option<&str>,
    ) -> Result<()> {
        let user = self.reset_link_owner(token).await?;
        self.recent.remove(&user.id, kind, id, "password_reset", address).await
    }

    async fn link_owner(&self, digests: &[crate::keys::KeyedDigest]) -> Result<Option<UserRecord>> {
        for digest in digests {
            if let Some(user_id) = self
                .core
                .store
                .one_time_token_owner(&digest.digest, TokenKind::PasswordReset.as_str(), self.core.clock.now_ms())
                .await?
            {
                return Ok(self.core.store.user_by_id(&user_id).await?);
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)] // one call site per flow; a struct would only rename them
    fn change_for(
        &self,
        user: &UserRecord,
        hash: password::StoredHash,
        sign_out_devices: bool,
        keep_session: Option<String>,
        event_kind: &str,
        actor: &Actor,
        address: Option<&str>,
    ) -> (PasswordChange, Option<super::revocation::Rule>) {
        let (rule, stored) = if sign_out_devices {
            let (rule, stored, _) = self.core.revocations.prepare(Revocation {
                scope: Scope::User(user.id.clone()),
                issued_before: None,
                except_session: keep_session,
                recoverable: false,
                reason: "password changed with \"sign out connected devices\"".into(),
                actor: actor.clone(),
                address: address.map(str::to_owned),
            });
            (Some(rule), Some(stored))
        } else {
            (None, None)
        };
        let details = json!({ "signed_out_devices": sign_out_devices });
        let change = PasswordChange {
            user_id: user.id.clone(),
            hash: hash.phc,
            pepper_id: hash.pepper_id,
            at: self.core.clock.now_ms(),
            sign_out: stored,
            event: AuditLog::event(event_kind, actor, Some(&user.id), address, details),
        };
        (change, rule)
    }

    async fn apply(
        &self,
        user: &UserRecord,
        email: &str,
        (change, rule): (PasswordChange, Option<super::revocation::Rule>),
        sign_out_devices: bool,
        address: Option<&str>,
    ) -> Result<()> {
        self.core.store.change_password(&change, &self.core.audit).await?;
        self.core.validations().forget_user(&user.id);
        if let Some(rule) = &rule {
            self.core.revocations.enforce_locally(rule);
        }
        tracing::info!(user_id = %user.id, sign_out_devices, "password changed");
        let to = Recipient { user_id: &user.id, username: &user.username, email };
        let notice =
            Notice::PasswordChanged { signed_out_devices: sign_out_devices, address: address.map(str::to_owned) };
        Ok(self.core.mailer.send(&to, notice).await?)
    }
}
