//! PIN linking for plex.tv-style clients: a device asks for a PIN and shows its code, the person
//! approves the code while signed in, and the device, polling with the PIN's id, collects its token.

use std::sync::Arc;

use rand::Rng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::core::Core;
use crate::domain::device_info::DeviceInfo;
use crate::domain::error::{Error, Result};
use crate::domain::freshness::Freshness;
use crate::domain::sessions::Sessions;
use crate::domain::throttle::{self, Purpose, Subject, Throttle};
use crate::keys::Keyring;
use crate::store::{DynStore, PlexPinRecord, StoreError};

/// How long a PIN waits for its person.
pub const PIN_TTL_SECS: i64 = 900;
/// Codes use letters and digits that cannot be mistaken for one another.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const SHORT_LEN: usize = 4;
/// A `strong` PIN is for links and redirects, not for typing.
const STRONG_LEN: usize = 25;

/// A new PIN, with its code shown once.
#[derive(Debug, Clone)]
pub struct NewPin {
    pub id: i64,
    pub code: String,
    pub strong: bool,
    pub client_identifier: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A PIN as its device polls it: the token appears once, after approval.
#[derive(Debug, Clone)]
pub struct PolledPin {
    pub id: i64,
    pub strong: bool,
    pub client_identifier: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub auth_token: Option<Zeroizing<String>>,
}

/// The device a PIN was made for, as its person is asked to confirm it.
#[derive(Debug, Clone)]
pub struct WaitingDevice {
    pub pin_id: i64,
    pub client_identifier: String,
    pub product: String,
    pub device_name: String,
}

impl From<PlexPinRecord> for WaitingDevice {
    fn from(pin: PlexPinRecord) -> Self {
        Self {
            pin_id: pin.id,
            client_identifier: pin.client_identifier,
            product: pin.product,
            device_name: pin.device_name,
        }
    }
}

#[derive(Clone)]
pub struct Pins {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
    sessions: Sessions,
    throttle: Throttle,
    freshness: Freshness,
}

fn new_code(len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

/// What a person typed, in the form codes are made in; `None` if it cannot be a code.
fn normalise(typed: &str) -> Option<String> {
    let code: String =
        typed.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    let fits = (code.len() == SHORT_LEN || code.len() == STRONG_LEN) && code.bytes().all(|b| ALPHABET.contains(&b));
    fits.then_some(code)
}

impl Pins {
    pub fn new(core: &Core, sessions: Sessions) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
            sessions,
            throttle: core.throttle.clone(),
            freshness: core.freshness.clone(),
        }
    }

    /// A PIN for the device; its code is stored only as a keyed digest.
    /// A new PIN for `device`. Anyone may ask, so asking is counted per source address and per
    /// client identifier: each PIN is a row we keep for its lifetime.
    pub async fn create(&self, device: &DeviceInfo, strong: bool, address: Option<&str>) -> Result<NewPin> {
        let shown = [&device.client_id, &device.name, &device.product, &device.platform];
        if shown
            .iter()
            .any(|field| field.chars().any(|c| c.is_control() || crate::domain::identity::is_layout_control(c)))
        {
            return Err(Error::InvalidDevice("device names and products must be printable characters"));
        }
        let client = (!device.client_id.is_empty()).then_some(device.client_id.as_str());
        let subjects: Vec<Subject<'_>> =
            address.map(Subject::Address).into_iter().chain(client.map(Subject::Client)).collect();
        self.throttle.count_attempt(Purpose::PinCreation, &subjects).await?;
        let now = self.clock.now_ms();
        // A code another live PIN has is drawn again (a four-character code space is small).
        for _ in 0..5 {
            let code = new_code(if strong { STRONG_LEN } else { SHORT_LEN });
            let digest = self.keyring.token_digest(&code);
            let id = rand::rngs::OsRng.gen_range(1..(1_i64 << 53));
            let record = PlexPinRecord {
                id,
                code_digest: digest.digest,
                digest_key_id: digest.key_id,
                strong: i64::from(strong),
                client_identifier: device.client_id.clone(),
                product: device.product.clone(),
                platform: device.platform.clone(),
                device_name: device.name.clone(),
                created_at: now,
                expires_at: now + PIN_TTL_SECS * 1000,
                user_id: None,
                approved_at: None,
                used_at: None,
            };
            match self.store.create_plex_pin(&record).await {
                Ok(()) => {
                    return Ok(NewPin {
                        id,
                        code,
                        strong,
                        client_identifier: record.client_identifier,
                        created_at: now,
                        expires_at: record.expires_at,
                    })
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::Internal("no free PIN code after five draws".into()))
    }

    /// The PIN as the device that asked for it sees it; once approved, the first poll gets the
    /// token (and the device its session). Another device's poll finds nothing.
    pub async fn poll(&self, id: i64, client_identifier: &str, address: Option<String>) -> Result<PolledPin> {
        let now = self.clock.now_ms();
        // Polls for PINs that are not the caller's are guesses at ids: throttled per address.
        let subjects: Vec<Subject<'_>> = address.as_deref().map(Subject::Address).into_iter().collect();
        let look_up = async {
            let pin = self.store.plex_pin(id).await?.filter(|p| p.client_identifier == client_identifier);
            let collectable = pin.as_ref().is_some_and(|p| p.approved_at.is_some() && p.used_at.is_none());
            pin.filter(|p| p.expires_at > now || collectable).map(|p| (p, collectable)).ok_or(Error::PinNotFound)
        };
        let (pin, collectable) =
            self.throttle.guard(Purpose::PinPoll, &subjects, None, address.as_deref(), look_up).await?;
        let mut auth_token = None;
        if let (true, Some(user_id)) = (collectable, &pin.user_id) {
            if self.store.use_plex_pin(pin.id, now).await? {
                let device = DeviceInfo {
                    client_id: pin.client_identifier.clone(),
                    product: pin.product.clone(),
                    platform: pin.platform.clone(),
                    name: pin.device_name.clone(),
                };
                let issued = self.sessions.start_linked_device(user_id, device, address).await?;
                auth_token = Some(issued.access_token);
            }
        }
        Ok(PolledPin {
            id: pin.id,
            strong: pin.strong != 0,
            client_identifier: pin.client_identifier,
            created_at: pin.created_at,
            expires_at: pin.expires_at,
            auth_token,
        })
    }

    /// The live PIN with this code, for the person to confirm; wrong codes are throttled per
    /// account and per source address.
    pub async fn find(&self, who: &Authenticated, typed: &str, address: Option<&str>) -> Result<WaitingDevice> {
        let now = self.clock.now_ms();
        let subjects = throttle::against_account(&who.user_id, address);
        let look_up = async {
            let Some(code) = normalise(typed) else { return Err(Error::InvalidUserCode) };
            let store = &self.store;
            let look_up = |digest: Vec<u8>| async move { store.plex_pin_by_code(&digest, now).await };
            let pin = self.keyring.find_by_token_digest(&code, look_up).await?.ok_or(Error::InvalidUserCode)?;
            Ok(WaitingDevice::from(pin))
        };
        self.throttle.guard(Purpose::LinkCode, &subjects, Some(&who.user_id), address, look_up).await
    }

    /// The signed-in person approves a code: the device collects its token at its next poll.
    /// Approving mints the device a session of its own, one that outlives this one: it needs a
    /// fresh authentication and a proven address, so a leaked token cannot buy a lasting one.
    pub async fn approve(&self, who: &Authenticated, typed: &str, address: Option<&str>) -> Result<WaitingDevice> {
        self.freshness.require_for_new_credential(who).await?;
        let pin = self.find(who, typed, address).await?;
        if !self.store.approve_plex_pin(pin.pin_id, &who.user_id, self.clock.now_ms()).await? {
            return Err(Error::InvalidUserCode);
        }
        let details =
            json!({ "pin_id": pin.pin_id, "client_identifier": pin.client_identifier, "device_name": pin.device_name });
        let event =
            AuditLog::event(kind::PIN_LINKED, &Actor::User(who.user_id.clone()), Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(pin)
    }

    /// Whether `typed` has the shape of a PIN code (so `/link` knows which kind of code it got).
    pub fn looks_like_pin(typed: &str) -> bool {
        normalise(typed).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalised_and_shaped() {
        assert_eq!(normalise(" ab2d "), Some("AB2D".into()));
        assert_eq!(normalise("AB0D"), None, "0 is not in the alphabet");
        assert_eq!(normalise("ABCDE"), None);
        let strong = new_code(STRONG_LEN);
        assert_eq!(normalise(&strong.to_lowercase()), Some(strong));
    }
}
