//! Honeytokens recognised: decoy accounts, devices and tokens (planted by `decoys`) look like real
//! rows. Nobody has a reason to use them, so any use — a sign-in as a decoy, a decoy token presented, a reset asked for a decoy's
//! address — proves that the database (or a copy of it, or the exported decoys planted elsewhere)
//! is in someone else's hands, and raises a critical alert at once.
//!
//! Nothing marks a decoy in the database. A decoy's account id and tokens carry a MAC under the
//! token-hash key in their random bits, so only a holder of the keyring can tell them apart, and no
//! table lists them. A decoy token is recognised before any look-up, even after its rows are gone.

use rand::RngCore;
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::alerts::{Alert, Alerts, Severity, HONEYTOKEN_USED};
use super::error::Result;
use super::tokens::TokenKind;
use crate::keys::Keyring;

const ID_MAC_LEN: usize = 4;
const TOKEN_MAC_LEN: usize = 8;

fn macs(keyring: &Keyring, data: &[u8]) -> Vec<Vec<u8>> {
    keyring.token_digests(&format!("honeytoken:{}", hex::encode(data))).into_iter().map(|d| d.digest).collect()
}

fn active_mac(keyring: &Keyring, data: &[u8]) -> Vec<u8> {
    keyring.token_digest(&format!("honeytoken:{}", hex::encode(data))).digest
}

fn carries_mac(keyring: &Keyring, data: &[u8], tag: &[u8]) -> bool {
    macs(keyring, data).iter().any(|mac| bool::from(mac[..tag.len()].ct_eq(tag)))
}

/// Whether an account id is a decoy's.
pub fn is_decoy_account(keyring: &Keyring, user_id: &str) -> bool {
    let Ok(id) = uuid::Uuid::parse_str(user_id) else { return false };
    let bytes = id.as_bytes();
    carries_mac(keyring, &bytes[..16 - ID_MAC_LEN], &bytes[16 - ID_MAC_LEN..])
}

/// Whether a presented token is a decoy's (whatever its kind, and whether or not its row still exists).
pub fn is_decoy_token(keyring: &Keyring, token: &str) -> bool {
    let Some(random) = TokenKind::of(token).and_then(|kind| TokenKind::random_part(kind, token)) else {
        return false;
    };
    carries_mac(keyring, &random[..random.len() - TOKEN_MAC_LEN], &random[random.len() - TOKEN_MAC_LEN..])
}

/// A UUIDv7 of `created_at` whose last bytes are the MAC of the rest.
pub(crate) fn decoy_account_id(keyring: &Keyring, created_at: i64) -> String {
    let secs = u64::try_from(created_at / 1000).unwrap_or_default();
    let nanos = u32::try_from((created_at % 1000) * 1_000_000).unwrap_or_default();
    let stamp = uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos);
    let mut bytes = *uuid::Uuid::new_v7(stamp).as_bytes();
    let mac = active_mac(keyring, &bytes[..16 - ID_MAC_LEN]);
    bytes[16 - ID_MAC_LEN..].copy_from_slice(&mac[..ID_MAC_LEN]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

pub(crate) fn decoy_token(keyring: &Keyring, kind: TokenKind) -> Zeroizing<String> {
    let mut random = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut random[..32 - TOKEN_MAC_LEN]);
    let mac = active_mac(keyring, &random[..32 - TOKEN_MAC_LEN]);
    random[32 - TOKEN_MAC_LEN..].copy_from_slice(&mac[..TOKEN_MAC_LEN]);
    kind.with_random(&random)
}

/// Raises the alert for a decoy that was just used, off the request's path: a decoy's answer comes
/// as fast as anyone's, so its timing does not tell an attacker it is a decoy.
pub fn touched(alerts: &Alerts, what: &'static str, user_id: Option<&str>, address: Option<&str>) {
    let (alerts, user_id, address) = (alerts.clone(), user_id.map(str::to_owned), address.map(str::to_owned));
    tokio::spawn(async move {
        if let Err(err) = raise(&alerts, what, user_id.as_deref(), address.as_deref()).await {
            tracing::error!(error = %err, what, "a honeytoken was used but the alert could not be raised");
        }
    });
}

async fn raise(alerts: &Alerts, what: &str, user_id: Option<&str>, address: Option<&str>) -> Result<()> {
    let alert = Alert {
        kind: HONEYTOKEN_USED,
        severity: Severity::Critical,
        summary: format!(
            "a honeytoken was used ({what}){}: the database or a copy of it has leaked",
            address.map(|a| format!(" from {a}")).unwrap_or_default()
        ),
        details: json!({ "what": what, "decoy_user_id": user_id }),
    };
    alerts.raise(alert, user_id, address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_are_recognised_only_with_the_keyring_that_made_them() {
        let keyring = Keyring::generate();
        let id = decoy_account_id(&keyring, 1_700_000_000_000);
        assert!(is_decoy_account(&keyring, &id));
        assert!(!is_decoy_account(&Keyring::generate(), &id));
        assert!(!is_decoy_account(&keyring, &uuid::Uuid::now_v7().to_string()));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

        let token = decoy_token(&keyring, TokenKind::PlexToken);
        assert_eq!(TokenKind::of(&token), Some(TokenKind::PlexToken));
        assert!(is_decoy_token(&keyring, &token));
        assert!(!is_decoy_token(&Keyring::generate(), &token));
        assert!(!is_decoy_token(&keyring, &TokenKind::PlexToken.mint()));
        assert!(!is_decoy_token(&keyring, "kw_pt_short"));
    }
}
