//! Message templates (text and HTML), embedded in the binary and rendered with minijinja.

use minijinja::{Environment, Value};

/// Every template, by name; `.html` ones are auto-escaped.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/mail/layout.html")),
    ("footer.txt", include_str!("../../templates/mail/footer.txt")),
    ("verify_email.txt", include_str!("../../templates/mail/verify_email.txt")),
    ("data_exported.txt", include_str!("../../templates/mail/data_exported.txt")),
    ("deletion_scheduled.txt", include_str!("../../templates/mail/deletion_scheduled.txt")),
    ("deletion_scheduled.html", include_str!("../../templates/mail/deletion_scheduled.html")),
    ("data_exported.html", include_str!("../../templates/mail/data_exported.html")),
    ("verify_email.html", include_str!("../../templates/mail/verify_email.html")),
    ("password_reset.txt", include_str!("../../templates/mail/password_reset.txt")),
    ("password_reset.html", include_str!("../../templates/mail/password_reset.html")),
    ("password_changed.txt", include_str!("../../templates/mail/password_changed.txt")),
    ("password_changed.html", include_str!("../../templates/mail/password_changed.html")),
    ("new_sign_in.txt", include_str!("../../templates/mail/new_sign_in.txt")),
    ("new_sign_in.html", include_str!("../../templates/mail/new_sign_in.html")),
    ("signed_out_everywhere.txt", include_str!("../../templates/mail/signed_out_everywhere.txt")),
    ("signed_out_everywhere.html", include_str!("../../templates/mail/signed_out_everywhere.html")),
    ("security_incident.txt", include_str!("../../templates/mail/security_incident.txt")),
    ("security_incident.html", include_str!("../../templates/mail/security_incident.html")),
    ("second_factor_changed.txt", include_str!("../../templates/mail/second_factor_changed.txt")),
    ("second_factor_changed.html", include_str!("../../templates/mail/second_factor_changed.html")),
    ("email_change.txt", include_str!("../../templates/mail/email_change.txt")),
    ("email_change.html", include_str!("../../templates/mail/email_change.html")),
    ("email_changed.txt", include_str!("../../templates/mail/email_changed.txt")),
    ("email_changed.html", include_str!("../../templates/mail/email_changed.html")),
    ("no_password_to_reset.txt", include_str!("../../templates/mail/no_password_to_reset.txt")),
    ("no_password_to_reset.html", include_str!("../../templates/mail/no_password_to_reset.html")),
    ("sign_in_provider_changed.txt", include_str!("../../templates/mail/sign_in_provider_changed.txt")),
    ("sign_in_provider_changed.html", include_str!("../../templates/mail/sign_in_provider_changed.html")),
    ("security_alert.txt", include_str!("../../templates/mail/security_alert.txt")),
    ("security_alert.html", include_str!("../../templates/mail/security_alert.html")),
    ("sign_in_code.txt", include_str!("../../templates/mail/sign_in_code.txt")),
    ("sign_in_code.html", include_str!("../../templates/mail/sign_in_code.html")),
    ("unproven_account_secured.txt", include_str!("../../templates/mail/unproven_account_secured.txt")),
    ("unproven_account_secured.html", include_str!("../../templates/mail/unproven_account_secured.html")),
];

pub struct Templates {
    env: Environment<'static>,
}

/// A rendered message body in both forms.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub html: String,
}

impl Templates {
    pub fn load() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Self { env })
    }

    pub fn render(&self, name: &str, context: &Value) -> Result<Rendered, minijinja::Error> {
        let text = self.env.get_template(&format!("{name}.txt"))?.render(context)?;
        let html = self.env.get_template(&format!("{name}.html"))?.render(context)?;
        Ok(Rendered { text, html })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_renders_escapes_html_and_never_asks_for_a_password() {
        let templates = Templates::load().unwrap();
        let context = minijinja::context! {
            product => "keywarden", username => "<b>eve</b>", link => "https://x.example/r/kw_pr_abc",
            security_url => "https://x.example/security", reset_url => "https://x.example/reset",
            at => "2026-11-23T12:00:00Z", minutes => 30, hours => 48, device_name => "TV",
            what_happened => "something", what_we_did => "things", change => "recovery_code_used", remaining => 9,
            removed => minijinja::context! { sessions => 2, passkeys => 1 },
        };
        for name in [
            "verify_email",
            "password_reset",
            "password_changed",
            "new_sign_in",
            "signed_out_everywhere",
            "security_incident",
            "second_factor_changed",
            "email_change",
            "email_changed",
            "security_alert",
            "sign_in_code",
            "unproven_account_secured",
            "data_exported",
            "deletion_scheduled",
        ] {
            let rendered = templates.render(name, &context).unwrap();
            assert!(
                rendered.html.contains("&lt;b&gt;eve") && !rendered.html.contains("<b>eve"),
                "{name}: HTML not escaped"
            );
            assert!(rendered.text.contains("<b>eve</b>"), "{name}: text mangled");
            assert!(rendered.text.contains("will never ask for your password by email"), "{name}");
            assert!(rendered.html.contains("never ask for your password by email"), "{name}");
        }
    }
}
