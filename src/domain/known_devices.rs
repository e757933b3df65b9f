//! Device tokens: proof that a browser or app already signed in to an account, so that an account
//! locked by someone guessing its password never locks out its owner (OWASP's "device cookie").
//!
//! A device token is `kw_dv_{device_id}.{key_id}.{mac}`, the MAC binding the device to the account
//! under the token-hash key. It signs nobody in: it only moves a sign-in's failures from the
//! account's counter to the device's own, and lets a browser be recognised as a device seen
//! before (no new-device mail). Signing a device out makes its token worthless.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::keys::Keyring;

pub const PREFIX: &str = "kw_dv_";

fn message(user_id: &str, device_id: &str) -> String {
    format!("device-token:{user_id}:{device_id}")
}

/// The device token of `device_id` for `user_id`, under the active token-hash key.
pub fn mint(keyring: &Keyring, user_id: &str, device_id: &str) -> String {
    let keyed = keyring.token_digest(&message(user_id, device_id));
    format!("{PREFIX}{device_id}.{}.{}", keyed.key_id, URL_SAFE_NO_PAD.encode(&keyed.digest))
}

/// The device a token names, if it was made for this account under a key still in the ring.
pub fn device_of(keyring: &Keyring, token: &str, user_id: &str) -> Option<String> {
    let rest = token.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, '.');
    let (device_id, key_id, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if device_id.len() > 64 || mac.len() > 64 {
        return None;
    }
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let expected = keyring.token_digests(&message(user_id, device_id)).into_iter().find(|d| d.key_id == key_id)?;
    bool::from(expected.digest.ct_eq(&mac)).then(|| device_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_token_names_its_device_for_its_account_only() {
        let keyring = Keyring::generate();
        let token = mint(&keyring, "alice", "dev-1");
        assert!(token.starts_with(PREFIX));
        assert_eq!(device_of(&keyring, &token, "alice").as_deref(), Some("dev-1"));
        assert_eq!(device_of(&keyring, &token, "bob"), None);
        let forged = token.replace("dev-1", "dev-2");
        assert_eq!(device_of(&keyring, &forged, "alice"), None);
        assert_eq!(device_of(&Keyring::generate(), &token, "alice"), None);
        assert_eq!(device_of(&keyring, "kw_dv_x", "alice"), None);
    }
}
