//! What a stranger can make the server hold or show: invented methods, planted cookies, file permissions, objects made per address, revocation rules kept forever.

use super::*;

crate::on_both_engines!(
    invented_request_methods_do_not_grow_metrics_or_memory,
    over_https_cookies_carry_the_host_prefix_and_a_planted_one_is_ignored,
    the_database_and_the_outbox_are_for_their_owner_only,
    what_a_stranger_can_have_made_is_bounded_per_address_and_client,
    revocation_rules_that_cannot_match_a_live_token_are_purged,
);

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
    use keywarden::domain::oauth::clients::ClientKind;
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
