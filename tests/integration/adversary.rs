//! An attacker who adapts (issue 17): parallel guesses that race the throttle, sign-ins of their own
//! that would reset it, addresses walked through one IPv6 subscriber, a client identifier that is no
//! secret, and a stolen session used as an oracle for codes and passwords (every guess is sent in
//! parallel, as an attacker would); a stolen session adding a credential of its own, and a squatter
//! who signed up with someone else's address.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, Reply, TestServer};

crate::on_both_engines!(
    a_hundred_parallel_wrong_passwords_cost_at_most_the_free_failures,
    an_mfa_token_never_checks_more_codes_than_its_limit,
    signing_in_to_ones_own_account_does_not_reset_the_address_counter,
    an_ipv6_subscriber_is_counted_per_64,
    a_client_identifier_earns_no_known_device,
    step_up_codes_and_current_passwords_are_counted,
    a_stolen_session_adds_no_credential_without_a_fresh_sign_in,
    a_leaked_plex_token_cannot_approve_a_pin_or_register_a_device_key,
    an_enrolment_only_session_is_fresh_for_its_first_factor_only,
    a_provider_does_not_stand_in_for_the_second_factor,
    an_unproven_address_gets_no_new_credential,
    the_first_proof_of_an_address_removes_what_a_squatter_set_up,
    invented_request_methods_do_not_grow_metrics_or_memory,
    over_https_cookies_carry_the_host_prefix_and_a_planted_one_is_ignored,
    the_database_and_the_outbox_are_for_their_owner_only,
    what_a_stranger_can_have_made_is_bounded_per_address_and_client,
    revocation_rules_that_cannot_match_a_live_token_are_purged,
    the_reset_page_lists_what_a_thief_added_and_removes_it_in_one_click,
    after_signing_out_everywhere_what_was_added_lately_is_listed_for_removal,
    a_stale_browser_session_approves_a_device_code_only_with_its_password,
    an_unproven_address_can_have_its_link_sent_again_a_bounded_number_of_times,
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

async fn a_stolen_session_adds_no_credential_without_a_fresh_sign_in(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("ivy", "ivy@example.com", "ivy's passphrase").await;
    let stolen = server.sign_in("ivy", "ivy's passphrase", None).await;
    age_sessions(&engine, &server).await;

    // Every way of adding a credential, or changing where reset links go, asks for a fresh proof.
    for (path, body) in [
        ("/api/v1/mfa/passkeys/options", json!({})),
        (
            "/api/v1/mfa/passkeys",
            json!({ "ceremony_id": "x", "name": "Mine", "webauthn_response": crate::passkeys::forged_registration() }),
        ),
        ("/api/v1/mfa/totp", json!({})),
        ("/api/v1/email/change", json!({ "new_email": "thief@example.net" })),
    ] {
        server
            .post_with_token(path, &stolen.access, body)
            .await
            .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    }
    // Refreshing the stolen session does not make it fresh.
    let refreshed = server.refresh(&stolen.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let refreshed = crate::harness::Tokens::from(&refreshed.json);
    server
        .post_with_token("/api/v1/mfa/totp", &refreshed.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");

    // The owner, who knows the password, steps up and then may.
    let stepped = server
        .post_with_token("/api/v1/sessions/step-up", &refreshed.access, json!({ "password": "ivy's passphrase" }))
        .await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &refreshed.access, json!({})).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text);
    let begun = server.post_with_token("/api/v1/mfa/totp", &refreshed.access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    server.stop().await;
}

async fn a_leaked_plex_token_cannot_approve_a_pin_or_register_a_device_key(engine: Engine) {
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("lee", "lee@example.com", "lee's passphrase").await;
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "lee", "lee's passphrase", "lee-phone").await;
    let leaked = attribute(&signed_in.text().await.unwrap(), "authToken");
    age_sessions(&engine, &server).await;

    // The thief's own stick shows a PIN; the leaked token may not approve it.
    let pin = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "thief-stick").send().await.unwrap();
    let pin = pin.text().await.unwrap();
    let (id, code) = (attribute(&pin, "id"), attribute(&pin, "code"));
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &leaked).form(&[("code", &code)]);
    let refused = approve.send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("recent sign-in"), "in plex.tv's dialect");
    let polled = plex(&client, reqwest::Method::GET, server.url(&format!("/api/v2/pins/{id}")), "thief-stick");
    assert_eq!(
        attribute(&polled.send().await.unwrap().text().await.unwrap(), "authToken"),
        "",
        "no token for the thief"
    );

    // Nor register a device key that would mint tokens of its own.
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "thief", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "lee-phone")
        .header("X-Plex-Token", &leaked)
        .json(&jwk);
    assert_eq!(register.send().await.unwrap().status(), StatusCode::FORBIDDEN);

    // Signed out, the leaked token is dead, and nothing it could have made lives on.
    let signed_out = client.delete(server.url("/api/v2/users/signout")).header("X-Plex-Token", &leaked).send().await;
    assert_eq!(signed_out.unwrap().status(), StatusCode::NO_CONTENT);
    let user = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &leaked).send().await.unwrap();
    assert_eq!(user.status(), StatusCode::UNAUTHORIZED);

    // A fresh sign-in (what plex clients can give) approves it.
    let fresh = crate::plex::sign_in(&server, "lee", "lee's passphrase", "lee-phone").await;
    let fresh = attribute(&fresh.text().await.unwrap(), "authToken");
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &fresh).form(&[("code", &code)]);
    assert_eq!(approve.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    server.stop().await;
}

async fn an_enrolment_only_session_is_fresh_for_its_first_factor_only(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = keywarden::domain::policy::Requirement::All).await;
    server.sign_up("nia", "nia@example.com", "nia's passphrase").await;
    let limited = server.sign_in("nia", "nia's passphrase", None).await;
    // Right after its password, the limited session enrols the account's first factor…
    let begun = server.post_with_token("/api/v1/mfa/totp", &limited.access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = server.post_with_token("/api/v1/mfa/totp/confirm", &limited.access, json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    // …and nothing more: its proof was a password, and the account now has a second factor.
    for path in ["/api/v1/mfa/passkeys/options", "/api/v1/mfa/recovery-codes"] {
        server
            .post_with_token(path, &limited.access, json!({}))
            .await
            .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    }
    // A password is no step-up on such an account; its code is.
    server
        .post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "password": "nia's passphrase" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_factor");
    let code = crate::mfa::app_code(&secret, 1);
    let stepped = server.post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "code": code })).await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &limited.access, json!({})).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text);
    server.stop().await;
}

async fn a_provider_does_not_stand_in_for_the_second_factor(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (tokens, _secret, _codes) = crate::mfa::enrol(&server, "omar").await;
    age_sessions(&engine, &server).await;
    // What a re-authentication at a sign-in provider does to the session (`Reauth` trips).
    let state = server.running_state();
    let who = state.sessions.authenticate(&tokens.access, &Default::default()).await.expect("a live session");
    state.sessions.mark_verified(&who, None, "home").await.expect("marked");
    server
        .post_with_token("/api/v1/mfa/passkeys/options", &tokens.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server
        .post_with_token("/api/v1/mfa/recovery-codes", &tokens.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server.stop().await;
}

async fn an_unproven_address_gets_no_new_credential(engine: Engine) {
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine).await;
    // A squatter signs up with the victim's address, which it cannot read.
    server.sign_up_unverified("squatter", "victim@example.com", "the squatter's passphrase").await;
    let fresh = server.sign_in("squatter", "the squatter's passphrase", None).await;
    for path in ["/api/v1/mfa/passkeys/options", "/api/v1/mfa/totp"] {
        server
            .post_with_token(path, &fresh.access, json!({}))
            .await
            .assert_error(StatusCode::FORBIDDEN, "email_not_verified");
    }
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "squatter", "the squatter's passphrase", "squat-box").await;
    let token = attribute(&signed_in.text().await.unwrap(), "authToken");
    let pin = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "squat-stick").send().await.unwrap();
    let code = attribute(&pin.text().await.unwrap(), "code");
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &token).form(&[("code", &code)]);
    assert_eq!(approve.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "squat", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "squat-box")
        .header("X-Plex-Token", &token);
    assert_eq!(register.json(&jwk).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

async fn the_first_proof_of_an_address_removes_what_a_squatter_set_up(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (engine_ref, server_ref) = (&engine, &server);
    let sql = |statement: &'static str| async move {
        crate::revocation::sql(engine_ref, &server_ref.database_url, statement).await;
        server_ref.catch_up().await;
    };
    for (name, email) in [("squat-a", "owner-a@example.com"), ("squat-b", "owner-b@example.com")] {
        // Accounts a squatter set up before this rule (an older release let unproven ones add factors).
        server.sign_up_unverified(name, email, "the squatter's passphrase").await;
    }
    sql("UPDATE users SET email_verified_at = 1").await;
    let mut squatter_sessions = Vec::new();
    for name in ["squat-a", "squat-b"] {
        let session = server.sign_in(name, "the squatter's passphrase", None).await;
        let begun = server.post_with_token("/api/v1/mfa/totp", &session.access, json!({})).await;
        let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
        let code = crate::mfa::app_code(&secret, 0);
        let confirmed =
            server.post_with_token("/api/v1/mfa/totp/confirm", &session.access, json!({ "code": code })).await;
        assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
        squatter_sessions.push(session);
    }
    sql("UPDATE users SET email_verified_at = NULL").await;

    // Owner A opens the verification link that reached her mailbox; owner B asks for a reset.
    let to_a = |m: &crate::smtp::Received| m.to == ["owner-a@example.com"] && m.token("kw_ev_").is_some();
    let link = server.wait_for_outbox(0, to_a).await.token("kw_ev_").unwrap();
    let verified = server.post("/api/v1/email/verify", json!({ "token": link })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    server.post("/api/v1/password/reset-request", json!({ "email": "owner-b@example.com" })).await;
    let to_b = |m: &crate::smtp::Received| m.to == ["owner-b@example.com"] && m.token("kw_pr_").is_some();
    let link = server.wait_for_outbox(0, to_b).await.token("kw_pr_").unwrap();
    let reset = server
        .post(
            "/api/v1/password/reset",
            json!({ "token": link, "new_password": "owner b's own passphrase", "sign_out_devices": false }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);

    // The squatter's sessions are dead (B's too, though the reset kept devices), its
    // authenticator apps are gone, and each owner is told what was removed.
    for session in &squatter_sessions {
        server.me(&session.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    let a =
        server.post("/api/v1/sessions", json!({ "login": "squat-a", "password": "the squatter's passphrase" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "no second step is left: {}", a.text);
    server.sign_in("squat-b", "owner b's own passphrase", None).await;
    for owner in ["owner-a@example.com", "owner-b@example.com"] {
        let told = server.wait_for_outbox(0, |m| m.to == [owner] && m.subject().contains("was secured")).await;
        assert!(told.text().contains("authenticator app"), "{}", told.text());
    }
    server.stop().await;
}

async fn invented_request_methods_do_not_grow_metrics_or_memory(engine: Engine) {
    // A process of its own, so that its memory is its own.
    let dir = tempfile::tempdir().unwrap();
    let serving = ServeProcess::start(&engine, dir.path(), &["serve", "--listen", "127.0.0.1:0"]).await;
    let (process, base) = (&serving.process, serving.base.clone());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let metrics = || async { http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap() };
    let invented = |i: usize| {
        // A token of 20 KB: every character HTTP allows in a method name.
        let name = format!("X{i}{}", "A".repeat(20_000));
        reqwest::Method::from_bytes(name.as_bytes()).unwrap()
    };
    let send = |i: usize| {
        let (http, base) = (http.clone(), base.clone());
        async move { http.request(invented(i), format!("{base}/api/v1/me")).send().await.map(|r| r.status()) }
    };
    for i in 0..20 {
        send(i).await.unwrap();
    }
    metrics().await; // its own series, which the next read shows
    let (metrics_before, memory_before) = (metrics().await.len(), process.resident_kib());
    let answers: Vec<_> = stream::iter(20..1_020).map(send).buffer_unordered(16).collect().await;
    for answer in answers {
        let status = answer.expect("answered");
        assert!(status.is_client_error(), "an invented method gets a 4xx: {status}");
    }
    let (metrics_after, memory_after) = (metrics().await.len(), process.resident_kib());
    // The one `other` series counts them all; its digits may grow, nothing else.
    assert!(metrics_after <= metrics_before + 500, "/metrics grew from {metrics_before} to {metrics_after} bytes");
    // 1,000 methods of 20 KB kept as labels would be 20 MB.
    let grown = memory_after.saturating_sub(memory_before);
    assert!(grown < 8 * 1024, "resident memory grew by {grown} KiB");
    assert!(metrics().await.contains("method=\"other\""));
    serving.stop().await;
}

async fn over_https_cookies_carry_the_host_prefix_and_a_planted_one_is_ignored(engine: Engine) {
    use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
    let server = TestServer::start_with(engine, |c| c.public_url = Some("https://id.example.test".into())).await;
    server.sign_up("hana", "hana@example.com", "hana's passphrase").await;
    let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let set_cookies = |response: &reqwest::Response| -> Vec<String> {
        response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    let pair = |set: &str| set.split(';').next().unwrap().to_owned();

    let form = http.get(server.url("/signin")).send().await.unwrap();
    let set = set_cookies(&form);
    let csrf_cookie = set.iter().find(|c| c.starts_with("__Host-kw_csrf=")).unwrap_or_else(|| panic!("{set:?}"));
    assert!(csrf_cookie.contains("Secure") && csrf_cookie.contains("Path=/"), "{csrf_cookie}");
    assert!(!csrf_cookie.to_ascii_lowercase().contains("domain="), "a __Host- cookie names no domain");
    let csrf = crate::pages::csrf(&form.text().await.unwrap());
    let signed_in = http
        .post(server.url("/signin"))
        .header(COOKIE, pair(csrf_cookie))
        .form(&[("csrf", csrf.as_str()), ("login", "hana"), ("password", "hana's passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set = set_cookies(&signed_in);
    let session = set.iter().find(|c| c.starts_with("__Host-kw_session=")).unwrap_or_else(|| panic!("{set:?}"));
    assert!(set.iter().all(|c| c.starts_with("__Host-")), "every cookie is host-only: {set:?}");

    let security = |cookie: String| http.get(server.url("/security")).header(COOKIE, cookie).send();
    assert_eq!(security(pair(session)).await.unwrap().status(), StatusCode::OK);
    // The same session under the unprefixed name, as a sibling subdomain could set it, is not read.
    let planted = pair(session).trim_start_matches("__Host-").to_owned();
    let refused = security(planted).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert!(refused.headers()[LOCATION].to_str().unwrap().starts_with("/signin"));
    server.stop().await;
}

async fn the_database_and_the_outbox_are_for_their_owner_only(engine: Engine) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
    let serving = ServeProcess::start(&engine, dir.path(), &args).await;
    let (process, base) = (&serving.process, serving.base.clone());
    assert!(process.log().contains("holds live") || process.log().contains("hold live"), "{}", process.log());
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    if matches!(engine, Engine::Sqlite) {
        assert_eq!(mode(&data.join("keywarden.db")), 0o600, "the SQLite database");
    }
    let account = json!({ "username": "olga", "email": "olga@example.com", "password": "olga's passphrase" });
    let created = reqwest::Client::new().post(format!("{base}/api/v1/accounts")).json(&account).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let outbox = data.join("outbox");
    let mut mail = None;
    for _ in 0..200 {
        mail = std::fs::read_dir(&outbox).ok().and_then(|mut entries| entries.next()).map(|e| e.unwrap().path());
        if mail.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let mail = mail.expect("the verification mail in the outbox");
    assert_eq!(mode(&mail), 0o600, "{}", mail.display());
    assert_eq!(mode(&outbox), 0o700);
    serving.stop().await;
}

async fn what_a_stranger_can_have_made_is_bounded_per_address_and_client(engine: Engine) {
    use keywarden::domain::clients::ClientKind;
    use keywarden::keys::signing::SigningAlg;
    let server = TestServer::start_with(engine, behind_proxy).await;
    let (per_address, per_client) =
        (server.config.throttle.address_free_creations as usize, server.config.throttle.client_free_creations as usize);
    let pin_from = |address: String, client: String| {
        let request = server
            .http
            .post(server.url("/api/v2/pins"))
            .header("x-forwarded-for", address)
            .header("X-Plex-Client-Identifier", client)
            .header("X-Plex-Product", "Plex for Fire TV")
            .header("accept", "application/json");
        async move { Reply::from(request.send().await.expect("sent")).await }
    };
    // One address, a new client identifier each time (they are free to invent).
    let pins = in_parallel(per_address + 40, |i| pin_from("198.51.100.7".into(), format!("stick-{i}"))).await;
    let made = count(&pins, StatusCode::CREATED);
    assert!(made <= per_address + 2, "{made} PINs from one address; its allowance is {per_address}");
    assert!(count(&pins, StatusCode::TOO_MANY_REQUESTS) >= 38, "{:?}", statuses(&pins));
    let refused = pins.iter().find(|r| r.status == StatusCode::TOO_MANY_REQUESTS).unwrap();
    assert!(refused.headers.contains_key("retry-after"));
    // One client identifier, from addresses of its own each time.
    let pins = in_parallel(per_client + 20, |i| pin_from(format!("203.0.113.{i}"), "one-stick".into())).await;
    let made = count(&pins, StatusCode::CREATED);
    assert!(made <= per_client + 2, "{made} PINs for one client identifier; its allowance is {per_client}");

    // Device codes and passkey challenges from one address.
    crate::oidc::register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    let codes = in_parallel(per_address + 30, |_| {
        let request = server
            .http
            .post(server.url("/oauth/device_authorization"))
            .header("x-forwarded-for", "198.51.100.8")
            .form(&[("client_id", "tv"), ("scope", "openid")]);
        async move { Reply::from(request.send().await.expect("sent")).await }
    })
    .await;
    let made = count(&codes, StatusCode::OK);
    assert!(made <= per_address + 2, "{made} device codes from one address: {:?}", statuses(&codes));
    assert!(count(&codes, StatusCode::TOO_MANY_REQUESTS) >= 28);
    let challenges = in_parallel(per_address + 30, |_| {
        post_from(&server, "/api/v1/sessions/passkey/options", "198.51.100.9", None, json!({}))
    })
    .await;
    let made = count(&challenges, StatusCode::OK);
    assert!(made <= per_address + 2, "{made} passkey challenges from one address: {:?}", statuses(&challenges));
    assert!(count(&challenges, StatusCode::TOO_MANY_REQUESTS) >= 28);

    // "Sign out of all devices" (a rule and a mail each) is bounded per account.
    server.sign_up("rhea", "rhea@example.com", "rhea's passphrase").await;
    let rhea = server.sign_in("rhea", "rhea's passphrase", None).await;
    let outs = in_parallel(per_client + 10, |i| {
        let (server, token) = (&server, rhea.access.as_str());
        async move {
            let address = format!("10.9.0.{i}");
            let body = json!({ "keep_current": true });
            post_from(server, "/api/v1/sessions/revoke-all", &address, Some(token), body).await
        }
    })
    .await;
    let done = count(&outs, StatusCode::NO_CONTENT);
    assert!(done <= per_client + 2, "{done} sign-outs of all devices: {:?}", statuses(&outs));
    assert!(count(&outs, StatusCode::TOO_MANY_REQUESTS) >= 8);
    server.stop().await;
}

async fn revocation_rules_that_cannot_match_a_live_token_are_purged(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("una", "una@example.com", "una's passphrase").await;
    let laptop = server.sign_in("una", "una's passphrase", None).await;
    let rules = "SELECT COUNT(*) FROM revocation_rules";
    let mut dead = Vec::new();
    for _ in 0..5 {
        dead.push(server.sign_in("una", "una's passphrase", None).await);
        let out = server
            .post_with_token("/api/v1/sessions/revoke-all", &laptop.access, json!({ "keep_current": true }))
            .await;
        assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    }
    let store = &server.running_store();
    let now = keywarden::clock::now_ms();
    let before = crate::harness::count_rows(&engine, &server.database_url, rules).await;
    assert!(before >= 5, "{before}");
    // The last rule covers the four before it; the tokens they killed stay dead.
    store.purge_revocation_rules(now, now - 86_400_000).await.unwrap();
    assert_eq!(crate::harness::count_rows(&engine, &server.database_url, rules).await, before - 4);
    for session in &dead {
        server.me(&session.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    let restarted = server.restart_with(|_| {}).await;
    for session in &dead {
        restarted.me(&session.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    assert_eq!(restarted.me(&laptop.access).await.status, StatusCode::OK);

    // Once every token it could match has expired, the last one goes too.
    let url = restarted.database_url.clone();
    let left = crate::harness::count_rows(&engine, &url, rules).await;
    let store = &restarted.running_store();
    store.purge_revocation_rules(now, now - 86_400_000).await.unwrap();
    assert_eq!(crate::harness::count_rows(&engine, &url, rules).await, left, "young rules with live tokens stay");
    crate::revocation::sql(&engine, &url, "UPDATE tokens SET expires_at = 1").await;
    let later = now + 2 * 86_400_000;
    store.purge_revocation_rules(later, later - 86_400_000).await.unwrap();
    assert_eq!(crate::harness::count_rows(&engine, &url, rules).await, 0);
    restarted.stop().await;
}

async fn the_reset_page_lists_what_a_thief_added_and_removes_it_in_one_click(engine: Engine) {
    use crate::pages::{browser, get, location, submit};
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine).await;
    // A thief with fresh sessions (right after the owner signed in, say) adds a device key and an
    // authenticator app of their own.
    server.sign_up("tess", "tess@example.com", "tess's passphrase").await;
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "tess", "tess's passphrase", "thief-box").await;
    let token = attribute(&signed_in.text().await.unwrap(), "authToken");
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "thief-key", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "thief-box")
        .header("X-Plex-Token", &token);
    assert_eq!(register.json(&jwk).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let session = server.sign_in("tess", "tess's passphrase", None).await;
    let begun = server.post_with_token("/api/v1/mfa/totp", &session.access, json!({})).await;
    let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = server.post_with_token("/api/v1/mfa/totp/confirm", &session.access, json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);

    // The owner asks for a reset; the page lists what was added, each with its own button.
    server.post("/api/v1/password/reset-request", json!({ "email": "tess@example.com" })).await;
    let link = server.wait_for_outbox(0, |m| m.token("kw_pr_").is_some()).await.token("kw_pr_").unwrap();
    let page = format!("/reset/{link}");
    let owner = browser();
    let (status, html, _) = get(&owner, &server, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Authenticator app and its recovery codes") && html.contains("thief-key"), "{html}");
    let remove = format!("{page}/remove");
    let removed = submit(&owner, &server, &page, &remove, &[("kind", "authenticator_app"), ("id", "totp")]).await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&removed), format!("{page}?removed=1"));
    let (_, html, _) = get(&owner, &server, &page).await;
    assert!(html.contains("thief-key") && !html.contains("Authenticator app and its"), "{html}");
    let removed = submit(&owner, &server, &page, &remove, &[("kind", "device_key"), ("id", "thief-key")]).await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    let (_, html, _) = get(&owner, &server, &page).await;
    assert!(html.contains("Nothing was added"), "{html}");
    // Something not on the account, or of no known kind, is refused; a forged link too.
    let again = submit(&owner, &server, &page, &remove, &[("kind", "authenticator_app"), ("id", "totp")]).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let odd = submit(&owner, &server, &page, &remove, &[("kind", "password"), ("id", "x")]).await;
    assert_eq!(odd.status(), StatusCode::NOT_FOUND);
    let forged = owner.get(server.url("/reset/kw_pr_forged")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);

    // The link still sets the new password, and the password alone signs in again.
    let reset = server
        .post("/api/v1/password/reset", json!({ "token": link, "new_password": "tess's own new passphrase" }))
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    server.sign_in("tess", "tess's own new passphrase", None).await;
    server.stop().await;
}

async fn after_signing_out_everywhere_what_was_added_lately_is_listed_for_removal(engine: Engine) {
    use crate::pages::{browser, get, location, submit};
    let server = TestServer::start(engine).await;
    let (thief, secret, _) = crate::mfa::enrol(&server, "vik").await;
    // The owner, in a browser: password and code, then "Sign out of all devices" (keeping this one).
    let laptop = browser();
    let step =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "vik"), ("password", "vik's passphrase")]).await;
    let step = step.text().await.unwrap();
    let marker = "name=\"mfa_token\" value=\"";
    let start = step.find(marker).expect("the second step") + marker.len();
    let mfa_token: String = step[start..].chars().take_while(|c| *c != '"').collect();
    let code = crate::mfa::app_code(&secret, 1);
    let csrf = crate::pages::csrf(&step);
    let form =
        [("csrf", csrf.as_str()), ("mfa_token", mfa_token.as_str()), ("code", code.as_str()), ("next", "/security")];
    let finished = laptop.post(server.url("/signin/mfa")).form(&form).send().await.unwrap();
    assert_eq!(location(&finished), "/security");
    let out = submit(&laptop, &server, "/security", "/security/signout-all", &[("keep_current", "true")]).await;
    assert_eq!(location(&out), "/security?done=everywhere");
    server.me(&thief.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    let (_, html, _) = get(&laptop, &server, "/security?done=everywhere").await;
    assert!(html.contains("Added to your account lately") && html.contains("Authenticator app and its"), "{html}");
    assert!(!get(&laptop, &server, "/security").await.1.contains("Added to your account lately"));

    // One click removes it (the session proved itself with the code just now).
    let page = "/security?done=everywhere";
    let fields = [("kind", "authenticator_app"), ("id", "totp")];
    let removed = submit(&laptop, &server, page, "/security/recent/remove", &fields).await;
    assert_eq!(location(&removed), "/security?done=everywhere&removed=1");
    let (_, html, _) = get(&laptop, &server, "/security?done=everywhere&removed=1").await;
    assert!(html.contains("It was removed") && !html.contains("Authenticator app and its"), "{html}");
    let signed_in = server.post("/api/v1/sessions", json!({ "login": "vik", "password": "vik's passphrase" })).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "no second step is left: {}", signed_in.text);
    server.stop().await;
}

async fn a_stale_browser_session_approves_a_device_code_only_with_its_password(engine: Engine) {
    use crate::pages::{browser, get, submit};
    use keywarden::domain::clients::ClientKind;
    use keywarden::keys::signing::SigningAlg;
    let server = TestServer::start(engine.clone()).await;
    crate::oidc::register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    server.sign_up("dora", "dora@example.com", "dora's passphrase").await;
    let laptop = browser();
    let signed_in =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "dora"), ("password", "dora's passphrase")]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    // The cookie was copied a while ago; the thief's TV shows a code.
    age_sessions(&engine, &server).await;
    let started = server
        .http
        .post(server.url("/oauth/device_authorization"))
        .form(&[("client_id", "tv"), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    let started: Value = started.json().await.unwrap();
    let (user_code, device_code) =
        (started["user_code"].as_str().unwrap().to_owned(), started["device_code"].as_str().unwrap().to_owned());
    let page = format!("/link?code={user_code}");
    let (status, html, _) = get(&laptop, &server, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"link_password\""), "the confirmation asks for the password: {html}");

    let approve = |password: &'static str| {
        let fields = [("code", user_code.clone()), ("decision", "allow".to_owned()), ("password", password.to_owned())];
        let (laptop, server, page) = (&laptop, &server, page.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            submit(laptop, server, &page, "/link/confirm", &fields).await.text().await.unwrap()
        }
    };
    let poll = || async {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", "tv"),
        ];
        let answer = server.http.post(server.url("/oauth/token")).form(&form).send().await.unwrap();
        answer.json::<Value>().await.unwrap()["error"].as_str().map(str::to_owned)
    };
    for password in ["", "not dora's password"] {
        let refused = approve(password).await;
        assert!(!refused.contains("Device linked"), "approved without the password: {refused}");
        assert!(refused.contains("id=\"link_password\""), "the confirmation is shown again: {refused}");
    }
    let approved = approve("dora's passphrase").await;
    assert!(approved.contains("Device linked"), "{approved}");
    // Its first poll (none came before: polling faster than the interval would be `slow_down`).
    assert_eq!(poll().await, None, "the TV gets its tokens");
    server.stop().await;
}

async fn an_unproven_address_can_have_its_link_sent_again_a_bounded_number_of_times(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up_unverified("wren", "wren@example.com", "wren's passphrase").await;
    let wren = server.sign_in("wren", "wren's passphrase", None).await;
    let links = |server: &TestServer| {
        server
            .outbox()
            .iter()
            .filter(|m| m.to == ["wren@example.com"])
            .filter_map(|m| m.token("kw_ev_"))
            .collect::<Vec<_>>()
    };
    server.wait_for_outbox(0, |m| m.token("kw_ev_").is_some()).await;
    let sent = server.post_with_token("/api/v1/email/verification", &wren.access, json!({})).await;
    assert_eq!(
        (sent.status, &sent.json["status"]),
        (StatusCode::ACCEPTED, &json!("verification_sent")),
        "{}",
        sent.text
    );
    server.wait_for_outbox(1, |m| m.token("kw_ev_").is_some()).await;
    let links = links(&server);
    assert_eq!(links.len(), 2);
    // The new link works; the first one died with it.
    let old = server.post("/api/v1/email/verify", json!({ "token": links[0] })).await;
    old.assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    let verified = server.post_with_token("/api/v1/email/verify", &wren.access, json!({ "token": links[1] })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    server
        .post_with_token("/api/v1/email/verification", &wren.access, json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "email_already_verified");

    // Mailing links again is bounded per account, however fast it is asked for.
    server.sign_up_unverified("xavi", "xavi@example.com", "xavi's passphrase").await;
    let xavi = server.sign_in("xavi", "xavi's passphrase", None).await;
    let free = server.config.throttle.client_free_creations as usize;
    let replies =
        in_parallel(free + 10, |_| server.post_with_token("/api/v1/email/verification", &xavi.access, json!({}))).await;
    let sent = count(&replies, StatusCode::ACCEPTED);
    assert!(sent <= free + 2, "{sent} links mailed again: {:?}", statuses(&replies));
    assert!(count(&replies, StatusCode::TOO_MANY_REQUESTS) >= 8);
    server.stop().await;
}
