//! Email addresses and usernames: validation and the normal forms used for uniqueness and look-up.

use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;

use super::error::{Error, Result};

/// A syntactically valid email address in normal form: the local part in NFC and lower case, the
/// domain as UTS #46 makes it (ASCII, punycode for international names), so that `ｅxample.com`,
/// `Example.COM` and `example.com` are one address and look-alikes from mixed scripts are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    normal: String,
    /// The forms accounts were stored under before domains were normalised (trimmed and
    /// lower-cased, as typed and with the domain in Unicode), where they differ: such accounts
    /// (international domains) are still found by them.
    legacy: Vec<String>,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self> {
        let trimmed = raw.trim();
        let (local, domain) = trimmed.rsplit_once('@').ok_or(Error::InvalidEmail)?;
        let local = local.nfc().collect::<String>().to_lowercase();
        let domain = idna::domain_to_ascii(domain).map_err(|_| Error::InvalidEmail)?;
        let (unicode, errors) = idna::domain_to_unicode(&domain);
        if errors.is_err() || unicode.split('.').any(|label| !label.is_single_script()) {
            return Err(Error::InvalidEmail);
        }
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && !local.starts_with('.')
            && !local.ends_with('.')
            && local.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:\"".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && domain.len() <= 253
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let normal = format!("{local}@{domain}");
        if !(local_ok && domain_ok && normal.len() <= 254) {
            return Err(Error::InvalidEmail);
        }
        let raw_local = trimmed.rsplit_once('@').map_or("", |(local, _)| local).to_lowercase();
        let mut legacy = vec![trimmed.to_lowercase(), format!("{raw_local}@{}", unicode.to_lowercase())];
        legacy.dedup();
        legacy.retain(|old| *old != normal);
        Ok(Self { normal, legacy })
    }

    /// The forms accounts were stored under before domains were normalised, where they differ.
    pub fn legacy_forms(&self) -> &[String] {
        &self.legacy
    }

    pub fn as_str(&self) -> &str {
        &self.normal
    }

    /// The address with its local part hidden but its first character (`n•••@example.com`), for
    /// telling an owner where their account is moving without spelling out the new mailbox.
    pub fn masked(&self) -> String {
        let (local, domain) = self.normal.rsplit_once('@').unwrap_or((&self.normal, ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}•••@{domain}")
    }
}

/// A username as the user chose it; `key()` is its case-insensitive unique form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self> {
        let name = raw.trim();
        if name.len() < Self::MIN_LEN || name.len() > Self::MAX_LEN {
            return Err(Error::InvalidUsername("a username has 3 to 32 characters"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(Error::InvalidUsername("a username uses only letters, digits, '_', '-' and '.'"));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(Error::InvalidUsername("a username starts with a letter or a digit"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form that decides uniqueness: "Alice" and "alice" are the same account.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// What a person typed into "email or username".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    Email(Email),
    Username(String),
}

impl Login {
    /// Usernames cannot contain '@', so an '@' means an email address.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.contains('@') {
            Email::parse(raw).ok().map(Self::Email)
        } else {
            let key = raw.trim().to_ascii_lowercase();
            (!key.is_empty() && key.len() <= Username::MAX_LEN).then_some(Self::Username(key))
        }
    }
}

/// Characters that are not control characters yet still rearrange or break what is shown around
/// them: bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, marks U+200E/F, U+061C)
/// can make a device list or a mail read backwards, and line and paragraph separators (U+2028/9)
/// break lines like CR/LF.
pub(crate) fn is_layout_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "alice@localhost", "a b@example.com", "a@-x.com", "a@x..com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn look_alike_addresses_are_one_address_or_refused() {
        let plain = Email::parse("bob@example.com").unwrap();
        assert_eq!(Email::parse("bob@ｅxample.com").unwrap().as_str(), plain.as_str(), "fullwidth");
        assert_eq!(Email::parse("bob@EXAMPLE.com").unwrap().as_str(), plain.as_str());
        assert!(Email::parse("bob@ex\u{0430}mple.com").is_err(), "Latin with a Cyrillic а");
        let unicode = Email::parse("bob@bücher.de").unwrap();
        assert_eq!(unicode.as_str(), "bob@xn--bcher-kva.de");
        assert_eq!(Email::parse("bob@xn--bcher-kva.de").unwrap().as_str(), unicode.as_str(), "punycode");
        assert_eq!(unicode.legacy_forms(), ["bob@bücher.de"], "still found as stored before");
        let typed_in_punycode = Email::parse("Bob@xn--bcher-kva.de").unwrap();
        assert_eq!(typed_in_punycode.legacy_forms(), ["bob@bücher.de"], "and by its punycode spelling");
        assert_eq!(Email::parse("bob@bu\u{0308}cher.de").unwrap().as_str(), unicode.as_str(), "decomposed ü");
        let composed = Email::parse("ren\u{00e9}@example.com").unwrap();
        assert_eq!(Email::parse("rene\u{0301}@example.com").unwrap().as_str(), composed.as_str(), "decomposed é");
        assert!(plain.legacy_forms().is_empty());
        assert!(Email::parse("ivan@пример.рф").is_ok(), "a single-script international domain");
    }

    #[test]
    fn usernames_are_case_insensitive_and_restricted() {
        assert_eq!(Username::parse("Alice_1").unwrap().key(), "alice_1");
        for bad in ["ab", "a@b.c", "_alice", "with space", &"x".repeat(33)] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_login_with_an_at_sign_is_an_email() {
        assert!(matches!(Login::parse("Alice@example.com"), Some(Login::Email(_))));
        assert_eq!(Login::parse("Alice"), Some(Login::Username("alice".into())));
    }
}
