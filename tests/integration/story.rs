//! A user signs up, signs in on two devices, refreshes, and a stolen refresh token kills its session.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(sign_up_sign_in_refresh_reuse_and_sign_out, a_retry_within_the_grace_is_not_reuse);

async fn sign_up_sign_in_refresh_reuse_and_sign_out(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.tokens.refresh_reuse_grace_secs = 0).await;
    let account = server.sign_up_unverified("Alice", "Alice@Example.com", "correct horse battery staple").await;
    assert_eq!(account["username"], "Alice");

    // Alice's media server signs in with her username, naming itself as a device.
    let device = json!({ "client_id": "pms-1234", "product": "Media Server", "platform": "Linux", "name": "Attic" });
    let server_session = server.sign_in("alice", "correct horse battery staple", Some(device.clone())).await;
    assert_eq!(server_session.channel, "device");
    // Signing in again from the same client instance is a new session on the same device.
    let again = server.sign_in("alice", "correct horse battery staple", Some(device)).await;
    assert_eq!(again.device_id, server_session.device_id);
    assert_ne!(again.session_id, server_session.session_id);
    // Her browser signs in with her email address, in another case.
    let browser = server.sign_in("ALICE@example.com", "correct horse battery staple", None).await;
    assert_eq!(browser.channel, "web");
    assert_ne!(browser.session_id, server_session.session_id);
    assert!(server_session.access.starts_with("kw_at_") && server_session.refresh.starts_with("kw_rt_"));

    let me = server.me(&server_session.access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        me.json,
        json!({
            "id": account["id"], "username": "Alice", "email": "alice@example.com", "email_verified": false,
            "role": "user", "has_password": true,
        })
    );

    // Refresh twice: each refresh token is spent and replaced.
    let first = server.refresh(&server_session.refresh).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = server.refresh(first.json["refresh_token"].as_str().unwrap()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let latest_access = second.json["access_token"].as_str().unwrap();
    let latest_refresh = second.json["refresh_token"].as_str().unwrap();
    assert_eq!(second.json["session_id"], server_session.session_id.as_str());
    assert_eq!(server.me(latest_access).await.status, StatusCode::OK);

    // Someone replays the first refresh token: reuse, and the whole family dies.
    server.refresh(&server_session.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    assert_eq!(server.metric("keywarden_token_refreshes_total", "refresh_token_reused").await, 1.0);
    let refused = server.me(latest_access).await;
    refused.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    assert!(refused.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    server.refresh(latest_refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.me(&server_session.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");

    // The browser's session is another family and lives on until it signs out.
    assert_eq!(server.me(&browser.access).await.status, StatusCode::OK);
    assert_eq!(server.sign_out(&browser.access).await.status, StatusCode::NO_CONTENT);
    server.me(&browser.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.refresh(&browser.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.sign_out(&browser.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.stop().await;
}

async fn a_retry_within_the_grace_is_not_reuse(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.tokens.refresh_reuse_grace_secs = 1).await;
    server.sign_up("bob", "bob@example.com", "a long enough passphrase").await;
    let tokens = server.sign_in("bob", "a long enough passphrase", None).await;

    // The client's first refresh response is lost; it retries with the same token at once.
    let lost = server.refresh(&tokens.refresh).await;
    assert_eq!(lost.status, StatusCode::OK);
    let retried = server.refresh(&tokens.refresh).await;
    assert_eq!(retried.status, StatusCode::OK, "a prompt retry is not reuse: {}", retried.text);
    assert_ne!(retried.json["refresh_token"], lost.json["refresh_token"]);
    assert_eq!(server.me(retried.json["access_token"].as_str().unwrap()).await.status, StatusCode::OK);

    // After the grace, the same token is reuse.
    server.advance(std::time::Duration::from_millis(1300));
    server.refresh(&tokens.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    server
        .me(retried.json["access_token"].as_str().unwrap())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.stop().await;
}
