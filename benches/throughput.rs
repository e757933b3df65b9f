//! Throughput benchmark: prints a table of argon2id hashes/s, password sign-ins/s over HTTP, in-process
//! token validations/s and `/api/v1/me` requests/s over loopback, on SQLite (and on PostgreSQL when
//! `KEYWARDEN_TEST_POSTGRES_URL` is set). Run with `cargo bench`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywarden::config::{Config, HashProfile};
use keywarden::domain::accounts::Registration;
use keywarden::domain::audit::Actor;
use keywarden::domain::password::{Admission, HashCost, PasswordHasher};
use keywarden::domain::revocation::{Revocation, Scope};
use keywarden::domain::sessions::{DeviceInfo, Issue, Presentation, SignIn};
use keywarden::keys::Keyring;
use keywarden::server;
use serde_json::{json, Value};
use sqlx::Connection;

const RUN_FOR: Duration = Duration::from_secs(4);

struct Row {
    what: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `op` from `concurrency` tasks for `RUN_FOR`; returns operations/s and latency percentiles.
async fn measure<F, Fut>(what: String, concurrency: usize, op: F) -> Row
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
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
                    op().await;
                    mine.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    tokio::time::sleep(RUN_FOR).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().unwrap().clone();
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
    Row { what, per_second: all.len() as f64 / elapsed, p50_ms: pick(0.5), p99_ms: pick(0.99) }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let cost = HashCost::default();
    let mut rows = Vec::new();

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
                }
            },
        )
        .await,
    );

    let mut engines: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("KEYWARDEN_TEST_POSTGRES_URL") {
        engines.push(("postgres", Some(url)));
    }
    for (engine, admin_url) in &engines {
        rows.extend(bench_engine(engine, admin_url.as_deref(), cores).await);
        rows.extend(bench_revocation(engine, admin_url.as_deref()).await);
    }
    if let Some((_, Some(admin_url))) = engines.iter().find(|(e, _)| *e == "postgres") {
        rows.push(bench_propagation(admin_url).await);
    }

    println!();
    println!("{:<72} {:>12} {:>10} {:>10}", "operation", "per second", "p50 ms", "p99 ms");
    println!("{}", "-".repeat(107));
    for row in rows {
        println!("{:<72} {:>12.0} {:>10.2} {:>10.2}", row.what, row.per_second, row.p50_ms, row.p99_ms);
    }
    println!();
    println!("machine: {cores} cores; {}", std::env::consts::ARCH);
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

async fn bench_engine(engine: &str, admin_url: Option<&str>, cores: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, database) = bench_config(dir.path(), admin_url).await;
    config.password_hashing.profile = HashProfile::Standard;
    let running = server::start(&config).await.unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().unwrap();
    let created = http
        .post(format!("{base}/api/v1/accounts"))
        .json(&json!({ "email": "bench@example.com", "username": "bench", "password": "bench passphrase" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let mut rows = Vec::new();

    for (label, login, expected) in [("known account", "bench", 201), ("unknown account", "nobody-here", 401)] {
        let (http, url) = (http.clone(), format!("{base}/api/v1/sessions"));
        rows.push(
            measure(format!("[{engine}] password sign-ins over HTTP, {label}"), cores * 2, move || {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let reply = http
                        .post(&url)
                        .json(&json!({ "login": login, "password": "bench passphrase" }))
                        .send()
                        .await
                        .unwrap();
                    assert!(reply.status() == expected || reply.status() == 503, "{}", reply.status());
                }
            })
            .await,
        );
    }

    let signed_in: Value = http
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({ "login": "bench", "password": "bench passphrase" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["access_token"].as_str().unwrap().to_owned();

    let sessions = running.state.sessions.clone();
    let t = token.clone();
    rows.push(
        measure(format!("[{engine}] token validations in-process"), cores * 2, move || {
            let (sessions, t) = (sessions.clone(), t.clone());
            async move {
                sessions.authenticate(&t, &Presentation::default()).await.unwrap();
            }
        })
        .await,
    );

    let (h, url) = (http.clone(), format!("{base}/api/v1/me"));
    rows.push(
        measure(format!("[{engine}] GET /api/v1/me over loopback"), 16, move || {
            let (h, url, token) = (h.clone(), url.clone(), token.clone());
            async move {
                let reply = h.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(reply.status(), 200);
                reply.bytes().await.unwrap();
            }
        })
        .await,
    );

    running.stop().await.unwrap();
    drop_bench_database(database).await;
    rows
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
    let (config, database) = bench_config(dir.path(), admin_url).await;
    let running = server::start(&config).await.unwrap();
    let state = running.state.clone();
    let registration = Registration {
        email: "bench@example.com".into(),
        username: "bench".into(),
        password: "bench passphrase".into(),
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
            }
        })
        .await,
    );

    // A million live tokens on the web channel, written straight into the database.
    let now = keywarden::domain::clock::now_ms();
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
    }
}
