//! Accounts: registration with a sealed, blind-indexed email, and reading one's own profile.

use std::sync::Arc;

use serde_json::json;

use super::audit::{kind, Actor, AuditLog};
use super::caller::Authenticated;
use super::core::Core;
use super::error::{Error, Result};
use super::freshness::Freshness;
use super::identity::{Email, Login, Username};
use super::password::{self, PasswordHasher, StoredHash};
use super::policy::{SignupMode, SignupPolicy};
use super::revocation::{Revocation, Revocations, Scope};
use super::tokens::TokenKind;
use super::validation_cache::{PlexFacts, ValidationCache};
use crate::clock::Clock;
use crate::domain::profile::Profile;
use crate::domain::profile::Role;
use crate::keys::{Keyring, Sealed};
use crate::mail::{Mailer, Notice, Recipient};
use crate::store::{DynStore, EmailChange, FirstProof, NewOneTimeToken, NewUser, RemovedOnFirstProof, UserRecord};

/// How long an email-verification link works.
const VERIFICATION_TTL_HOURS: i64 = 48;
/// How long the link that confirms a new address works.
const EMAIL_CHANGE_TTL_HOURS: i64 = 24;

#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
    /// The code of an invitation (`kw_iv_…`), needed when `signup.mode = "invite"`.
    pub invite: Option<String>,
}

/// A sign-up let in by the policy, holding the invitation use it spent, if any.
pub(crate) struct Admission {
    invite_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub username: String,
}

#[derive(Clone)]
pub struct Accounts(std::sync::Arc<AccountsParts>);

impl std::ops::Deref for Accounts {
    type Target = AccountsParts;

    fn deref(&self) -> &AccountsParts {
        &self.0
    }
}

/// What every handle to the account service shares.
pub struct AccountsParts {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    hasher: Arc<PasswordHasher>,
    audit: AuditLog,
    mailer: Mailer,
    /// Changing the address needs a fresh authentication.
    freshness: Freshness,
    revocations: Revocations,
    throttle: super::throttle::Throttle,
    validations: ValidationCache,
    signup: SignupPolicy,
}

/// The authenticated data bound to a user's sealed email: a ciphertext moved to another row fails to open.
pub(crate) fn email_context(user_id: &str) -> Vec<u8> {
    format!("keywarden:user:{user_id}:email").into_bytes()
}

/// The same for the address waiting for confirmation, so it cannot be swapped for the current one.
pub(crate) fn pending_email_context(user_id: &str) -> Vec<u8> {
    format!("keywarden:user:{user_id}:pending_email").into_bytes()
}

impl Accounts {
    pub fn new(core: &Core) -> Self {
        Self(std::sync::Arc::new(AccountsParts {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            hasher: core.hasher.clone(),
            audit: core.audit.clone(),
            mailer: core.mailer.clone(),
            freshness: core.freshness.clone(),
            revocations: core.revocations.clone(),
            throttle: core.throttle.clone(),
            validations: core.validations().clone(),
            signup: core.signup,
        }))
    }

    pub async fn register(&self, registration: Registration, address: Option<&str>) -> Result<Account> {
        let username = Username::parse(&registration.username)?;
        let email = Email::parse(&registration.email)?;
        password::check_new(&registration.password, username.as_str(), email.as_str())?;
        // Cheap checks first, so a taken name does not cost a password hash.
        self.check_available(&username, &email).await?;
        let admission = self.admit(registration.invite.as_deref(), &email, address).await?;
        let hash = self.hasher.hash(&password::normalise(&registration.password)).await?;
        let user = self.new_user(&username, &email, Some(hash), None);
        let id = user.id.clone();
        if let Err(err) = self.store.create_user(&user).await {
            self.turn_away(admission).await?;
            return Err(Error::from_conflict(err));
        }
        tracing::info!(user_id = %id, "account created");
        let details = json!({ "invite_id": admission.invite_id });
        let event = AuditLog::event(kind::ACCOUNT_CREATED, &Actor::User(id.clone()), Some(&id), address, details);
        self.audit.record(event).await?;
        self.send_verification(&id, &user.username, email.as_str()).await?;
        Ok(Account { id, username: user.username })
    }

    /// Whether `signup.mode` lets this sign-up in: always when open, with a live invitation for
    /// this address when by invitation (one use is spent), never when closed. Sign-ups are counted
    /// per source address either way: each writes rows and sends a mail.
    pub(crate) async fn admit(&self, invite: Option<&str>, email: &Email, address: Option<&str>) -> Result<Admission> {
        if let Some(address) = address {
            let subject = [super::throttle::Subject::Address(address)];
            self.throttle.count_attempt(super::throttle::Purpose::SignUp, &subject).await?;
        }
        match self.signup.mode {
            SignupMode::Open => Ok(Admission { invite_id: None }),
            SignupMode::Closed => Err(Error::SignupClosed),
            SignupMode::Invite => {
                let code = invite.filter(|c| !c.trim().is_empty()).ok_or(Error::InviteRequired)?;
                let taken = super::invites::take(&self.store, &self.keyring, code, email, self.clock.now_ms()).await?;
                Ok(Admission { invite_id: Some(taken.id) })
            }
        }
    }

    /// Cancels the deletion its owner asked for (they signed in again, or opened the mailed link);
    /// audited. Nothing happens for an account without one.
    pub(crate) async fn keep(&self, user_id: &str, by: &str, address: Option<&str>) -> Result<()> {
        if self.store.schedule_deletion(user_id, None).await? {
            let actor = Actor::User(user_id.to_owned());
            let details = json!({ "by": by });
            let event = AuditLog::event(kind::ACCOUNT_DELETION_CANCELLED, &actor, Some(user_id), address, details);
            self.audit.record(event).await?;
        }
        Ok(())
    }

    /// Gives back what an admission spent, for a sign-up that did not happen after all.
    pub(crate) async fn turn_away(&self, admission: Admission) -> Result<()> {
        if let Some(id) = admission.invite_id {
            self.store.return_invite(&id).await?;
        }
        Ok(())
    }

    /// Refuses a username or address another account already has.
    pub(crate) async fn check_available(&self, username: &Username, email: &Email) -> Result<()> {
        if self.store.user_by_username_key(&username.key()).await?.is_some() {
            return Err(Error::UsernameTaken);
        }
        if self.find_by_email(email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        Ok(())
    }

    /// A new account's row: a fresh id, the address sealed to it and blind-indexed. `password` is
    /// `None` for an account that signs in through a provider; `verified_at` is set when the address
    /// is already proven.
    pub(crate) fn new_user(
        &self,
        username: &Username,
        email: &Email,
        password: Option<StoredHash>,
        verified_at: Option<i64>,
    ) -> NewUser {
        self.new_user_as(uuid::Uuid::now_v7().to_string(), self.clock.now_ms(), username, email, password, verified_at)
    }

    /// A new account's row with a given id and creation time (decoys are dated in the past).
    pub(crate) fn new_user_as(
        &self,
        id: String,
        created_at: i64,
        username: &Username,
        email: &Email,
        password: Option<StoredHash>,
        verified_at: Option<i64>,
    ) -> NewUser {
        let sealed = self.keyring.seal(email.as_str().as_bytes(), &email_context(&id));
        let index = self.keyring.blind_index(email.as_str());
        let (password_hash, password_pepper_id) = password.map(|h| (h.phc, h.pepper_id)).unwrap_or_default();
        NewUser {
            id,
            username: username.as_str().to_owned(),
            username_key: username.key(),
            email_sealed: sealed.bytes,
            email_key_id: sealed.key_id,
            email_index: index.digest,
            email_index_key_id: index.key_id,
            password_hash,
            password_pepper_id,
            created_at,
            email_verified_at: verified_at,
        }
    }

    /// Mails the verification link again (a new one; older ones die), for an account whose address
    /// is not proven yet: until it is, nothing can be added to how it signs in. Counted per account.
    pub async fn resend_verification(&self, who: &Authenticated) -> Result<()> {
        let (user, email) = self.contact(&who.user_id).await?;
        if user.email_verified_at.is_some() {
            return Err(Error::EmailAlreadyVerified);
        }
        let subject = [super::throttle::Subject::Account(&user.id)];
        self.throttle.count_attempt(super::throttle::Purpose::VerificationMail, &subject).await?;
        self.send_verification(&user.id, &user.username, &email).await
    }

    /// Mails a single-use link that proves the address belongs to the account holder.
    pub(crate) async fn send_verification(&self, user_id: &str, username: &str, email: &str) -> Result<()> {
        let token = TokenKind::EmailVerification.mint();
        let digest = self.keyring.token_digest(&token);
        let now = self.clock.now_ms();
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
        Ok(self.mailer.send(&to, Notice::VerifyEmail { link, hours: VERIFICATION_TTL_HOURS }).await?)
    }

    /// Spends an emailed link: a sign-up's verification marks the address verified, a change's
    /// confirmation makes the new address the account's. `keep` is the session of the browser or
    /// app that opened the link, which a first proof of the address spares.
    pub async fn verify_email(&self, token: &str, keep: Option<&Authenticated>) -> Result<()> {
        match TokenKind::of(token) {
            Some(TokenKind::EmailVerification) => {}
            Some(TokenKind::EmailChange) => return self.confirm_email_change(token).await,
            _ => return Err(Error::InvalidLink),
        }
        let now = self.clock.now_ms();
        let (store, purpose) = (&self.store, TokenKind::EmailVerification.as_str());
        let spend = |digest: Vec<u8>| async move { store.consume_one_time_token(&digest, purpose, now).await };
        let user_id = self.keyring.find_by_token_digest(token, spend).await?.ok_or(Error::InvalidLink)?;
        let keep = keep.filter(|who| who.user_id == user_id).map(|who| who.session_id.clone());
        // An account keeps its password (the owner may be the one who signed up); a provider it
        // signs in with stays too when it has no password, or it would have no way in at all.
        let user = self.store.user_by_id(&user_id).await?.ok_or(Error::InvalidLink)?;
        let remove_identities = Self::stored_hash(&user).is_some();
        self.secure_first_proof(&user_id, keep, remove_identities, None).await?;
        let event =
            AuditLog::event(kind::EMAIL_VERIFIED, &Actor::User(user_id.clone()), Some(&user_id), None, json!({}));
        self.audit.record(event).await?;
        Ok(())
    }

    /// The first time an account's address is proven (by a verification or a reset link), what
    /// anyone could have set up before is removed: second factors, passkeys, device keys, (with
    /// `remove_identities`) linked providers, and every session but `keep`. Anyone can sign up with
    /// someone else's address; this is how its real owner takes the account over whole. The owner
    /// is told when something was removed. `None` when the address was proven before.
    pub(crate) async fn secure_first_proof(
        &self,
        user_id: &str,
        keep: Option<String>,
        remove_identities: bool,
        address: Option<&str>,
    ) -> Result<Option<RemovedOnFirstProof>> {
        let actor = Actor::User(user_id.to_owned());
        let (rule, sign_out, _) = self.revocations.prepare(Revocation {
            scope: Scope::User(user_id.to_owned()),
            issued_before: None,
            except_session: keep,
            recoverable: false,
            reason: "the account's address was proven for the first time".into(),
            actor: actor.clone(),
            address: address.map(str::to_owned),
        });
        let proof = FirstProof {
            user_id: user_id.to_owned(),
            at: self.clock.now_ms(),
            remove_identities,
            sign_out,
            event: AuditLog::event(kind::UNPROVEN_ACCOUNT_SECURED, &actor, Some(user_id), address, json!({})),
        };
        let Some(removed) = self.store.secure_first_proof(&proof, &self.audit).await? else { return Ok(None) };
        self.validations.forget_user(user_id);
        self.revocations.enforce_locally(&rule);
        if removed.credentials() > 0 || removed.sessions > 0 {
            tracing::info!(%user_id, ?removed, "address proven for the first time: what was set up before is removed");
            self.notify(user_id, Notice::UnprovenAccountSecured { removed }).await?;
        }
        Ok(Some(removed))
    }

    /// Starts moving the account to a new address. Needs a fresh step-up; the change happens only
    /// when the link mailed to the new address is opened, and the current address is told at once.
    pub async fn request_email_change(
        &self,
        who: &Authenticated,
        new_email: &str,
        address: Option<&str>,
    ) -> Result<()> {
        self.freshness.require(who).await?;
        let email = Email::parse(new_email)?;
        let (user, current) = self.contact(&who.user_id).await?;
        if Email::parse(&current).is_ok_and(|c| c == email) {
            return Err(Error::EmailUnchanged);
        }
        if self.find_by_email(&email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        let sealed = self.keyring.seal(email.as_str().as_bytes(), &pending_email_context(&user.id));
        self.store.set_pending_email(&user.id, &sealed.bytes, &sealed.key_id).await?;
        self.validations.forget_user(&user.id);
        let token = TokenKind::EmailChange.mint();
        let digest = self.keyring.token_digest(&token);
        let now = self.clock.now_ms();
        let stored = NewOneTimeToken {
            digest: digest.digest,
            digest_key_id: digest.key_id,
            purpose: TokenKind::EmailChange.as_str(),
            user_id: user.id.clone(),
            issued_at: now,
            expires_at: now + EMAIL_CHANGE_TTL_HOURS * 3_600_000,
        };
        self.store.issue_one_time_token(&stored, true).await?;
        let event = AuditLog::event(
            kind::EMAIL_CHANGE_REQUESTED,
            &Actor::User(user.id.clone()),
            Some(&user.id),
            address,
            json!({}),
        );
        self.audit.record(event).await?;
        let link = self.mailer.url(&format!("/verify-email/{}", token.as_str()));
        let to_new = Recipient { user_id: &user.id, username: &user.username, email: email.as_str() };
        self.mailer.send(&to_new, Notice::ConfirmEmailChange { link, hours: EMAIL_CHANGE_TTL_HOURS }).await?;
        let to_current = Recipient { user_id: &user.id, username: &user.username, email: &current };
        let notice = Notice::EmailChangeRequested { new_email: email.masked(), address: address.map(str::to_owned) };
        Ok(self.mailer.send(&to_current, notice).await?)
    }

    /// Spends a change's link: the pending address replaces the current one, verified by the link.
    async fn confirm_email_change(&self, token: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let purpose = TokenKind::EmailChange.as_str();
        let store = &self.store;
        let spend = |digest: Vec<u8>| async move { store.consume_one_time_token(&digest, purpose, now).await };
        let user_id = self.keyring.find_by_token_digest(token, spend).await?.ok_or(Error::InvalidLink)?;
        let (user, old) = self.contact(&user_id).await?;
        let new = self.pending_email_of(&user)?.ok_or(Error::InvalidLink)?;
        let sealed = self.keyring.seal(new.as_bytes(), &email_context(&user.id));
        let index = self.keyring.blind_index(&new);
        let change = EmailChange {
            user_id: user.id.clone(),
            email_sealed: sealed.bytes,
            email_key_id: sealed.key_id,
            email_index: index.digest,
            email_index_key_id: index.key_id,
            at: now,
        };
        self.store.change_email(&change).await.map_err(Error::from_conflict)?;
        self.validations.forget_user(&user_id);
        tracing::info!(%user_id, "email address changed");
        let event =
            AuditLog::event(kind::EMAIL_CHANGED, &Actor::User(user_id.clone()), Some(&user_id), None, json!({}));
        self.audit.record(event).await?;
        let masked = Email::parse(&new).map(|e| e.masked()).unwrap_or_default();
        let to_old = Recipient { user_id: &user.id, username: &user.username, email: &old };
        Ok(self.mailer.send(&to_old, Notice::EmailChanged { new_email: masked }).await?)
    }

    /// Grants or withdraws a role (an operator's action, audited).
    pub async fn set_role(&self, user_id: &str, role: Role, actor: &Actor) -> Result<()> {
        if !self.store.set_role(user_id, role.as_str()).await? {
            return Err(Error::InvalidToken);
        }
        self.validations.forget_user(user_id);
        let event = AuditLog::event(kind::ROLE_CHANGED, actor, Some(user_id), None, json!({ "role": role.as_str() }));
        self.audit.record(event).await?;
        Ok(())
    }

    /// A stable integer for the account, for clients that expect numeric user ids (plex.tv's).
    pub async fn numeric_id(&self, user_id: &str) -> Result<i64> {
        Ok(self.store.numeric_user_id(user_id).await?)
    }

    /// The account's name and decrypted address, for mailing it.
    pub(crate) async fn contact(&self, user_id: &str) -> Result<(UserRecord, String)> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::TokenRevoked)?;
        let email = self.email_of(&user)?;
        Ok((user, email))
    }

    /// Queues a notice to the account's owner.
    pub(crate) async fn notify(&self, user_id: &str, notice: Notice) -> Result<()> {
        if super::honeytokens::is_decoy_account(&self.keyring, user_id) {
            // Decoys' addresses are made up: nothing is ever sent to them.
            return Ok(());
        }
        let (user, email) = self.contact(user_id).await?;
        Ok(self.mailer.send(&Recipient { user_id, username: &user.username, email: &email }, notice).await?)
    }

    /// What the account shows of itself, from this node's cache when it was read before and has not
    /// changed since.
    pub async fn profile(&self, user_id: &str) -> Result<Profile> {
        if let Some(profile) = self.validations.profile(user_id) {
            return Ok(profile);
        }
        let ticket = self.validations.ticket();
        let profile = self.read_profile(user_id).await?;
        self.validations.remember_profile(ticket, &profile);
        Ok(profile)
    }

    /// The account's numeric id and whether it has a second factor, as plex.tv-style clients read
    /// them with every user element; cached like the profile.
    pub async fn plex_facts(&self, user_id: &str) -> Result<PlexFacts> {
        if let Some(facts) = self.validations.plex_facts(user_id) {
            return Ok(facts);
        }
        let ticket = self.validations.ticket();
        let facts = PlexFacts {
            numeric_id: self.numeric_id(user_id).await?,
            two_factor: self.freshness.has_second_factor(user_id).await?,
        };
        self.validations.remember_plex_facts(ticket, user_id, &facts);
        Ok(facts)
    }

    async fn read_profile(&self, user_id: &str) -> Result<Profile> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::TokenRevoked)?;
        let email = self.email_of(&user)?;
        let pending_email = self.pending_email_of(&user)?;
        Ok(Profile {
            has_password: !user.password_hash.is_empty(),
            created_at: user.created_at,
            role: Role::of(&user),
            id: user.id,
            username: user.username,
            email,
            email_verified: user.email_verified_at.is_some(),
            pending_email,
        })
    }

    pub(crate) fn email_of(&self, user: &UserRecord) -> Result<String> {
        self.open_email(&user.email_key_id, &user.email_sealed, &email_context(&user.id))
    }

    /// The address an email change waits to confirm, if any.
    fn pending_email_of(&self, user: &UserRecord) -> Result<Option<String>> {
        match (&user.pending_email_key_id, &user.pending_email_sealed) {
            (Some(key_id), Some(bytes)) => self.open_email(key_id, bytes, &pending_email_context(&user.id)).map(Some),
            _ => Ok(None),
        }
    }

    fn open_email(&self, key_id: &str, bytes: &[u8], context: &[u8]) -> Result<String> {
        let sealed = Sealed { key_id: key_id.to_owned(), bytes: bytes.to_vec() };
        let plain = self.keyring.open(&sealed, context)?;
        String::from_utf8(plain.to_vec()).map_err(|_| Error::Internal("sealed email is not UTF-8".into()))
    }

    /// Finds an account by email under any blind-index key still in the keyring.
    pub(crate) async fn find_by_email(&self, email: &Email) -> Result<Option<UserRecord>> {
        let store = &self.store;
        let look_up = |index: Vec<u8>| async move { store.user_by_email_index(&index).await };
        if let Some(found) = self.keyring.find_by_blind_index(email.as_str(), look_up).await? {
            return Ok(Some(found));
        }
        // Accounts stored before domains were normalised (international domains) under an old form.
        for legacy in email.legacy_forms() {
            if let Some(found) = self.keyring.find_by_blind_index(legacy, look_up).await? {
                return Ok(Some(found));
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

    /// The account's password hash; `None` for an account without a password (it signs in
    /// through a provider or with a passkey).
    pub(crate) fn stored_hash(user: &UserRecord) -> Option<StoredHash> {
        (!user.password_hash.is_empty())
            .then(|| StoredHash { phc: user.password_hash.clone(), pepper_id: user.password_pepper_id.clone() })
    }
}
