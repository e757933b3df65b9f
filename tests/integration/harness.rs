//! A real keywarden server on an ephemeral port, on a fresh SQLite directory or a fresh PostgreSQL database.

use std::path::PathBuf;

use keywarden::config::Config;
use keywarden::server::{self, RunningServer};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

/// Where the PostgreSQL suite connects to create its databases.
pub const POSTGRES_URL_ENV: &str = "KEYWARDEN_TEST_POSTGRES_URL";

#[derive(Debug, Clone)]
pub enum Engine {
    Sqlite,
    Postgres { admin_url: String },
}

impl Engine {
    /// The PostgreSQL engine when its URL is set. A build without it marks the PostgreSQL variants
    /// ignored (see build.rs), so they are reported as not run; in CI a missing URL fails them.
    pub fn postgres() -> Option<Self> {
        match std::env::var(POSTGRES_URL_ENV) {
            Ok(url) if !url.is_empty() => Some(Self::Postgres { admin_url: url }),
            _ if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
                panic!("{POSTGRES_URL_ENV} must be set in CI: the PostgreSQL suite may not be skipped")
            }
            _ => {
                eprintln!("skipped: set {POSTGRES_URL_ENV}=postgres://… to run the PostgreSQL variant");
                None
            }
        }
    }
}

/// Runs each named async test function once per engine: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
                async fn $name() {
                    if let Some(engine) = $crate::harness::Engine::postgres() {
                        super::$name(engine).await
                    }
                }
            )*
        }
    };
}

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub config: Config,
    pub database_url: String,
    running: Option<RunningServer>,
    /// The time every node of this server reads: tests move it instead of sleeping.
    pub clock: keywarden::clock::Clock,
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(engine: Engine) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    /// Starts a server with the test configuration, adjusted by `tweak`.
    pub async fn start_with(engine: Engine, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(dir.path());
        let mut postgres = None;
        if let Engine::Postgres { admin_url } = &engine {
            let (url, name) = create_database(admin_url).await;
            config.database_url = Some(url);
            postgres = Some((admin_url.clone(), name));
        }
        tweak(&mut config);
        let clock = keywarden::clock::Clock::adjustable();
        let running = server::start_with_clock(&config, clock.clone()).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        let database_url = config.database_url();
        Self { base, http, config, database_url, running: Some(running), clock, postgres, _dir: dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The running node's state, for looking inside (queue depths, the revocation cache).
    pub fn running_state(&self) -> &keywarden::http::AppState {
        &self.running.as_ref().expect("server running").state
    }

    /// Moves this server's clock (every node's) forward: what expires, unblocks or ages does so at once.
    pub fn advance(&self, by: std::time::Duration) {
        assert!(self.clock.advance(by), "the test server's clock is adjustable");
    }

    /// The running node's database, for tests that look behind the services.
    pub fn running_store(&self) -> &keywarden::store::DynStore {
        &self.running.as_ref().expect("server running").store
    }

    /// Makes the node read the revocation rules and the invalidation log now, as it does within
    /// 250 ms by itself: for tests that change the database behind its back.
    pub async fn catch_up(&self) {
        self.running_state().revocations.sync().await.expect("sync");
    }

    /// Another node on this server's database and key file, with caches of its own: what one node
    /// learns must reach it.
    pub async fn another_node(&self) -> RunningServer {
        server::start_with_clock(&self.config, self.clock.clone()).await.expect("second node starts")
    }

    /// Stops the server and starts it again on the same database and key file, with `tweak` applied.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("graceful stop");
        }
        tweak(&mut self.config);
        let running = server::start_with_clock(&self.config, self.clock.clone()).await.expect("server restarts");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
        self
    }

    /// Runs `keywarden admin …` against this server's database and key file, as an operator would.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keywarden"));
        for (name, _) in std::env::vars() {
            if name.starts_with("KEYWARDEN_") {
                command.env_remove(name);
            }
        }
        let data_dir = self.data_dir();
        command.arg("admin").args(args).args([
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--database-url",
            &self.database_url,
        ]);
        command.output().expect("admin command runs")
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("graceful stop");
        }
        if let Some((admin_url, name)) = self.postgres.take() {
            drop_database(&admin_url, &name).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        Reply::from(self.http.post(self.url(path)).json(&body).send().await.expect("request sent")).await
    }

    pub async fn post_with_token(&self, path: &str, token: &str, body: Value) -> Reply {
        Reply::from(self.http.post(self.url(path)).bearer_auth(token).json(&body).send().await.expect("request sent"))
            .await
    }

    pub async fn delete_with_token(&self, path: &str, token: &str) -> Reply {
        Reply::from(self.http.delete(self.url(path)).bearer_auth(token).send().await.expect("request sent")).await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        Reply::from(self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request sent")).await
    }

    pub async fn me(&self, access_token: &str) -> Reply {
        self.get_with_token("/api/v1/me", access_token).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/api/v1/token/refresh", json!({ "refresh_token": refresh_token })).await
    }

    pub async fn sign_out(&self, access_token: &str) -> Reply {
        let response = self
            .http
            .delete(self.url("/api/v1/sessions/current"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("sent");
        Reply::from(response).await
    }

    /// Creates an account whose owner then proves the address with the mailed link (from the file
    /// outbox), as every account that may add credentials must; asserts both worked.
    pub async fn sign_up(&self, username: &str, email: &str, password: &str) -> Value {
        let to = email.to_lowercase();
        let for_this = |m: &crate::smtp::Received| m.to == [to.as_str()] && m.token("kw_ev_").is_some();
        // An address can be signed up again after its first account moved away: skip older links.
        let earlier = self.outbox().iter().filter(|m| for_this(m)).count();
        let account = self.sign_up_unverified(username, email, password).await;
        let mail = self.wait_for_outbox(earlier, for_this).await;
        let token = mail.token("kw_ev_").expect("verification link");
        let verified = self.post("/api/v1/email/verify", json!({ "token": token })).await;
        assert_eq!(verified.status, StatusCode::NO_CONTENT, "verification failed: {}", verified.text);
        account
    }

    /// Creates an account and asserts it worked; its address stays unproven.
    pub async fn sign_up_unverified(&self, username: &str, email: &str, password: &str) -> Value {
        let reply =
            self.post("/api/v1/accounts", json!({ "username": username, "email": email, "password": password })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "sign-up failed: {}", reply.text);
        reply.json
    }

    /// Signs in and asserts it worked; returns the token response.
    pub async fn sign_in(&self, login: &str, password: &str, device: Option<Value>) -> Tokens {
        let mut body = json!({ "login": login, "password": password });
        if let Some(device) = device {
            body["device"] = device;
        }
        let reply = self.post("/api/v1/sessions", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "sign-in failed: {}", reply.text);
        Tokens::from(&reply.json)
    }

    /// The messages in the file outbox (the test mail transport), oldest first, with their recipients.
    pub fn outbox(&self) -> Vec<crate::smtp::Received> {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("outbox")) else { return Vec::new() };
        // Only finished messages: the transport writes a hidden temporary file, then renames it.
        let mut paths: Vec<_> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "eml")).collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| std::fs::read(path).ok())
            .map(|raw| {
                let parsed = mail_parser::MessageParser::default().parse(&raw);
                let to = parsed
                    .as_ref()
                    .and_then(|m| m.to())
                    .map(|list| list.iter().filter_map(|a| a.address()).map(str::to_owned).collect())
                    .unwrap_or_default();
                crate::smtp::Received { to, raw }
            })
            .collect()
    }

    /// Waits until the outbox holds more than `nth` messages that `accept` takes; returns that one.
    pub async fn wait_for_outbox(
        &self,
        nth: usize,
        accept: impl Fn(&crate::smtp::Received) -> bool,
    ) -> crate::smtp::Received {
        for _ in 0..200 {
            let mut matching: Vec<_> = self.outbox().into_iter().filter(|m| accept(m)).collect();
            if matching.len() > nth {
                return matching.swap_remove(nth);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no such message in the outbox: {:?}", self.outbox().iter().map(|m| m.subject()).collect::<Vec<_>>());
    }

    /// A counter or gauge from `/metrics`, summed over the label sets that contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).send().await.expect("sent").text().await.expect("text");
        text.lines()
            .filter(|line| {
                line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']) && line.contains(labels)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A new, empty PostgreSQL database for one test: its URL and name.
pub async fn create_database(admin_url: &str) -> (String, String) {
    let name = format!("kw_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is unreachable: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    (with_database(admin_url, &name), name)
}

pub async fn drop_database(admin_url: &str, name: &str) {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("admin connection");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
}

/// The URL of another database on the same PostgreSQL server.
fn with_database(admin_url: &str, name: &str) -> String {
    let (without_query, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    let host_part = match without_query[scheme_end..].find('/') {
        Some(slash) => &without_query[..scheme_end + slash],
        None => without_query,
    };
    format!("{host_part}/{name}{query}")
}

/// A response read whole: status, headers, raw body and (when it is JSON) the parsed body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn from(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self { status, headers, text, json }
    }

    pub fn error_code(&self) -> &str {
        self.json["error"].as_str().unwrap_or("<no error code>")
    }

    /// Asserts an error answer: its status and its stable code.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!((self.status, self.error_code()), (status, code), "unexpected answer: {}", self.text);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {}", self.text);
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
    pub device_id: String,
    pub channel: String,
}

impl From<&Value> for Tokens {
    fn from(v: &Value) -> Self {
        let field = |name: &str| v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}")).to_owned();
        Self {
            access: field("access_token"),
            refresh: field("refresh_token"),
            session_id: field("session_id"),
            device_id: field("device_id"),
            channel: field("channel"),
        }
    }
}

/// What this test binary has logged at WARN and above since the first call: a global subscriber
/// is installed then (in-process servers log on tokio's worker threads, which a thread-local one
/// would miss). Tests look for their own lines by something only they produce.
pub fn warnings_logged() -> String {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
        logs
    });
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// One number an SQL query over the server's database gives (a row count, say), read from outside.
pub async fn count_rows(engine: &Engine, url: &str, query: &str) -> i64 {
    match engine {
        Engine::Sqlite => {
            sqlx::query_scalar(query).fetch_one(&mut sqlx::SqliteConnection::connect(url).await.unwrap()).await.unwrap()
        }
        Engine::Postgres { .. } => {
            sqlx::query_scalar(query).fetch_one(&mut sqlx::PgConnection::connect(url).await.unwrap()).await.unwrap()
        }
    }
}
