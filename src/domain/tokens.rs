//! Token strings: a recognisable prefix per kind, then 256 bits of randomness.
//!
//! The prefix lets secret scanners and log filters find leaked tokens (P2); only the keyed digest of
//! a token is ever stored (P1), so a copy of the database holds nothing that can be presented.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use zeroize::Zeroizing;

const RANDOM_BYTES: usize = 32;
/// Length of 32 bytes in unpadded base64url.
const RANDOM_CHARS: usize = 43;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
    /// The secret in a password-reset link.
    PasswordReset,
    /// The secret in an email-verification link.
    EmailVerification,
    /// A browser's session cookie on keywarden's own pages.
    WebSession,
    /// A password sign-in waiting for its second factor (`mfa_token`).
    MfaChallenge,
    /// The secret in the link that confirms a new email address.
    EmailChange,
    /// A confidential OAuth client's secret.
    ClientSecret,
    /// An OAuth authorization code, exchanged once at the token endpoint.
    AuthorizationCode,
    /// The code a device polls the token endpoint with while its person approves it (RFC 8628).
    DeviceCode,
    /// The `state` of a trip to an upstream sign-in provider, also kept in the browser's cookie.
    SsoState,
    /// An upstream account not linked yet, waiting for its person to create or choose an account.
    SsoPending,
    /// The one long-lived token a plex.tv-style client sends as `X-Plex-Token`.
    PlexToken,
    /// The secret in an invitation link (`/signup?invite=…`).
    Invite,
    /// The secret in the mailed link that keeps an account its owner asked to delete.
    KeepAccount,
}

impl TokenKind {
    pub const ALL: [TokenKind; 15] = [
        Self::Access,
        Self::Refresh,
        Self::PasswordReset,
        Self::EmailVerification,
        Self::WebSession,
        Self::MfaChallenge,
        Self::EmailChange,
        Self::ClientSecret,
        Self::AuthorizationCode,
        Self::DeviceCode,
        Self::SsoState,
        Self::SsoPending,
        Self::PlexToken,
        Self::Invite,
        Self::KeepAccount,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Self::Access => "kw_at_",
            Self::Refresh => "kw_rt_",
            Self::PasswordReset => "kw_pr_",
            Self::EmailVerification => "kw_ev_",
            Self::WebSession => "kw_ws_",
            Self::MfaChallenge => "kw_mt_",
            Self::EmailChange => "kw_ec_",
            Self::ClientSecret => "kw_cs_",
            Self::AuthorizationCode => "kw_ac_",
            Self::DeviceCode => "kw_dc_",
            Self::SsoState => "kw_ss_",
            Self::SsoPending => "kw_sp_",
            Self::PlexToken => "kw_pt_",
            Self::Invite => "kw_iv_",
            Self::KeepAccount => "kw_ka_",
        }
    }

    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::WebSession => "web_session",
            Self::MfaChallenge => "mfa_challenge",
            Self::EmailChange => "email_change",
            Self::ClientSecret => "client_secret",
            Self::AuthorizationCode => "authorization_code",
            Self::DeviceCode => "device_code",
            Self::SsoState => "sso_state",
            Self::SsoPending => "sso_pending",
            Self::PlexToken => "plex_token",
            Self::Invite => "invite",
            Self::KeepAccount => "keep_account",
        }
    }

    /// A fresh token of this kind.
    pub fn mint(self) -> Zeroizing<String> {
        let mut random = Zeroizing::new([0u8; RANDOM_BYTES]);
        rand::rngs::OsRng.fill_bytes(random.as_mut());
        self.with_random(&random)
    }

    /// A token of this kind with the given random bytes (decoys carry a MAC in theirs).
    pub fn with_random(self, random: &[u8; RANDOM_BYTES]) -> Zeroizing<String> {
        Zeroizing::new(format!("{}{}", self.prefix(), URL_SAFE_NO_PAD.encode(random)))
    }

    /// The random bytes of a token of this kind, if it has this kind's shape.
    pub fn random_part(self, token: &str) -> Option<Zeroizing<Vec<u8>>> {
        let rest = token.strip_prefix(self.prefix()).filter(|rest| rest.len() == RANDOM_CHARS)?;
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(rest).ok()?);
        (bytes.len() == RANDOM_BYTES).then_some(bytes)
    }

    /// The kind a string claims by its shape, or `None` if it cannot be a keywarden token at all.
    pub fn of(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| {
            token.strip_prefix(kind.prefix()).is_some_and(|rest| {
                rest.len() == RANDOM_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_carry_their_prefix_and_are_recognised() {
        let at = TokenKind::Access.mint();
        assert!(at.starts_with("kw_at_") && at.len() == 6 + 43);
        assert_eq!(TokenKind::of(&at), Some(TokenKind::Access));
        assert_eq!(TokenKind::of(&TokenKind::Refresh.mint()), Some(TokenKind::Refresh));
        assert_ne!(*TokenKind::Access.mint(), *TokenKind::Access.mint());
    }

    #[test]
    fn malformed_strings_are_not_tokens() {
        for bad in [
            "",
            "kw_at_",
            "kw_at_short",
            "Bearer kw_at_x",
            &format!("kw_xx_{}", "a".repeat(43)),
            &format!("kw_at_{}!", "a".repeat(42)),
        ] {
            assert_eq!(TokenKind::of(bad), None, "{bad:?}");
        }
    }
}
