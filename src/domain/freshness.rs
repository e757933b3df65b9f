//! Fresh authentication: whether the person behind a session proved themselves just now, which every
//! new credential and every removal of one requires (issue 17); and a proven address, without which
//! an account gets no new credential at all.
//!
//! A session is fresh for `mfa.step_up_secs` after a password, passkey or second-factor check in
//! it: its sign-in, or a step-up. On an account with a second factor only a check that included
//! one counts, so a stolen password-only session (or one right after a sign-in through a provider)
//! cannot add credentials to such an account. A session started without any proof (a device
//! linked by PIN, a session silently recovered after a leak, an OAuth client's session) is never
//! fresh; refreshing a session does not make it fresh either.

use super::caller::Authenticated;
use super::error::{Error, Result};
use crate::clock::Clock;
use crate::store::DynStore;

#[derive(Clone)]
pub struct Freshness {
    clock: Clock,
    store: DynStore,
    window_secs: i64,
}

impl Freshness {
    pub fn new(store: DynStore, window_secs: i64, clock: Clock) -> Self {
        Self { clock, store, window_secs }
    }

    /// Refuses with `step_up_required` unless the session proved its person within the window, with
    /// a second factor if the account has one.
    pub async fn require(&self, who: &Authenticated) -> Result<()> {
        if self.is_fresh(who).await? {
            Ok(())
        } else {
            Err(Error::StepUpRequired)
        }
    }

    /// For adding a credential (a passkey, an authenticator app, a device key, a linked device or
    /// provider): fresh, and on an account whose address was proven. Anyone can sign up with
    /// someone else's address; such a squatter must not plant credentials that would outlast the
    /// real owner's password reset.
    pub async fn require_for_new_credential(&self, who: &Authenticated) -> Result<()> {
        let user = self.store.user_by_id(&who.user_id).await?.ok_or(Error::InvalidToken)?;
        if user.email_verified_at.is_none() {
            return Err(Error::EmailNotVerified);
        }
        self.require(who).await
    }

    pub async fn is_fresh(&self, who: &Authenticated) -> Result<bool> {
        if who.verified_at <= 0 || self.clock.now_ms() - who.verified_at > self.window_secs * 1000 {
            return Ok(false);
        }
        if who.verified_second_factor {
            return Ok(true);
        }
        Ok(!self.has_second_factor(&who.user_id).await?)
    }

    /// Whether the account has an authenticator app or a passkey.
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool> {
        let totp = self.store.totp_of(user_id).await?.is_some_and(|t| t.confirmed_at.is_some());
        Ok(totp || !self.store.passkeys_of(user_id).await?.is_empty())
    }

    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }
}
