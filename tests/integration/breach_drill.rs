//! Breach drill (P1): an attacker copies the whole database. Nothing in it is a working credential.

use std::collections::BTreeSet;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keywarden::keys::Keyring;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Connection;

use keywarden::mail::{Security, SmtpConfig, TransportKind};

use crate::harness::{Engine, TestServer, Tokens};
use crate::smtp::SmtpSink;

crate::on_both_engines!(a_stolen_database_holds_no_working_credential);

const PEOPLE: [(&str, &str, &str); 3] = [
    ("Grace", "Grace.Hopper@Example.com", "cobol compilers rule"),
    ("linus", "linus@kernel.example", "tabs are eight wide"),
    ("ada", "ada@engine.example", "analytical engine notes"),
];

/// Every value of every column of every table, as bytes, with where it came from.
type Dump = Vec<(String, Vec<u8>)>;

async fn a_stolen_database_holds_no_working_credential(engine: Engine) {
    // The mail server is down, so verification and reset links sit in the mail queue when the
    // attacker copies the database.
    let mail_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = TestServer::start_with(engine.clone(), |c| {
        c.mail.transport = TransportKind::Smtp;
        c.mail.smtp = SmtpConfig {
            host: "127.0.0.1".into(),
            port: mail_port,
            security: Security::None,
            username: None,
            password: None,
            timeout_secs: 5,
        };
        c.mail.retry_base_secs = 1;
        // Every stored value is tried as a credential below; the throttle (tested elsewhere) would
        // otherwise hold most probes back before they are checked.
        c.throttle.enabled = false;
    })
    .await;
    let mut tokens: Vec<Tokens> = Vec::new();
    for (username, email, password) in PEOPLE {
        server.sign_up_unverified(username, email, password).await;
        let device = json!({ "client_id": format!("tv-{username}"), "product": "TV app", "platform": "tvOS", "name": "Living room" });
        tokens.push(server.sign_in(username, password, Some(device)).await);
        tokens.push(server.sign_in(email, password, None).await);
    }
    // linus turns on an authenticator app: its secret and recovery codes are in the database too.
    // (He proved his address before the mail server went down: only then may he add a factor.)
    let linus = &tokens[2];
    crate::revocation::sql(
        &engine,
        &server.database_url,
        "UPDATE users SET email_verified_at = 1 WHERE username = 'linus'",
    )
    .await;
    let begun = server.post_with_token("/api/v1/mfa/totp", &linus.access, json!({})).await;
    let totp_base32 = begun.json["secret"].as_str().unwrap().to_owned();
    let totp_secret = crate::mfa::base32_decode(&totp_base32);
    let code = crate::mfa::app_code(&totp_secret, 0);
    let confirmed = server.post_with_token("/api/v1/mfa/totp/confirm", &linus.access, json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    let recovery_codes: Vec<String> =
        confirmed.json["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    // Rotate some refresh tokens so spent ones are in the database too.
    let mut spent_and_live = Vec::new();
    for t in tokens.iter().step_by(2) {
        let next = server.refresh(&t.refresh).await;
        assert_eq!(next.status, StatusCode::OK);
        spent_and_live.push(next.json["access_token"].as_str().unwrap().to_owned());
        spent_and_live.push(next.json["refresh_token"].as_str().unwrap().to_owned());
    }
    for (_, email, _) in PEOPLE {
        server.post("/api/v1/password/reset-request", json!({ "email": email })).await;
    }
    let queued = |server: &TestServer| {
        let store = server.running_store().clone();
        async move { store.mail_queue_depth().await.unwrap() }
    };
    for _ in 0..100 {
        if queued(&server).await >= 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(queued(&server).await >= 9, "verification, reset and new-device mails are queued");
    let mut all_tokens: Vec<String> =
        tokens.iter().flat_map(|t| [t.access.clone(), t.refresh.clone()]).chain(spent_and_live).collect();

    let keyring_text = std::fs::read_to_string(server.data_dir().join("keys.toml")).expect("key file");
    let keyring = Keyring::from_toml(&keyring_text).unwrap();
    let dump = dump(&engine, &server.database_url).await;
    assert!(dump.len() > 50, "the dump is suspiciously small: {}", dump.len());
    let raw_copy: Vec<(String, Vec<u8>)> = ["", "-wal", "-shm", "-journal"]
        .iter()
        .filter_map(|suffix| {
            let path = server.data_dir().join(format!("keywarden.db{suffix}"));
            std::fs::read(&path).ok().map(|bytes| (path.display().to_string(), bytes))
        })
        .collect();

    // The mail server comes back: the links the attacker would have wanted arrive.
    let sink = SmtpSink::start_on(mail_port).await;
    let mut links = Vec::new();
    for (_, email, _) in PEOPLE {
        let to = email.to_lowercase();
        links.push(sink.wait_for(&to, "Confirm your email address").await.token("kw_ev_").unwrap());
        links.push(sink.wait_for(&to, "Reset your keywarden password").await.token("kw_pr_").unwrap());
    }
    all_tokens.extend(links.iter().cloned());

    // 1. No secret appears in any value: not the emails, passwords or tokens, not an unkeyed hash
    //    of an email, and not the keys themselves.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (_, email, password) in PEOPLE {
        let normal = email.to_lowercase();
        secrets.push((format!("email {email}"), email.as_bytes().to_vec()));
        secrets.push((format!("email {normal}"), normal.as_bytes().to_vec()));
        secrets.push((format!("sha256 of {normal}"), Sha256::digest(normal.as_bytes()).to_vec()));
        secrets.push((format!("hex sha256 of {normal}"), hex::encode(Sha256::digest(normal.as_bytes())).into_bytes()));
        secrets.push((format!("password of {email}"), password.as_bytes().to_vec()));
    }
    for token in &all_tokens {
        secrets.push((format!("token {}…", &token[..10]), token.as_bytes().to_vec()));
        secrets.push(("token body".into(), token.as_bytes()[6..].to_vec()));
    }
    secrets.push(("TOTP secret (raw)".into(), totp_secret.clone()));
    secrets.push(("TOTP secret (base32)".into(), totp_base32.clone().into_bytes()));
    for code in &recovery_codes {
        let bare = code.replace('-', "");
        secrets.push(("recovery code".into(), code.clone().into_bytes()));
        secrets.push(("recovery code without its dash".into(), bare.clone().into_bytes()));
        secrets.push(("sha256 of a recovery code".into(), Sha256::digest(bare.as_bytes()).to_vec()));
    }
    for key in keyring_secrets(&keyring_text) {
        secrets.push(("keyring secret (base64)".into(), key.clone().into_bytes()));
        secrets.push(("keyring secret (raw)".into(), STANDARD.decode(&key).unwrap()));
    }
    for (place, value) in &dump {
        for (what, secret) in &secrets {
            assert!(!contains(value, secret), "{what} found in {place}");
        }
    }
    // The scan does read real data: usernames, which are public, are there.
    assert!(dump.iter().any(|(_, v)| v == b"Grace"), "the dump misses the users table");

    // 2. For SQLite, the same holds for the raw bytes of the database and its WAL.
    if matches!(engine, Engine::Sqlite) {
        assert!(raw_copy.len() >= 2, "expected the database and its WAL");
        for (path, bytes) in &raw_copy {
            for (what, secret) in &secrets {
                assert!(!contains(bytes, secret), "{what} found in the raw bytes of {path}");
            }
        }
    }

    // 3. No stored value, in any encoding an attacker might try, works as a bearer or refresh token.
    let mut candidates = BTreeSet::new();
    for (_, value) in &dump {
        if let Ok(text) = std::str::from_utf8(value) {
            candidates.insert(text.to_owned());
        }
        for encoded in [hex::encode(value), URL_SAFE_NO_PAD.encode(value)] {
            candidates.insert(format!("kw_at_{encoded}"));
            candidates.insert(format!("kw_rt_{encoded}"));
        }
    }
    candidates.retain(|c| !c.is_empty());
    for candidate in &candidates {
        let link = json!({ "token": candidate, "new_password": "attacker's passphrase" });
        let reset = server.post("/api/v1/password/reset", link).await;
        assert_eq!(reset.status, StatusCode::BAD_REQUEST, "stored value {candidate:?} works as a reset link");
        let verify = server.post("/api/v1/email/verify", json!({ "token": candidate })).await;
        assert_eq!(verify.status, StatusCode::BAD_REQUEST, "stored value {candidate:?} works as a verification link");
        let me = server.me(candidate).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "stored value {candidate:?} works as an access token");
        let refreshed = server.refresh(candidate).await;
        assert_eq!(refreshed.status, StatusCode::UNAUTHORIZED, "stored value {candidate:?} works as a refresh token");
    }
    // No stored value finishes linus's sign-in as a recovery code, nor derives his authenticator's
    // codes when taken as a TOTP secret.
    let mfa_token = |reply: crate::harness::Reply| reply.json["mfa_token"].as_str().unwrap().to_owned();
    let linus_password = json!({ "login": "linus", "password": PEOPLE[1].2 });
    let mut attempt = mfa_token(server.post("/api/v1/sessions", linus_password.clone()).await);
    let current = crate::mfa::app_code(&totp_secret, 0);
    for (tries, (place, value)) in dump.iter().enumerate() {
        let derived = totp_lite::totp_custom::<totp_lite::Sha1>(
            30,
            6,
            value,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        );
        assert!(value.len() < 16 || derived != current || value == &totp_secret, "{place} yields linus's codes");
        let Ok(text) = std::str::from_utf8(value) else { continue };
        if tries % 4 == 3 {
            attempt = mfa_token(server.post("/api/v1/sessions", linus_password.clone()).await);
        }
        let finished =
            server.post("/api/v1/sessions/mfa", json!({ "mfa_token": attempt, "recovery_code": text })).await;
        assert_ne!(finished.status, StatusCode::CREATED, "stored value in {place} works as a recovery code");
    }
    let attempt = mfa_token(server.post("/api/v1/sessions", linus_password).await);
    let control =
        server.post("/api/v1/sessions/mfa", json!({ "mfa_token": attempt, "recovery_code": recovery_codes[0] })).await;
    assert_eq!(control.status, StatusCode::CREATED, "control: a real recovery code works");

    // While the real tokens and links, which were never stored, do work: the probes could have succeeded.
    assert_eq!(server.me(&tokens[1].access).await.status, StatusCode::OK);
    let reset = server
        .post(
            "/api/v1/password/reset",
            json!({ "token": links[1], "new_password": "grace's new passphrase", "sign_out_devices": false }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "control: the mailed reset link works");

    // 4. A stored password hash cannot be tested offline without the pepper, which is not in the database.
    sink.stop();
    let hashes: Vec<(String, String)> = dump_password_hashes(&engine, &server.database_url).await;
    assert_eq!(hashes.len(), PEOPLE.len());
    for (username, phc) in hashes {
        let (_, _, password) = PEOPLE.iter().find(|(u, _, _)| *u == username).unwrap();
        let password = if username == "Grace" { "grace's new passphrase" } else { password };
        let parsed = PasswordHash::new(&phc).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_err(),
            "{username}'s hash verifies without the pepper"
        );
        let (_, pepper) = keyring.active_pepper();
        let peppered =
            Argon2::new_with_secret(&pepper, Algorithm::Argon2id, Version::V0x13, Params::default()).unwrap();
        assert!(peppered.verify_password(password.as_bytes(), &parsed).is_ok(), "control: with the pepper it verifies");
    }
    server.stop().await;
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The base64 secrets of a key file: every `id = "…"` line inside a `[….keys]` table.
fn keyring_secrets(text: &str) -> Vec<String> {
    let mut in_keys = false;
    let mut secrets = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_keys = line.ends_with(".keys]");
        } else if in_keys {
            if let Some((_, value)) = line.split_once('=') {
                secrets.push(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    assert_eq!(secrets.len(), 5, "one key per purpose (pepper, token hash, data, blind index, signing)");
    secrets
}

/// Every value of every table of a server's database, with the `table.column` it came from.
pub(crate) async fn dump(engine: &Engine, url: &str) -> Dump {
    match engine {
        Engine::Sqlite => dump_sqlite(url).await,
        Engine::Postgres { .. } => dump_postgres(url).await,
    }
}

async fn dump_sqlite(url: &str) -> Dump {
    let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut dump = Vec::new();
    for (table,) in tables {
        let columns: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT name FROM pragma_table_info('{table}')")).fetch_all(&mut db).await.unwrap();
        for (column,) in columns {
            let values: Vec<(Option<Vec<u8>>,)> =
                sqlx::query_as(&format!("SELECT CAST(\"{column}\" AS BLOB) FROM \"{table}\""))
                    .fetch_all(&mut db)
                    .await
                    .unwrap();
            dump.extend(values.into_iter().filter_map(|(v,)| v).map(|v| (format!("{table}.{column}"), v)));
        }
    }
    dump
}

async fn dump_postgres(url: &str) -> Dump {
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut dump = Vec::new();
    for (table, column, data_type) in columns {
        let place = format!("{table}.{column}");
        if data_type == "bytea" {
            let values: Vec<(Option<Vec<u8>>,)> =
                sqlx::query_as(&format!("SELECT \"{column}\" FROM \"{table}\"")).fetch_all(&mut db).await.unwrap();
            dump.extend(values.into_iter().filter_map(|(v,)| v).map(|v| (place.clone(), v)));
        } else {
            let values: Vec<(Option<String>,)> = sqlx::query_as(&format!("SELECT \"{column}\"::text FROM \"{table}\""))
                .fetch_all(&mut db)
                .await
                .unwrap();
            dump.extend(values.into_iter().filter_map(|(v,)| v).map(|v| (place.clone(), v.into_bytes())));
        }
    }
    dump
}

async fn dump_password_hashes(engine: &Engine, url: &str) -> Vec<(String, String)> {
    let query = "SELECT username, password_hash FROM users";
    match engine {
        Engine::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_as(query).fetch_all(&mut db).await.unwrap()
        }
        Engine::Postgres { .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_as(query).fetch_all(&mut db).await.unwrap()
        }
    }
}
