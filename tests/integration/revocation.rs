//! Revocation by rule: a whole channel dies with one write, admin revocations reach running servers
//! within a second, and the audit log notices when someone edits it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::harness::{Engine, TestServer, Tokens};

crate::on_both_engines!(
    revoking_a_channel_with_100_000_live_tokens_is_one_write,
    admin_revocations_reach_a_running_server_within_a_second,
    tampering_with_the_audit_log_is_detected,
    verification_is_not_fooled_by_events_appended_meanwhile,
    tokens_rotated_after_the_cut_off_die_with_their_session
);

/// A node that has not loaded a rule yet may still rotate a refresh token of a session the rule
/// kills: the new tokens are issued after the cut-off, but judged by their session's start.
async fn tokens_rotated_after_the_cut_off_die_with_their_session(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("rhea", "rhea@example.com", "rhea's passphrase").await;
    let before = server.sign_in("rhea", "rhea's passphrase", None).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut_off = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The rotation happens after the cut-off, as on a node that has not seen the rule.
    let rotated = server.refresh(&before.refresh).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let rotated = Tokens::from(&rotated.json);
    let after = server.sign_in("rhea", "rhea's passphrase", None).await;
    let cut_off = cut_off.format(&time::format_description::well_known::Rfc3339).unwrap();
    let out = server.admin(&["revoke", "--user", "rhea", "--issued-before", &cut_off, "--reason", "race"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.catch_up().await;
    server.me(&rotated.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.refresh(&rotated.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    // A session begun after the cut-off lives on.
    assert_eq!(server.me(&after.access).await.status, StatusCode::OK);
    server.stop().await;
}

/// Runs SQL against the server's database from outside, as an attacker or a test fixture would.
pub(crate) async fn sql(engine: &Engine, url: &str, statement: &str) {
    match engine {
        Engine::Sqlite => {
            sqlx::raw_sql(statement).execute(&mut sqlx::SqliteConnection::connect(url).await.unwrap()).await.unwrap();
        }
        Engine::Postgres { .. } => {
            sqlx::raw_sql(statement).execute(&mut sqlx::PgConnection::connect(url).await.unwrap()).await.unwrap();
        }
    }
}

async fn count(engine: &Engine, url: &str, query: &str) -> (i64, i64, i64) {
    match engine {
        Engine::Sqlite => {
            sqlx::query_as(query).fetch_one(&mut sqlx::SqliteConnection::connect(url).await.unwrap()).await.unwrap()
        }
        Engine::Postgres { .. } => {
            sqlx::query_as(query).fetch_one(&mut sqlx::PgConnection::connect(url).await.unwrap()).await.unwrap()
        }
    }
}

/// What a revocation could touch: every row of the token and session tables, fingerprinted.
async fn fingerprint(engine: &Engine, url: &str) -> [(i64, i64, i64); 4] {
    [
        count(
            engine,
            url,
            "SELECT COUNT(*), CAST(COALESCE(SUM(expires_at), 0) AS BIGINT), COUNT(rotated_at) FROM tokens",
        )
        .await,
        count(
            engine,
            url,
            "SELECT COUNT(*), CAST(COALESCE(SUM(last_used_at), 0) AS BIGINT), COUNT(revoked_at) FROM sessions",
        )
        .await,
        count(engine, url, "SELECT COUNT(*), COUNT(signed_out_at), CAST(0 AS BIGINT) FROM devices").await,
        count(engine, url, "SELECT COUNT(*), CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM users").await,
    ]
}

async fn revoking_a_channel_with_100_000_live_tokens_is_one_write(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let account = server.sign_up("olga", "olga@example.com", "olga's passphrase").await;
    let browser = server.sign_in("olga", "olga's passphrase", None).await;
    let tv = server.sign_in("olga", "olga's passphrase", Some(json!({ "client_id": "tv" }))).await;
    let (user, device, now) = (account["id"].as_str().unwrap(), browser.device_id.as_str(), browser_now());
    let (sessions, tokens) = match engine {
        Engine::Sqlite => (
            format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
                     INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at) \
                     SELECT 'bulk-' || i, '{user}', '{device}', 'web', {now}, {now} FROM n"),
            format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
                     INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) \
                     SELECT randomblob(32), 'bulk', 'access', 'bulk-' || (i % 1000 + 1), '{user}', {now}, {now} + 3600000 FROM n"),
        ),
        Engine::Postgres { .. } => (
            format!("INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at) \
                     SELECT 'bulk-' || i, '{user}', '{device}', 'web', {now}, {now} FROM generate_series(1, 1000) i"),
            format!("INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) \
                     SELECT decode(md5(i::text) || md5(random()::text), 'hex'), 'bulk', 'access', 'bulk-' || (i % 1000 + 1), \
                     '{user}', {now}, {now} + 3600000 FROM generate_series(1, 100000) i"),
        ),
    };
    sql(&engine, &server.database_url, &sessions).await;
    sql(&engine, &server.database_url, &tokens).await;
    let live = count(
        &engine,
        &server.database_url,
        "SELECT COUNT(*), CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM tokens WHERE kind = 'access'",
    )
    .await
    .0;
    assert!(live > 100_000, "{live} access tokens");

    let before = fingerprint(&engine, &server.database_url).await;
    let rules = "SELECT COUNT(*), CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM revocation_rules";
    // The mail worker records `mail.sent` on its own schedule; only the revocation's own event counts here.
    let events = "SELECT COUNT(*), CAST(0 AS BIGINT), CAST(0 AS BIGINT) FROM audit_events WHERE kind <> 'mail.sent'";
    let (rules_before, events_before) =
        (count(&engine, &server.database_url, rules).await.0, count(&engine, &server.database_url, events).await.0);
    let out = server.admin(&["revoke", "--channel", "web", "--reason", "proxy leak drill"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One rule row and its audit event; not one token, session or device row changed.
    assert_eq!(fingerprint(&engine, &server.database_url).await, before);
    assert_eq!(count(&engine, &server.database_url, rules).await.0, rules_before + 1);
    assert_eq!(count(&engine, &server.database_url, events).await.0, events_before + 1);

    wait_until_refused(&server, &browser).await;
    assert_eq!(server.me(&tv.access).await.status, StatusCode::OK, "the device channel is untouched");
    server.stop().await;
}

fn browser_now() -> i64 {
    keywarden::clock::now_ms()
}

/// Polls until the token is refused; returns how long that took. Fails after one second.
async fn wait_until_refused(server: &TestServer, tokens: &Tokens) -> Duration {
    let started = Instant::now();
    loop {
        let reply = server.me(&tokens.access).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            reply.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "still accepted after one second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_revocations_reach_a_running_server_within_a_second(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let account = server.sign_up("pia", "pia@example.com", "pia's passphrase").await;
    server.sign_up("quinn", "quinn@example.com", "quinn's passphrase").await;
    let device = |id: &str| Some(json!({ "client_id": id, "product": "App" }));
    let pia = |client: &'static str| server.sign_in("pia", "pia's passphrase", device(client));

    // --device: only that device.
    let (one, two) = (pia("one").await, pia("two").await);
    let out = server.admin(&["revoke", "--device", &one.device_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("device {}", one.device_id)));
    wait_until_refused(&server, &one).await;
    assert_eq!(server.me(&two.access).await.status, StatusCode::OK);

    // --user by username: every device of the account, no other account.
    let quinn = server.sign_in("quinn", "quinn's passphrase", None).await;
    let out = server.admin(&["revoke", "--user", "PIA"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(account["id"].as_str().unwrap()));
    wait_until_refused(&server, &two).await;
    assert_eq!(server.me(&quinn.access).await.status, StatusCode::OK);

    // --user with --channel: that account's tokens in that channel, nobody else's, nothing else of it.
    let (app, browser) = (pia("five").await, server.sign_in("pia", "pia's passphrase", None).await);
    let quinn_app = server.sign_in("quinn", "quinn's passphrase", device("q-app")).await;
    let out = server.admin(&["revoke", "--user", "pia", "--channel", "device", "--reason", "app leak"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("channel device of user {}", account["id"].as_str().unwrap())), "{said}");
    wait_until_refused(&server, &app).await;
    assert_eq!(server.me(&browser.access).await.status, StatusCode::OK, "pia's web session lives");
    assert_eq!(server.me(&quinn_app.access).await.status, StatusCode::OK, "quinn's app lives");

    // --issued-before in the past spares what was issued after it.
    let recent = pia("three").await;
    let out = server.admin(&["revoke", "--all", "--issued-before", "2020-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.catch_up().await;
    assert_eq!(server.me(&recent.access).await.status, StatusCode::OK);
    assert_eq!(server.me(&quinn.access).await.status, StatusCode::OK);

    // --all: everything, everywhere.
    let out = server.admin(&["revoke", "--all"]);
    assert!(out.status.success());
    let took = wait_until_refused(&server, &quinn).await;
    wait_until_refused(&server, &recent).await;
    eprintln!("admin revoke --all enforced after {took:?}");

    // Reading accounts is audited too, and shows the account's devices.
    let shown = server.admin(&["users", "show", "pia"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!((shown["username"].as_str(), shown["email"].as_str()), (Some("pia"), Some("pia@example.com")));
    assert!(shown["devices"].as_array().unwrap().len() >= 3);
    let listed = server.admin(&["users", "list", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap().as_array().unwrap().len(), 2);
    let (viewed, listed_events, _) = count(
        &engine,
        &server.database_url,
        "SELECT SUM(CASE WHEN kind = 'admin.user_viewed' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN kind = 'admin.users_listed' THEN 1 ELSE 0 END), CAST(0 AS BIGINT) FROM audit_events",
    )
    .await;
    assert_eq!((viewed, listed_events), (1, 1));

    // Bad invocations are refused with a clear message and write nothing.
    for args in [
        &["revoke"][..],
        &["revoke", "--user", "nobody"],
        &["revoke", "--all", "--issued-before", "yesterday"],
        &["revoke", "--all", "--channel", "web"],
        &["revoke", "--device", "d1", "--user", "pia"],
        &["revoke", "--channel", "web", "--user", "nobody"],
    ] {
        let out = server.admin(args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty());
    }
    let fresh = pia("four").await;
    assert_eq!(server.me(&fresh.access).await.status, StatusCode::OK, "signing in again works after --all");
    server.stop().await;
}

async fn tampering_with_the_audit_log_is_detected(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("rita", "rita@example.com", "rita's passphrase").await;
    for _ in 0..3 {
        server.sign_in("rita", "rita's passphrase", None).await;
    }
    let _ = server.post("/api/v1/sessions", json!({ "login": "rita", "password": "guess" })).await;
    // Let queued mail be delivered (and audited) first, so nothing is appended while we tamper.
    while server.running_store().mail_queue_depth().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = server.database_url.clone();
    let (total, failure, _) = count(
        &engine,
        &url,
        "SELECT COUNT(*), MAX(CASE WHEN kind = 'sign_in.failure' THEN seq END), CAST(0 AS BIGINT) FROM audit_events",
    )
    .await;
    assert!(total >= 8, "{total} events");
    let verify = || {
        let out = server.admin(&["audit", "verify"]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = verify();
    assert!(ok && out.contains(&format!("audit log intact: {total} events")), "{out}");

    // An attacker with the database hides the failed sign-in by rewriting it as a success.
    sql(&engine, &url, "UPDATE audit_events SET kind = 'sign_in.success' WHERE kind = 'sign_in.failure'").await;
    let (ok, out) = verify();
    assert!(!ok && out.contains(&format!("event {failure} was altered")), "{out}");
    sql(&engine, &url, &format!("UPDATE audit_events SET kind = 'sign_in.failure' WHERE seq = {failure}")).await;
    assert!(verify().0, "restored");

    // Deleting an event in the middle breaks the chain there.
    sql(&engine, &url, "DELETE FROM audit_events WHERE seq = 3").await;
    let (ok, out) = verify();
    assert!(!ok && out.contains("events 3 to 3 are missing") && out.contains("event 4 does not follow"), "{out}");

    // Deleting the newest events is caught by the head.
    sql(&engine, &url, &format!("DELETE FROM audit_events WHERE seq >= {}", total - 1)).await;
    let (ok, out) = verify();
    assert!(!ok && out.contains(&format!("events after {} were deleted", total - 2)), "{out}");
    server.stop().await;
}

async fn verification_is_not_fooled_by_events_appended_meanwhile(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("sid", "sid@example.com", "sid's passphrase").await;
    // The operator verifies on another thread while sign-ins keep appending events.
    let (data_dir, database_url) = (server.data_dir(), server.database_url.clone());
    let checks = tokio::task::spawn_blocking(move || {
        (0..5)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_keywarden"))
                    .args([
                        "admin",
                        "audit",
                        "verify",
                        "--data-dir",
                        data_dir.to_str().unwrap(),
                        "--database-url",
                        &database_url,
                    ])
                    .env_remove("KEYWARDEN_TEST_POSTGRES_URL")
                    .output()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    let mut appended = 0;
    while !checks.is_finished() {
        server.sign_in("sid", "sid's passphrase", None).await;
        appended += 1;
    }
    for out in checks.await.unwrap() {
        assert!(out.status.success(), "false alarm: {}", String::from_utf8_lossy(&out.stdout));
    }
    assert!(appended > 0, "no event was appended during the checks");
    server.stop().await;
}
