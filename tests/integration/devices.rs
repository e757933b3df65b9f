//! A user sees where they are signed in, signs one device out, and signs out of all devices.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, TestServer, Tokens};

crate::on_both_engines!(
    devices_are_listed_and_signed_out_one_by_one,
    sign_out_of_all_devices_keeping_or_not_the_current_one
);

fn device(client_id: &str, product: &str, name: &str) -> Option<Value> {
    Some(json!({ "client_id": client_id, "product": product, "platform": "Linux", "name": name }))
}

async fn alive(server: &TestServer, tokens: &Tokens) -> bool {
    server.me(&tokens.access).await.status == StatusCode::OK
}

async fn devices_are_listed_and_signed_out_one_by_one(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("kim", "kim@example.com", "kim's passphrase").await;
    let phone = server.sign_in("kim", "kim's passphrase", device("phone-1", "Phone app", "Kim's phone")).await;
    let media = server.sign_in("kim", "kim's passphrase", device("pms-1", "Media Server", "Basement")).await;
    let browser = server.sign_in("kim@example.com", "kim's passphrase", None).await;
    server.sign_up("lee", "lee@example.com", "lee's passphrase").await;
    let lee = server.sign_in("lee", "lee's passphrase", device("lee-tv", "TV app", "Lee's TV")).await;

    let listed = server.get_with_token("/api/v1/devices", &phone.access).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let entries = listed.json.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{}", listed.text);
    let own: Vec<_> = entries.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(own.len(), 1);
    assert_eq!((own[0]["id"].as_str(), own[0]["name"].as_str()), (Some(phone.device_id.as_str()), Some("Kim's phone")));
    let media_entry = entries.iter().find(|d| d["id"] == media.device_id.as_str()).unwrap();
    assert_eq!(media_entry["product"], "Media Server");
    assert_eq!(media_entry["client_identifier"], "pms-1");
    assert_eq!(media_entry["channels"], json!(["device"]));
    assert_eq!(media_entry["last_address"], "127.0.0.1");
    assert!(media_entry["last_seen_at"].as_str().unwrap().ends_with('Z'));
    let browser_entry = entries.iter().find(|d| d["id"] == browser.device_id.as_str()).unwrap();
    assert_eq!(browser_entry["channels"], json!(["web"]));

    // Kim signs the media server out from her phone: its access and refresh tokens die at once.
    let path = format!("/api/v1/devices/{}", media.device_id);
    assert_eq!(server.delete_with_token(&path, &phone.access).await.status, StatusCode::NO_CONTENT);
    server.me(&media.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.refresh(&media.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    assert!(alive(&server, &phone).await && alive(&server, &browser).await && alive(&server, &lee).await);
    let listed = server.get_with_token("/api/v1/devices", &phone.access).await;
    assert_eq!(listed.json.as_array().unwrap().len(), 2);

    // The media server signs in again later: it is listed again, as the same device.
    let back = server.sign_in("kim", "kim's passphrase", device("pms-1", "Media Server", "Basement")).await;
    assert_eq!(back.device_id, media.device_id);
    assert!(alive(&server, &back).await);
    assert_eq!(server.get_with_token("/api/v1/devices", &phone.access).await.json.as_array().unwrap().len(), 3);

    // Nobody signs out another account's device, or one that does not exist.
    let lees = format!("/api/v1/devices/{}", lee.device_id);
    server.delete_with_token(&lees, &phone.access).await.assert_error(StatusCode::NOT_FOUND, "device_not_found");
    server
        .delete_with_token("/api/v1/devices/nope", &phone.access)
        .await
        .assert_error(StatusCode::NOT_FOUND, "device_not_found");
    assert!(alive(&server, &lee).await);

    // Every step is in Kim's security events, without her email address.
    let events = server.get_with_token("/api/v1/security-events?limit=100", &phone.access).await;
    assert_eq!(events.status, StatusCode::OK);
    let kinds: Vec<&str> = events.json.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for expected in ["account.created", "sign_in.success", "device.new", "device.signed_out"] {
        assert!(kinds.contains(&expected), "{expected} missing from {kinds:?}");
    }
    assert!(!events.text.contains("kim@example.com"));
    assert!(!kinds.iter().any(|k| k.starts_with("sessions.")), "Lee's actions are not in Kim's events");
    server.stop().await;
}

async fn sign_out_of_all_devices_keeping_or_not_the_current_one(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("max", "max@example.com", "max's passphrase").await;
    let sign_in = |client: &'static str| server.sign_in("max", "max's passphrase", device(client, "App", client));
    let (laptop, tv, server_app) = (sign_in("laptop").await, sign_in("tv").await, sign_in("server").await);
    server.sign_up("ned", "ned@example.com", "ned's passphrase").await;
    let ned = server.sign_in("ned", "ned's passphrase", None).await;

    // From the laptop, keeping the laptop signed in.
    let reply =
        server.post_with_token("/api/v1/sessions/revoke-all", &laptop.access, json!({ "keep_current": true })).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(alive(&server, &laptop).await, "the current session was kept");
    for other in [&tv, &server_app] {
        server.me(&other.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
        server.refresh(&other.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    assert!(alive(&server, &ned).await, "another account is untouched");
    let refreshed = server.refresh(&laptop.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "the kept session still refreshes");
    let devices = server.get_with_token("/api/v1/devices", &laptop.access).await;
    assert_eq!(devices.json.as_array().unwrap().len(), 1);
    let events = server.get_with_token("/api/v1/security-events", &laptop.access).await;
    let event = events.json.as_array().unwrap().iter().find(|e| e["kind"] == "sessions.signed_out_everywhere");
    assert_eq!(event.expect("recorded")["details"]["kept_current_session"], true, "{}", events.text);

    // A new sign-in after the revocation works; then everything, the current session included.
    let phone = sign_in("phone").await;
    assert!(alive(&server, &phone).await);
    let access = refreshed.json["access_token"].as_str().unwrap();
    let reply = server.post_with_token("/api/v1/sessions/revoke-all", access, json!({ "keep_current": false })).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    server.me(access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.me(&phone.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    assert!(alive(&server, &ned).await);
    // The body may be left out: keep_current defaults to false.
    let fresh = sign_in("laptop").await;
    let reply = server.post_with_token("/api/v1/sessions/revoke-all", &fresh.access, json!({})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(!alive(&server, &fresh).await);
    server.stop().await;
}
