//! Where mail goes: an SMTP server (lettre), or a directory of `.eml` files (the default outbox).

use std::path::PathBuf;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption: only for a relay on the same host or a test sink.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            security: Security::Starttls,
            username: None,
            password: None,
            timeout_secs: 15,
        }
    }
}

pub enum Transport {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>),
    Outbox(PathBuf),
}

impl Transport {
    pub fn smtp(config: &SmtpConfig) -> Result<Self, lettre::transport::smtp::Error> {
        let builder = match config.security {
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        let mut builder = builder.port(config.port).timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self::Smtp(Box::new(builder.build())))
    }

    /// Hands one formatted message to its destination.
    pub async fn deliver(&self, id: &str, envelope: &Envelope, message: &[u8]) -> Result<(), String> {
        match self {
            Self::Smtp(smtp) => smtp.send_raw(envelope, message).await.map(|_| ()).map_err(|e| e.to_string()),
            Self::Outbox(dir) => {
                // Written under a temporary name and renamed, so a reader never sees half a message.
                // Messages hold live links: only keywarden's own user may read them.
                let mut create_dir = tokio::fs::DirBuilder::new();
                create_dir.recursive(true);
                #[cfg(unix)]
                create_dir.mode(0o700);
                create_dir.create(dir).await.map_err(|e| e.to_string())?;
                let temporary = dir.join(format!(".{id}.tmp"));
                let mut open = tokio::fs::OpenOptions::new();
                open.write(true).create(true).truncate(true);
                #[cfg(unix)]
                open.mode(0o600);
                let mut file = open.open(&temporary).await.map_err(|e| e.to_string())?;
                tokio::io::AsyncWriteExt::write_all(&mut file, message).await.map_err(|e| e.to_string())?;
                file.sync_all().await.map_err(|e| e.to_string())?;
                tokio::fs::rename(&temporary, dir.join(format!("{id}.eml"))).await.map_err(|e| e.to_string())
            }
        }
    }
}
