//! Recovery codes: ten single-use codes shown once, stored only as keyed digests bound to their account.

use rand::RngCore;
use zeroize::Zeroizing;

use crate::keys::{KeyedDigest, Keyring};

pub const COUNT: usize = 10;
/// Crockford's base32, lower case: no i, l, o or u to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Ten characters of five bits: 50 bits per code.
const CHARS: usize = 10;

/// A fresh set of codes, written `xxxxx-xxxxx`.
pub fn generate() -> Vec<Zeroizing<String>> {
    (0..COUNT)
        .map(|_| {
            let mut random = Zeroizing::new([0u8; CHARS]);
            rand::rngs::OsRng.fill_bytes(random.as_mut());
            // 256 is a multiple of 32, so masking keeps every character equally likely.
            let chars: String = random.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect();
            Zeroizing::new(format!("{}-{}", &chars[..5], &chars[5..]))
        })
        .collect()
}

/// The canonical form of a code as typed: case, spaces and dashes do not matter, and letters that
/// look like digits count as those digits. `None` if it cannot be a recovery code.
pub fn normalise(typed: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CHARS));
    for c in typed.chars().filter(|c| !c.is_whitespace() && *c != '-') {
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            other => other,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == CHARS).then_some(out)
}

/// What is stored for a code: a keyed digest that also names the account, so a code is worth
/// nothing on another account and nothing at all without the key.
pub fn digest(keyring: &Keyring, user_id: &str, normalised: &str) -> KeyedDigest {
    keyring.token_digest(&hashed_input(user_id, normalised))
}

/// The digests under every token-hash key, for look-up during a key rotation.
pub fn digests(keyring: &Keyring, user_id: &str, normalised: &str) -> Vec<KeyedDigest> {
    keyring.token_digests(&hashed_input(user_id, normalised))
}

fn hashed_input(user_id: &str, normalised: &str) -> Zeroizing<String> {
    Zeroizing::new(format!("recovery-code:{user_id}:{normalised}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let mut seen: Vec<String> = codes.iter().map(|c| normalise(c).unwrap().to_string()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), COUNT);
        assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
    }

    #[test]
    fn typing_mistakes_that_do_not_matter_are_forgiven() {
        assert_eq!(normalise(" ABCDE-FGH0O ").unwrap().as_str(), "abcdefgh00");
        assert_eq!(normalise("abcde fghil").unwrap().as_str(), "abcdefgh11");
        assert!(normalise("abcde-fgh").is_none());
        assert!(normalise("abcde-fghiju").is_none(), "u is not in the alphabet and it is too long");
        assert!(normalise("123456").is_none());
    }
}
