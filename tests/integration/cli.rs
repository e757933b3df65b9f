//! The binary as an operator runs it: `serve` with no configuration, its key file, signals, restarts.

use keywarden::keys::Keyring;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{command, Process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_configuration_keeps_its_keys_private_and_secrets_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut logs = String::new();

    let mut first = Process::spawn(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let base = format!("http://{}", first.wait_until_listening());
    let key_file = dir.path().join("keywarden-data/keys.toml");
    assert!(dir.path().join("keywarden-data/keywarden.db").exists(), "SQLite database in ./keywarden-data");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("key file generated").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file must be readable by its owner only");
    }
    assert!(first.log().contains("back up this file and store it apart from the database"));

    let (email, password) = ("Heidi@Example.com", "heidi's secret passphrase");
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let created =
        post("/api/v1/accounts", json!({ "email": email, "username": "heidi", "password": password })).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let wrong = post("/api/v1/sessions", json!({ "login": email, "password": "not it at all" })).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let signed_in: Value =
        post("/api/v1/sessions", json!({ "login": email, "password": password })).await.unwrap().json().await.unwrap();
    let refreshed: Value = post("/api/v1/token/refresh", json!({ "refresh_token": signed_in["refresh_token"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = refreshed["access_token"].as_str().unwrap();
    let me = http.get(format!("{base}/api/v1/me")).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    let (clean_exit, log) = first.terminate();
    assert!(clean_exit, "SIGTERM must stop the server gracefully: {log}");
    assert!(log.contains("\"message\":\"stopped\""), "{log}");
    logs.push_str(&log);

    // A restart reuses the key file: the account still signs in, no new keyring is generated.
    let mut second = Process::spawn(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let base = format!("http://{}", second.wait_until_listening());
    let again = http
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({ "login": "heidi", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let (clean_exit, log) = second.terminate();
    assert!(clean_exit && !log.contains("generated a new keyring"), "{log}");
    logs.push_str(&log);

    // Secrets never reach the logs, even at debug level.
    let secrets = [
        email.to_owned(),
        email.to_lowercase(),
        password.to_owned(),
        signed_in["access_token"].as_str().unwrap().to_owned(),
        signed_in["refresh_token"].as_str().unwrap().to_owned(),
        access.to_owned(),
        "not it at all".to_owned(),
    ];
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "{secret:?} appears in the logs");
    }
    assert!(!logs.contains("kw_at_") && !logs.contains("kw_rt_"), "a token appears in the logs");

    // Without its key file, a database with accounts refuses to start rather than make new keys.
    let kept = std::fs::read_to_string(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let (ok, log) = Process::spawn(dir.path(), &["serve", "--listen", "127.0.0.1:0"]).wait_for_exit();
    assert!(!ok && log.contains("key file") && log.contains("missing"), "{log}");
    assert!(!key_file.exists(), "no new keyring may be generated for a database with accounts");

    // A different keyring is recognised as foreign and refused.
    std::fs::write(&key_file, Keyring::generate().to_toml()).unwrap();
    let (ok, log) = Process::spawn(dir.path(), &["serve", "--listen", "127.0.0.1:0"]).wait_for_exit();
    assert!(!ok && log.contains("different keyring"), "{log}");
    std::fs::write(&key_file, kept).unwrap();
}

#[test]
fn version_check_config_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let version = command(dir.path()).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("keywarden {}", env!("CARGO_PKG_VERSION")));

    std::fs::write(dir.path().join("k.toml"), "database_url = \"postgres://kw:hunter22@db.example/kw\"\n").unwrap();
    let checked = command(dir.path()).args(["check-config", "--config", "k.toml"]).output().unwrap();
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(out.contains("postgres://kw:***@db.example/kw") && !out.contains("hunter22"), "{out}");
    assert!(out.contains("configuration is valid"));

    std::fs::write(dir.path().join("bad.toml"), "listn = \"127.0.0.1:1\"\n").unwrap();
    let refused = command(dir.path()).args(["check-config", "--config", "bad.toml"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("listn"));

    let migrated = command(dir.path()).args(["migrate", "--data-dir", "elsewhere"]).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert!(dir.path().join("elsewhere/keywarden.db").exists());
}
