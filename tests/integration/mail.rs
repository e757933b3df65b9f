//! Mail end to end: reset by emailed link through a real SMTP conversation, verification links in the
//! outbox, password changes with "sign out connected devices", and a mail-server outage that loses nothing.

use std::time::Duration;

use keywarden::config::Config;
use keywarden::mail::{Security, SmtpConfig, TransportKind};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer};
use crate::smtp::SmtpSink;

crate::on_both_engines!(
    a_password_reset_through_a_real_smtp_server,
    verification_links_arrive_in_the_outbox_and_work_once,
    changing_the_password_with_or_without_signing_out_devices,
    a_mail_server_outage_loses_no_message
);

pub fn smtp(config: &mut Config, port: u16) {
    config.mail.transport = TransportKind::Smtp;
    config.mail.smtp = SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        timeout_secs: 5,
    };
    config.mail.retry_base_secs = 1;
}

async fn a_password_reset_through_a_real_smtp_server(engine: Engine) {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(engine, |c| smtp(c, sink.port)).await;
    server.sign_up_unverified("uma", "Uma@Example.com", "uma's old passphrase").await;
    let tv = server.sign_in("uma", "uma's old passphrase", Some(json!({ "client_id": "tv" }))).await;
    let browser = server.sign_in("uma", "uma's old passphrase", None).await;

    // Known and unknown addresses get the same answer.
    let known = server.post("/api/v1/password/reset-request", json!({ "email": "uma@example.com" })).await;
    let unknown = server.post("/api/v1/password/reset-request", json!({ "email": "nobody@example.com" })).await;
    assert_eq!((known.status, &known.text), (StatusCode::ACCEPTED, &unknown.text));
    assert_eq!(unknown.status, StatusCode::ACCEPTED);

    let mail = sink.wait_for("uma@example.com", "Reset your keywarden password").await;
    assert!(mail.text().contains("never ask for your password by email"));
    let token = mail.token("kw_pr_").expect("a reset link");
    assert!(mail.text().contains(&format!("/reset/{token}")));

    // A refused password does not burn the link.
    let weak = server.post("/api/v1/password/reset", json!({ "token": token, "new_password": "password" })).await;
    weak.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "password_too_common");
    // The checkbox is on by default: every old token dies, the TV's included.
    let reset =
        server.post("/api/v1/password/reset", json!({ "token": token, "new_password": "uma's new passphrase" })).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    for old in [&tv, &browser] {
        server.me(&old.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
        server.refresh(&old.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    let again =
        server.post("/api/v1/password/reset", json!({ "token": token, "new_password": "a third passphrase" })).await;
    again.assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    let changed = sink.wait_for("uma@example.com", "password was changed").await;
    assert!(changed.text().contains("Every other device was signed out"));

    let old = server.post("/api/v1/sessions", json!({ "login": "uma", "password": "uma's old passphrase" })).await;
    old.assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    server.sign_in("uma", "uma's new passphrase", None).await;
    // No message to the unknown address was ever sent.
    assert!(sink.messages().iter().all(|m| !m.to.contains(&"nobody@example.com".to_owned())));

    // A newer link kills the older one; unchecking the box keeps devices signed in.
    let kept = server.sign_in("uma", "uma's new passphrase", Some(json!({ "client_id": "tv" }))).await;
    for _ in 0..2 {
        server.post("/api/v1/password/reset-request", json!({ "email": "UMA@example.com" })).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let links: Vec<String> = loop {
        let links: Vec<String> = sink
            .messages()
            .iter()
            .filter(|m| m.subject().contains("Reset"))
            .filter_map(|m| m.token("kw_pr_"))
            .collect();
        if links.len() == 3 {
            break links;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let superseded =
        server.post("/api/v1/password/reset", json!({ "token": links[1], "new_password": "fourth passphrase!" })).await;
    superseded.assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    let body = json!({ "token": links[2], "new_password": "fourth passphrase!", "sign_out_devices": false });
    assert_eq!(server.post("/api/v1/password/reset", body).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.me(&kept.access).await.status, StatusCode::OK, "devices stay signed in when unchecked");
    server.stop().await;
    sink.stop();
}

async fn verification_links_arrive_in_the_outbox_and_work_once(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up_unverified("vic", "vic@example.com", "vic's passphrase").await;
    let tokens = server.sign_in("vic", "vic's passphrase", None).await;
    assert_eq!(server.me(&tokens.access).await.json["email_verified"], false);

    let outbox = server.data_dir().join("outbox");
    let message = wait_for_file(&outbox).await;
    let parsed = crate::smtp::Received { to: vec![], raw: message };
    assert!(parsed.subject().contains("Confirm your email address"));
    let token = parsed.token("kw_ev_").expect("verification link");
    assert!(parsed.text().contains(&format!("/verify-email/{token}")));

    // The app that opens the link with its own token stays signed in.
    let verified = server.post_with_token("/api/v1/email/verify", &tokens.access, json!({ "token": token })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT);
    assert_eq!(server.me(&tokens.access).await.json["email_verified"], true);
    server
        .post("/api/v1/email/verify", json!({ "token": token }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    server
        .post("/api/v1/email/verify", json!({ "token": "kw_ev_x" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    server.stop().await;
}

async fn wait_for_file(dir: &std::path::Path) -> Vec<u8> {
    for _ in 0..200 {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "eml") {
                    return std::fs::read(entry.path()).unwrap();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no message in {}", dir.display());
}

async fn changing_the_password_with_or_without_signing_out_devices(engine: Engine) {
    let sink = SmtpSink::start().await;
    let server = TestServer::start_with(engine, |c| smtp(c, sink.port)).await;
    server.sign_up_unverified("wes", "wes@example.com", "wes's first passphrase").await;
    let laptop = server.sign_in("wes", "wes's first passphrase", None).await;
    let tv =
        server.sign_in("wes", "wes's first passphrase", Some(json!({ "client_id": "tv", "name": "Den TV" }))).await;
    let new_sign_in = sink.wait_for("wes@example.com", "New sign-in").await;
    assert!(new_sign_in.text().contains("Den TV") && new_sign_in.text().contains("127.0.0.1"));

    let change = |current: &str, new: &str, sign_out: bool| json!({ "current_password": current, "new_password": new, "sign_out_devices": sign_out });
    let wrong = server
        .post_with_token("/api/v1/password/change", &laptop.access, change("nope", "whatever passphrase", true))
        .await;
    wrong.assert_error(StatusCode::FORBIDDEN, "wrong_password");

    let kept = server
        .post_with_token(
            "/api/v1/password/change",
            &laptop.access,
            change("wes's first passphrase", "wes's second passphrase", false),
        )
        .await;
    assert_eq!(kept.status, StatusCode::NO_CONTENT, "{}", kept.text);
    assert_eq!(server.me(&tv.access).await.status, StatusCode::OK, "devices kept");
    sink.wait_for("wes@example.com", "password was changed").await;

    let out = server
        .post_with_token(
            "/api/v1/password/change",
            &laptop.access,
            change("wes's second passphrase", "wes's third passphrase", true),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(server.me(&laptop.access).await.status, StatusCode::OK, "the device that changed it stays signed in");
    server.me(&tv.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");

    // Device sign-out and sign-out everywhere are told to the owner too.
    let phone =
        server.sign_in("wes", "wes's third passphrase", Some(json!({ "client_id": "phone", "name": "Pixel" }))).await;
    let path = format!("/api/v1/devices/{}", phone.device_id);
    assert_eq!(server.delete_with_token(&path, &laptop.access).await.status, StatusCode::NO_CONTENT);
    assert!(sink.wait_for("wes@example.com", "A device was signed out").await.text().contains("Pixel"));
    server.post_with_token("/api/v1/sessions/revoke-all", &laptop.access, json!({})).await;
    sink.wait_for("wes@example.com", "All devices were signed out").await;
    server.stop().await;
    sink.stop();
}

async fn a_mail_server_outage_loses_no_message(engine: Engine) {
    // Reserve a port, then close it: the mail server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = TestServer::start_with(engine, |c| smtp(c, port)).await;
    for name in ["xena", "yuri", "zack"] {
        server.sign_up_unverified(name, &format!("{name}@example.com"), "a fine passphrase").await;
        server.post("/api/v1/password/reset-request", json!({ "email": format!("{name}@example.com") })).await;
    }
    // Delivery is attempted and fails; the requests above were answered regardless.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.running_store().mail_queue_depth().await.unwrap() >= 6, "messages must wait in the queue");

    let sink = SmtpSink::start_on(port).await;
    for name in ["xena", "yuri", "zack"] {
        let to = format!("{name}@example.com");
        sink.wait_for(&to, "Confirm your email address").await;
        sink.wait_for(&to, "Reset your keywarden password").await;
    }
    for _ in 0..100 {
        if server.running_store().mail_queue_depth().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.running_store().mail_queue_depth().await.unwrap(), 0);
    assert_eq!(sink.messages().len(), 6, "each message exactly once");
    server.stop().await;
    sink.stop();
}
