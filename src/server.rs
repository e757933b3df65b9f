//! Starting and stopping a keywarden node: store, keyring, domain services, HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::{now_ms, Clock};
use crate::config::{Config, HashProfile};
use crate::domain::account_deletion::AccountDeletions;
use crate::domain::alert_mail::MailAdmins;
use crate::domain::alerts::Alerts;
use crate::domain::data_export::{DataExports, Sources as DataSources};
use crate::domain::dpop::DpopVerifier;
use crate::domain::freshness::Freshness;
use crate::domain::key_rotation::KeyRotation;
use crate::domain::passkeys;
use crate::domain::password::PasswordHasher;
use crate::domain::readiness::Readiness;
use crate::domain::recent_credentials::RecentCredentials;
use crate::domain::security_overview::SecurityOverviews;
use crate::domain::sso::provider::Provider;
use crate::domain::throttle::Throttle;
use crate::domain::validation_cache::ValidationCache;
use crate::domain::{
    Accounts, AuditLog, Claims, Core, DeviceKeys, Devices, OAuth, Pins, Recovery, Revocations, SecondFactors, Sessions,
    Sso, Webhooks,
};
use crate::http::pages::Pages;
use crate::http::{self, AppState, Services};
use crate::keys::signing::Signer;
use crate::keys::Keyring;
use crate::mail::{Mailer, Transport, TransportKind};
use crate::obs::metrics::{AlertCounter, Metrics};
use crate::outbound::backchannel;
use crate::outbound::upstream::HttpUpstream;
use crate::outbound::webhook::Webhook;
use crate::store::{self, DynStore, Store};

/// The variable that may hold the whole keyring instead of a key file (for secret managers).
pub const KEYRING_ENV: &str = "KEYWARDEN_KEYRING";

/// How often rules written elsewhere are fetched when no notification arrives: well inside the
/// promise that a revocation is enforced by every node within one second.
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often the whole rule set is reloaded, repairing anything a notification or poll missed.
const REVOCATION_RELOAD: Duration = Duration::from_secs(30);

/// How often the back-channel logout queue is checked.
const LOGOUT_POLL: Duration = Duration::from_millis(500);

/// How often the mail queue is checked for messages due for (another) delivery attempt.
const MAIL_POLL: Duration = Duration::from_secs(1);

fn mail_transport(config: &Config) -> anyhow::Result<Transport> {
    Ok(match config.mail.transport {
        TransportKind::Outbox => {
            let dir = config.outbox_dir();
            tracing::warn!(
                outbox = %dir.display(),
                "mail is written to the file outbox: its messages hold live verification, sign-in and \
                 reset links, so it is for development only; set mail.transport = \"smtp\" for real use"
            );
            Transport::Outbox(dir)
        }
        TransportKind::Smtp => Transport::smtp(&config.mail.smtp).context("invalid SMTP settings")?,
    })
}

/// Tokens are kept this long after expiry so a late refresh still reports `token_expired`.
const EXPIRED_TOKEN_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Throttle counters are kept a day after their last failure or block.
const THROTTLE_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Invalidation log entries are kept this long, far past any cache entry's life.
const INVALIDATION_RETENTION_MS: i64 = 3600 * 1000;
/// How often each node looks at its key file.
const KEYRING_POLL: Duration = Duration::from_millis(250);
/// How often each node re-wraps a batch of values sealed under older keys.
const REWRAP_EVERY: Duration = Duration::from_secs(5);

/// A running node; dropping it does not stop it, `stop` does (gracefully).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The node's database, for its background jobs (and for tests that look behind the services).
    pub store: DynStore,
    shutdown: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting connections, lets requests in flight finish, then returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        for task in &self.background {
            task.abort();
        }
        self.serving.await.context("server task failed")?.context("server failed")
    }
}

/// Opens the database, applies migrations, loads (or on first start generates) the keyring,
/// and starts serving on the configured address.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    start_with_clock(config, Clock::system()).await
}

/// `start` with the clock the domain reads: tests give one they move forward instead of sleeping.
pub async fn start_with_clock(config: &Config, clock: Clock) -> anyhow::Result<RunningServer> {
    let store = store::open_with(&config.database_url(), &config.database).await.context("cannot open the database")?;
    store.migrate().await.context("cannot apply database migrations")?;
    let keyring = open_keyring(config, store.as_ref()).await?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // With an ephemeral port and no public_url, links and the OAuth issuer name the port we got.
    let mut config = config.clone();
    if config.listen.port() == 0 {
        config.listen = addr;
    }
    let config = &config;
    let state = build_state(config, store.clone(), keyring, clock)?;
    state.oauth.clients().sync_configured(&config.oauth.clients).await.context("invalid [[oauth.clients]]")?;
    // Every rule must be in memory before the first request is served.
    state.revocations.reload().await.context("cannot load revocation rules")?;
    let staleness_limit = Duration::from_millis(config.database.staleness_limit_ms);
    let syncing = state.revocations.spawn_sync(REVOCATION_POLL, REVOCATION_RELOAD, staleness_limit);
    let https = config.public_url().starts_with("https://");
    let app = http::router(state.clone(), config.max_body_bytes, &config.http, https);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(http::serve::serve(listener, app, config.http, async {
        let _ = stopped.await;
    }));
    let mut background = syncing;
    background.push(state.mailer.spawn_delivery(mail_transport(config)?, MAIL_POLL));
    background.push(backchannel::spawn_delivery(store.clone(), state.oauth.clone(), LOGOUT_POLL)?);
    background.push(tokio::spawn(purge_expired_tokens(store.clone())));
    background.push(tokio::spawn(erase_deleted_accounts(state.deletions.clone())));
    background.push(state.alerts.spawn_stuffing_watch());
    let key_file = std::env::var_os(KEYRING_ENV).is_none().then(|| config.key_file());
    let validations = state.revocations.validations().clone();
    background.push(spawn_keyring_watch(
        key_file,
        store.clone(),
        state.keyring.clone(),
        state.signer.clone(),
        validations,
    ));
    background.push(KeyRotation::new(store.clone(), state.keyring.clone()).spawn(REWRAP_EVERY));
    tracing::info!(%addr, database = store.engine(), "keywarden is listening");
    Ok(RunningServer { addr, state, store, shutdown, serving, background })
}

/// Applies the migrations to the configured database; returns its engine's name.
pub async fn migrate(config: &Config) -> anyhow::Result<&'static str> {
    let store = store::open(&config.database_url()).await.context("cannot open the database")?;
    store.migrate().await.context("cannot apply database migrations")?;
    Ok(store.engine())
}

/// The domain's shared parts for an operator's command: the database migrated, statements not
/// time-bounded, and the keyring as the key file holds it (never generated here).
pub async fn open_for_operator(config: &Config) -> anyhow::Result<Core> {
    let store = store::open(&config.database_url()).await.context("cannot open the database")?;
    store.migrate().await.context("cannot apply database migrations")?;
    let keyring = load_keyring(config, store.as_ref(), false).await?;
    build_core(config, store, keyring, Clock::system())
}

/// The domain's shared parts, as configured: hashing, audit, revocation rules and mail.
pub fn build_core(config: &Config, store: DynStore, keyring: Arc<Keyring>, clock: Clock) -> anyhow::Result<Core> {
    let hashing = &config.password_hashing;
    let hasher = Arc::new(PasswordHasher::new(keyring.clone(), hashing.cost(), hashing.admission())?);
    let audit = AuditLog::new(store.clone(), keyring.clone());
    let validations = ValidationCache::new(config.validation_cache);
    let revocations = Revocations::new(store.clone(), audit.clone(), validations, clock.clone());
    let mailer = Mailer::new(
        store.clone(),
        keyring.clone(),
        Arc::new(audit.clone()),
        &config.mail,
        &config.product_name,
        &config.public_url(),
    )?;
    let webauthn = match config.relying_party()? {
        Some(rp) => Some(Arc::new(passkeys::relying_party(&rp.id, &rp.origins, &rp.name, rp.any_port)?)),
        None => {
            tracing::warn!("passkeys are off: public_url is an IP address; set passkeys.rp_id and passkeys.origins");
            None
        }
    };
    let throttle = Throttle::new(store.clone(), keyring.clone(), audit.clone(), config.throttle, clock.clone());
    let alerts = Alerts::new(store.clone(), audit.clone(), config.alerts.clone(), clock.clone());
    let freshness = Freshness::new(store.clone(), config.mfa.step_up_secs, clock.clone());
    Ok(Core {
        clock,
        webauthn,
        throttle,
        freshness,
        alerts,
        store,
        keyring,
        hasher,
        audit,
        revocations,
        mailer,
        policy: config.tokens,
        mfa: config.mfa,
        signup: config.signup,
        deletion: config.deletion,
        product: config.product_name.clone(),
    })
}

pub fn build_state(config: &Config, store: DynStore, keyring: Arc<Keyring>, clock: Clock) -> anyhow::Result<AppState> {
    if config.password_hashing.profile == HashProfile::InsecureTestOnly {
        tracing::warn!("password_hashing.profile = insecure-test-only: passwords are hashed weakly; never use this for real accounts");
    }
    let dpop = DpopVerifier::new(keyring.clone(), config.dpop.require_nonce);
    let pages = Arc::new(Pages::new(&config.product_name, config.secure_cookies(), &config.pages)?);
    let core = build_core(config, store.clone(), keyring.clone(), clock)?;
    let hasher = core.hasher.clone();
    let accounts = Accounts::new(&core);
    let factors = SecondFactors::new(&core, accounts.clone());
    let sessions = Sessions::new(&core, accounts.clone(), factors.clone());
    let signer = Arc::new(Signer::from_keyring(&keyring).context("cannot derive the token-signing keys")?);
    let device_keys = DeviceKeys::new(&core, sessions.clone(), signer.clone());
    let oauth = OAuth::new(
        &core,
        sessions.clone(),
        accounts.clone(),
        signer.clone(),
        &config.public_url(),
        config.oauth.clone(),
    );
    let providers = config
        .sso
        .providers
        .iter()
        .map(Provider::from_settings)
        .collect::<Result<Vec<_>, String>>()
        .map_err(|reason| anyhow::anyhow!("invalid [[sso.providers]]: {reason}"))?;
    let mut ids: Vec<&str> = providers.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|pair| pair[0] == pair[1]) {
        bail!("invalid [[sso.providers]]: two providers have the same id");
    }
    let provider_names = providers.iter().map(|p| (p.id.clone(), p.name.clone())).collect();
    let upstream = Arc::new(HttpUpstream::new().context("cannot build the HTTP client for sign-in providers")?);
    let pins = Pins::new(&core, sessions.clone());
    let claims = Claims::new(&core, sessions.clone());
    let webhooks = Webhooks::new(&core);
    let metrics = Arc::new(Metrics::default());
    core.alerts.add_hook(Arc::new(AlertCounter(metrics.clone())));
    if config.alerts.mail_admins {
        core.alerts.add_hook(Arc::new(MailAdmins::new(store.clone(), accounts.clone())));
    }
    if let Some(url) = &config.alerts.webhook_url {
        core.alerts.add_hook(Arc::new(Webhook::new(url, &config.product_name)?));
    }
    let sso = Sso::new(&core, accounts.clone(), sessions.clone(), providers, upstream, &config.public_url());
    let devices = Devices::new(&core, accounts.clone());
    let data_exports = DataExports::new(
        &core,
        DataSources {
            accounts: accounts.clone(),
            devices: devices.clone(),
            factors: factors.clone(),
            oauth: oauth.clone(),
            sso: sso.clone(),
            webhooks: webhooks.clone(),
        },
    );
    let security = SecurityOverviews::new(
        accounts.clone(),
        devices.clone(),
        core.audit.clone(),
        factors.clone(),
        oauth.clone(),
        sso.clone(),
        core.freshness.clone(),
    );
    Ok(AppState::new(Services {
        security,
        sessions,
        oauth,
        factors,
        freshness: core.freshness.clone(),
        devices,
        recovery: Recovery::new(&core, accounts.clone(), provider_names),
        recent_credentials: RecentCredentials::new(
            store.clone(),
            core.audit.clone(),
            core.validations().clone(),
            core.clock.clone(),
        ),
        sso,
        pins,
        claims,
        data_exports,
        deletions: AccountDeletions::new(&core, accounts.clone()),
        webhooks,
        device_keys,
        accounts,
        readiness: Readiness::new(store, core.revocations.clone()),
        revocations: core.revocations,
        alerts: core.alerts,
        audit: core.audit,
        mailer: core.mailer,
        hasher,
        metrics,
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        dpop,
        keyring,
        signer,
        pages,
        token_policy: config.tokens,
        signup: config.signup,
        public_url: config.public_url.clone(),
    }))
}

/// Loads the keyring from `KEYWARDEN_KEYRING` or the key file. Only a database without accounts
/// gets a newly generated keyring: for any other, a new one would make every credential unusable.
pub async fn open_keyring(config: &Config, store: &dyn Store) -> anyhow::Result<Arc<Keyring>> {
    load_keyring(config, store, true).await
}

/// The keyring from `KEYWARDEN_KEYRING` or the key file, without a database (to check an audit
/// export offline); never generated.
pub fn existing_keyring(config: &Config) -> anyhow::Result<Keyring> {
    let path = config.key_file();
    if let Ok(text) = std::env::var(KEYRING_ENV) {
        return Keyring::from_toml(&text).with_context(|| format!("invalid keyring in {KEYRING_ENV}"));
    }
    if !path.exists() {
        bail!("the key file {} does not exist: restore it from your backup", path.display());
    }
    Ok(Keyring::load(&path)?)
}

/// Loads the keyring; only `serve` may generate one (an admin command must never make new keys).
pub async fn load_keyring(config: &Config, store: &dyn Store, may_generate: bool) -> anyhow::Result<Arc<Keyring>> {
    let path = config.key_file();
    let keyring = if let Ok(text) = std::env::var(KEYRING_ENV) {
        Keyring::from_toml(&text).with_context(|| format!("invalid keyring in {KEYRING_ENV}"))?
    } else if path.exists() {
        Keyring::load(&path)?
    } else if !may_generate {
        bail!(
            "the key file {} does not exist: start `keywarden serve` once, or restore it from your backup",
            path.display()
        );
    } else {
        if store.count_users().await? > 0 {
            bail!(
                "the database holds accounts but the key file {} is missing: restore it from your backup \
                 (a new keyring would make every password, token and email in the database unusable)",
                path.display()
            );
        }
        let keyring = Keyring::generate();
        keyring.write_new(&path)?;
        tracing::warn!(
            key_file = %path.display(),
            "generated a new keyring: back up this file and store it apart from the database"
        );
        keyring
    };
    crate::domain::key_rotation::check_keyring_matches_database(&keyring, store).await?;
    Ok(Arc::new(keyring))
}

/// Reloads the key file when it changes (a rotation or retirement by `keywarden admin keys`), and
/// re-derives the signing keys when the file or an active key changes, so keys rotate without a
/// restart. A changed file that does not match the database is refused and the keys in use stay.
fn spawn_keyring_watch(
    path: Option<std::path::PathBuf>,
    store: DynStore,
    keyring: Arc<Keyring>,
    signer: Arc<Signer>,
    validations: ValidationCache,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_text = match &path {
            Some(path) => tokio::fs::read_to_string(path).await.ok(),
            None => None,
        };
        let mut last_active = keyring.active_ids();
        loop {
            tokio::time::sleep(KEYRING_POLL).await;
            let mut reloaded = false;
            if let Some(path) = &path {
                match tokio::fs::read_to_string(path).await {
                    Ok(text) if last_text.as_ref() != Some(&text) => {
                        match changed_keyring(&text, store.as_ref()).await {
                            Ok(fresh) => {
                                keyring.replace_with(fresh);
                                // A retired token-hash key's digests must not be served from memory.
                                validations.forget_everything();
                                reloaded = true;
                                tracing::info!(active = ?keyring.active_ids(), "key file reloaded");
                            }
                            Err(err) => tracing::error!(
                                error = format!("{err:#}"),
                                "the changed key file was refused; the keys in use stay"
                            ),
                        }
                        last_text = Some(text);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot read the key file"),
                }
            }
            let active = keyring.active_ids();
            if reloaded || active != last_active {
                if active != last_active {
                    tracing::info!(active = ?active, "new keys are active");
                }
                if let Err(err) = signer.reload(&keyring) {
                    tracing::error!(error = %err, "cannot derive the new signing keys");
                }
                last_active = active;
            }
        }
    })
}

/// A changed key file, if it is valid and matches the database.
async fn changed_keyring(text: &str, store: &dyn Store) -> anyhow::Result<Keyring> {
    let fresh = Keyring::from_toml(text).context("the key file is invalid")?;
    crate::domain::key_rotation::check_keyring_matches_database(&fresh, store).await?;
    Ok(fresh)
}

/// Erases the accounts whose deletion is due, every minute (on every node: each erasure is one
/// transaction, and an account erased by one node is simply gone for the others).
async fn erase_deleted_accounts(deletions: AccountDeletions) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        match deletions.erase_due().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(erased = n, "deleted accounts erased after their grace period"),
            Err(err) => tracing::warn!(error = %err, "erasing deleted accounts failed"),
        }
    }
}

async fn purge_expired_tokens(store: DynStore) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match store.purge_expired_tokens(now_ms() - EXPIRED_TOKEN_RETENTION_MS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired tokens and sign-in challenges purged"),
            Err(err) => tracing::warn!(error = %err, "purging expired tokens failed"),
        }
        // Counters that neither count recent failures nor block anyone any more.
        if let Err(err) = store.purge_throttles(now_ms() - THROTTLE_RETENTION_MS).await {
            tracing::warn!(error = %err, "purging throttle counters failed");
        }
        // Rules past every access token's life can go once no stored token falls under them.
        let settled_before = now_ms() - crate::domain::policy::MAX_ACCESS_TTL_SECS * 1000;
        match store.purge_revocation_rules(now_ms(), settled_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "revocation rules that can no longer match a live token purged"),
            Err(err) => tracing::warn!(error = %err, "purging revocation rules failed"),
        }
        // Every node has read these long ago; one that was cut off longer forgets its whole cache.
        if let Err(err) = store.purge_invalidations(now_ms() - INVALIDATION_RETENTION_MS).await {
            tracing::warn!(error = %err, "purging the invalidation log failed");
        }
        if let Err(err) = store.purge_alert_states(now_ms() - THROTTLE_RETENTION_MS).await {
            tracing::warn!(error = %err, "purging ended alert states failed");
        }
    }
}
