//! Passkeys over the API, on both engines: the challenges keywarden hands out, and every refusal
//! (single-use and account-bound challenges, answers that do not verify, names, unknown passkeys).
//! Real authenticators answering these challenges are in `e2e/passkeys.test.mjs` (Chromium).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(passkey_challenges_are_single_use_bound_and_strict);

/// A registration answer with the right shape whose contents prove nothing.
pub(crate) fn forged_registration() -> Value {
    let junk = URL_SAFE_NO_PAD.encode(b"not an attestation");
    json!({
        "id": URL_SAFE_NO_PAD.encode([7u8; 16]),
        "rawId": URL_SAFE_NO_PAD.encode([7u8; 16]),
        "type": "public-key",
        "response": { "attestationObject": junk, "clientDataJSON": URL_SAFE_NO_PAD.encode(b"{}") },
        "extensions": {},
    })
}

fn forged_assertion() -> Value {
    json!({
        "id": URL_SAFE_NO_PAD.encode([7u8; 16]),
        "rawId": URL_SAFE_NO_PAD.encode([7u8; 16]),
        "type": "public-key",
        "response": {
            "authenticatorData": URL_SAFE_NO_PAD.encode([0u8; 37]),
            "clientDataJSON": URL_SAFE_NO_PAD.encode(b"{}"),
            "signature": URL_SAFE_NO_PAD.encode([1u8; 64]),
            "userHandle": URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
        },
        "extensions": {},
    })
}

async fn passkey_challenges_are_single_use_bound_and_strict(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("pia", "pia@example.com", "pia's passphrase").await;
    server.sign_up("ola", "ola@example.com", "ola's passphrase").await;
    let pia = server.sign_in("pia", "pia's passphrase", None).await;
    let ola = server.sign_in("ola", "ola's passphrase", None).await;

    let factors = server.get_with_token("/api/v1/mfa", &pia.access).await;
    assert_eq!(factors.json["passkeys"], json!([]));
    assert_eq!(factors.json["passkeys_available"], json!(true));

    // The registration challenge asks for a discoverable passkey with user verification, for the
    // loopback default relying party `localhost`, under a random user handle (not the account id).
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &pia.access, json!({})).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text);
    let public_key = &options.json["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], "localhost");
    assert_eq!(public_key["user"]["name"], "pia");
    assert_eq!(public_key["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(public_key["authenticatorSelection"]["userVerification"], "required");
    let handle = URL_SAFE_NO_PAD.decode(public_key["user"]["id"].as_str().unwrap()).unwrap();
    assert_eq!(handle.len(), 16, "a UUID user handle");
    let me = server.me(&pia.access).await;
    assert!(!me.text.contains(&uuid::Uuid::from_slice(&handle).unwrap().to_string()), "not the account id");
    let ceremony = options.json["ceremony_id"].as_str().unwrap().to_owned();

    // A bad name is refused before the challenge is spent.
    let add = |ceremony: &str, name: &str, answer: Value| json!({ "ceremony_id": ceremony, "name": name, "webauthn_response": answer });
    let named = server.post_with_token("/api/v1/mfa/passkeys", &pia.access, add(&ceremony, " ", forged_registration()));
    named.await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_passkey_name");
    // Another account cannot answer pia's challenge (and trying spends it).
    let stolen =
        server.post_with_token("/api/v1/mfa/passkeys", &ola.access, add(&ceremony, "Mine", forged_registration()));
    stolen.await.assert_error(StatusCode::BAD_REQUEST, "invalid_ceremony");
    let spent =
        server.post_with_token("/api/v1/mfa/passkeys", &pia.access, add(&ceremony, "Mine", forged_registration()));
    spent.await.assert_error(StatusCode::BAD_REQUEST, "invalid_ceremony");

    // An answer that does not verify is refused, and its challenge cannot be tried again.
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &pia.access, json!({})).await;
    let ceremony = options.json["ceremony_id"].as_str().unwrap().to_owned();
    let forged =
        server.post_with_token("/api/v1/mfa/passkeys", &pia.access, add(&ceremony, "Mine", forged_registration()));
    forged.await.assert_error(StatusCode::UNAUTHORIZED, "passkey_rejected");
    let again =
        server.post_with_token("/api/v1/mfa/passkeys", &pia.access, add(&ceremony, "Mine", forged_registration()));
    again.await.assert_error(StatusCode::BAD_REQUEST, "invalid_ceremony");
    // A body that is not a credential at all is a request error.
    let shapeless =
        server.post_with_token("/api/v1/mfa/passkeys", &pia.access, add(&ceremony, "Mine", json!({ "id": 1 })));
    shapeless.await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let listed = server.get_with_token("/api/v1/mfa/passkeys", &pia.access).await;
    assert_eq!(listed.json, json!({ "passkeys": [] }), "nothing was stored");

    // Unknown passkeys, and step-up by passkey for an account without one.
    let renamed = server
        .http
        .patch(server.url("/api/v1/mfa/passkeys/nope"))
        .bearer_auth(&pia.access)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::NOT_FOUND);
    assert_eq!(renamed.json::<Value>().await.unwrap()["error"], "passkey_not_found");
    let removed = server.delete_with_token("/api/v1/mfa/passkeys/nope", &pia.access).await;
    removed.assert_error(StatusCode::NOT_FOUND, "passkey_not_found");
    let step_up = server.post_with_token("/api/v1/sessions/step-up/options", &pia.access, json!({})).await;
    step_up.assert_error(StatusCode::NOT_FOUND, "passkey_not_found");
    let no_token = server.post("/api/v1/mfa/passkeys/options", json!({})).await;
    no_token.assert_error(StatusCode::UNAUTHORIZED, "missing_token");

    // Passwordless sign-in: anyone may ask for a challenge; it names no account and no credential.
    let discovery = server.post("/api/v1/sessions/passkey/options", json!({})).await;
    assert_eq!(discovery.status, StatusCode::OK, "{}", discovery.text);
    let public_key = &discovery.json["options"]["publicKey"];
    assert_eq!(public_key["userVerification"], "required");
    assert!(public_key["allowCredentials"].as_array().is_none_or(Vec::is_empty), "{public_key}");
    assert!(discovery.json["options"].get("mediation").is_none(), "asked for by a button, not autofill");
    let ceremony = discovery.json["ceremony_id"].as_str().unwrap().to_owned();
    let sign_in = json!({ "ceremony_id": ceremony, "webauthn_response": forged_assertion() });
    server
        .post("/api/v1/sessions/passkey", sign_in.clone())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "passkey_rejected");
    server.post("/api/v1/sessions/passkey", sign_in).await.assert_error(StatusCode::BAD_REQUEST, "invalid_ceremony");
    // A registration challenge is not a sign-in challenge.
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &pia.access, json!({})).await;
    let wrong_kind = json!({ "ceremony_id": options.json["ceremony_id"], "webauthn_response": forged_assertion() });
    server.post("/api/v1/sessions/passkey", wrong_kind).await.assert_error(StatusCode::BAD_REQUEST, "invalid_ceremony");

    // Finishing a sign-in takes exactly one factor.
    let both = json!({ "mfa_token": "kw_mt_x", "code": "123456", "webauthn_response": forged_assertion() });
    server.post("/api/v1/sessions/mfa", both).await.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_factor");
    server.stop().await;
}

/// Browsers refuse passkeys on a bare IP address: such a server says so instead of failing later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_are_off_on_a_bare_ip_address() {
    let server = TestServer::start_with(Engine::Sqlite, |config| {
        config.public_url = Some("http://192.0.2.10:8080".into());
    })
    .await;
    server.sign_up("uma", "uma@example.com", "uma's passphrase").await;
    let uma = server.sign_in("uma", "uma's passphrase", None).await;
    let factors = server.get_with_token("/api/v1/mfa", &uma.access).await;
    assert_eq!(factors.json["passkeys_available"], json!(false));
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &uma.access, json!({})).await;
    options.assert_error(StatusCode::CONFLICT, "passkeys_unavailable");
    server
        .post("/api/v1/sessions/passkey/options", json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "passkeys_unavailable");
    server.stop().await;
}
