//! The breach drill with one command: copy the database, run `breach-response --all --rotate-keys
//! --revoke all --force-password-reset --notify`, then every pre-breach token is dead, every account
//! is mailed once and must choose a new password, and the copy is useless against the new keys.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection as _;

use keywarden::keys::{KeyPurpose, Keyring, Sealed};

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(the_breach_drill_in_one_command, listed_accounts_lose_one_channel_and_keep_the_rest);

/// `--users FILE --revoke CHANNEL`: the listed accounts' tokens of that channel die; their other
/// tokens and everyone else's live.
async fn listed_accounts_lose_one_channel_and_keep_the_rest(engine: Engine) {
    let server = TestServer::start(engine).await;
    let app = |name: &str| Some(json!({ "client_id": format!("{name}-tv"), "product": "Media Server" }));
    let mut tokens = Vec::new();
    for name in ["fay", "gus"] {
        let password = format!("{name}'s passphrase");
        server.sign_up(name, &format!("{name}@example.com"), &password).await;
        tokens.push((server.sign_in(name, &password, None).await, server.sign_in(name, &password, app(name)).await));
    }
    server.sign_up("hal", "hal@example.com", "hal's passphrase").await;
    // Fay twice, by name and by address, with someone between: she counts once.
    let list = server.data_dir().join("affected.txt");
    std::fs::write(&list, "fay\nhal\nfay@example.com\n").unwrap();
    let command = ["breach-response", "--users", list.to_str().unwrap(), "--revoke", "device"];

    let dry = server.admin(&[&command[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(said.contains("revoke the \"device\" tokens of 2 listed account(s)"), "{said}");
    assert!(said.contains("breach response for 2 account(s)"), "{said}");
    assert_eq!(server.me(&tokens[0].1.access).await.status, StatusCode::OK, "a dry run revokes nothing");

    let run = server.admin(&command);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    server.catch_up().await;
    let ((fay_web, fay_app), (gus_web, gus_app)) = (&tokens[0], &tokens[1]);
    server.me(&fay_app.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    assert_eq!(server.refresh(&fay_app.refresh).await.status, StatusCode::UNAUTHORIZED);
    for (who, live) in [("fay's browser", fay_web), ("gus's browser", gus_web), ("gus's app", gus_app)] {
        assert_eq!(server.me(&live.access).await.status, StatusCode::OK, "{who}");
    }
    server.stop().await;
}

const PEOPLE: [&str; 4] = ["ana", "ben", "cai", "dee"];

/// `(id, key id, bytes)` rows of the copied database.
async fn copied(engine: &Engine, url: &str, sql: &str) -> Vec<(String, String, Vec<u8>)> {
    match engine {
        Engine::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut db).await.unwrap()
        }
        Engine::Postgres { .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut db).await.unwrap()
        }
    }
}

fn incident_mails(server: &TestServer, to: &str) -> Vec<crate::smtp::Received> {
    server.outbox().into_iter().filter(|m| m.to == [to] && m.subject().contains("action required")).collect()
}

async fn the_breach_drill_in_one_command(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let mut sessions = Vec::new();
    for name in PEOPLE {
        server.sign_up(name, &format!("{name}@example.com"), &format!("{name}'s old passphrase")).await;
        sessions.push(server.sign_in(name, &format!("{name}'s old passphrase"), None).await);
    }
    let (eve, _, _) = crate::mfa::enrol(&server, "eve").await;
    sessions.push(eve);
    let plex = server
        .http
        .post(server.url("/api/v2/users/signin"))
        .header("X-Plex-Client-Identifier", "tv-1")
        .header("X-Plex-Product", "Plex for Android (TV)")
        .header("Accept", "application/json")
        .form(&[("login", "ben"), ("password", "ben's old passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(plex.status(), StatusCode::CREATED);
    let plex_token = plex.json::<Value>().await.unwrap()["authToken"].as_str().unwrap().to_owned();
    assert!(server.admin(&["honeytokens", "seed", "2"]).status.success());

    // The attacker's copy, taken now.
    let copy_emails = copied(&engine, &server.database_url, "SELECT id, email_key_id, email_sealed FROM users").await;
    let copy_secrets =
        copied(&engine, &server.database_url, "SELECT user_id, secret_key_id, secret_sealed FROM totp_factors").await;
    let copy_hashes =
        copied(&engine, &server.database_url, "SELECT id, password_pepper_id, email_sealed FROM users").await;
    let copy_token_keys: Vec<(String, String, Vec<u8>)> =
        copied(&engine, &server.database_url, "SELECT session_id, digest_key_id, digest FROM tokens").await;
    assert_eq!(copy_emails.len(), 7, "five people and two decoys");
    let key_file = server.data_dir().join("keys.toml");
    let keys_before = std::fs::read_to_string(&key_file).unwrap();

    let command =
        ["breach-response", "--all", "--rotate-keys", "--revoke", "all", "--force-password-reset", "--notify"];
    // A dry run says what would happen and changes nothing.
    let dry = server.admin(&[&command[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("breach response for 5 account(s)") && said.contains("dry run: nothing was changed"),
        "{said}"
    );
    assert!(said.contains("rotate the pepper") && said.contains("revoke every token"), "{said}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), keys_before);
    assert_eq!(server.me(&sessions[0].access).await.status, StatusCode::OK);

    // The response.
    let run = server.admin(&command);
    let (out, err) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{out}\n{err}");
    // Off a terminal: no redrawn bar, a line every few seconds and one at the end.
    assert!(err.contains("accounts: 5/5\n") && !err.contains('\r'), "progress lines: {err}");
    assert!(err.lines().filter(|l| l.starts_with("accounts: ")).count() <= 2, "not a line per account: {err}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // Every pre-breach token is dead: access, refresh and plex.tv-style.
    for tokens in &sessions {
        server.me(&tokens.access).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(server.refresh(&tokens.refresh).await.status, StatusCode::UNAUTHORIZED);
    }
    let plex_user =
        server.http.get(server.url("/api/v2/user")).header("X-Plex-Token", &plex_token).send().await.unwrap();
    assert_eq!(plex_user.status(), StatusCode::UNAUTHORIZED);

    // Every account is mailed exactly once, decoys never.
    for name in PEOPLE.iter().chain(&["eve"]) {
        let to = format!("{name}@example.com");
        server.wait_for_outbox(0, |m| m.to == [to.as_str()] && m.subject().contains("action required")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for name in PEOPLE.iter().chain(&["eve"]) {
        assert_eq!(incident_mails(&server, &format!("{name}@example.com")).len(), 1, "{name}");
    }
    let incident_total = server.outbox().iter().filter(|m| m.subject().contains("action required")).count();
    assert_eq!(incident_total, 5, "nobody else, decoys included, got the notice");

    // Every account must choose a new password: the old one no longer signs in...
    for name in PEOPLE.iter().chain(&["eve"]) {
        let shown: Value = serde_json::from_slice(&server.admin(&["users", "show", name]).stdout).unwrap();
        assert_eq!(shown["must_reset_password"], true, "{name}");
        let old = format!("{name}'s old passphrase");
        let attempt = server.post("/api/v1/sessions", json!({ "login": name, "password": old })).await;
        assert_ne!(attempt.status, StatusCode::CREATED, "{name} signed in with the old password");
    }
    // ...and the link in the notice sets one.
    let mail = &incident_mails(&server, "ana@example.com")[0];
    let link = mail.token("kw_pr_").expect("a reset link");
    let reset = server
        .post("/api/v1/password/reset", json!({ "token": link, "new_password": "ana's brand-new passphrase" }))
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    let fresh = server.sign_in("ana@example.com", "ana's brand-new passphrase", None).await;
    assert_eq!(server.me(&fresh.access).await.json["email"], "ana@example.com");

    // The copy is useless against the new keys: nothing in it opens, verifies or matches.
    let keyring = Keyring::from_toml(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    for (id, key_id, bytes) in &copy_emails {
        let sealed = Sealed { key_id: key_id.clone(), bytes: bytes.clone() };
        assert!(keyring.open(&sealed, format!("keywarden:user:{id}:email").as_bytes()).is_err());
    }
    for (id, key_id, bytes) in &copy_secrets {
        let sealed = Sealed { key_id: key_id.clone(), bytes: bytes.clone() };
        assert!(keyring.open(&sealed, format!("totp:{id}").as_bytes()).is_err());
    }
    for (_, pepper_id, _) in &copy_hashes {
        assert!(!keyring.has_key(KeyPurpose::Pepper, pepper_id), "the copy's pepper is retired");
    }
    for (_, key_id, _) in &copy_token_keys {
        assert!(!keyring.has_key(KeyPurpose::TokenHash, key_id), "the copy's token digests match nothing");
    }
    let status: Vec<Value> = serde_json::from_slice(&server.admin(&["keys", "status", "--json"]).stdout).unwrap();
    assert_eq!(status.iter().filter(|k| k["purpose"] == "data").count(), 1, "one data key left: {status:?}");

    // The run is audited and finished; resuming it does nothing more.
    let audit = server.admin(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    let plan = out.lines().find_map(|l| l.strip_prefix("plan: ")).unwrap().split(' ').next().unwrap().to_owned();
    let again = server.admin(&["breach-response", "--resume", &plan]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("finished already"));
    assert_eq!(server.outbox().iter().filter(|m| m.subject().contains("action required")).count(), 5);
    // A run stopped after four accounts (its plan and its journal say so) continues with the
    // fifth, and only the fifth.
    let mut saved: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    saved["finished"] = json!(false);
    saved["users_done"] = json!(4);
    std::fs::write(&plan, saved.to_string()).unwrap();
    let journal = std::path::Path::new(&plan).with_extension("done");
    let handled = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(handled.lines().count(), 5, "one journal line per account");
    let four: String = handled.lines().take(4).map(|line| format!("{line}\n")).collect();
    std::fs::write(&journal, four).unwrap();
    let resumed = server.admin(&["breach-response", "--resume", &plan]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("5/5"));
    let last = saved["users"][4].as_str().unwrap().to_owned();
    let shown: Value = serde_json::from_slice(&server.admin(&["users", "show", &last]).stdout).unwrap();
    let last_email = shown["email"].as_str().unwrap().to_owned();
    server.wait_for_outbox(1, |m| m.to == [last_email.as_str()] && m.subject().contains("action required")).await;
    assert_eq!(server.outbox().iter().filter(|m| m.subject().contains("action required")).count(), 6);
    // A plan saved long before its last account (it is saved every few hundred) still mails
    // nobody twice: the journal knows who was handled.
    saved["users_done"] = json!(0);
    std::fs::write(&plan, saved.to_string()).unwrap();
    let stale = server.admin(&["breach-response", "--resume", &plan]);
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.outbox().iter().filter(|m| m.subject().contains("action required")).count(), 6);
    server.stop().await;
}
