//! A sign-in from a device the account has not seen mails its owner (device, place, time, a link to
//! `/security`); the same device signing in again, recognised by its device token, mails nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, Reply, TestServer};

crate::on_both_engines!(only_devices_not_seen_before_are_announced);

async fn only_devices_not_seen_before_are_announced(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    server.sign_up("nora", "nora@example.com", "nora's passphrase").await;
    let sign_in = |address: &'static str, body: serde_json::Value| {
        let request = server.http.post(server.url("/api/v1/sessions")).header("x-forwarded-for", address).json(&body);
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    let announced = |server: &TestServer| {
        server
            .outbox()
            .into_iter()
            .filter(|m| m.to == ["nora@example.com"] && m.subject().contains("New sign-in"))
            .count()
    };
    // The first device of an account is no news.
    let first = sign_in("198.51.100.1", json!({ "login": "nora", "password": "nora's passphrase" })).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The same browser again, with its device token: the same device, no mail.
    let again = sign_in(
        "198.51.100.1",
        json!({ "login": "nora", "password": "nora's passphrase", "device_token": first.json["device_token"] }),
    )
    .await;
    assert_eq!(again.json["device_id"], first.json["device_id"]);
    // Another device: mailed with what it is, where it signed in from, when, and where to act.
    let tv = json!({ "client_id": "tv-9", "product": "Plex for Roku", "platform": "Roku", "name": "Bedroom TV" });
    let other =
        sign_in("203.0.113.50", json!({ "login": "nora", "password": "nora's passphrase", "device": tv })).await;
    assert_ne!(other.json["device_id"], first.json["device_id"]);
    let mail = server.wait_for_outbox(0, |m| m.to == ["nora@example.com"] && m.subject().contains("New sign-in")).await;
    let text = mail.text();
    assert!(text.contains("Bedroom TV") && text.contains("Plex for Roku"), "device: {text}");
    assert!(text.contains("203.0.113.50"), "place: {text}");
    let year = time::OffsetDateTime::now_utc().year().to_string();
    assert!(text.contains("When:") && text.contains(&year), "time: {text}");
    assert!(text.contains("/security"), "link: {text}");
    // That device again: nothing new.
    let tv_again =
        sign_in("203.0.113.50", json!({ "login": "nora", "password": "nora's passphrase", "device": tv })).await;
    assert_eq!(tv_again.json["device_id"], other.json["device_id"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(announced(&server), 1);
    server.stop().await;
}
