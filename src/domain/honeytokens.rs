//! Honeytokens: decoy accounts, devices and tokens that look like real rows. Nobody has a reason to
//! use them, so any use — a sign-in as a decoy, a decoy token presented, a reset asked for a decoy's
//! address — proves that the database (or a copy of it, or the exported decoys planted elsewhere)
//! is in someone else's hands, and raises a critical alert at once.
//!
//! Nothing marks a decoy in the database. A decoy's account id and tokens carry a MAC under the
//! token-hash key in their random bits, so only a holder of the keyring can tell them apart, and no
//! table lists them. A decoy token is recognised before any look-up, even after its rows are gone.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::accounts::Accounts;
use super::alerts::{Alert, Alerts, Severity, HONEYTOKEN_USED};
use super::core::Core;
use super::error::Result;
use super::identity::{Email, Username};
use super::sessions::{is_browser_app, CHANNEL_DEVICE, CHANNEL_WEB};
use super::tokens::TokenKind;
use crate::clock::now_ms;
use crate::keys::{hex, Keyring};
use crate::store::{DeviceSighting, NewToken, SessionStart, Verified};

const ID_MAC_LEN: usize = 4;
const TOKEN_MAC_LEN: usize = 8;

fn macs(keyring: &Keyring, data: &[u8]) -> Vec<Vec<u8>> {
    keyring.token_digests(&format!("honeytoken:{}", hex(data))).into_iter().map(|d| d.digest).collect()
}

fn active_mac(keyring: &Keyring, data: &[u8]) -> Vec<u8> {
    keyring.token_digest(&format!("honeytoken:{}", hex(data))).digest
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
fn decoy_account_id(keyring: &Keyring, created_at: i64) -> String {
    let secs = u64::try_from(created_at / 1000).unwrap_or_default();
    let nanos = u32::try_from((created_at % 1000) * 1_000_000).unwrap_or_default();
    let stamp = uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos);
    let mut bytes = *uuid::Uuid::new_v7(stamp).as_bytes();
    let mac = active_mac(keyring, &bytes[..16 - ID_MAC_LEN]);
    bytes[16 - ID_MAC_LEN..].copy_from_slice(&mac[..ID_MAC_LEN]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

fn decoy_token(keyring: &Keyring, kind: TokenKind) -> Zeroizing<String> {
    let mut random = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut random[..32 - TOKEN_MAC_LEN]);
    let mac = active_mac(keyring, &random[..32 - TOKEN_MAC_LEN]);
    random[32 - TOKEN_MAC_LEN..].copy_from_slice(&mac[..TOKEN_MAC_LEN]);
    kind.with_random(&random)
}

/// One decoy as `seed` made it: what to plant elsewhere, if anything (`--export`).
#[derive(Debug, Serialize)]
pub struct Decoy {
    pub user_id: String,
    pub username: String,
    pub email: String,
    pub password: Zeroizing<String>,
    pub tokens: Vec<Zeroizing<String>>,
}

const FIRST: &[&str] = &[
    "alex", "sam", "jordan", "maria", "chris", "lena", "david", "nina", "tom", "julia", "marco", "sofia", "ben",
    "emma", "lucas", "mia", "noah", "olga", "paul", "sara", "ivan", "anna", "leo", "kate", "omar", "eva",
];
const LAST: &[&str] = &[
    "miller", "schmidt", "garcia", "rossi", "novak", "kim", "silva", "berg", "fischer", "moreau", "jensen", "costa",
    "weber", "lopez", "evans", "martin", "kowalski", "dubois",
];
const DOMAINS: &[&str] =
    &["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "gmx.net", "hotmail.com"];
const DEVICES: &[(&str, &str, &str)] = &[
    ("Plex Media Server", "Linux", "Attic"),
    ("Plex for Android (TV)", "Android", "Living room TV"),
    ("Plex for iOS", "iOS", "iPhone"),
    ("Plex Web", "Chrome", "Chrome"),
    ("Plex HTPC", "Windows", "Media PC"),
    ("Plex for Roku", "Roku", "Bedroom Roku"),
];

fn decoy_name(rng: &mut impl Rng) -> (String, String) {
    let first = FIRST.choose(rng).copied().unwrap_or("alex");
    let last = LAST.choose(rng).copied().unwrap_or("miller");
    let number: u16 = rng.gen_range(1..2000);
    let username = match rng.gen_range(0..3) {
        0 => format!("{first}{last}{number}"),
        1 => format!("{first}_{last}"),
        _ => format!("{first}.{}{number}", &last[..1]),
    };
    let domain = DOMAINS.choose(rng).copied().unwrap_or("gmail.com");
    let local = match rng.gen_range(0..2) {
        0 => format!("{first}.{last}{}", number % 100),
        _ => format!("{first}{last}{number}"),
    };
    (username, format!("{local}@{domain}"))
}

#[derive(Clone)]
pub struct Honeytokens {
    core: Core,
    accounts: Accounts,
}

impl Honeytokens {
    pub fn new(core: &Core, accounts: Accounts) -> Self {
        Self { core: core.clone(), accounts }
    }

    /// Creates `count` decoy accounts, each with a password hashed like any other, one or two
    /// devices and a live token on each, all dated as if made over the past year.
    pub async fn seed(&self, count: usize) -> Result<Vec<Decoy>> {
        let mut decoys = Vec::with_capacity(count);
        let now = now_ms();
        while decoys.len() < count {
            let (username, email, created_at) = {
                let mut rng = rand::thread_rng();
                let (username, email) = decoy_name(&mut rng);
                (username, email, now - rng.gen_range(1..365 * 24 * 3600) * 1000)
            };
            let (Ok(parsed_name), Ok(parsed_email)) = (Username::parse(&username), Email::parse(&email)) else {
                continue;
            };
            if self.core.store.user_by_username_key(&parsed_name.key()).await?.is_some()
                || self.accounts.find_by_email(&parsed_email).await?.is_some()
            {
                continue;
            }
            let password = TokenKind::ClientSecret.mint();
            let hash = self.core.hasher.hash(&password).await?;
            let id = decoy_account_id(&self.core.keyring, created_at);
            let verified = Some(created_at + 60_000);
            let user = self.accounts.new_user_as(id, created_at, &parsed_name, &parsed_email, Some(hash), verified);
            self.core.store.create_user(&user).await?;
            let mut tokens = Vec::new();
            let device_count = 1 + usize::from(rand::thread_rng().gen_bool(0.5));
            for _ in 0..device_count {
                tokens.push(self.plant_session(&user.id, created_at).await?);
            }
            decoys.push(Decoy { user_id: user.id, username, email, password, tokens });
        }
        Ok(decoys)
    }

    /// A device with a live plex.tv-style token, as a real sign-in would have written it.
    async fn plant_session(&self, user_id: &str, created_at: i64) -> Result<Zeroizing<String>> {
        let (product, platform, name, seen_at) = {
            let mut rng = rand::thread_rng();
            let (product, platform, name) = DEVICES.choose(&mut rng).copied().unwrap_or(DEVICES[0]);
            let seen_at = now_ms() - rng.gen_range(60..14 * 24 * 3600) * 1000;
            (product, platform, name, seen_at.max(created_at))
        };
        let token = decoy_token(&self.core.keyring, TokenKind::PlexToken);
        let digest = self.core.keyring.token_digest(&token);
        let session_id = uuid::Uuid::now_v7().to_string();
        let channel = if is_browser_app(product, platform) { CHANNEL_WEB } else { CHANNEL_DEVICE };
        let start = SessionStart {
            session_id: session_id.clone(),
            new_device_id: uuid::Uuid::now_v7().to_string(),
            device: DeviceSighting {
                user_id: user_id.to_owned(),
                client_identifier: uuid::Uuid::new_v4().simple().to_string(),
                product: product.into(),
                platform: platform.into(),
                name: name.into(),
                address: None,
                seen_at,
            },
            channel: channel.into(),
            dpop_jkt: None,
            enrolment_only: false,
            // As a real device's sign-in would have left it.
            verified: Verified { at: seen_at, second_factor: false },
            grant: None,
            tokens: vec![NewToken {
                digest: digest.digest,
                digest_key_id: digest.key_id,
                kind: TokenKind::PlexToken.as_str(),
                session_id,
                user_id: user_id.to_owned(),
                issued_at: seen_at,
                expires_at: seen_at + self.core.policy.refresh_ttl_secs * 1000,
            }],
        };
        self.core.store.start_session(&start).await?;
        Ok(token)
    }
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
