//! Accounts: registration with a sealed, blind-indexed email, and reading one's own profile.

use std::sync::Arc;

use serde_json::json;

use super::audit::{kind, Actor, AuditLog};
use super::clock::now_ms;
use super::core::Core;
use super::error::{Error, Result};
use super::identity::{Email, Login, Username};
use super::password::{self, PasswordHasher, StoredHash};
use super::tokens::TokenKind;
use crate::keys::{Keyring, Sealed};
use crate::mail::{Mailer, Notice, Recipient};
use crate::store::{DynStore, NewOneTimeToken, NewUser, UserRecord};

/// How long an email-verification link works.
const VERIFICATION_TTL_HOURS: i64 = 48;

#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub username: String,
    pub email: String,
    pub email_verified: bool,
}

#[derive(Clone)]
pub struct Accounts {
    store: DynStore,
    keyring: Arc<Keyring>,
    hasher: Arc<PasswordHasher>,
    audit: AuditLog,
    mailer: Mailer,
}

/// The authenticated data bound to a user's sealed email: a ciphertext moved to another row fails to open.
pub(crate) fn email_context(user_id: &str) -> Vec<u8> {
    format!("keywarden:user:{user_id}:email").into_bytes()
}

impl Accounts {
    pub fn new(core: &Core) -> Self {
        Self {
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            hasher: core.hasher.clone(),
            audit: core.audit.clone(),
            mailer: core.mailer.clone(),
        }
    }

    pub async fn register(&self, registration: Registration, address: Option<&str>) -> Result<Account> {
        let username = Username::parse(&registration.username)?;
        let email = Email::parse(&registration.email)?;
        password::check_new(&registration.password, username.as_str(), email.as_str())?;
        // Cheap checks first, so a taken name does not cost a password hash.
        if self.store.user_by_username_key(&username.key()).await?.is_some() {
            return Err(Error::UsernameTaken);
        }
        if self.find_by_email(&email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        let hash = self.hasher.hash(&password::normalise(&registration.password)).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = self.keyring.seal(email.as_str().as_bytes(), &email_context(&id));
        let index = self.keyring.blind_index(email.as_str());
        let user = NewUser {
            id: id.clone(),
            username: username.as_str().to_owned(),
            username_key: username.key(),
            email_sealed: sealed.bytes,
            email_key_id: sealed.key_id,
            email_index: index.digest,
            email_index_key_id: index.key_id,
            password_hash: hash.phc,
            password_pepper_id: hash.pepper_id,
            created_at: now_ms(),
        };
        self.store.create_user(&user).await.map_err(Error::from_conflict)?;
        tracing::info!(user_id = %id, "account created");
        let event = AuditLog::event(kind::ACCOUNT_CREATED, &Actor::User(id.clone()), Some(&id), address, json!({}));
        self.audit.record(event).await?;
        self.send_verification(&id, &user.username, email.as_str()).await?;
        Ok(Account { id, username: user.username })
    }

    /// Mails a single-use link that proves the address belongs to the account holder.
    async fn send_verification(&self, user_id: &str, username: &str, email: &str) -> Result<()> {
        let token = TokenKind::EmailVerification.mint();
        let digest = self.keyring.token_digest(&token);
        let now = now_ms();
        let stored = NewOneTimeToken {
            digest: digest.digest,
            digest_key_id: digest.key_id,
            purpose: TokenKind::EmailVerification.as_str(),
            user_id: user_id.to_owned(),
            issued_at: now,
            expires_at: now + VERIFICATION_TTL_HOURS * 3_600_000,
        };
        self.store.issue_one_time_token(&stored, true).await?;
        let link = self.mailer.url(&format!("/verify-email/{}", token.as_str()));
        let to = Recipient { user_id, username, email };
        self.mailer.send(&to, Notice::VerifyEmail { link, hours: VERIFICATION_TTL_HOURS }).await
    }

    /// Spends an email-verification link and marks the account's address verified.
    pub async fn verify_email(&self, token: &str) -> Result<()> {
        if TokenKind::of(token) != Some(TokenKind::EmailVerification) {
            return Err(Error::InvalidLink);
        }
        let now = now_ms();
        for digest in self.keyring.token_digests(token) {
            let purpose = TokenKind::EmailVerification.as_str();
            if let Some(user_id) = self.store.consume_one_time_token(&digest.digest, purpose, now).await? {
                self.store.mark_email_verified(&user_id, now).await?;
                let event = AuditLog::event(
                    kind::EMAIL_VERIFIED,
                    &Actor::User(user_id.clone()),
                    Some(&user_id),
                    None,
                    json!({}),
                );
                self.audit.record(event).await?;
                return Ok(());
            }
        }
        Err(Error::InvalidLink)
    }

    /// The account's name and decrypted address, for mailing it.
    pub(crate) async fn contact(&self, user_id: &str) -> Result<(UserRecord, String)> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::TokenRevoked)?;
        let email = self.email_of(&user)?;
        Ok((user, email))
    }

    /// Queues a notice to the account's owner.
    pub(crate) async fn notify(&self, user_id: &str, notice: Notice) -> Result<()> {
        let (user, email) = self.contact(user_id).await?;
        self.mailer.send(&Recipient { user_id, username: &user.username, email: &email }, notice).await
    }

    pub async fn profile(&self, user_id: &str) -> Result<Profile> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::TokenRevoked)?;
        let email = self.email_of(&user)?;
        Ok(Profile { id: user.id, username: user.username, email, email_verified: user.email_verified_at.is_some() })
    }

    pub(crate) fn email_of(&self, user: &UserRecord) -> Result<String> {
        let sealed = Sealed { key_id: user.email_key_id.clone(), bytes: user.email_sealed.clone() };
        let plain = self.keyring.open(&sealed, &email_context(&user.id))?;
        String::from_utf8(plain.to_vec()).map_err(|_| Error::Internal("sealed email is not UTF-8".into()))
    }

    /// Finds an account by email under any blind-index key still in the keyring.
    pub(crate) async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>> {
        for index in self.keyring.blind_indexes(email.as_str()) {
            if let Some(user) = self.store.user_by_email_index(&index.digest).await? {
                return Ok(Some(user));
            }
        }
        Ok(None)
    }

    pub(crate) async fn find_by_login(&self, login: &Login) -> Result<Option<UserRecord>> {
        match login {
            Login::Email(email) => self.find_by_email(email).await,
            Login::Username(key) => Ok(self.store.user_by_username_key(key).await?),
        }
    }

    pub(crate) fn stored_hash(user: &UserRecord) -> StoredHash {
        StoredHash { phc: user.password_hash.clone(), pepper_id: user.password_pepper_id.clone() }
    }
}
