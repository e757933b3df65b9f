//! People deleting their own accounts (issue 22 §1), on both engines: a fresh authentication, a
//! grace period a sign-in or the mailed link cancels, then an erasure that leaves nothing naming
//! the account but its audit trail; and operators deleting, after the wait or at once. (Relying
//! parties hearing of it by back-channel logout: `oidc::logout`.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{count_rows, Engine, TestServer};
use crate::pages::{browser, csrf, get};

crate::on_both_engines!(
    a_deletion_waits_and_a_sign_in_or_the_mailed_link_keeps_the_account,
    an_erased_account_leaves_only_its_audit_trail_and_frees_its_names,
    an_operator_deletes_after_the_wait_or_at_once
);

const DAY: Duration = Duration::from_secs(86_400);

async fn delete(server: &TestServer, access: &str) -> crate::harness::Reply {
    server.delete_with_token("/api/v1/account", access).await
}

async fn erase_due(server: &TestServer) -> usize {
    server.running_state().deletions.erase_due().await.unwrap()
}

async fn a_deletion_waits_and_a_sign_in_or_the_mailed_link_keeps_the_account(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("zoe", "zoe@example.com", "zoe's long passphrase").await;
    // A session that is not fresh (a stolen one, say) cannot delete the account.
    let stale = server.sign_in("zoe", "zoe's long passphrase", None).await;
    server.advance(Duration::from_secs(600));
    delete(&server, &stale.access).await.assert_error(StatusCode::FORBIDDEN, "step_up_required");

    let fresh = server.sign_in("zoe", "zoe's long passphrase", None).await;
    let scheduled = delete(&server, &fresh.access).await;
    assert_eq!(scheduled.status, StatusCode::ACCEPTED, "{}", scheduled.text);
    assert!(scheduled.json["deletion_due_at"].is_string());
    server.me(&fresh.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.me(&stale.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    let mail = server.wait_for_outbox(0, |m| m.subject().contains("will be deleted")).await;
    let link = mail.token("kw_ka_").expect("the link that keeps the account");
    // The name stays taken during the grace period.
    let again = server
        .post(
            "/api/v1/accounts",
            json!({ "email": "zoe@example.com", "username": "zoe2", "password": "another long passphrase" }),
        )
        .await;
    again.assert_error(StatusCode::CONFLICT, "email_taken");

    // Signing in (after its normal checks) keeps it: a week later nothing is erased.
    server.sign_in("zoe", "zoe's long passphrase", None).await;
    server.advance(8 * DAY);
    assert_eq!(erase_due(&server).await, 0);
    let back = server.sign_in("zoe", "zoe's long passphrase", None).await;

    // Deleted again, then kept with the mailed link (a button press on its page).
    assert_eq!(delete(&server, &back.access).await.status, StatusCode::ACCEPTED);
    let mail = server.wait_for_outbox(1, |m| m.subject().contains("will be deleted")).await;
    let second = mail.token("kw_ka_").unwrap();
    assert_ne!(second, link);
    let path = &format!("/account/keep/{second}");
    let page = browser();
    let (status, html, _) = get(&page, &server, path).await;
    assert_eq!(status, StatusCode::OK);
    let kept = page.post(server.url(path)).form(&[("csrf", csrf(&html))]).send().await.unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
    assert!(kept.text().await.unwrap().contains("Your account is kept"));
    server.advance(8 * DAY);
    assert_eq!(erase_due(&server).await, 0);
    server.sign_in("zoe", "zoe's long passphrase", None).await;
    let cancelled = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'account.deletion_cancelled'",
    )
    .await;
    assert_eq!(cancelled, 2, "by a sign-in and by the link");
    server.stop().await;
}

/// The tables that name an account by its id, and how many of their rows name `id`.
async fn rows_naming(engine: &Engine, url: &str, id: &str) -> Vec<(String, i64)> {
    let tables = [
        "users:id",
        "tokens:user_id",
        "sessions:user_id",
        "devices:user_id",
        "mfa_challenges:user_id",
        "recovery_codes:user_id",
        "totp_factors:user_id",
        "webauthn_ceremonies:user_id",
        "passkeys:user_id",
        "oauth_codes:user_id",
        "oauth_consents:user_id",
        "oauth_device_codes:user_id",
        "sso_flows:user_id",
        "sso_identities:user_id",
        "one_time_tokens:user_id",
        "device_keys:user_id",
        "plex_claims:user_id",
        "plex_pins:user_id",
        "plex_webhooks:user_id",
        "mail_queue:user_id",
        "numeric_user_ids:user_id",
        "audit_events:user_id",
    ];
    let mut found = Vec::new();
    for table in tables {
        let (name, column) = table.split_once(':').unwrap();
        let count = count_rows(engine, url, &format!("SELECT COUNT(*) FROM {name} WHERE {column} = '{id}'")).await;
        found.push((name.to_owned(), count));
    }
    let throttles = count_rows(engine, url, &format!("SELECT COUNT(*) FROM throttles WHERE key LIKE '%{id}%'")).await;
    found.push(("throttles".to_owned(), throttles));
    found
}

async fn an_erased_account_leaves_only_its_audit_trail_and_frees_its_names(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (tokens, _, codes) = crate::mfa::enrol(&server, "yan").await;
    let id = server.me(&tokens.access).await.json["id"].as_str().unwrap().to_owned();
    // A plex token, its numeric id, a webhook, a claim token, a failed guess: rows in many tables.
    let plex = crate::plex::sign_in(&server, "yan", "yan's passphrase", "nas").await;
    assert_eq!(plex.status(), StatusCode::UNAUTHORIZED, "two-step: asks for the code");
    let _ = server.post("/api/v1/sessions", json!({ "login": "yan", "password": "a wrong guess" })).await;
    let numeric = server.running_state().accounts.plex_facts(&id).await.unwrap().numeric_id;
    let before: Vec<(String, i64)> = rows_naming(&engine, &server.database_url, &id).await;
    assert!(before.iter().filter(|(_, n)| *n > 0).count() >= 8, "{before:?}");

    // An account with two-step verification proves the second factor just now.
    delete(&server, &tokens.access).await.assert_error(StatusCode::FORBIDDEN, "step_up_required");
    let stepped =
        server.post_with_token("/api/v1/sessions/step-up", &tokens.access, json!({ "recovery_code": codes[0] })).await;
    assert!(stepped.status.is_success(), "{}", stepped.text);
    let scheduled = delete(&server, &tokens.access).await;
    assert_eq!(scheduled.status, StatusCode::ACCEPTED, "{}", scheduled.text);
    server.advance(6 * DAY);
    assert_eq!(erase_due(&server).await, 0, "not before the week is over");
    server.advance(2 * DAY);
    assert_eq!(erase_due(&server).await, 1);

    let after = rows_naming(&engine, &server.database_url, &id).await;
    for (table, count) in &after {
        if table == "audit_events" {
            assert!(*count > 0, "the audit trail is kept");
        } else {
            assert_eq!(*count, 0, "{table} still names the account");
        }
    }
    let erased = count_rows(
        &engine,
        &server.database_url,
        &format!("SELECT COUNT(*) FROM audit_events WHERE kind = 'account.erased' AND user_id = '{id}'"),
    )
    .await;
    assert_eq!(erased, 1);
    let verified = server.admin(&["audit", "verify"]);
    assert!(verified.status.success(), "the chain is intact: {}", String::from_utf8_lossy(&verified.stdout));

    // The names are free again; the numeric id is never handed out again.
    let reborn = server
        .post(
            "/api/v1/accounts",
            json!({ "email": "yan@example.com", "username": "yan", "password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(reborn.status, StatusCode::CREATED, "{}", reborn.text);
    let new_id = reborn.json["id"].as_str().unwrap().to_owned();
    let facts = server.running_state().accounts.plex_facts(&new_id).await.unwrap();
    assert!(facts.numeric_id > numeric, "{} after {numeric}", facts.numeric_id);
    server.stop().await;
}

async fn an_operator_deletes_after_the_wait_or_at_once(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("vic", "vic@example.com", "vic's long passphrase").await;
    server.sign_up("una", "una@example.com", "una's long passphrase").await;
    let vic = server.sign_in("vic", "vic's long passphrase", None).await;
    let una = server.sign_in("una", "una's long passphrase", None).await;

    let later = server.admin(&["users", "delete", "vic", "--reason", "ticket 9"]);
    assert!(later.status.success(), "{}", String::from_utf8_lossy(&later.stderr));
    assert!(String::from_utf8_lossy(&later.stdout).contains("will be erased at"));
    server.catch_up().await;
    server.me(&vic.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");

    let now = server.admin(&["users", "delete", "una", "--now", "--reason", "ticket 10"]);
    assert!(now.status.success(), "{}", String::from_utf8_lossy(&now.stderr));
    server.catch_up().await;
    assert_eq!(server.me(&una.access).await.status, StatusCode::UNAUTHORIZED);
    let gone = count_rows(&engine, &server.database_url, "SELECT COUNT(*) FROM users WHERE username = 'una'").await;
    assert_eq!(gone, 0, "erased at once");
    let wrong = server.post("/api/v1/sessions", json!({ "login": "una", "password": "una's long passphrase" })).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    server.stop().await;
}
