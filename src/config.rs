//! One typed configuration: defaults, then the config file, then `KEYWARDEN_*` variables, then flags.
//!
//! Unknown keys are refused everywhere (a typo must not silently fall back to a default).
//! Nested keys map to variables with a double underscore: `[tokens] access_ttl_secs` is
//! `KEYWARDEN_TOKENS__ACCESS_TTL_SECS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::alerts::AlertSettings;
use crate::domain::oauth::OAuthSettings;
use crate::domain::password::{Admission, HashCost};
use crate::domain::policy::TokenPolicy;
use crate::domain::policy::{DeletionPolicy, MfaPolicy, SignupPolicy};
use crate::domain::sso::ProviderSettings;
use crate::domain::throttle::ThrottleSettings;
use crate::domain::validation_cache::CacheSettings;
use crate::http::serve::HttpSettings;
use crate::mail::MailConfig;
use crate::store::DatabaseSettings;
use crate::theme::Theme;

/// Environment variables with the prefix that are not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &["config", "keyring"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HashProfile {
    /// argon2id at the configured cost, never below OWASP's minimum.
    #[default]
    Standard,
    /// A deliberately weak cost so test suites run fast. Never for real accounts.
    InsecureTestOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashing {
    pub profile: HashProfile,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; 0 means one per CPU core.
    pub max_concurrent: usize,
    /// Sign-ins allowed to wait for a hash slot before the server answers 503.
    pub max_waiting: usize,
    /// The `Retry-After` given with that 503.
    pub retry_after_secs: u64,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        let floor = HashCost::FLOOR;
        Self {
            profile: HashProfile::Standard,
            memory_kib: floor.memory_kib,
            iterations: floor.iterations,
            parallelism: floor.parallelism,
            max_concurrent: 0,
            max_waiting: 64,
            retry_after_secs: 1,
        }
    }
}

impl PasswordHashing {
    pub fn cost(&self) -> HashCost {
        match self.profile {
            HashProfile::InsecureTestOnly => HashCost::INSECURE_TEST_ONLY,
            HashProfile::Standard => {
                HashCost { memory_kib: self.memory_kib, iterations: self.iterations, parallelism: self.parallelism }
            }
        }
    }

    pub fn admission(&self) -> Admission {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Admission {
            max_concurrent: if self.max_concurrent == 0 { cores } else { self.max_concurrent },
            max_waiting: self.max_waiting,
            retry_after_secs: self.retry_after_secs.max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database, the generated key file and (later) the mail outbox.
    pub data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The keyring file; unset means `data_dir/keys.toml`.
    pub key_file: Option<PathBuf>,
    /// Log filter in `tracing` syntax, for example `info` or `keywarden=debug,info`.
    pub log: String,
    pub log_format: LogFormat,
    /// Peers whose `X-Forwarded-For` is believed for the client address (a reverse proxy).
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The address people and clients reach keywarden at, for links in mail; unset means `http://LISTEN`.
    pub public_url: Option<String>,
    /// The product name shown in mail and pages.
    pub product_name: String,
    /// Whether cookies carry `Secure`; unset means "when `public_url` is https".
    pub cookie_secure: Option<bool>,
    pub tokens: TokenPolicy,
    pub password_hashing: PasswordHashing,
    pub mail: MailConfig,
    pub dpop: DpopConfig,
    pub pages: PagesConfig,
    pub mfa: MfaPolicy,
    /// Who may create an account.
    pub signup: SignupPolicy,
    /// How long a deleted account can still be kept.
    pub deletion: DeletionPolicy,
    pub passkeys: PasskeysConfig,
    pub oauth: OAuthSettings,
    pub sso: SsoSettings,
    pub throttle: ThrottleSettings,
    pub alerts: AlertSettings,
    pub validation_cache: CacheSettings,
    /// How long the request path waits for the database, and how stale revocation rules may be.
    pub database: DatabaseSettings,
    /// Timeouts, sizes and the connection cap that keep stalled clients from holding the server.
    pub http: HttpSettings,
}

/// The `[sso]` settings: upstream OpenID Connect providers people may sign in with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoSettings {
    pub providers: Vec<ProviderSettings>,
}

/// Where passkeys work: the WebAuthn relying party.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasskeysConfig {
    /// The domain passkeys are bound to (`example.com` also serves `id.example.com`); unset means
    /// the host of `public_url`, or `localhost` when that is a loopback address.
    pub rp_id: Option<String>,
    /// The origins whose pages may use passkeys (`https://id.example.com`); unset means the origin of
    /// `public_url` (with `localhost` for a loopback address).
    pub origins: Vec<String>,
}

/// The WebAuthn relying party as configured: passkeys are bound to `id` and used from `origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origins: Vec<url::Url>,
    pub name: String,
    /// Accept any port of the origins: only for the `localhost` default, whose port is often
    /// chosen when the server starts (`--listen 127.0.0.1:0`).
    pub any_port: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// The brand colour of buttons and links, `#rrggbb`.
    pub accent_color: String,
    /// Text on the brand colour; unset means white or near-black, whichever reads better.
    pub accent_text_color: Option<String>,
    /// Other origins (`https://forum.example.com`) a browser may be sent to after signing in,
    /// through `?next=`; paths on this site are always allowed, anything else never.
    pub redirect_origins: Vec<String>,
    /// Whether `/auth` may send a browser on to keywarden's own pages (`forwardUrl`) after a
    /// plex.tv-style app's sign-in; off, so an approved PIN cannot bounce into a fresh session here.
    pub auth_forward_to_self: bool,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self {
            accent_color: "#2450d6".into(),
            accent_text_color: None,
            redirect_origins: Vec::new(),
            auth_forward_to_self: false,
        }
    }
}

impl PagesConfig {
    pub fn theme(&self) -> Result<Theme, ConfigError> {
        Theme::new(&self.accent_color, self.accent_text_color.as_deref()).map_err(ConfigError::Invalid)
    }

    /// The configured redirect origins in their canonical form (`scheme://host[:port]`).
    pub fn redirect_origins(&self) -> Result<Vec<String>, ConfigError> {
        self.redirect_origins
            .iter()
            .map(|origin| {
                let invalid = || {
                    ConfigError::Invalid(format!(
                        "pages.redirect_origins: {origin:?} is not an origin like https://forum.example.com"
                    ))
                };
                let url = url::Url::parse(origin).map_err(|_| invalid())?;
                let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
                let credentials = !url.username().is_empty() || url.password().is_some();
                if !matches!(url.scheme(), "https" | "http") || !bare || credentials || url.host().is_none() {
                    return Err(invalid());
                }
                Ok(url.origin().ascii_serialization())
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpopConfig {
    /// Require every DPoP proof to carry a server nonce (RFC 9449 §8), closing the window for
    /// proofs made in advance by malware on a client; clients get one from `DPoP-Nonce`.
    pub require_nonce: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("keywarden-data"),
            database_url: None,
            key_file: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            public_url: None,
            product_name: "keywarden".into(),
            cookie_secure: None,
            tokens: TokenPolicy::default(),
            password_hashing: PasswordHashing::default(),
            mail: MailConfig::default(),
            dpop: DpopConfig::default(),
            pages: PagesConfig::default(),
            mfa: MfaPolicy::default(),
            signup: SignupPolicy::default(),
            deletion: DeletionPolicy::default(),
            passkeys: PasskeysConfig::default(),
            oauth: OAuthSettings::default(),
            sso: SsoSettings::default(),
            throttle: ThrottleSettings::default(),
            alerts: AlertSettings::default(),
            validation_cache: CacheSettings::default(),
            database: DatabaseSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

/// Values given as command-line flags; they win over everything else.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads the configuration with its precedence: flags > environment > file > defaults.
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let env = Env::prefixed("KEYWARDEN_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !NOT_CONFIG_KEYS.contains(&key.as_str()) && !key.starts_with("test_")
        });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let hashing = &self.password_hashing;
        if hashing.profile == HashProfile::Standard && hashing.cost().is_below_floor() {
            return invalid(
                "password_hashing is below OWASP's minimum for argon2id (memory_kib >= 19456, iterations >= 2, \
                 parallelism >= 1)",
            );
        }
        if hashing.memory_kib > 4 * 1024 * 1024 || hashing.iterations > 64 || hashing.parallelism > 64 {
            return invalid("password_hashing is implausibly expensive (memory_kib <= 4194304, iterations <= 64)");
        }
        let t = &self.tokens;
        if t.access_ttl_secs < 1 || t.access_ttl_secs > crate::domain::policy::MAX_ACCESS_TTL_SECS {
            return invalid(
                "tokens.access_ttl_secs must be between 1 and 86400: access tokens are short-lived bearer tokens",
            );
        }
        if t.refresh_ttl_secs < t.access_ttl_secs {
            return invalid("tokens.refresh_ttl_secs must not be shorter than tokens.access_ttl_secs");
        }
        if !(0..=300).contains(&t.refresh_reuse_grace_secs) {
            return invalid("tokens.refresh_reuse_grace_secs must be between 0 and 300");
        }
        if !(0..=365 * 24 * 3600).contains(&self.deletion.grace_secs) {
            return invalid("deletion.grace_secs must be between 0 and a year");
        }
        if t.plex_idle_ttl_secs < 3600 || t.plex_max_ttl_secs < t.plex_idle_ttl_secs {
            return invalid(
                "tokens.plex_idle_ttl_secs must be at least 3600 and tokens.plex_max_ttl_secs at least as long",
            );
        }
        if t.plex_extend_every_secs < 1 || t.plex_extend_every_secs > t.plex_idle_ttl_secs / 2 {
            return invalid("tokens.plex_extend_every_secs must be between 1 and half of tokens.plex_idle_ttl_secs");
        }
        if let Err(e) = self.mail.from.parse::<lettre::message::Mailbox>() {
            return Err(ConfigError::Invalid(format!("mail.from {:?} is not a mailbox: {e}", self.mail.from)));
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes must be at least 1024");
        }
        let m = &self.mfa;
        if !(30..=3600).contains(&m.step_up_secs) || !(60..=1800).contains(&m.challenge_ttl_secs) {
            return invalid("mfa.step_up_secs must be 30 to 3600 and mfa.challenge_ttl_secs 60 to 1800");
        }
        if !(1..=20).contains(&m.max_code_attempts) {
            return invalid("mfa.max_code_attempts must be between 1 and 20");
        }
        self.http.validate().map_err(|e| ConfigError::Invalid(e.to_owned()))?;
        let d = &self.database;
        if d.acquire_timeout_ms == 0 || d.acquire_timeout_ms > 60_000 || d.statement_timeout_ms > 600_000 {
            return invalid(
                "database.acquire_timeout_ms must be 1 to 60000 and database.statement_timeout_ms at most 600000 \
                 (0: unbounded)",
            );
        }
        self.pages.theme()?;
        self.pages.redirect_origins()?;
        self.relying_party()?;
        Ok(())
    }

    /// The WebAuthn relying party, or `None` when passkeys cannot work here: browsers refuse them
    /// on a bare IP address, so a default `public_url` on a non-loopback IP turns them off.
    pub fn relying_party(&self) -> Result<Option<RelyingParty>, ConfigError> {
        let invalid = |what: String| ConfigError::Invalid(format!("passkeys: {what}"));
        let public = url::Url::parse(&self.public_url())
            .map_err(|e| ConfigError::Invalid(format!("public_url is not a URL: {e}")))?;
        let loopback = match public.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.is_loopback()),
            Some(url::Host::Ipv6(ip)) => Some(ip.is_loopback()),
            _ => None,
        };
        let mut default_origin = public.clone();
        if loopback == Some(true) {
            default_origin.set_host(Some("localhost")).map_err(|e| invalid(e.to_string()))?;
        }
        let explicit = self.passkeys.rp_id.is_some() || !self.passkeys.origins.is_empty();
        if !explicit && loopback == Some(false) {
            return Ok(None);
        }
        let origins = if self.passkeys.origins.is_empty() {
            vec![url::Url::parse(&default_origin.origin().ascii_serialization()).map_err(|e| invalid(e.to_string()))?]
        } else {
            self.passkeys
                .origins
                .iter()
                .map(|o| url::Url::parse(o).map_err(|_| invalid(format!("origins: {o:?} is not an origin"))))
                .collect::<Result<_, _>>()?
        };
        let id = match &self.passkeys.rp_id {
            Some(id) => id.trim().to_ascii_lowercase(),
            None => origins[0].domain().map(str::to_owned).ok_or_else(|| invalid("rp_id must be set".into()))?,
        };
        for origin in &origins {
            let host = origin.domain().unwrap_or_default();
            let https_or_local = origin.scheme() == "https" || (origin.scheme() == "http" && host == "localhost");
            if !https_or_local || !(host == id || host.ends_with(&format!(".{id}"))) {
                return Err(invalid(format!(
                    "origin {origin} must be https (or http://localhost) on rp_id {id:?} or a subdomain of it"
                )));
            }
        }
        let any_port = !explicit && loopback == Some(true);
        Ok(Some(RelyingParty { id, origins, name: self.product_name.clone(), any_port }))
    }

    /// The database to use: the configured URL, or the embedded SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("keywarden.db").display()),
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }

    pub fn secure_cookies(&self) -> bool {
        self.cookie_secure.unwrap_or_else(|| self.public_url().starts_with("https://"))
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.mail.outbox_dir.clone().unwrap_or_else(|| self.data_dir.join("outbox"))
    }

    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.data_dir.join("keys.toml"))
    }

    /// The configuration the test suites use: weak hashing, chosen explicitly.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut config =
            Self { data_dir: data_dir.to_owned(), listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Self::default() };
        config.password_hashing.profile = HashProfile::InsecureTestOnly;
        config
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn passkeys_follow_the_public_url_or_explicit_settings() {
        let local = Config::default().relying_party().unwrap().unwrap();
        assert_eq!(
            (local.id.as_str(), local.origins[0].as_str(), local.any_port),
            ("localhost", "http://localhost:8080/", true)
        );

        let public = Config { public_url: Some("https://id.example.com".into()), ..Config::default() };
        let rp = public.relying_party().unwrap().unwrap();
        assert_eq!(
            (rp.id.as_str(), rp.origins[0].as_str(), rp.any_port),
            ("id.example.com", "https://id.example.com/", false)
        );

        let bare_ip = Config { public_url: Some("http://192.0.2.10".into()), ..Config::default() };
        assert_eq!(bare_ip.relying_party().unwrap(), None, "browsers refuse passkeys on an IP address");

        let mut shared = public.clone();
        shared.passkeys = PasskeysConfig {
            rp_id: Some("example.com".into()),
            origins: vec!["https://id.example.com".into(), "https://forum.example.com".into()],
        };
        assert_eq!(shared.relying_party().unwrap().unwrap().origins.len(), 2);

        for origins in [vec!["http://id.example.com"], vec!["https://evil.example.net"], vec!["not a url"]] {
            let mut bad = shared.clone();
            bad.passkeys.origins = origins.into_iter().map(String::from).collect();
            assert!(bad.validate().is_err(), "{:?}", bad.passkeys.origins);
        }
    }

    #[test]
    fn defaults_are_the_embedded_quick_start() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://keywarden-data/keywarden.db");
        assert_eq!(c.key_file(), PathBuf::from("keywarden-data/keys.toml"));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn hashing_below_the_floor_is_refused_outside_the_test_profile() {
        let mut c = Config::default();
        c.password_hashing.memory_kib = 1024;
        assert!(c.validate().is_err());
        c.password_hashing.profile = HashProfile::InsecureTestOnly;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn file_then_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "listen = \"127.0.0.1:1000\"\nlog = \"debug\"\n[tokens]\naccess_ttl_secs = 60\n",
            )?;
            jail.set_env("KEYWARDEN_LOG", "warn");
            jail.set_env("KEYWARDEN_TOKENS__ACCESS_TTL_SECS", "120");
            jail.set_env("KEYWARDEN_TEST_POSTGRES_URL", "ignored");
            let flags = Flags { listen: Some("127.0.0.1:2000".parse().unwrap()), ..Flags::default() };
            let c = Config::load(Some(Path::new("k.toml")), &flags).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:2000", "flag wins");
            assert_eq!(c.log, "warn", "environment beats file");
            assert_eq!(c.tokens.access_ttl_secs, 120);
            Ok(())
        });
    }

    #[test]
    fn page_colours_and_redirect_origins_are_checked() {
        let mut c = Config::default();
        c.pages.accent_color = "#ffd33d".into();
        c.pages.accent_text_color = Some("#fff".into());
        assert!(c.validate().unwrap_err().to_string().contains("contrast"));
        c.pages.accent_text_color = None;
        c.pages.redirect_origins = vec!["https://Forum.Example.com:443".into(), "http://localhost:3000/".into()];
        assert_eq!(c.pages.redirect_origins().unwrap(), ["https://forum.example.com", "http://localhost:3000"]);
        for bad in ["forum.example.com", "https://forum.example.com/path", "javascript:alert(1)", "https://u:p@x.org"] {
            c.pages.redirect_origins = vec![bad.into()];
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("k.toml", "lisen = \"127.0.0.1:1000\"\n")?;
            assert!(Config::load(Some(Path::new("k.toml")), &Flags::default()).is_err());
            jail.create_file("ok.toml", "")?;
            jail.set_env("KEYWARDEN_LISTN", "127.0.0.1:1");
            assert!(Config::load(Some(Path::new("ok.toml")), &Flags::default()).is_err());
            Ok(())
        });
    }
}
