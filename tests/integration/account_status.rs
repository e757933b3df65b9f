//! Operators acting on accounts (issue 22 §3), on both engines: `admin users disable` ends every
//! token on every node within a second and refuses sign-in only to someone who holds the
//! password; `enable` lets it back in; `unlock` lifts a lock at once; `find --email` finds an account
//! by its exact address.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{count_rows, Engine, TestServer};

crate::on_both_engines!(
    a_disabled_account_dies_on_every_node_and_says_so_only_to_its_password,
    unlock_lifts_a_sign_in_lock_at_once_and_find_matches_the_exact_address
);

fn out(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn a_disabled_account_dies_on_every_node_and_says_so_only_to_its_password(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("dana", "dana@example.com", "dana's long passphrase").await;
    let tokens = server.sign_in("dana", "dana's long passphrase", None).await;
    let other = server.another_node().await;
    let http = reqwest::Client::new();
    let me_on_other = || http.get(format!("http://{}/api/v1/me", other.addr)).bearer_auth(&tokens.access).send();
    assert_eq!(me_on_other().await.unwrap().status(), StatusCode::OK, "the other node knows the token");

    let disabled = server.admin(&["users", "disable", "dana", "--reason", "ticket 4711"]);
    assert!(disabled.status.success(), "{}", out(&disabled));
    assert!(out(&disabled).contains("disabled dana"));
    let started = Instant::now();
    loop {
        let status = me_on_other().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "the other node still accepts the token");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.me(&tokens.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.refresh(&tokens.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");

    // A wrong password learns nothing; the right one hears that the account is disabled, on either node.
    let wrong = server.post("/api/v1/sessions", json!({ "login": "dana", "password": "not the passphrase" })).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let right = server.post("/api/v1/sessions", json!({ "login": "dana", "password": "dana's long passphrase" })).await;
    right.assert_error(StatusCode::FORBIDDEN, "account_disabled");
    let on_other = http
        .post(format!("http://{}/api/v1/sessions", other.addr))
        .json(&json!({ "login": "dana@example.com", "password": "dana's long passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(on_other.status(), StatusCode::FORBIDDEN);
    assert_eq!(on_other.json::<Value>().await.unwrap()["error"], "account_disabled");
    let plex = crate::plex::sign_in(&server, "dana", "dana's long passphrase", "tv").await;
    assert_eq!(plex.status(), StatusCode::FORBIDDEN, "plex.tv clients too");
    let again = server.admin(&["users", "disable", "dana"]);
    assert!(again.status.success() && out(&again).contains("already disabled"));
    let shown: Value = serde_json::from_slice(&server.admin(&["users", "show", "dana"]).stdout).unwrap();
    assert!(shown["disabled_at"].is_string(), "{shown}");

    let enabled = server.admin(&["users", "enable", "dana", "--reason", "ticket 4711 closed"]);
    assert!(enabled.status.success(), "{}", out(&enabled));
    let back = server.sign_in("dana", "dana's long passphrase", None).await;
    assert_eq!(server.me(&back.access).await.status, StatusCode::OK);
    server.me(&tokens.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    let audited = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind IN ('account.disabled', 'account.enabled') \
         AND details LIKE '%ticket 4711%'",
    )
    .await;
    assert_eq!(audited, 2, "both with the operator's reason");
    assert!(!server.admin(&["users", "disable", "nobody-here"]).status.success());
    other.stop().await.unwrap();
    server.stop().await;
}

async fn unlock_lifts_a_sign_in_lock_at_once_and_find_matches_the_exact_address(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("lou", "Lou@Example.com", "lou's long passphrase").await;
    let guess = || server.post("/api/v1/sessions", json!({ "login": "lou", "password": "a wrong guess" }));
    let mut locked = false;
    for _ in 0..8 {
        if guess().await.status == StatusCode::TOO_MANY_REQUESTS {
            locked = true;
            break;
        }
    }
    assert!(locked, "wrong passwords lock the account");
    let right = server.post("/api/v1/sessions", json!({ "login": "lou", "password": "lou's long passphrase" })).await;
    right.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    let unlocked = server.admin(&["users", "unlock", "lou", "--reason", "owner called"]);
    assert!(unlocked.status.success(), "{}", out(&unlocked));
    assert!(out(&unlocked).contains("counter(s) cleared"), "{}", out(&unlocked));
    server.sign_in("lou", "lou's long passphrase", None).await;
    let audited =
        count_rows(&engine, &server.database_url, "SELECT COUNT(*) FROM audit_events WHERE kind = 'account.unlocked'")
            .await;
    assert_eq!(audited, 1);

    let found = server.admin(&["users", "find", "--email", "lou@example.com"]);
    assert!(found.status.success(), "{}", out(&found));
    let account: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!((account["username"].as_str(), account["disabled"].as_bool()), (Some("lou"), Some(false)));
    let missing = server.admin(&["users", "find", "--email", "someone-else@example.com"]);
    assert!(!missing.status.success() && out(&missing).contains("no account has the address"));
    server.stop().await;
}
