//! What the operator decides about tokens and second factors: lifetimes, step-up, who must enrol.

use super::profile::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenPolicy {
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// How long a just-rotated refresh token may be presented again, for a client whose response
    /// was lost; after that, presenting it is reuse and kills the family.
    pub refresh_reuse_grace_secs: i64,
    /// How long a plex token (`kw_pt_`) lives after its last use: every use slides its expiry
    /// forward to this far from now, so a media server's or Tautulli's stored token lives while used.
    pub plex_idle_ttl_secs: i64,
    /// The longest a plex token lives from its issue, however often it is used.
    pub plex_max_ttl_secs: i64,
    /// At most one expiry write per plex token per this many seconds (not one per request).
    pub plex_extend_every_secs: i64,
}

impl TokenPolicy {
    /// The longest a session may go unused and still hold a live token.
    pub fn longest_idle_secs(&self) -> i64 {
        self.refresh_ttl_secs.max(self.plex_idle_ttl_secs)
    }

    /// The expiry a plex token used at `now` moves to (all Unix ms): `plex_idle_ttl_secs` from
    /// now, capped at `plex_max_ttl_secs` from its issue; `None` while that gains less than
    /// `plex_extend_every_secs`, so a busy token is written once per interval, not per request.
    pub fn slid_plex_expiry(&self, now: i64, issued_at: i64, expires_at: i64) -> Option<i64> {
        let target = (now + self.plex_idle_ttl_secs * 1000).min(issued_at + self.plex_max_ttl_secs * 1000);
        (target - expires_at >= self.plex_extend_every_secs * 1000).then_some(target)
    }
}

/// The longest an access token may live (`tokens.access_ttl_secs`); a revocation rule older than
/// this no longer has a stateless token to judge.
pub const MAX_ACCESS_TTL_SECS: i64 = 24 * 3600;

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            refresh_reuse_grace_secs: 10,
            plex_idle_ttl_secs: 30 * 24 * 3600,
            plex_max_ttl_secs: 365 * 24 * 3600,
            plex_extend_every_secs: 3600,
        }
    }
}

/// How account deletion goes (`[deletion]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeletionPolicy {
    /// How long a deleted account waits, disabled, before it is erased; a sign-in or the mailed
    /// link cancels the deletion until then.
    pub grace_secs: i64,
}

impl Default for DeletionPolicy {
    fn default() -> Self {
        Self { grace_secs: 7 * 24 * 3600 }
    }
}

/// Who may create an account (`[signup]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignupPolicy {
    pub mode: SignupMode,
    /// Keeps an account whose address is not proven to its security page and the verification
    /// flow: no OAuth client signs it in and no plex token is issued for it until the link is used.
    pub require_verified_email: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone may sign up (counted per source address).
    #[default]
    Open,
    /// Only with an invitation (`keywarden admin invites create`).
    Invite,
    /// Nobody, not even with an invitation: the accounts there are are all there will be.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaPolicy {
    /// How recent a second-factor (or password) check must be for sensitive actions.
    pub step_up_secs: i64,
    /// How long a password sign-in waits for its second factor.
    pub challenge_ttl_secs: i64,
    /// Wrong codes one sign-in attempt may send before it must start again.
    pub max_code_attempts: i64,
    /// Which accounts must have a second factor.
    pub require: Requirement,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        Self { step_up_secs: 300, challenge_ttl_secs: 300, max_code_attempts: 5, require: Requirement::None }
    }
}

/// The operator's rule for second factors (`mfa.require`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// Second factors are the account owner's choice.
    #[default]
    None,
    /// Every account must enrol one.
    All,
    /// Accounts with the `admin` role must enrol one.
    Admins,
}

impl MfaPolicy {
    /// Whether an account of this role must have a second factor.
    pub fn requires_second_factor(&self, role: Role) -> bool {
        match self.require {
            Requirement::None => false,
            Requirement::All => true,
            Requirement::Admins => role == Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_plex_token_slides_once_per_interval_up_to_its_maximum() {
        let policy = TokenPolicy::default();
        let (hour, day) = (3_600_000, 86_400_000);
        let issued = 1_000 * day;
        let first = issued + 30 * day;
        assert_eq!(policy.slid_plex_expiry(issued + 1000, issued, first), None, "just issued: nothing to gain");
        assert_eq!(policy.slid_plex_expiry(issued + hour - 1, issued, first), None, "less than an interval");
        assert_eq!(policy.slid_plex_expiry(issued + hour, issued, first), Some(first + hour));
        // Used every day, it still ends a year after its issue.
        let late = issued + 330 * day;
        assert_eq!(policy.slid_plex_expiry(late, issued, late + 29 * day), Some(late + 30 * day));
        assert_eq!(policy.slid_plex_expiry(late + 10 * day, issued, late + 30 * day), Some(issued + 365 * day));
        assert_eq!(policy.slid_plex_expiry(late + 11 * day, issued, issued + 365 * day), None);
    }
}
