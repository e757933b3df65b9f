//! "Download my data" (issue 22 §2), on both engines: one JSON document with the account's
//! profile, devices, sessions, second factors, providers, apps, webhooks and security events, and
//! no token material; counted, audited and mailed; from the API and from `/security`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{count_rows, Engine, TestServer};
use crate::pages::{browser, csrf, get, submit};

crate::on_both_engines!(an_account_downloads_its_data_without_a_secret_in_it);

async fn an_account_downloads_its_data_without_a_secret_in_it(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (tokens, _, _) = crate::mfa::enrol(&server, "ola").await;
    let http = reqwest::Client::new();
    let export = http.get(server.url("/api/v1/account/export")).bearer_auth(&tokens.access).send().await.unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let disposition = export.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let text = export.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (doc["profile"]["username"].as_str(), doc["profile"]["email"].as_str()),
        (Some("ola"), Some("ola@example.com"))
    );
    assert_eq!(doc["second_factors"]["authenticator_app"], true);
    assert_eq!(doc["second_factors"]["recovery_codes_remaining"], 10);
    assert!(!doc["devices"].as_array().unwrap().is_empty() && !doc["sessions"].as_array().unwrap().is_empty());
    assert_eq!(doc["sessions"][0]["id"], tokens.session_id);
    let kinds: Vec<&str> =
        doc["security_events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"account.created") && kinds.contains(&"mfa.totp_enabled"), "{kinds:?}");
    for secret in ["kw_at_", "kw_rt_", "kw_pt_", "kw_ws_", "password_hash", "$argon2", tokens.access.as_str()] {
        assert!(!text.contains(secret), "the export holds {secret}");
    }
    for part in ["allowed_apps", "sign_in_providers", "webhooks"] {
        assert!(doc[part].is_array(), "{part}");
    }
    let mail = server.wait_for_outbox(0, |m| m.subject().contains("data was downloaded")).await;
    assert_eq!(mail.to, ["ola@example.com"]);
    let audited = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'account.data_exported'",
    )
    .await;
    assert_eq!(audited, 1);

    // From the security page, with its form's CSRF token.
    let plain = browser();
    server.sign_up("pia", "pia@example.com", "pia's long passphrase").await;
    let done =
        submit(&plain, &server, "/signin", "/signin", &[("login", "pia"), ("password", "pia's long passphrase")]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (_, security, _) = get(&plain, &server, "/security").await;
    assert!(security.contains("Download my data"));
    let forged = plain.post(server.url("/security/export")).form(&[("csrf", "not-the-token")]).send().await.unwrap();
    assert_ne!(forged.status(), StatusCode::OK, "a forged form gets nothing");
    let downloaded =
        plain.post(server.url("/security/export")).form(&[("csrf", csrf(&security))]).send().await.unwrap();
    assert_eq!(downloaded.status(), StatusCode::OK);
    let doc: Value = downloaded.json().await.unwrap();
    assert_eq!(doc["profile"]["username"], "pia");

    // Exports are counted per account: after ten, the account waits.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(
            http.get(server.url("/api/v1/account/export")).bearer_auth(&tokens.access).send().await.unwrap().status(),
        );
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    server.stop().await;
}
