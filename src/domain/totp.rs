//! Authenticator-app codes (RFC 6238): secrets, `otpauth://` URIs, QR codes, and matching a code to its step.

use rand::RngCore;
use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

/// Seconds per code, as every authenticator app assumes.
pub const STEP_SECS: u64 = 30;
const DIGITS: u8 = 6;
/// Codes of one step either side are accepted, for clocks that drift (RFC 6238 §5.2).
const SKEW_STEPS: u16 = 1;
/// 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;

/// A TOTP shared secret; only ever stored sealed under the data key.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, issuer: &str, account: &str) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS)
            .with_skew(SKEW_STEPS)
            .with_step_duration(STEP_SECS)
            .with_secret(self.0.to_vec())
            // Labels may not contain ':' (it separates issuer and account in the URI).
            .with_issuer(Some(issuer.replace(':', " ")))
            .with_account_name(account.replace(':', " "))
            .build_noncompliant()
    }

    /// The secret in base32, for people who type it into their app.
    pub fn base32(&self) -> String {
        self.totp("", "").secret().to_base32()
    }

    /// `otpauth://totp/Issuer:account?secret=…&issuer=Issuer`, the format every app scans.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        self.totp(issuer, account).to_url().unwrap_or_default()
    }

    /// The step (Unix time / 30 s) whose code `code` is, within one step of `now_secs`.
    pub fn matching_step(&self, code: &str, now_secs: u64) -> Option<u64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.totp("", "").check(&code, now_secs)
    }
}

/// The URI as a QR code, an SVG document rendered on the server (no script, no third party).
pub fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_test_vector() {
        // RFC 6238 Appendix B, SHA-1, truncated to six digits: T = 59 s gives 94287082.
        let secret = TotpSecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()));
        assert_eq!(secret.matching_step("287082", 59), Some(1));
        assert_eq!(secret.matching_step("287 082", 59), Some(1), "spaces are ignored");
        assert_eq!(secret.matching_step("287082", 59 + 3 * 30), None, "outside the window");
        assert_eq!(secret.matching_step("28708", 59), None);
        assert_eq!(secret.matching_step("abcdef", 59), None);
    }

    #[test]
    fn uri_names_issuer_and_account() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("Media:verse", "alice");
        assert!(uri.starts_with("otpauth://totp/Media%20verse:alice?secret="), "{uri}");
        assert!(uri.contains(&secret.base32()) && uri.contains("issuer=Media%20verse"), "{uri}");
        assert!(qr_svg(&uri).contains("<svg"));
    }
}
