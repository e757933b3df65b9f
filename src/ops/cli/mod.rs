//! The command line: `serve`, `migrate`, `check-config` and the operator's `admin` commands.

mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Flags};
use crate::domain::incident::IncidentText;
use crate::domain::revocation::Scope;
use crate::keys::signing::SigningAlg;
use crate::keys::{KeyPurpose, Keyring};
use crate::obs::telemetry;
use crate::ops::admin::Console;
use crate::server::{self, KEYRING_ENV};
use commands::{audit, breach_response, clients, invites, keys, parse_signing_alg, read_list, write_private};

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
    /// The database-breach response in one audited run: revoke tokens, rotate and retire every
    /// key, force new passwords, clear second factors, mail the incident notice once per account.
    /// Shows progress; its plan is saved beside the key file, so a stopped run continues with
    /// --resume. --dry-run prints what it would do.
    BreachResponse(BreachArgs),
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
    /// Invitations to sign up (for `signup.mode = "invite"`).
    Invites {
        #[command(subcommand)]
        action: InvitesAction,
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
    /// Decoy accounts and tokens whose use proves the database leaked.
    Honeytokens {
        #[command(subcommand)]
        action: HoneytokensAction,
    },
}

#[derive(Debug, Subcommand)]
enum HoneytokensAction {
    /// Create N decoy accounts, each with devices and live tokens, that look like real rows. Any
    /// sign-in as one, use of one of their tokens, or reset asked for one's address raises a
    /// critical alert. Nothing in the database tells them apart; only the keyring does.
    Seed {
        count: usize,
        /// Also write the decoys' usernames, addresses, passwords and tokens to FILE (JSON, mode
        /// 0600), to plant as canaries elsewhere (a backup, a log pipeline, a password vault).
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// List the decoy accounts, told apart from real ones by the keyring (audited).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Add a new key that becomes the active one after --activate-in seconds; older keys stay in the
    /// file for what they protect (signing keys stay published) until retired. Running servers
    /// reload the key file within seconds: copy it to every node before the new key activates.
    Rotate {
        #[command(flatten)]
        key: KeyChoice,
        /// Seconds until new values use the new key (every node must have the file by then).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        activate_in: u64,
    },
    /// Every key with what it still protects (rows per key id), as JSON with --json.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Re-seal encrypted fields and re-index emails under the active keys now, with progress
    /// (servers also do this in the background). Resumable: run it again after an interruption.
    Rewrap {
        /// Rows of each kind per batch.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Remove a key that is no longer active. Whatever only it protects dies with it (tokens it
    /// hashed, passwords peppered with it, values sealed under it): refused while such rows remain,
    /// unless --force.
    Retire {
        #[command(flatten)]
        key: KeyChoice,
        /// The key id (see `keys status`).
        id: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "key")]
struct KeyChoice {
    /// The pepper mixed into password hashes (passwords move to the new one at each next sign-in).
    #[arg(long)]
    pepper: bool,
    /// The key that hashes tokens, codes and links (old tokens work until they expire or it is retired).
    #[arg(long)]
    token_key: bool,
    /// The key that encrypts emails, authenticator secrets and queued mail (re-sealed by `keys rewrap`).
    #[arg(long)]
    data_key: bool,
    /// The key of the email and provider-subject blind indexes (emails re-indexed by `keys rewrap`).
    #[arg(long)]
    blind_index_key: bool,
    /// The key that signs ID tokens and logout tokens (ES256 and EdDSA are both derived from it).
    #[arg(long)]
    signing_key: bool,
}

impl KeyChoice {
    fn purpose(&self) -> KeyPurpose {
        if self.pepper {
            KeyPurpose::Pepper
        } else if self.token_key {
            KeyPurpose::TokenHash
        } else if self.data_key {
            KeyPurpose::Data
        } else if self.blind_index_key {
            KeyPurpose::BlindIndex
        } else {
            KeyPurpose::Signing
        }
    }
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
        /// Where to push Security Event Tokens (RFC 8417), such as the RISC `account-purged`
        /// event when an account this client knows is erased.
        #[arg(long, value_name = "URI")]
        security_event_uri: Option<String>,
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
#[group(required = true, multiple = true, id = "target")]
struct RevokeTarget {
    /// An account's id or username (with --channel: only that channel of the account).
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// A channel: `web`, `device`, `api`, or an OAuth client's id.
    #[arg(long, value_name = "NAME")]
    channel: Option<String>,
    /// A device's id.
    #[arg(long, value_name = "ID", conflicts_with_all = ["user", "channel"])]
    device: Option<String>,
    /// Every token of every account.
    #[arg(long, conflicts_with_all = ["user", "channel", "device"])]
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
struct BreachArgs {
    /// A file with the affected accounts, one id, username or email per line (`-` for standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    users: Option<PathBuf>,
    /// Every account.
    #[arg(long)]
    all: bool,
    /// New pepper, token-hash, data, blind-index and signing keys, active at once; values are
    /// re-wrapped and the old keys retired, so a copy of the database is useless against them.
    #[arg(long)]
    rotate_keys: bool,
    /// Kill the affected accounts' tokens: `all`, or those of one channel (`web`, `device`, `api`, a client id).
    #[arg(long, value_name = "all|CHANNEL")]
    revoke: Option<String>,
    /// The affected accounts must choose a new password at their next sign-in.
    #[arg(long)]
    force_password_reset: bool,
    /// Remove the affected accounts' second factors: they set them up again (after an authenticator-secret leak).
    #[arg(long, visible_alias = "require-2fa-reenrolment")]
    reset_second_factors: bool,
    /// Mail each affected account the incident notice with a fresh password-reset link, once.
    #[arg(long)]
    notify: bool,
    #[command(flatten)]
    text: NoticeText,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Continue a run that stopped, from its plan file.
    #[arg(long, value_name = "PLAN", conflicts_with_all = ["users", "all", "dry_run"])]
    resume: Option<PathBuf>,
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
    #[command(flatten)]
    text: NoticeText,
}

/// The incident notice's wording (defaults follow the 2025 notice).
#[derive(Debug, Args)]
struct NoticeText {
    /// The notice's "What happened" paragraph.
    #[arg(long, value_name = "TEXT")]
    what_happened: Option<String>,
    /// The notice's "What we did" paragraph.
    #[arg(long, value_name = "TEXT")]
    what_we_did: Option<String>,
}

impl NoticeText {
    fn or_defaults(self) -> IncidentText {
        let defaults = IncidentText::default();
        IncidentText {
            what_happened: self.what_happened.unwrap_or(defaults.what_happened),
            what_we_did: self.what_we_did.unwrap_or(defaults.what_we_did),
        }
    }
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
    /// Disable an account: every token of it dies at once on every node, and sign-in answers
    /// `account_disabled` (only to someone who gave the right credentials) until it is enabled.
    Disable {
        user: String,
        /// Why, for the audit log (for example the support ticket).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a disabled account sign in again (its old sessions stay ended).
    Enable {
        user: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Clear an account's sign-in locks (its failure counters and its devices'), so its owner can
    /// sign in at once.
    Unlock {
        user: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete an account: every session ends now and it is erased after `deletion.grace_secs`
    /// (its owner can still keep it by signing in), or at once with `--now`.
    Delete {
        user: String,
        /// Erase it now, without the grace period (nothing can bring it back).
        #[arg(long)]
        now: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Find the account with exactly this email address (through the blind index), as JSON.
    Find {
        #[arg(long)]
        email: String,
    },
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
enum InvitesAction {
    /// Make an invitation and print its link (shown once; only a digest is kept).
    Create {
        /// Only this address may sign up with it.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// How long it stays valid, such as `7d`, `48h` or `30m`.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        expires: String,
        /// How many sign-ups it admits.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: i64,
    },
    /// List the invitations (never their codes).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an invitation by its id: its unused uses die.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check the whole hash chain in the database, or with `--file` an export offline (the key file
    /// alone, no database); exits non-zero if any event was altered, inserted or deleted.
    Verify {
        /// An export written by `admin audit export`.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// A head printed earlier by `admin audit head` (`SEQ:HEX`): the log must still hold it.
        #[arg(long, value_name = "SEQ:HEX")]
        head: Option<String>,
    },
    /// Write the audit log as NDJSON, one event a line with its chain values, to standard output
    /// or `--output`; audited.
    Export {
        /// From this instant on (RFC 3339, such as 2026-12-01T00:00:00Z).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Up to before this instant (RFC 3339).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Write here (created readable by its owner only) instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the chain head (`SEQ:HEX`), to publish where someone holding the database cannot
    /// rewrite it; `verify --head` checks the log still holds it.
    Head,
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
    let engine = crate::server::migrate(&config).await?;
    println!("migrations applied to the {engine} database");
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let config = args.common.load(None)?;
    // Admin output goes to stdout; only warnings and errors are logged.
    telemetry::init("warn", config.log_format).map_err(anyhow::Error::msg)?;
    // An export is checked with the key file alone: no database is opened.
    if let AdminAction::Audit { action: AuditAction::Verify { file: Some(file), head } } = &args.action {
        return commands::verify_audit_export(&config, file, head.as_deref());
    }
    let console = Console::open(&config).await?;
    match args.action {
        AdminAction::Revoke(revoke) => {
            let target = revoke.target;
            let scope = match (target.user, target.channel, target.device) {
                (Some(user), Some(channel), _) => Scope::UserChannel { user: console.user_id(&user).await?, channel },
                (Some(user), None, _) => Scope::User(console.user_id(&user).await?),
                (None, Some(channel), _) => Scope::Channel(channel),
                (None, None, Some(device)) => Scope::Device(device),
                (None, None, None) => Scope::Global,
            };
            let issued_before = revoke.issued_before.as_deref().map(parse_instant).transpose()?;
            println!("{}", console.revoke(scope, issued_before, revoke.reason, revoke.no_recovery).await?);
        }
        AdminAction::ForcePasswordReset(args) => {
            let list = read_list(&args.users)?;
            let text = args.text.or_defaults();
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
        AdminAction::BreachResponse(args) => breach_response(&console, &config, args).await?,
        AdminAction::Users { action: UsersAction::List { limit, offset, json } } => {
            print_accounts(&console.list_users(limit, offset).await?, json)?;
        }
        AdminAction::Users { action: UsersAction::Show { user } } => {
            println!("{}", serde_json::to_string_pretty(&console.show_user(&user).await?)?);
        }
        AdminAction::Users { action: UsersAction::SetRole { user, role } } => {
            println!("{}", console.set_role(&user, &role).await?);
        }
        AdminAction::Users { action: UsersAction::Disable { user, reason } } => {
            println!("{}", console.disable_user(&user, reason.as_deref()).await?);
        }
        AdminAction::Users { action: UsersAction::Enable { user, reason } } => {
            println!("{}", console.enable_user(&user, reason.as_deref()).await?);
        }
        AdminAction::Users { action: UsersAction::Delete { user, now, reason } } => {
            println!("{}", console.delete_user(&user, now, reason.as_deref()).await?);
        }
        AdminAction::Users { action: UsersAction::Unlock { user, reason } } => {
            println!("{}", console.unlock_user(&user, reason.as_deref()).await?);
        }
        AdminAction::Users { action: UsersAction::Find { email } } => match console.find_user_by_email(&email).await? {
            Some(account) => println!("{}", serde_json::to_string_pretty(&account)?),
            None => anyhow::bail!("no account has the address {email:?}"),
        },
        AdminAction::Users { action: UsersAction::ResetMfa { user, reason } } => {
            println!("{}", console.reset_second_factors(&user, &reason).await?);
        }
        AdminAction::Clients { action } => clients(&console, action).await?,
        AdminAction::Invites { action } => invites(&console, &config, action).await?,
        AdminAction::Honeytokens { action: HoneytokensAction::Seed { count, export } } => {
            if count == 0 || count > 10_000 {
                anyhow::bail!("seed between 1 and 10000 decoys");
            }
            let decoys = console.seed_honeytokens(count).await?;
            let tokens: usize = decoys.iter().map(|d| d.tokens.len()).sum();
            if let Some(path) = export {
                write_private(&path, &serde_json::to_string_pretty(&decoys)?)?;
                println!("wrote the decoys to {} (keep it as secret as a password list)", path.display());
            }
            println!(
                "seeded {} decoy account(s) with {tokens} decoy token(s); any use of one raises a critical alert",
                decoys.len()
            );
        }
        AdminAction::Honeytokens { action: HoneytokensAction::List { json } } => {
            print_accounts(&console.list_honeytokens().await?, json)?;
        }
        AdminAction::Keys { action } => keys(&console, &config, action).await?,
        AdminAction::Audit { action } => audit(&console, action).await?,
    }
    Ok(())
}

/// Accounts as `admin users list` shows them: a table, or JSON.
fn print_accounts(users: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(users)?);
        return Ok(());
    }
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
    Ok(())
}

/// An RFC 3339 instant as Unix milliseconds.
pub(super) fn parse_instant(text: &str) -> anyhow::Result<i64> {
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
