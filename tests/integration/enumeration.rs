//! An attacker cannot tell unknown accounts from wrong passwords: same answer, same work.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(unknown_accounts_and_wrong_passwords_look_the_same);

async fn unknown_accounts_and_wrong_passwords_look_the_same(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("carol", "carol@example.com", "carol's real passphrase").await;

    let attempts = [
        ("carol", "a wrong passphrase"),
        ("carol@example.com", "a wrong passphrase"),
        ("nobody", "a wrong passphrase"),
        ("nobody@example.com", "a wrong passphrase"),
        ("not an email@@", "a wrong passphrase"),
    ];
    let mut bodies = Vec::new();
    for (login, password) in attempts {
        let before = server.metric("keywarden_password_verifications_total", "").await;
        let reply = server.post("/api/v1/sessions", json!({ "login": login, "password": password })).await;
        let after = server.metric("keywarden_password_verifications_total", "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{login}");
        // Every attempt costs exactly one argon2id verification, known account or not.
        assert_eq!(after - before, 1.0, "verifications for {login:?}");
        let headers: Vec<_> =
            reply.headers.iter().filter(|(k, _)| *k != "date").map(|(k, v)| (k.clone(), v.clone())).collect();
        bodies.push((reply.text, headers));
    }
    for other in &bodies[1..] {
        assert_eq!(other, &bodies[0], "answers differ");
    }
    assert_eq!(bodies[0].0, r#"{"error":"invalid_credentials","message":"the login or the password is wrong"}"#);
    server.stop().await;
}
