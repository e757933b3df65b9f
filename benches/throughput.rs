//! Throughput benchmark with its own baselines: prints one table whose rows are measured in the same
//! run as a bare axum route served by the bench itself and as argon2id hashes/s at the configured
//! cost, and gives every keywarden row as a ratio to its baseline. GET rows are driven by `wrk` (a
//! separate process, as a client would be) when it is installed, the others by an in-process
//! client; each ratio is to the bare route under the same load generator. Runs on SQLite, and on
//! PostgreSQL too when `KEYWARDEN_TEST_POSTGRES_URL` is set; `KEYWARDEN_BENCH_ACCOUNTS` (default
//! 1,000,000, with 10 sessions each) sizes the large database. Run with `cargo bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywarden::config::{Config, HashProfile};
use keywarden::domain::accounts::Registration;
use keywarden::domain::audit::Actor;
use keywarden::domain::caller::Presentation;
use keywarden::domain::device_info::DeviceInfo;
use keywarden::domain::password::{Admission, HashCost, PasswordHasher};
use keywarden::domain::revocation::{Revocation, Scope};
use keywarden::domain::sessions::{Issue, SignIn};
use keywarden::fixture::{self, FixtureSpec};
use keywarden::keys::Keyring;
use keywarden::server;
use serde_json::{json, Value};
use sqlx::Connection;

const RUN_FOR: Duration = Duration::from_secs(4);
/// wrk's connections, as in the issue that set the targets.
const CONNECTIONS: usize = 64;
/// Accounts of the small database every engine is first measured on.
const SMALL_ACCOUNTS: usize = 10_000;
const SESSIONS_PER_ACCOUNT: usize = 10;

/// What a row is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    Argon2,
    /// The bare axum route under the same load generator.
    Axum(Generator),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    Wrk,
    InProcess,
}

struct Row {
    what: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    baseline: Option<Baseline>,
}

impl Row {
    fn against(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }
}

/// Runs `op` from `concurrency` tasks for `RUN_FOR`; returns operations/s and latency percentiles.
async fn measure<F, Fut>(what: String, concurrency: usize, op: F) -> Row
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, stop, latencies) = (op.clone(), stop.clone(), latencies.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    // An operation that has nothing left to do ends its worker.
                    if !op().await {
                        break;
                    }
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    // A validation served from memory never waits; let the timer and others run.
                    tokio::task::yield_now().await;
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let deadline = tokio::time::sleep(RUN_FOR);
    tokio::pin!(deadline);
    let all_done = futures::future::join_all(workers);
    tokio::pin!(all_done);
    let results = tokio::select! {
        _ = &mut deadline => {
            stop.store(true, Ordering::Relaxed);
            all_done.await
        }
        results = &mut all_done => results,
    };
    for result in results {
        result.expect("a benchmark operation failed");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().unwrap().clone();
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
    let row =
        Row { what, per_second: all.len() as f64 / elapsed, p50_ms: pick(0.5), p99_ms: pick(0.99), baseline: None };
    eprintln!("{}: {:.0}/s", row.what, row.per_second);
    row
}

/// Whether `wrk` is installed.
fn wrk_installed() -> bool {
    std::process::Command::new("wrk").arg("--version").output().is_ok()
}

/// A wrk script that presents one token of `KW_TOKENS` (a file, one per line) per request.
const WRK_SCRIPT: &str = r#"
local tokens = {}
for line in io.lines(os.getenv("KW_TOKENS")) do tokens[#tokens + 1] = line end
local header, prefix, plex = os.getenv("KW_HEADER"), os.getenv("KW_PREFIX") or "", os.getenv("KW_PLEX")
local i = 0
request = function()
  i = i + 1
  local headers = { [header] = prefix .. tokens[(i % #tokens) + 1] }
  if plex then
    headers["X-Plex-Client-Identifier"] = plex
    headers["Accept"] = "application/json"
  end
  return wrk.format("GET", nil, headers)
end
"#;

/// How a wrk run presents tokens.
struct Presenting<'a> {
    tokens: &'a [String],
    header: &'a str,
    prefix: &'a str,
    plex: bool,
}

/// Runs wrk against `url` (in a blocking thread, so the server keeps its runtime) and reads its
/// requests/s and latency percentiles; fails on any non-2xx answer.
async fn wrk(what: String, url: String, presenting: Option<Presenting<'_>>) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("wrk");
    command.args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{}s", RUN_FOR.as_secs()), "--latency"]);
    if let Some(p) = presenting {
        let (script, tokens) = (dir.path().join("tokens.lua"), dir.path().join("tokens.txt"));
        std::fs::write(&script, WRK_SCRIPT).unwrap();
        std::fs::write(&tokens, p.tokens.join("\n")).unwrap();
        command.arg("-s").arg(&script).env("KW_TOKENS", &tokens).env("KW_HEADER", p.header).env("KW_PREFIX", p.prefix);
        if p.plex {
            command.env("KW_PLEX", "keywarden-bench");
        }
    }
    command.arg(&url);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success() && !text.contains("Non-2xx"), "wrk against {url}:\n{text}");
    let number = |line: &str| line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let millis = |value: String| {
        let (digits, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len()));
        let v: f64 = digits.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => v / 1000.0,
            "s" => v * 1000.0,
            _ => v,
        }
    };
    let line =
        |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    eprintln!("{what}: {}", line("Requests/sec:"));
    Row {
        what,
        per_second: number(&line("Requests/sec:")).parse().unwrap_or(f64::NAN),
        p50_ms: millis(number(&line("50%"))),
        p99_ms: millis(number(&line("99%"))),
        baseline: Some(Baseline::Axum(Generator::Wrk)),
    }
}

/// GET `url` from an in-process client, `CONNECTIONS` at a time; `op` may fail the run.
async fn in_process_get(what: String, http: reqwest::Client, url: String) -> Row {
    measure(what, CONNECTIONS, move || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let reply = http.get(&url).send().await.unwrap();
            assert!(reply.status().is_success());
            reply.bytes().await.unwrap();
            true
        }
    })
    .await
    .against(Baseline::Axum(Generator::InProcess))
}

/// A GET row under `generator`; the in-process client presents the first token only.
async fn get_row(generator: Generator, what: String, url: String, presenting: Option<Presenting<'_>>) -> Row {
    match generator {
        Generator::Wrk => wrk(what, url, presenting).await,
        Generator::InProcess => {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(p) = presenting {
                let name = reqwest::header::HeaderName::from_bytes(p.header.as_bytes()).unwrap();
                headers.insert(name, format!("{}{}", p.prefix, p.tokens[0]).parse().unwrap());
                headers.insert("x-plex-client-identifier", "keywarden-bench".parse().unwrap());
            }
            let http = reqwest::Client::builder().no_proxy().default_headers(headers).build().unwrap();
            in_process_get(what, http, url).await
        }
    }
}

/// A bare axum route, served by the bench itself on loopback.
async fn bare_axum() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// The resident set size of this process (the server and the in-process load generator), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1));
    kib.and_then(|k| k.parse::<f64>().ok()).map_or(f64::NAN, |k| k / 1024.0)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(CONNECTIONS * 2).build().unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let cost = HashCost::default();
    let large: usize = std::env::var("KEYWARDEN_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let generator = if wrk_installed() { Generator::Wrk } else { Generator::InProcess };
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let hasher = Arc::new(
        PasswordHasher::new(
            Arc::new(Keyring::generate()),
            cost,
            Admission { max_concurrent: cores, max_waiting: 1024, retry_after_secs: 1 },
        )
        .unwrap(),
    );
    let h = hasher.clone();
    rows.push(
        measure(
            format!(
                "argon2id hashes (m={} KiB, t={}, p={}), {cores} threads",
                cost.memory_kib, cost.iterations, cost.parallelism
            ),
            cores,
            move || {
                let h = h.clone();
                async move {
                    h.hash("correct horse battery staple").await.unwrap();
                    true
                }
            },
        )
        .await,
    );
    let axum_url = bare_axum().await;
    if generator == Generator::Wrk {
        rows.push(wrk("bare axum route (wrk)".into(), axum_url.clone(), None).await);
    } else {
        notes.push("wrk is not installed: every HTTP row uses the in-process client".to_owned());
    }
    rows.push(in_process_get("bare axum route (in-process client)".into(), client(), axum_url).await);

    let mut engines: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("KEYWARDEN_TEST_POSTGRES_URL") {
        engines.push(("postgres", Some(url)));
    }
    for (engine, admin_url) in &engines {
        for accounts in [SMALL_ACCOUNTS, large] {
            let (section, note) = bench_engine(engine, admin_url.as_deref(), cores, accounts, generator).await;
            rows.extend(section);
            notes.push(note);
        }
        rows.extend(bench_revocation(engine, admin_url.as_deref()).await);
    }
    if let Some((_, Some(admin_url))) = engines.iter().find(|(e, _)| *e == "postgres") {
        rows.push(bench_propagation(admin_url).await);
    }

    let base_of = |baseline: Baseline| {
        let name = match baseline {
            Baseline::Argon2 => "argon2id hashes",
            Baseline::Axum(Generator::Wrk) => "bare axum route (wrk)",
            Baseline::Axum(Generator::InProcess) => "bare axum route (in-process client)",
        };
        rows.iter().find(|r| r.what.starts_with(name)).map(|r| (name, r.per_second))
    };
    println!();
    println!("{:<86} {:>11} {:>8} {:>8} {:>7}  baseline", "operation", "per second", "p50 ms", "p99 ms", "ratio");
    println!("{}", "-".repeat(150));
    for row in &rows {
        let (ratio, against) = match row.baseline.and_then(base_of) {
            Some((name, base)) => (format!("{:.0} %", 100.0 * row.per_second / base), name),
            None => (String::new(), ""),
        };
        println!(
            "{:<86} {:>11.0} {:>8.2} {:>8.2} {:>7}  {against}",
            row.what, row.per_second, row.p50_ms, row.p99_ms, ratio
        );
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    println!("machine: {cores} cores; {}; load generator on the same cores", std::env::consts::ARCH);
}

/// A fresh configuration (and PostgreSQL database) for one benchmark section.
async fn bench_config(dir: &std::path::Path, admin_url: Option<&str>) -> (Config, Option<(String, String)>) {
    let mut config = Config::for_tests(dir);
    let mut database = None;
    if let Some(admin_url) = admin_url {
        let name = format!("kw_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        config.database_url = Some(format!("{base}/{name}"));
        database = Some((admin_url.to_owned(), name));
    }
    (config, database)
}

async fn drop_bench_database(database: Option<(String, String)>) {
    if let Some((admin_url, name)) = database {
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    }
}

/// Fills a database with `accounts` accounts (ten sessions each) at the configured hashing cost,
/// then measures the request path on it.
async fn bench_engine(
    engine: &str,
    admin_url: Option<&str>,
    cores: usize,
    accounts: usize,
    generator: Generator,
) -> (Vec<Row>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, database) = bench_config(dir.path(), admin_url).await;
    config.password_hashing.profile = HashProfile::Standard;
    let running = server::start(&config).await.unwrap();
    let base = format!("http://{}", running.addr);
    let state = running.state.clone();
    let idle_rss = rss_mib();
    let spec = FixtureSpec {
        accounts,
        devices_per_account: 2,
        sessions_per_account: SESSIONS_PER_ACCOUNT,
        // At least 100,000 tokens to present, each once for the cache-miss row.
        sample_every: (accounts * SESSIONS_PER_ACCOUNT / 100_000).max(1),
    };
    let mut last_report = Instant::now();
    let fixture_started = Instant::now();
    let samples = fixture::populate(&running, spec, |done, elapsed| {
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!("[{engine}] fixture: {done} of {accounts} accounts in {:.0} s", elapsed.as_secs_f64());
        }
    })
    .await
    .unwrap();
    let fixture_secs = fixture_started.elapsed().as_secs_f64();
    let sessions = accounts * SESSIONS_PER_ACCOUNT;
    let size = format!("{accounts} accounts, {sessions} sessions");
    let http = client();
    let mut rows = Vec::new();

    rows.push(get_row(generator, format!("[{engine}] GET /healthz ({size})"), format!("{base}/healthz"), None).await);
    // Hits: 10,000 sessions' tokens, each validated once before the run.
    let hits: Vec<String> = samples.iter().take(10_000).map(|s| s.access_token.to_string()).collect();
    for token in &hits {
        let reply = http.get(format!("{base}/api/v1/me")).bearer_auth(token).send().await.unwrap();
        assert_eq!(reply.status(), 200, "a fixture token is valid");
    }
    let rss_before = rss_mib();
    let bearer = Presenting { tokens: &hits, header: "Authorization", prefix: "Bearer ", plex: false };
    rows.push(
        get_row(
            generator,
            format!("[{engine}] GET /api/v1/me, cache hits (10,000 tokens in turn; {size})"),
            format!("{base}/api/v1/me"),
            Some(bearer),
        )
        .await,
    );

    // plex.tv clients: a few devices signed in through the plex API.
    let mut plex_tokens = Vec::new();
    for (i, sample) in samples.iter().take(8).enumerate() {
        let reply = http
            .post(format!("{base}/api/v2/users/signin"))
            .header("X-Plex-Client-Identifier", format!("keywarden-bench-{i}"))
            .header("Accept", "application/json")
            .form(&[("login", sample.username.as_str()), ("password", fixture::FIXTURE_PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        plex_tokens.push(reply.json::<Value>().await.unwrap()["authToken"].as_str().unwrap().to_owned());
    }
    let plex = Presenting { tokens: &plex_tokens, header: "X-Plex-Token", prefix: "", plex: true };
    rows.push(
        get_row(
            generator,
            format!("[{engine}] plex GET /api/v2/user ({size})"),
            format!("{base}/api/v2/user"),
            Some(plex),
        )
        .await,
    );

    // Misses: each of the other tokens presented for the first time.
    let misses: Arc<Vec<String>> = Arc::new(samples.iter().skip(10_000).map(|s| s.access_token.to_string()).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, url, m, n) = (http.clone(), format!("{base}/api/v1/me"), misses.clone(), next.clone());
    rows.push(
        measure(
            format!("[{engine}] GET /api/v1/me, cache misses (first use of each token; {size})"),
            CONNECTIONS,
            move || {
                let (h, url, m, n) = (h.clone(), url.clone(), m.clone(), n.clone());
                async move {
                    let Some(token) = m.get(n.fetch_add(1, Ordering::Relaxed)) else { return false };
                    let reply = h.get(&url).bearer_auth(token).send().await.unwrap();
                    assert_eq!(reply.status(), 200);
                    reply.bytes().await.unwrap();
                    true
                }
            },
        )
        .await
        .against(Baseline::Axum(Generator::InProcess)),
    );

    // Refreshes: each request takes a session's latest refresh token from the pool and puts back
    // its successor, so no two requests present the same one; every refresh must succeed.
    let pool: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(samples.iter().rev().take(CONNECTIONS * 2).map(|s| s.refresh_token.to_string()).collect()));
    let (h, url) = (http.clone(), format!("{base}/api/v1/token/refresh"));
    rows.push(
        measure(format!("[{engine}] token refreshes ({size})"), CONNECTIONS, move || {
            let (h, url, pool) = (h.clone(), url.clone(), pool.clone());
            async move {
                let Some(current) = pool.lock().unwrap().pop() else { return false };
                let reply = h.post(&url).json(&json!({ "refresh_token": current })).send().await.unwrap();
                assert_eq!(reply.status(), 200, "a fixture session refreshes");
                let body: Value = reply.json().await.unwrap();
                pool.lock().unwrap().push(body["refresh_token"].as_str().unwrap().to_owned());
                true
            }
        })
        .await
        .against(Baseline::Axum(Generator::InProcess)),
    );

    // Password sign-ins of the fixture's accounts, at the configured cost.
    let logins: Arc<Vec<String>> = Arc::new(samples.iter().map(|s| s.username.clone()).collect());
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, url) = (http.clone(), format!("{base}/api/v1/sessions"));
    rows.push(
        measure(format!("[{engine}] password sign-ins ({size})"), cores * 2, move || {
            let (h, url, logins, turn) = (h.clone(), url.clone(), logins.clone(), turn.clone());
            async move {
                let login = &logins[turn.fetch_add(1, Ordering::Relaxed) % logins.len()];
                let body = json!({ "login": login, "password": fixture::FIXTURE_PASSWORD });
                let reply = h.post(&url).json(&body).send().await.unwrap();
                assert!(reply.status() == 201 || reply.status() == 503, "{}", reply.status());
                true
            }
        })
        .await
        .against(Baseline::Argon2),
    );
    let cache = state.revocations.validations();
    let note = format!(
        "[{engine}] {size}: fixture written in {:.0} s; RSS {idle_rss:.0} MiB idle, {rss_before:.0} MiB with the database \
         filled and 10,000 tokens cached, {:.0} MiB after the rows above; validation cache {} entries, {:.1} MiB \
         (limit {} entries, {} MiB)",
        fixture_secs,
        rss_mib(),
        cache.entries(),
        cache.weighted_bytes() as f64 / 1048576.0,
        config.validation_cache.max_entries,
        config.validation_cache.max_bytes / 1048576,
    );
    running.stop().await.unwrap();
    drop_bench_database(database).await;
    (rows, note)
}

/// Signs `user` in on `count` devices in-process (weak hashing: this measures revocation, not argon2).
async fn sign_in_many(
    state: &keywarden::http::AppState,
    count: usize,
) -> Vec<keywarden::domain::sessions::IssuedTokens> {
    let mut issued = Vec::new();
    for i in 0..count {
        let request = SignIn {
            login: "bench".into(),
            password: zeroize::Zeroizing::new("bench passphrase".into()),
            device: Some(DeviceInfo { client_id: format!("device-{i}"), ..DeviceInfo::default() }),
            address: None,
            user_agent: None,
            dpop: None,
            issue: Issue::TokenPair,
            device_token: None,
        };
        issued.push(state.sessions.sign_in(request).await.unwrap());
    }
    issued
}

async fn bench_revocation(engine: &str, admin_url: Option<&str>) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, database) = bench_config(dir.path(), admin_url).await;
    // This section measures the cost of a rule, not the limit on how often an owner may write one.
    config.throttle.enabled = false;
    let running = server::start(&config).await.unwrap();
    let state = running.state.clone();
    let registration = Registration {
        email: "bench@example.com".into(),
        username: "bench".into(),
        password: "bench passphrase".into(),
        invite: None,
    };
    let account = state.accounts.register(registration, None).await.unwrap();
    let sessions = sign_in_many(&state, 1000).await;
    let mut rows = Vec::new();

    let who = state.sessions.authenticate(&sessions[0].access_token, &Presentation::default()).await.unwrap();
    let devices = state.devices.clone();
    rows.push(
        measure(format!("[{engine}] sign out of all devices, user with 1,000 sessions"), 1, move || {
            let (devices, who) = (devices.clone(), who.clone());
            async move {
                devices.sign_out_everywhere(&who, true, None).await.unwrap();
                true
            }
        })
        .await,
    );

    // A million live tokens on the web channel, written straight into the database.
    let now = keywarden::clock::now_ms();
    let user = account.id.as_str();
    let bulk = match admin_url {
        None => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
             INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) \
             SELECT randomblob(32), 'bulk', 'access', '{sid}', '{user}', {now}, {now} + 3600000 FROM n",
            sid = sessions[1].session_id
        ),
        Some(_) => format!(
            "INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) \
             SELECT decode(md5(i::text) || md5(random()::text), 'hex'), 'bulk', 'access', '{sid}', '{user}', {now}, \
             {now} + 3600000 FROM generate_series(1, 1000000) i",
            sid = sessions[1].session_id
        ),
    };
    let url = config.database_url();
    match admin_url {
        None => {
            sqlx::raw_sql(&bulk).execute(&mut sqlx::SqliteConnection::connect(&url).await.unwrap()).await.unwrap();
        }
        Some(_) => {
            sqlx::raw_sql(&bulk).execute(&mut sqlx::PgConnection::connect(&url).await.unwrap()).await.unwrap();
        }
    }
    let revocations = state.revocations.clone();
    rows.push(
        measure(format!("[{engine}] revoke a channel with 1,000,000 live tokens"), 1, move || {
            let revocations = revocations.clone();
            async move {
                revocations
                    .revoke(Revocation {
                        scope: Scope::Channel("web".into()),
                        issued_before: None,
                        except_session: None,
                        recoverable: true,
                        reason: "bench".into(),
                        actor: Actor::System,
                        address: None,
                    })
                    .await
                    .unwrap();
                true
            }
        })
        .await,
    );

    // Ten thousand rules for other accounts, then validation throughput.
    let rules = match admin_url {
        None => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
             INSERT INTO revocation_rules (scope_kind, scope_value, not_before, recoverable, reason, actor, created_at) \
             SELECT 'user', 'someone-' || i, {now}, 0, 'bench', 'system', {now} FROM n"
        ),
        Some(_) => format!(
            "INSERT INTO revocation_rules (scope_kind, scope_value, not_before, recoverable, reason, actor, created_at) \
             SELECT 'user', 'someone-' || i, {now}, 0, 'bench', 'system', {now} FROM generate_series(1, 10000) i"
        ),
    };
    match admin_url {
        None => {
            sqlx::raw_sql(&rules).execute(&mut sqlx::SqliteConnection::connect(&url).await.unwrap()).await.unwrap();
        }
        Some(_) => {
            sqlx::raw_sql(&rules).execute(&mut sqlx::PgConnection::connect(&url).await.unwrap()).await.unwrap();
        }
    }
    state.revocations.reload().await.unwrap();
    assert!(state.revocations.cache().len() >= 10_000);
    let fresh = sign_in_many(&state, 1).await.remove(0);
    let token = fresh.access_token.to_string();
    let sessions_service = state.sessions.clone();
    rows.push(
        measure(format!("[{engine}] token validations in-process, 10,000 revocation rules"), 4, move || {
            let (sessions, token) = (sessions_service.clone(), token.clone());
            async move {
                sessions.authenticate(&token, &Presentation::default()).await.unwrap();
                true
            }
        })
        .await,
    );
    running.stop().await.unwrap();
    drop_bench_database(database).await;
    rows
}

/// Two nodes on one PostgreSQL database: time from a revocation written on node A until node B
/// refuses the token, over 200 revocations.
async fn bench_propagation(admin_url: &str) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (config, database) = bench_config(dir.path(), Some(admin_url)).await;
    let node_a = server::start(&config).await.unwrap();
    let node_b = server::start(&config).await.unwrap();
    let (a, b) = (node_a.state.clone(), node_b.state.clone());
    let registration = Registration {
        email: "bench@example.com".into(),
        username: "bench".into(),
        password: "bench passphrase".into(),
        invite: None,
    };
    let account = a.accounts.register(registration, None).await.unwrap();
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let token = sign_in_many(&a, 1).await.remove(0).access_token.to_string();
        b.sessions.authenticate(&token, &Presentation::default()).await.unwrap();
        a.revocations
            .revoke(Revocation {
                scope: Scope::User(account.id.clone()),
                issued_before: None,
                except_session: None,
                recoverable: false,
                reason: "bench".into(),
                actor: Actor::System,
                address: None,
            })
            .await
            .unwrap();
        let written = Instant::now();
        while b.sessions.authenticate(&token, &Presentation::default()).await.is_ok() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    node_a.stop().await.unwrap();
    node_b.stop().await.unwrap();
    drop_bench_database(database).await;
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Row {
        what: "[postgres] revocation propagation node A -> node B (200 revocations)".into(),
        per_second: f64::NAN,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        baseline: None,
    }
}
