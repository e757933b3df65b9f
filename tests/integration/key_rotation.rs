//! Every key rotates while sign-ins, validations and refreshes run, without one failing; new values
//! use the new keys, old ones are re-wrapped, and retiring a key kills what only it protected.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(each_key_rotates_while_sign_ins_and_validations_run);

const KEYS: [(&str, &str); 5] = [
    ("--pepper", "pepper"),
    ("--token-key", "token_hash"),
    ("--data-key", "data"),
    ("--blind-index-key", "blind_index"),
    ("--signing-key", "signing"),
];

fn status(server: &TestServer) -> Vec<Value> {
    let output = server.admin(&["keys", "status", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn active(status: &[Value], purpose: &str) -> String {
    let entry = status.iter().find(|u| u["purpose"] == purpose && u["active"] == true).expect("an active key");
    entry["key_id"].as_str().unwrap().to_owned()
}

fn rows(status: &[Value], purpose: &str, key_id: &str) -> i64 {
    status
        .iter()
        .filter(|u| u["purpose"] == purpose && u["key_id"] == key_id)
        .map(|u| u["rows"].as_i64().unwrap())
        .sum()
}

/// One signed-in round: password sign-in, a validation, a refresh and a validation of the new token.
async fn round(server: &TestServer, login: &str, password: &str) -> Result<(), String> {
    let body = json!({ "login": login, "password": password });
    let signed_in = server.post("/api/v1/sessions", body).await;
    if signed_in.status != StatusCode::CREATED {
        return Err(format!("sign-in: {} {}", signed_in.status, signed_in.text));
    }
    let me = server.me(signed_in.json["access_token"].as_str().unwrap_or_default()).await;
    if me.status != StatusCode::OK || me.json["email"].as_str().is_none_or(|e| !e.contains('@')) {
        return Err(format!("me: {} {}", me.status, me.text));
    }
    let refreshed = server.refresh(signed_in.json["refresh_token"].as_str().unwrap_or_default()).await;
    if refreshed.status != StatusCode::OK {
        return Err(format!("refresh: {} {}", refreshed.status, refreshed.text));
    }
    let me = server.me(refreshed.json["access_token"].as_str().unwrap_or_default()).await;
    if me.status != StatusCode::OK {
        return Err(format!("me after refresh: {} {}", me.status, me.text));
    }
    let jwks = server.http.get(server.url("/oauth/jwks")).send().await.map_err(|e| e.to_string())?;
    if jwks.status() != StatusCode::OK {
        return Err(format!("jwks: {}", jwks.status()));
    }
    Ok(())
}

async fn each_key_rotates_while_sign_ins_and_validations_run(engine: Engine) {
    let server = Arc::new(TestServer::start(engine).await);
    for i in 0..3 {
        server.sign_up(&format!("busy{i}"), &format!("busy{i}@example.com"), "a busy passphrase").await;
    }
    server.sign_up("idle", "idle@example.com", "an idle passphrase").await;
    let (_, secret, _) = crate::mfa::enrol(&server, "tess").await;
    let early = server.sign_in("idle", "an idle passphrase", None).await;
    let before = status(&server);
    let old: Vec<(String, String)> = KEYS.iter().map(|(_, p)| (p.to_string(), active(&before, p))).collect();

    // Sign-ins, validations and refreshes, without a pause, for as long as the rotations take.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let mut workers = Vec::new();
    for i in 0..3 {
        let (server, stop, done, failures) = (server.clone(), stop.clone(), done.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match round(&server, &format!("busy{i}"), "a busy passphrase").await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(failure) => {
                        failures.lock().unwrap().push(failure);
                        0
                    }
                };
            }
        }));
    }
    for (flag, purpose) in KEYS {
        let rotated = server.admin(&["keys", "rotate", flag, "--activate-in", "2"]);
        assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
        let before_activation = done.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let now = status(&server);
        let old_id = &old.iter().find(|(p, _)| p == purpose).unwrap().1;
        assert_ne!(&active(&now, purpose), old_id, "{purpose}: the new key is active");
        assert!(done.load(Ordering::Relaxed) > before_activation, "{purpose}: requests kept flowing");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests failed during the rotations: {failures:?}");
    assert!(done.load(Ordering::Relaxed) >= 15, "too few rounds to mean anything");

    let after = status(&server);
    let new = |purpose: &str| active(&after, purpose);
    let old_of = |purpose: &str| old.iter().find(|(p, _)| p == purpose).unwrap().1.clone();
    // New tokens are hashed under the new token key; busy accounts' passwords moved to the new
    // pepper at their sign-ins; the idle account's password is still under the old one.
    assert!(rows(&after, "token_hash", &new("token_hash")) > 0);
    assert!(rows(&after, "pepper", &new("pepper")) >= 3, "{after:?}");
    assert_eq!(rows(&after, "pepper", &old_of("pepper")), 2, "idle and tess have not signed in since");
    // The signing key: new ID-token keys are published beside the old ones.
    let jwks: Value = server.http.get(server.url("/oauth/jwks")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(
        kids.iter().any(|k| k.starts_with(&new("signing"))) && kids.iter().any(|k| k.starts_with(&old_of("signing")))
    );

    // Sealed values and email indexes move to the new keys by the servers' background job...
    let mut moved = false;
    for _ in 0..30 {
        let now = status(&server);
        if rows(&now, "data", &old_of("data")) == 0 && rows(&now, "blind_index", &old_of("blind_index")) == 0 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(moved, "the background job re-wrapped everything: {:?}", status(&server));
    // ...or at once with `keys rewrap`, which shows its progress and can run again safely.
    let rewrap = server.admin(&["keys", "rewrap", "--batch", "2"]);
    assert!(rewrap.status.success(), "{}", String::from_utf8_lossy(&rewrap.stderr));
    let progress = String::from_utf8_lossy(&rewrap.stderr);
    assert!(progress.contains("re-wrapping: ") && !progress.contains('\r'), "progress lines are shown: {progress}");
    assert!(String::from_utf8_lossy(&rewrap.stdout).contains("; 0 remaining"));
    let rewrapped = status(&server);
    assert_eq!(rows(&rewrapped, "data", &old_of("data")), 0);
    assert_eq!(rows(&rewrapped, "blind_index", &old_of("blind_index")), 0);

    // Retire the old data and blind-index keys: nothing depended on them any more.
    for (flag, purpose) in [("--data-key", "data"), ("--blind-index-key", "blind_index")] {
        let retired = server.admin(&["keys", "retire", flag, &old_of(purpose)]);
        assert!(retired.status.success(), "{}", String::from_utf8_lossy(&retired.stderr));
    }
    // The old token key still verifies the early session: retiring it is refused without --force...
    let refused = server.admin(&["keys", "retire", "--token-key", &old_of("token_hash")]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(server.me(&early.access).await.status, StatusCode::OK);
    let forced = server.admin(&["keys", "retire", "--token-key", &old_of("token_hash"), "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // ...and then kills what only it could verify, while everything under the new keys works.
    server.me(&early.access).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    let by_email = server.sign_in("busy0@example.com", "a busy passphrase", None).await;
    assert_eq!(server.me(&by_email.access).await.json["email"], "busy0@example.com");
    let attempt = server.post("/api/v1/sessions", json!({ "login": "tess", "password": "tess's passphrase" })).await;
    // The next step's code: this step's may have been spent at enrolment.
    let code = crate::mfa::app_code(&secret, 1);
    let finished =
        server.post("/api/v1/sessions/mfa", json!({ "mfa_token": attempt.json["mfa_token"], "code": code })).await;
    assert_eq!(
        finished.status,
        StatusCode::CREATED,
        "the re-sealed authenticator secret still works: {}",
        finished.text
    );

    let audit = server.admin(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    Arc::try_unwrap(server).ok().expect("workers are done").stop().await;
}
