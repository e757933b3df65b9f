//! Planting honeytokens: decoy accounts with passwords, devices and live tokens, dated as if made
//! over the past year, and exported for planting elsewhere.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use zeroize::Zeroizing;

use super::accounts::Accounts;
use super::core::Core;
use super::device_info::{is_browser_app, CHANNEL_DEVICE, CHANNEL_WEB};
use super::error::Result;
use super::honeytokens::{decoy_account_id, decoy_token};
use super::identity::{Email, Username};
use super::tokens::TokenKind;
use crate::store::{DeviceSighting, NewToken, SessionStart, Verified};

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
pub struct Decoys {
    core: Core,
    accounts: Accounts,
}

impl Decoys {
    pub fn new(core: &Core, accounts: Accounts) -> Self {
        Self { core: core.clone(), accounts }
    }

    /// Creates `count` decoy accounts, each with a password hashed like any other, one or two
    /// devices and a live token on each, all dated as if made over the past year.
    pub async fn seed(&self, count: usize) -> Result<Vec<Decoy>> {
        let mut decoys = Vec::with_capacity(count);
        let now = self.core.clock.now_ms();
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
            let seen_at = self.core.clock.now_ms() - rng.gen_range(60..14 * 24 * 3600) * 1000;
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
