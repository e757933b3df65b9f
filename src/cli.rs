//! The command line: `serve`, `migrate` and `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::admin::{Console, IncidentText};
use crate::config::{Config, Flags};
use crate::domain::clients::{ClientKind, NewClient};
use crate::domain::revocation::Scope;
use crate::domain::tokens::TokenKind;
use crate::keys::Keyring;
use crate::server::{self, KEYRING_ENV};
use crate::signing::SigningAlg;
use crate::{store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "keywarden",
    version,
    about = "An account and sign-in server whose stolen database holds no working credential"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (SQLite in ./keywarden-data and a generated keyring, unless configured otherwise).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(Common),
    /// Validate the configuration and the keyring, print the effective settings (no secrets), and exit.
    CheckConfig(Common),
    /// Operator actions, each audited: revocation, accounts, the audit log.
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
struct AdminArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Kill every token of one user, one device, one channel, or all tokens, issued up to now
    /// (or up to --issued-before). One row is written; running servers enforce it within a second.
    Revoke(RevokeArgs),
    /// Make listed accounts choose a new password at their next sign-in (the database-breach response).
    ForcePasswordReset(ForceResetArgs),
    /// Inspect accounts.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// OAuth / OpenID Connect clients: the apps that may sign people in through keywarden.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// The keyring file.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Add a new key and make it the active one; older keys stay in the file for what they protect
    /// (and signing keys stay published), until retired.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "key")]
struct RotateArgs {
    /// The key that signs ID tokens and logout tokens (ES256 and EdDSA are both derived from it).
    #[arg(long)]
    signing_key: bool,
}

#[derive(Debug, Subcommand)]
enum ClientsAction {
    /// Register a client. A confidential one's secret is printed once; keep it in the app's config.
    Add {
        /// The client id (also the channel of its tokens): 1 to 64 of a-z, 0-9, '.', '_', '-'.
        id: String,
        /// What people see on the consent page.
        #[arg(long)]
        name: String,
        /// An app that cannot keep a secret (mobile, desktop, single-page): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// An exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where to send OpenID Connect back-channel logout tokens.
        #[arg(long, value_name = "URI")]
        backchannel_logout_uri: Option<String>,
        /// One of the platform's own apps: skips the consent screen.
        #[arg(long)]
        first_party: bool,
        /// A JSON Web Key Set file with the client's public keys: it authenticates with
        /// `private_key_jwt` (RFC 7523) and gets no secret.
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<std::path::PathBuf>,
        /// How its ID tokens are signed: ES256 (default) or EdDSA.
        #[arg(long, value_name = "ALG", default_value = "ES256", value_parser = parse_signing_alg)]
        id_token_alg: SigningAlg,
    },
    /// List the registered clients (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a client.
    Remove { id: String },
    /// Print a fresh client secret for a client kept in the configuration (`[[oauth.clients]]`).
    GenerateSecret,
    /// Give a confidential client a new secret (printed once); the old one stops working at once.
    RotateSecret { id: String },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "target")]
struct RevokeTarget {
    /// An account's id or username.
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// A channel: `web`, `device`, `api`, or an OAuth client's id.
    #[arg(long, value_name = "NAME")]
    channel: Option<String>,
    /// A device's id.
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Every token of every account.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    #[command(flatten)]
    target: RevokeTarget,
    /// Only tokens issued at or before this RFC 3339 instant (default: now).
    #[arg(long, value_name = "RFC3339")]
    issued_before: Option<String>,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// For --channel and --all: do not let clients holding their session's DPoP key recover
    /// silently (they must sign in again, as everyone else).
    #[arg(long)]
    no_recovery: bool,
}

#[derive(Debug, Args)]
struct ForceResetArgs {
    /// A file with one account per line: id, username or email address (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// Also sign every listed account out of all its devices.
    #[arg(long)]
    sign_out_devices: bool,
    /// Mail each account the security-incident notice with a fresh password-reset link.
    #[arg(long)]
    notify: bool,
    /// The notice's "What happened" paragraph.
    #[arg(long, value_name = "TEXT")]
    what_happened: Option<String>,
    /// The notice's "What we did" paragraph.
    #[arg(long, value_name = "TEXT")]
    what_we_did: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// List accounts in creation order.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one account (by id or username) with its devices and recent security events, as JSON.
    Show { user: String },
    /// Grant or withdraw a role: `admin` or `user` (see `mfa.require = "admins"`).
    SetRole { user: String, role: String },
    /// Remove every second factor (app, passkeys, recovery codes) of an account whose owner lost
    /// them all, after you checked who is asking. The owner is mailed.
    ResetMfa {
        user: String,
        /// Why, for the audit log (for example the support ticket).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check the whole hash chain; exits non-zero if any event was altered, inserted or deleted.
    Verify,
}

/// Flags shared by every command. Each also has a `KEYWARDEN_*` variable and a config-file key.
#[derive(Debug, Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, env = "KEYWARDEN_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory for the SQLite database and the generated key file [env: KEYWARDEN_DATA_DIR].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// `postgres://…` to use PostgreSQL instead of SQLite [env: KEYWARDEN_DATABASE_URL].
    #[arg(long, value_name = "URL", global = true)]
    database_url: Option<String>,
    /// Keyring file [env: KEYWARDEN_KEY_FILE; default: DIR/keys.toml].
    #[arg(long, value_name = "FILE", global = true)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on [env: KEYWARDEN_LISTEN; default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

impl Common {
    fn load(&self, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
        let flags = Flags {
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            key_file: self.key_file.clone(),
        };
        Ok(Config::load(self.config.as_deref(), &flags)?)
    }
}

/// Parses the command line, runs the command, and turns failure into a message and exit code 1.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(common) => migrate(common).await,
        Command::CheckConfig(common) => check_config(common).await,
        Command::Admin(args) => admin(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "keywarden stopped");
            eprintln!("keywarden: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(config: &Config) -> anyhow::Result<()> {
    telemetry::init(&config.log, config.log_format).map_err(anyhow::Error::msg)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.common.load(args.listen)?;
    init_logs(&config)?;
    let running = server::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(common: Common) -> anyhow::Result<()> {
    let config = common.load(None)?;
    init_logs(&config)?;
    let store = store::open(&config.database_url()).await?;
    store.migrate().await?;
    println!("migrations applied to the {} database", store.engine());
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let config = args.common.load(None)?;
    // Admin output goes to stdout; only warnings and errors are logged.
    telemetry::init("warn", config.log_format).map_err(anyhow::Error::msg)?;
    let console = Console::open(&config).await?;
    match args.action {
        AdminAction::Revoke(revoke) => {
            let target = revoke.target;
            let scope = if let Some(user) = target.user {
                Scope::User(console.user(&user).await?.id)
            } else if let Some(channel) = target.channel {
                Scope::Channel(channel)
            } else if let Some(device) = target.device {
                Scope::Device(device)
            } else {
                Scope::Global
            };
            let issued_before = revoke.issued_before.as_deref().map(parse_instant).transpose()?;
            println!("{}", console.revoke(scope, issued_before, revoke.reason, revoke.no_recovery).await?);
        }
        AdminAction::ForcePasswordReset(args) => {
            let list = if args.users.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the list from standard input")?
            } else {
                std::fs::read_to_string(&args.users).with_context(|| format!("cannot read {}", args.users.display()))?
            };
            let defaults = IncidentText::default();
            let text = IncidentText {
                what_happened: args.what_happened.unwrap_or(defaults.what_happened),
                what_we_did: args.what_we_did.unwrap_or(defaults.what_we_did),
            };
            let done = console.force_password_reset(&list, args.sign_out_devices, args.notify, &text).await?;
            println!(
                "{} account(s) must choose a new password; {} signed out of all devices; {} notified",
                done.flagged, done.signed_out, done.notified
            );
            if !done.unknown.is_empty() {
                for line in &done.unknown {
                    eprintln!("no account matches {line:?}");
                }
                anyhow::bail!("{} line(s) matched no account", done.unknown.len());
            }
        }
        AdminAction::Users { action: UsersAction::List { limit, offset, json } } => {
            let users = console.list_users(limit, offset).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<38} {:<24} {:<32} {:<6} created", "id", "username", "email", "role");
                for u in users {
                    let field = |name: &str| u[name].as_str().unwrap_or_default().to_owned();
                    println!(
                        "{:<38} {:<24} {:<32} {:<6} {}",
                        field("id"),
                        field("username"),
                        field("email"),
                        field("role"),
                        field("created_at")
                    );
                }
            }
        }
        AdminAction::Users { action: UsersAction::Show { user } } => {
            println!("{}", serde_json::to_string_pretty(&console.show_user(&user).await?)?);
        }
        AdminAction::Users { action: UsersAction::SetRole { user, role } } => {
            println!("{}", console.set_role(&user, &role).await?);
        }
        AdminAction::Users { action: UsersAction::ResetMfa { user, reason } } => {
            println!("{}", console.reset_second_factors(&user, &reason).await?);
        }
        AdminAction::Clients { action } => clients(&console, action).await?,
        AdminAction::Keys { action: KeysAction::Rotate(RotateArgs { signing_key: true }) } => {
            if std::env::var_os(crate::server::KEYRING_ENV).is_some() {
                anyhow::bail!("the keyring comes from {}: rotate it where it is kept", crate::server::KEYRING_ENV);
            }
            let path = config.key_file();
            let mut keyring = Keyring::load(&path)?;
            let id = keyring.rotate_signing_key();
            keyring.replace(&path)?;
            console.keys_rotated("signing", &id).await?;
            println!("new signing key {id} is active in {}", path.display());
            println!("copy the file to every node and restart them; older keys stay published for tokens they signed");
        }
        AdminAction::Keys { action: KeysAction::Rotate(_) } => anyhow::bail!("name the key to rotate: --signing-key"),
        AdminAction::Audit { action: AuditAction::Verify } => {
            let (checked, problems) = console.verify_audit().await?;
            if problems.is_empty() {
                println!("audit log intact: {checked} events verified");
            } else {
                for problem in &problems {
                    println!("TAMPERED: {problem}");
                }
                anyhow::bail!("the audit log was tampered with: {} problem(s) in {checked} events", problems.len());
            }
        }
    }
    Ok(())
}

fn parse_signing_alg(name: &str) -> Result<SigningAlg, String> {
    SigningAlg::parse(name).ok_or_else(|| format!("{name:?} is not ES256 or EdDSA"))
}

async fn clients(console: &Console, action: ClientsAction) -> anyhow::Result<()> {
    let clients = console.clients();
    let actor = console.actor();
    match action {
        ClientsAction::Add {
            id,
            name,
            public,
            redirect_uris,
            backchannel_logout_uri,
            first_party,
            jwks_file,
            id_token_alg,
        } => {
            let kind = if public { ClientKind::Public } else { ClientKind::Confidential };
            let jwks = jwks_file
                .map(|path| std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display())))
                .transpose()?;
            let new =
                NewClient { id, name, kind, redirect_uris, backchannel_logout_uri, first_party, id_token_alg, jwks };
            let (client, secret) = clients.register(new, actor).await?;
            println!("registered {} client {:?}", client.kind.as_str(), client.id);
            if let Some(secret) = secret {
                println!("client_secret: {}", secret.as_str());
                println!("(shown once: keywarden keeps only a keyed digest of it)");
            }
        }
        ClientsAction::List { json } => {
            let list = clients.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<13} {:<11} {:<28} redirect URIs", "id", "kind", "first-party", "name");
                for c in list {
                    let kind = c.kind.as_str();
                    let first_party = if c.first_party { "yes" } else { "no" };
                    println!(
                        "{:<24} {:<13} {:<11} {:<28} {}",
                        c.id,
                        kind,
                        first_party,
                        c.name,
                        c.redirect_uris.join(" ")
                    );
                }
            }
        }
        ClientsAction::GenerateSecret => {
            println!("{}", TokenKind::ClientSecret.mint().as_str());
        }
        ClientsAction::Remove { id } => {
            clients.remove(&id, actor).await?;
            println!("removed client {id:?}; revoke its tokens with `keywarden admin revoke --channel {id}`");
        }
        ClientsAction::RotateSecret { id } => {
            let secret = clients.rotate_secret(&id, actor).await?;
            println!("client_secret: {}", secret.as_str());
            println!("(shown once; the previous secret no longer works)");
        }
    }
    Ok(())
}

/// An RFC 3339 instant as Unix milliseconds.
fn parse_instant(text: &str) -> anyhow::Result<i64> {
    let instant = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 instant such as 2025-09-08T12:00:00Z"))?;
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).context("instant out of range")
}

async fn check_config(common: Common) -> anyhow::Result<()> {
    let config = common.load(None)?;
    let keyring = if let Ok(text) = std::env::var(KEYRING_ENV) {
        format!("from {KEYRING_ENV}: {:?}", Keyring::from_toml(&text)?.active_ids())
    } else if config.key_file().exists() {
        let ring = Keyring::load(&config.key_file())?;
        format!("{}: {:?}", config.key_file().display(), ring.active_ids())
    } else {
        format!("{} does not exist yet; `serve` will generate it", config.key_file().display())
    };
    let mut shown = config.clone();
    shown.database_url = Some(redact_password(&config.database_url()));
    println!("{}", toml::to_string(&shown).context("cannot render the configuration")?);
    println!("# keyring: {keyring}");
    println!("# configuration is valid");
    Ok(())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_not_printed() {
        assert_eq!(super::redact_password("postgres://kw:s3cret@db/kw"), "postgres://kw:***@db/kw");
        assert_eq!(super::redact_password("sqlite://data/k.db"), "sqlite://data/k.db");
    }
}
