//! The database-breach response of the 2025 notice: listed accounts are signed out everywhere, must
//! choose a new password, and receive the incident notice with a reset link.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer};
use crate::smtp::SmtpSink;

crate::on_both_engines!(force_password_reset_signs_out_notifies_and_requires_a_new_password);

async fn force_password_reset_signs_out_notifies_and_requires_a_new_password(engine: Engine) {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(engine, |c| crate::mail::smtp(c, sink.port)).await;
    let people = [("amy", "amy@example.com"), ("ben", "ben@example.com"), ("cat", "cat@example.com")];
    let mut sessions = Vec::new();
    for (name, email) in people {
        server.sign_up_unverified(name, email, &format!("{name}'s passphrase")).await;
        sessions.push(server.sign_in(name, &format!("{name}'s passphrase"), Some(json!({ "client_id": "pms" }))).await);
    }
    let list = server.data_dir().join("affected.txt");
    // Amy is listed twice (by name, then by address): she is handled and mailed once.
    let lines = "# accounts in the stolen table\namy\nBen@Example.com\n\nnobody-at-all\namy@example.com\n";
    std::fs::write(&list, lines).unwrap();

    let out =
        server.admin(&["force-password-reset", "--users", list.to_str().unwrap(), "--sign-out-devices", "--notify"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "an unmatched line is reported with a failing status");
    assert!(
        stdout.contains("2 account(s) must choose a new password; 2 signed out of all devices; 2 notified"),
        "{stdout}"
    );
    assert!(stderr.contains("nobody-at-all"), "{stderr}");

    // Listed accounts: signed out everywhere (their media servers too).
    server.catch_up().await;
    for listed in &sessions[..2] {
        server.me(&listed.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    assert_eq!(server.me(&sessions[2].access).await.status, StatusCode::OK, "cat was not listed");

    // The old password is right but no longer enough.
    let refused = server.post("/api/v1/sessions", json!({ "login": "amy", "password": "amy's passphrase" })).await;
    refused.assert_error(StatusCode::FORBIDDEN, "password_reset_required");
    let wrong = server.post("/api/v1/sessions", json!({ "login": "amy", "password": "not amy's" })).await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // The notice says what happened, what to do, and never asks for a password by email.
    let notice = sink.wait_for("amy@example.com", "action required").await;
    let text = notice.text();
    for expected in [
        "What happened",
        "What we did",
        "What you must do",
        "Sign out connected devices",
        "We will never ask for your password by email",
    ] {
        assert!(text.contains(expected), "notice lacks {expected:?}:\n{text}");
    }
    let link = notice.token("kw_pr_").expect("a reset link in the notice");
    sink.wait_for("ben@example.com", "action required").await;
    // Longer than a delivery round, so a second notice would have arrived.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let to_amy = sink
        .messages()
        .iter()
        .filter(|m| m.to.contains(&"amy@example.com".to_owned()) && m.subject().contains("action"))
        .count();
    assert_eq!(to_amy, 1, "amy is mailed once");
    assert!(!sink
        .messages()
        .iter()
        .any(|m| m.to.contains(&"cat@example.com".to_owned()) && m.subject().contains("action")));

    let reset =
        server.post("/api/v1/password/reset", json!({ "token": link, "new_password": "amy's new passphrase" })).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    server.sign_in("amy", "amy's new passphrase", None).await;

    // The actions are in the audit log, which is still intact.
    let out = server.admin(&["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    server.stop().await;
    sink.stop();
}
