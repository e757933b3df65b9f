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
}

/// The longest an access token may live (`tokens.access_ttl_secs`); a revocation rule older than
/// this no longer has a stateless token to judge.
pub const MAX_ACCESS_TTL_SECS: i64 = 24 * 3600;

impl Default for TokenPolicy {
    fn default() -> Self {
        Self { access_ttl_secs: 15 * 60, refresh_ttl_secs: 30 * 24 * 3600, refresh_reuse_grace_secs: 10 }
    }
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
