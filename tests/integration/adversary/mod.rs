//! An attacker who adapts (issue 17): parallel guesses that race the throttle, sign-ins of their own
//! that would reset it, addresses walked through one IPv6 subscriber, a client identifier that is no
//! secret, and a stolen session used as an oracle for codes and passwords (every guess is sent in
//! parallel, as an attacker would); a stolen session adding a credential of its own, and a squatter
//! who signed up with someone else's address.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, Reply, TestServer};

mod credentials;
mod surface;

crate::on_both_engines!(
    a_hundred_parallel_wrong_passwords_cost_at_most_the_free_failures,
    an_mfa_token_never_checks_more_codes_than_its_limit,
    signing_in_to_ones_own_account_does_not_reset_the_address_counter,
    an_ipv6_subscriber_is_counted_per_64,
    a_client_identifier_earns_no_known_device,
    step_up_codes_and_current_passwords_are_counted,
);

/// `keywarden serve` as a process of its own (so its memory and files are its own), on the
/// engine's database: a new one on PostgreSQL, dropped again by `stop`.
struct ServeProcess {
    process: crate::process::Process,
    base: String,
    /// The PostgreSQL server's admin URL and the database made for this process.
    database: Option<(String, String)>,
}

impl ServeProcess {
    async fn start(engine: &Engine, dir: &std::path::Path, args: &[&str]) -> Self {
        let (url, database) = match engine {
            Engine::Sqlite => (None, None),
            Engine::Postgres { admin_url } => {
                let (url, name) = crate::harness::create_database(admin_url).await;
                (Some(url), Some((admin_url.clone(), name)))
            }
        };
        let env: Vec<(&str, &str)> = url.iter().map(|url| ("KEYWARDEN_DATABASE_URL", url.as_str())).collect();
        let mut process = crate::process::Process::spawn_with(dir, args, &env);
        let base = format!("http://{}", process.wait_until_listening());
        Self { process, base, database }
    }

    async fn stop(self) {
        let _ = self.process.terminate();
        if let Some((admin_url, name)) = &self.database {
            crate::harness::drop_database(admin_url, name).await;
        }
    }
}

/// Moves every session's last proof of its person into the past: a token stolen a while ago.
async fn age_sessions(engine: &Engine, server: &TestServer) {
    crate::revocation::sql(engine, &server.database_url, "UPDATE sessions SET verified_at = 0").await;
    server.catch_up().await;
}

/// Behind a trusted proxy on loopback, `X-Forwarded-For` names the client.
fn behind_proxy(config: &mut keywarden::config::Config) {
    config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
}

async fn post_from(server: &TestServer, path: &str, address: &str, token: Option<&str>, body: Value) -> Reply {
    let mut request = server.http.post(server.url(path)).header("x-forwarded-for", address).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::from(request.send().await.expect("sent")).await
}

/// Sends `n` requests at once (all in flight together) and collects the answers.
async fn in_parallel<F, Fut>(n: usize, request: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    stream::iter(0..n).map(request).buffer_unordered(n).collect().await
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.status.as_u16()).collect()
}

fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

async fn a_hundred_parallel_wrong_passwords_cost_at_most_the_free_failures(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    server.sign_up("target", "target@example.com", "the target's passphrase").await;
    let free = server.config.throttle.account_free_failures;

    let before = server.metric("keywarden_password_verifications_total", "").await;
    let replies = in_parallel(100, |i| {
        let body = json!({ "login": "target", "password": format!("guess {i}") });
        let address = format!("10.1.{}.{}", i / 256, i % 256);
        let server = &server;
        async move { post_from(server, "/api/v1/sessions", &address, None, body).await }
    })
    .await;
    let checked = server.metric("keywarden_password_verifications_total", "").await - before;
    assert!(replies.iter().all(|r| [401, 429, 503].contains(&r.status.as_u16())), "only refusals, never a 500");
    assert!(checked <= (free + 2) as f64, "{checked} of 100 parallel guesses were verified; the limit is {free}");
    assert_eq!(count(&replies, StatusCode::UNAUTHORIZED) as f64, checked, "every checked guess was a wrong one");
    for reply in replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS) {
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(reply.headers.contains_key("retry-after"));
    }
    server.stop().await;
}

async fn an_mfa_token_never_checks_more_codes_than_its_limit(engine: Engine) {
    // The account's counter is set high, so only the sign-in attempt's own limit holds the codes.
    let server = TestServer::start_with(engine, |config| {
        behind_proxy(config);
        config.throttle.account_free_failures = 1000;
        config.throttle.address_free_failures = 1000;
    })
    .await;
    let (_, secret, _) = crate::mfa::enrol(&server, "mona").await;
    let valid: Vec<String> = (-1..=1).map(|step| crate::mfa::app_code(&secret, step)).collect();
    let first = server.post("/api/v1/sessions", json!({ "login": "mona", "password": "mona's passphrase" })).await;
    first.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    let mfa_token = first.json["mfa_token"].as_str().unwrap().to_owned();
    let limit = server.config.mfa.max_code_attempts as usize;

    let wrong: Vec<String> =
        (0..).map(|n| format!("{:06}", 200_000 + n)).filter(|c| !valid.contains(c)).take(20).collect();
    let replies = in_parallel(20, |i| {
        let body = json!({ "mfa_token": mfa_token, "code": wrong[i] });
        let server = &server;
        async move { post_from(server, "/api/v1/sessions/mfa", "192.0.2.30", None, body).await }
    })
    .await;
    let checked = replies.iter().filter(|r| r.error_code() == "invalid_code").count();
    assert!((1..=limit).contains(&checked), "{checked} of 20 parallel codes were checked; the limit is {limit}");
    let codes: Vec<&str> = replies.iter().map(Reply::error_code).collect();
    assert!(codes.iter().all(|c| ["invalid_code", "invalid_mfa_token"].contains(c)), "{codes:?}");
    // Spent: even the right code does not finish this attempt now.
    let right = server.post("/api/v1/sessions/mfa", json!({ "mfa_token": mfa_token, "code": valid[1] })).await;
    right.assert_error(StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    server.stop().await;
}

async fn signing_in_to_ones_own_account_does_not_reset_the_address_counter(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    server.sign_up("mallory", "mallory@example.com", "mallory's own passphrase").await;
    let free = server.config.throttle.address_free_failures as usize;
    let own = json!({ "login": "mallory", "password": "mallory's own passphrase" });

    // Guesses at many accounts from one address, each round ended by a good sign-in of the
    // guesser's own: the address is still counted, and held back once past its free failures.
    let mut answers = Vec::new();
    for round in 0..3 {
        for i in 0..free - 1 {
            let guess = json!({ "login": format!("someone{round}x{i}"), "password": "hunter2" });
            answers.push(post_from(&server, "/api/v1/sessions", "198.51.100.66", None, guess).await.status);
        }
        answers.push(post_from(&server, "/api/v1/sessions", "198.51.100.66", None, own.clone()).await.status);
    }
    let limited = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    let checked = answers.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    assert!(limited > 0, "{} guesses from one address and never a 429: {answers:?}", answers.len());
    assert!(checked <= free + 2, "{checked} guesses checked from one address; its limit is {free}");
    // The guesser's own sign-in in the first round did go through.
    assert_eq!(answers[free - 1], StatusCode::CREATED);
    // Another address is not held back by this one.
    let elsewhere = post_from(&server, "/api/v1/sessions", "198.51.100.67", None, own).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.text);
    server.stop().await;
}

async fn an_ipv6_subscriber_is_counted_per_64(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    let free = server.config.throttle.address_free_failures as usize;
    // Every guess from a new address in the same /64, each at a different login name.
    let replies = in_parallel(free + 10, |i| {
        let address = format!("2001:db8:77:1:{:x}::{:x}", i + 1, i * 7 + 3);
        let body = json!({ "login": format!("nobody{i}"), "password": "hunter2" });
        let server = &server;
        async move { post_from(server, "/api/v1/sessions", &address, None, body).await }
    })
    .await;
    let checked = count(&replies, StatusCode::UNAUTHORIZED);
    assert!(checked <= free + 2, "{checked} guesses from one /64 were checked; its limit is {free}");
    assert!(count(&replies, StatusCode::TOO_MANY_REQUESTS) >= 8);
    // The neighbouring /64 is another subscriber.
    let neighbour = json!({ "login": "nobody-else", "password": "hunter2" });
    let other = post_from(&server, "/api/v1/sessions", "2001:db8:77:2::1", None, neighbour).await;
    other.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    server.stop().await;
}

async fn a_client_identifier_earns_no_known_device(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    server.sign_up("olga", "olga@example.com", "olga's passphrase").await;
    let tv = json!({ "client_id": "olgas-tv", "product": "TV app", "platform": "tvOS", "name": "Living room" });
    let body = json!({ "login": "olga", "password": "olga's passphrase", "device": tv });
    let first = post_from(&server, "/api/v1/sessions", "192.0.2.10", None, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let device_token = first.json["device_token"].as_str().unwrap().to_owned();

    // The account is locked by guesses from many addresses.
    let free = server.config.throttle.account_free_failures as usize;
    for i in 0..free + 1 {
        let guess = json!({ "login": "olga", "password": format!("guess {i}") });
        post_from(&server, "/api/v1/sessions", &format!("10.2.0.{i}"), None, guess).await;
    }
    // Naming the TV's identifier (no secret: it is in every request the TV sends) buys nothing:
    // the guess is held back unchecked, with the account.
    let before = server.metric("keywarden_password_verifications_total", "").await;
    let guesses = in_parallel(10, |i| {
        let guess = json!({ "login": "olga", "password": format!("tv guess {i}"), "device": tv });
        let server = &server;
        async move { post_from(server, "/api/v1/sessions", "203.0.113.5", None, guess).await }
    })
    .await;
    assert_eq!(count(&guesses, StatusCode::TOO_MANY_REQUESTS), 10, "{:?}", statuses(&guesses));
    let plex = server
        .http
        .post(server.url("/api/v2/users/signin"))
        .header("x-forwarded-for", "203.0.113.5")
        .header("X-Plex-Client-Identifier", "olgas-tv")
        .header("X-Plex-Product", "TV app")
        .form(&[("login", "olga"), ("password", "plex guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(plex.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.metric("keywarden_password_verifications_total", "").await, before, "nothing was checked");
    // The TV itself, proving who it is with its device token, is not locked out.
    let with_token =
        json!({ "login": "olga", "password": "olga's passphrase", "device": tv, "device_token": device_token });
    let tv_again = post_from(&server, "/api/v1/sessions", "192.0.2.10", None, with_token).await;
    assert_eq!(tv_again.status, StatusCode::CREATED, "{}", tv_again.text);
    assert_eq!(tv_again.json["device_id"], first.json["device_id"]);
    server.stop().await;
}

async fn step_up_codes_and_current_passwords_are_counted(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    let free = server.config.throttle.account_free_failures as usize;
    // A stolen session guessing the owner's authenticator code through step-up.
    let (tokens, secret, _) = crate::mfa::enrol(&server, "sven").await;
    let valid: Vec<String> = (-1..=1).map(|step| crate::mfa::app_code(&secret, step)).collect();
    let wrong: Vec<String> =
        (0..).map(|n| format!("{:06}", 300_000 + n)).filter(|c| !valid.contains(c)).take(60).collect();
    let replies = in_parallel(60, |i| {
        let body = json!({ "code": wrong[i] });
        let (server, token) = (&server, tokens.access.as_str());
        async move { post_from(server, "/api/v1/sessions/step-up", "192.0.2.40", Some(token), body).await }
    })
    .await;
    let checked = count(&replies, StatusCode::UNAUTHORIZED);
    assert!(checked <= free + 2, "{checked} of 60 step-up codes were checked; the limit is {free}");
    assert!(count(&replies, StatusCode::TOO_MANY_REQUESTS) >= 50, "{:?}", statuses(&replies));
    // The right code waits too while the account is held back.
    let right =
        post_from(&server, "/api/v1/sessions/step-up", "192.0.2.41", Some(&tokens.access), json!({ "code": valid[1] }))
            .await;
    right.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // A stolen session guessing the current password of an account without a second factor.
    server.sign_up("pavla", "pavla@example.com", "pavla's passphrase").await;
    let pavla = server.sign_in("pavla", "pavla's passphrase", None).await;
    let before = server.metric("keywarden_password_verifications_total", "").await;
    let changes = in_parallel(30, |i| {
        let body = json!({ "current_password": format!("guess {i}"), "new_password": "a brand new passphrase", "sign_out_devices": false });
        let (server, token) = (&server, pavla.access.as_str());
        async move { post_from(server, "/api/v1/password/change", &format!("10.3.0.{i}"), Some(token), body).await }
    })
    .await;
    let checked = server.metric("keywarden_password_verifications_total", "").await - before;
    assert!(checked <= (free + 2) as f64, "{checked} of 30 current passwords were checked; the limit is {free}");
    assert_eq!(count(&changes, StatusCode::FORBIDDEN) as f64, checked, "{:?}", statuses(&changes));
    assert!(count(&changes, StatusCode::TOO_MANY_REQUESTS) >= 20);
    // And through step-up with a password: the same account counter holds it.
    let step_up = json!({ "password": "one more guess" });
    let held = post_from(&server, "/api/v1/sessions/step-up", "10.3.1.1", Some(&pavla.access), step_up).await;
    held.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    server.stop().await;
}
