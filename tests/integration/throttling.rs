//! Guessing is throttled per account and per address with back-off, its owner still gets in from a
//! known device, and a surge across many accounts from many addresses raises the alert.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, Reply, TestServer};

crate::on_both_engines!(
    a_thousand_wrong_passwords_from_many_addresses_are_bounded_and_the_owner_still_signs_in,
    a_surge_across_accounts_raises_one_alert_and_new_devices_confirm_a_mailed_code,
    wrong_second_factor_codes_and_reset_requests_back_off,
    trips_to_a_provider_are_limited_per_address,
    a_browser_that_signed_in_before_gets_through_a_locked_account,
    ended_alert_states_and_idle_counters_are_purged_and_live_ones_kept,
);

async fn ended_alert_states_and_idle_counters_are_purged_and_live_ones_kept(engine: Engine) {
    let server = TestServer::start(engine).await;
    let store = &server.running_store();
    // Younger than the server's own purge keeps (a day), so only the calls below remove them.
    let hour_ms = 3600 * 1000;
    let now = keywarden::clock::now_ms();
    assert!(store.raise_alert_state("sign_in_code:ended", now - 3 * hour_ms, now - 2 * hour_ms).await.unwrap());
    assert!(store.raise_alert_state("sign_in_code:live", now, now + 600_000).await.unwrap());
    let attempt = |now| keywarden::store::ThrottleStep { now, forget_before: 0, free: 5, hold_until: now + 60_000 };
    store.throttle_reserve("signin:acct:idle", &attempt(now - 3 * hour_ms)).await.unwrap();
    store.throttle_reserve("signin:acct:recent", &attempt(now)).await.unwrap();

    assert_eq!(store.purge_alert_states(now - hour_ms).await.unwrap(), 1);
    assert_eq!(store.purge_throttles(now - hour_ms).await.unwrap(), 1);
    assert_eq!(store.alert_state_until("sign_in_code:ended").await.unwrap(), None);
    assert_eq!(store.alert_state_until("sign_in_code:live").await.unwrap(), Some(now + 600_000));
    assert!(store.throttle("signin:acct:idle").await.unwrap().is_none());
    assert!(store.throttle("signin:acct:recent").await.unwrap().is_some());
    server.stop().await;
}

async fn a_browser_that_signed_in_before_gets_through_a_locked_account(engine: Engine) {
    use crate::pages::{browser, get, submit};
    let server = TestServer::start_with(engine, behind_proxy).await;
    server.sign_up("paula", "paula@example.com", "paula's passphrase").await;
    let fields = [("login", "paula"), ("password", "paula's passphrase")];
    let laptop = browser();
    let signed_in = submit(&laptop, &server, "/signin", "/signin", &fields).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie =
        signed_in.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert!(cookie.iter().any(|c| c.starts_with("kw_device=kw_dv_") && c.contains("HttpOnly")), "{cookie:?}");
    let signed_out = submit(&laptop, &server, "/security", "/signout", &[]).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);

    for i in 0..12 {
        let address = format!("10.9.0.{i}");
        sign_in_from(&server, &address, json!({ "login": "paula", "password": "wrong" })).await;
    }
    // A browser never seen before is held back, with the wait on the page and in Retry-After...
    let stranger = browser();
    let held = submit(&stranger, &server, "/signin", "/signin", &fields).await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(held.headers().contains_key("retry-after"));
    assert!(held.text().await.unwrap().contains("too many attempts"), "the page says why");
    // ...while the laptop, carrying its device cookie, signs in, as the same device.
    let back = submit(&laptop, &server, "/signin", "/signin", &fields).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "the owner's browser is not locked out");
    let (_, security, _) = get(&laptop, &server, "/security").await;
    assert!(security.contains("This device"));
    let shown: serde_json::Value = serde_json::from_slice(&server.admin(&["users", "show", "paula"]).stdout).unwrap();
    assert_eq!(shown["devices"].as_array().unwrap().len(), 1, "the same device, not a new one: {shown}");
    server.stop().await;
}

async fn trips_to_a_provider_are_limited_per_address(engine: Engine) {
    let server = TestServer::start_with(engine, |config| {
        behind_proxy(config);
        // Unreachable: every trip fails after it was counted, which is all this test needs.
        config.sso.providers = vec![keywarden::domain::sso::ProviderSettings {
            id: "home".into(),
            name: "Home".into(),
            issuer: "http://127.0.0.1:9/".into(),
            client_id: "downstream".into(),
            client_secret: Some("a secret".into()),
            client_secret_file: None,
            private_key_file: None,
            private_key_id: None,
            scopes: vec!["openid".into()],
            icon: None,
        }];
    })
    .await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let trip =
        |address: &'static str| client.get(server.url("/sso/home/start")).header("x-forwarded-for", address).send();
    let mut statuses = Vec::new();
    for _ in 0..22 {
        statuses.push(trip("192.0.2.77").await.unwrap().status());
    }
    assert!(statuses[..20].iter().all(|s| *s != StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let limited = trip("192.0.2.77").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_ne!(trip("192.0.2.78").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "other addresses go on");
    server.stop().await;
}

/// Behind a trusted proxy on loopback, `X-Forwarded-For` names the client.
fn behind_proxy(config: &mut keywarden::config::Config) {
    config.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
}

async fn sign_in_from(server: &TestServer, address: &str, body: serde_json::Value) -> Reply {
    let request = server.http.post(server.url("/api/v1/sessions")).header("x-forwarded-for", address).json(&body);
    Reply::from(request.send().await.expect("sent")).await
}

async fn a_thousand_wrong_passwords_from_many_addresses_are_bounded_and_the_owner_still_signs_in(engine: Engine) {
    // A first block of a minute: the checks after the flood run while the account is still locked,
    // however long the flood took on a busy machine (with one second it sometimes had lifted).
    let server = TestServer::start_with(engine, |config| {
        behind_proxy(config);
        config.throttle.base_delay_secs = 60;
    })
    .await;
    server.sign_up("owner", "owner@example.com", "the owner's passphrase").await;
    let device = json!({ "client_id": "owner-laptop", "product": "App", "platform": "Linux", "name": "Laptop" });
    let first = sign_in_from(
        &server,
        "198.51.100.7",
        json!({ "login": "owner", "password": "the owner's passphrase", "device": device }),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let device_token = first.json["device_token"].as_str().expect("device_token").to_owned();
    assert!(device_token.starts_with("kw_dv_"));
    // Another account and its device token, made before the flood: the checks after it must run
    // while the flood's back-off still holds.
    server.sign_up("other", "other@example.com", "the other passphrase").await;
    let other =
        sign_in_from(&server, "192.0.2.1", json!({ "login": "other", "password": "the other passphrase" })).await;

    let before = server.metric("keywarden_password_verifications_total", "").await;
    let replies: Vec<Reply> = stream::iter(0..1000u32)
        .map(|i| {
            let server = &server;
            async move {
                let address = format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256);
                sign_in_from(server, &address, json!({ "login": "owner", "password": format!("guess {i}") })).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let after = server.metric("keywarden_password_verifications_total", "").await;
    let refused = replies.iter().filter(|r| r.status == StatusCode::UNAUTHORIZED).count();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(refused + limited.len(), 1000, "only 401 and 429 answers (no 5xx)");
    assert!(refused <= 40, "{refused} of 1000 guesses were checked: the account's lock must bound them");
    assert_eq!(after - before, refused as f64, "a held-back guess costs no password hash");
    for reply in &limited {
        reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let wait: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&wait), "Retry-After {wait}");
    }

    // A new device, even with the right password, waits with everyone else...
    let stranger =
        sign_in_from(&server, "203.0.113.9", json!({ "login": "owner", "password": "the owner's passphrase" })).await;
    stranger.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // ...but the owner's device, named by its device token, is not held back.
    let with_token = sign_in_from(
        &server,
        "203.0.113.9",
        json!({ "login": "owner", "password": "the owner's passphrase", "device_token": device_token }),
    )
    .await;
    assert_eq!(with_token.status, StatusCode::CREATED, "{}", with_token.text);
    assert_eq!(with_token.json["device_id"], first.json["device_id"], "the same device, not a new one");
    // A client identifier is no secret: naming the owner's device without its token earns nothing.
    let by_identifier = sign_in_from(
        &server,
        "203.0.113.9",
        json!({ "login": "owner", "password": "the owner's passphrase", "device": device }),
    )
    .await;
    by_identifier.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A device token is no key to the account: with a wrong password it is refused like any other.
    let wrong = sign_in_from(
        &server,
        "203.0.113.9",
        json!({ "login": "owner", "password": "wrong", "device_token": device_token }),
    )
    .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Another account's device token does not open this account's lock.
    let foreign = sign_in_from(
        &server,
        "203.0.113.9",
        json!({ "login": "owner", "password": "the owner's passphrase", "device_token": other.json["device_token"] }),
    )
    .await;
    foreign.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // One account under attack raises no credential-stuffing alert.
    assert_eq!(server.metric("keywarden_security_alerts_total", "").await, 0.0);
    server.stop().await;
}

async fn a_surge_across_accounts_raises_one_alert_and_new_devices_confirm_a_mailed_code(engine: Engine) {
    let server = TestServer::start_with(engine, |config| {
        behind_proxy(config);
        config.alerts.stuffing.accounts = 12;
        config.alerts.stuffing.addresses = 6;
        config.alerts.stuffing.check_every_secs = 1;
    })
    .await;
    server.sign_up("admin", "admin@example.com", "the admin's passphrase").await;
    let output = server.admin(&["users", "set-role", "admin", "admin"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    server.sign_up("victim", "victim@example.com", "the victim's passphrase").await;
    let known =
        sign_in_from(&server, "192.0.2.50", json!({ "login": "victim", "password": "the victim's passphrase" })).await;
    assert_eq!(known.status, StatusCode::CREATED);

    // Ordinary mistakes raise nothing.
    for _ in 0..3 {
        sign_in_from(&server, "192.0.2.50", json!({ "login": "victim", "password": "typo" })).await;
    }
    let alerts = &server.running_state().alerts;
    assert!(!alerts.check_for_stuffing().await.unwrap(), "three typos are no surge");
    assert_eq!(server.metric("keywarden_security_alerts_total", "").await, 0.0, "no alert for normal traffic");

    // A stolen list tried from a botnet: many accounts (most unknown here), many addresses.
    for i in 0..30 {
        let login = format!("leaked{i}@example.net");
        let address = format!("100.64.{}.{}", i % 8, i);
        let reply = sign_in_from(&server, &address, json!({ "login": login, "password": "hunter2" })).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let alert =
        server.wait_for_outbox(0, |m| m.to == ["admin@example.com"] && m.subject().contains("security alert")).await;
    assert!(alert.text().contains("credential stuffing"), "{}", alert.text());
    assert_eq!(server.metric("keywarden_security_alerts_total", "kind=\"credential_stuffing\"").await, 1.0);

    // A new device with the right password must now also type the code mailed to the account.
    let stranger =
        sign_in_from(&server, "203.0.113.77", json!({ "login": "victim", "password": "the victim's passphrase" }))
            .await;
    stranger.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(stranger.json["methods"], json!(["email"]));
    let mail =
        server.wait_for_outbox(0, |m| m.to == ["victim@example.com"] && m.subject().contains("sign-in code")).await;
    let code: String = mail.subject().chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{}", mail.subject());
    let mfa_token = stranger.json["mfa_token"].as_str().unwrap();
    let wrong = server.post("/api/v1/sessions/mfa", json!({ "mfa_token": mfa_token, "code": "000000" })).await;
    if code != "000000" {
        wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    }
    let finished = server.post("/api/v1/sessions/mfa", json!({ "mfa_token": mfa_token, "code": code })).await;
    assert_eq!(finished.status, StatusCode::CREATED, "{}", finished.text);
    // The owner's known device goes straight in.
    let again = sign_in_from(
        &server,
        "192.0.2.50",
        json!({ "login": "victim", "password": "the victim's passphrase", "device_token": known.json["device_token"] }),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);

    // Later checks keep the state up without alerting again.
    for _ in 0..2 {
        assert!(server.running_state().alerts.check_for_stuffing().await.unwrap(), "the surge is still on");
    }
    assert_eq!(server.metric("keywarden_security_alerts_total", "").await, 1.0, "one alert per surge");
    let audit = server.admin(&["audit", "verify"]);
    assert!(audit.status.success());
    server.stop().await;
}

async fn wrong_second_factor_codes_and_reset_requests_back_off(engine: Engine) {
    let server = TestServer::start_with(engine, behind_proxy).await;
    let (_, secret, _) = crate::mfa::enrol(&server, "dana").await;
    let valid: Vec<String> = (-1..=1).map(|step| crate::mfa::app_code(&secret, step)).collect();

    // Each sign-in gets a fresh challenge, but the account's counter spans them all.
    let mut answers = Vec::new();
    for i in 0..12 {
        let first =
            sign_in_from(&server, "192.0.2.8", json!({ "login": "dana", "password": "dana's passphrase" })).await;
        let Some(mfa_token) = first.json["mfa_token"].as_str() else {
            answers.push(first.status);
            continue;
        };
        let code = (0..).map(|n| format!("{:06}", 100_000 + i * 10 + n)).find(|c| !valid.contains(c)).unwrap();
        let reply = server.post("/api/v1/sessions/mfa", json!({ "mfa_token": mfa_token, "code": code })).await;
        answers.push(reply.status);
    }
    let limited = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(limited >= 5, "wrong codes must be held back: {answers:?}");
    assert!(!answers.iter().any(|s| s.is_server_error()));

    // Reset requests: one address may not flood, and one account gets a bounded number of mails.
    let mut statuses = Vec::new();
    for i in 0..30 {
        let address = if i < 25 { "192.0.2.9".to_owned() } else { format!("192.0.2.{}", 100 + i) };
        let request = server
            .http
            .post(server.url("/api/v1/password/reset-request"))
            .header("x-forwarded-for", address)
            .json(&json!({ "email": "dana@example.com" }));
        statuses.push(Reply::from(request.send().await.unwrap()).await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    server.wait_for_outbox(0, |m| m.to == ["dana@example.com"] && m.subject().contains("Reset")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let resets =
        server.outbox().iter().filter(|m| m.to == ["dana@example.com"] && m.subject().contains("Reset")).count();
    assert!((1..=8).contains(&resets), "{resets} reset mails for 30 requests");
    server.stop().await;
}
