//! Second factors over the API: authenticator-app codes made by an independent TOTP implementation
//! (`totp-lite`), the ±1 step window, replay refusal, recovery codes that work once, the
//! `mfa_required` sign-in flow, step-up, and the notices mailed for each change.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, Reply, TestServer, Tokens};

crate::on_both_engines!(authenticator_codes_from_another_implementation_sign_in_once, recovery_codes_and_step_up);

/// RFC 4648 base32 (no padding), as in `otpauth://` URIs.
pub(crate) fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').chars() {
        value = (value << 5) | u32::try_from(ALPHABET.find(c).expect("base32")).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((value >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// The code an authenticator app would show `offset_steps` steps from now.
pub(crate) fn app_code(secret: &[u8], offset_steps: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let at = u64::try_from(i64::try_from(now).unwrap() + offset_steps * 30).unwrap();
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, secret, at)
}

/// Signs up and turns on an authenticator app; returns the first session, the secret and the codes.
pub(crate) async fn enrol(server: &TestServer, name: &str) -> (Tokens, Vec<u8>, Vec<String>) {
    server.sign_up(name, &format!("{name}@example.com"), &format!("{name}'s passphrase")).await;
    let tokens = server.sign_in(name, &format!("{name}'s passphrase"), None).await;
    let begun = server.post_with_token("/api/v1/mfa/totp", &tokens.access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    let uri = begun.json["otpauth_uri"].as_str().unwrap();
    let secret_text = begun.json["secret"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret_text}")), "{uri}");
    let secret = base32_decode(secret_text);
    assert_eq!(secret.len(), 20, "160-bit secret");

    let wrong = server.post_with_token("/api/v1/mfa/totp/confirm", &tokens.access, json!({ "code": "000000" })).await;
    let wrong_is_right = app_code(&secret, 0) == "000000";
    if !wrong_is_right {
        wrong.assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    }
    let confirmed = server
        .post_with_token("/api/v1/mfa/totp/confirm", &tokens.access, json!({ "code": app_code(&secret, 0) }))
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    let codes: Vec<String> =
        confirmed.json["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    (tokens, secret, codes)
}

async fn password_step(server: &TestServer, name: &str) -> String {
    let reply =
        server.post("/api/v1/sessions", json!({ "login": name, "password": format!("{name}'s passphrase") })).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(reply.json["methods"], json!(["totp", "recovery_code"]));
    assert!(reply.headers.get("www-authenticate").is_none(), "not a token problem");
    let token = reply.json["mfa_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kw_mt_"), "{token}");
    token
}

async fn finish(server: &TestServer, mfa_token: &str, factor: Value) -> Reply {
    let mut body = factor;
    body["mfa_token"] = json!(mfa_token);
    server.post("/api/v1/sessions/mfa", body).await
}

async fn authenticator_codes_from_another_implementation_sign_in_once(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (tokens, secret, _) = enrol(&server, "tove").await;
    let factors = server.get_with_token("/api/v1/mfa", &tokens.access).await;
    assert_eq!(
        factors.json,
        json!({
            "totp": true, "totp_pending": false, "recovery_codes_remaining": 10,
            "passkeys": [], "passkeys_available": true,
        })
    );
    server
        .post_with_token("/api/v1/mfa/totp", &tokens.access, json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "totp_already_enabled");

    // The password alone no longer signs in; the code of this step was spent confirming the app.
    let attempt = password_step(&server, "tove").await;
    finish(&server, &attempt, json!({ "code": app_code(&secret, 0) }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "code_already_used");
    // Two steps away is outside the window either way.
    for offset in [-2, 2] {
        let code = app_code(&secret, offset);
        if code != app_code(&secret, 1) && code != app_code(&secret, -1) && code != app_code(&secret, 0) {
            finish(&server, &attempt, json!({ "code": code }))
                .await
                .assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
        }
    }
    // The next step's code is within the ±1 window (a phone clock running fast). Taken once: the
    // replays below must send this very code, even if a step boundary passes meanwhile.
    let next_step = app_code(&secret, 1);
    let signed_in = finish(&server, &attempt, json!({ "code": next_step })).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.text);
    let session = Tokens::from(&signed_in.json);
    assert_eq!(server.me(&session.access).await.status, StatusCode::OK);
    // The challenge is spent, and the code cannot be replayed on a new one.
    finish(&server, &attempt, json!({ "code": next_step }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    let again = password_step(&server, "tove").await;
    finish(&server, &again, json!({ "code": next_step }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "code_already_used");
    finish(&server, &again, json!({ "code": "123456", "recovery_code": "abcde-fghjk" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_factor");
    finish(&server, "kw_mt_forged", json!({ "code": "123456" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    server.stop().await;
}

async fn recovery_codes_and_step_up(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (first, _secret, codes) = enrol(&server, "ulla").await;

    // Five wrong codes end the attempt; even a good recovery code cannot finish it then.
    let attempt = password_step(&server, "ulla").await;
    for _ in 0..5 {
        finish(&server, &attempt, json!({ "recovery_code": "zzzzz-zzzzz" }))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    }
    finish(&server, &attempt, json!({ "recovery_code": codes[0] }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    // The account's second-factor counter now backs off, across attempts: a second at first.
    let attempt = password_step(&server, "ulla").await;
    let held = finish(&server, &attempt, json!({ "recovery_code": codes[0] })).await;
    held.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = held.headers["retry-after"].to_str().unwrap().parse().unwrap();
    server.advance(std::time::Duration::from_secs(wait));

    // A recovery code works once, however it is typed; its use is mailed to the owner.
    let typed = codes[0].replace('-', " ").to_uppercase();
    let signed_in = finish(&server, &attempt, json!({ "recovery_code": typed })).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "{}", signed_in.text);
    let session = Tokens::from(&signed_in.json);
    let attempt = password_step(&server, "ulla").await;
    finish(&server, &attempt, json!({ "recovery_code": codes[0] }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    assert_eq!(server.get_with_token("/api/v1/mfa", &session.access).await.json["recovery_codes_remaining"], 9);
    wait_for_mail(&server, "A recovery code was used").await;

    // Sensitive actions need a fresh check; a session that proved itself long ago must step up.
    crate::revocation::sql(&engine, &server.database_url, "UPDATE sessions SET verified_at = 0").await;
    server.catch_up().await;
    server
        .post_with_token("/api/v1/mfa/recovery-codes", &first.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server
        .delete_with_token("/api/v1/mfa/totp", &first.access)
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server
        .post_with_token("/api/v1/sessions/step-up", &first.access, json!({ "password": "ulla's passphrase" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_factor");
    let stepped =
        server.post_with_token("/api/v1/sessions/step-up", &first.access, json!({ "recovery_code": codes[1] })).await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    let fresh = server.post_with_token("/api/v1/mfa/recovery-codes", &first.access, json!({})).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    let attempt = password_step(&server, "ulla").await;
    finish(&server, &attempt, json!({ "recovery_code": codes[2] }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_code");
    let new_code = fresh.json["recovery_codes"][0].as_str().unwrap();
    assert_eq!(finish(&server, &attempt, json!({ "recovery_code": new_code })).await.status, StatusCode::CREATED);

    // Turning the app off (still fresh) restores password-only sign-in, and is mailed.
    assert_eq!(server.delete_with_token("/api/v1/mfa/totp", &first.access).await.status, StatusCode::NO_CONTENT);
    server.sign_in("ulla", "ulla's passphrase", None).await;
    wait_for_mail(&server, "Two-factor settings of your keywarden account changed").await;
    let events = server.get_with_token("/api/v1/security-events?limit=200", &first.access).await;
    let kinds: Vec<&str> =
        events.json.as_array().map_or_else(Vec::new, |list| list.iter().filter_map(|e| e["kind"].as_str()).collect());
    for expected in [
        "mfa.totp_enabled",
        "mfa.recovery_code_used",
        "mfa.recovery_codes_regenerated",
        "mfa.totp_disabled",
        "mfa.failure",
    ] {
        assert!(kinds.contains(&expected), "{expected} missing from {kinds:?}");
    }
    server.stop().await;
}

pub(crate) async fn wait_for_mail(server: &TestServer, subject: &str) {
    server.wait_for_outbox(0, |m| m.subject().starts_with(subject)).await;
}
