//! The operator's two-step policy (`mfa.require`): sessions limited to enrolment until the account
//! has a factor, the admin role, the operator's reset for a locked-out owner; and changing the
//! account's email address behind a step-up and a link to the new address.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer, Tokens};
use crate::mfa::{app_code, base32_decode, wait_for_mail};
use keywarden::domain::policy::Requirement;

crate::on_both_engines!(
    every_account_must_enrol_before_anything_else,
    admins_must_enrol_and_operators_can_reset_a_lost_factor,
    an_email_change_needs_a_step_up_and_the_new_mailbox
);

/// Password sign-in, answering 201; returns the tokens and whether the session is limited.
async fn sign_in(server: &TestServer, name: &str) -> (Tokens, bool) {
    let reply =
        server.post("/api/v1/sessions", json!({ "login": name, "password": format!("{name}'s passphrase") })).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    (Tokens::from(&reply.json), reply.json["mfa_enrolment_required"].as_bool().expect("flag present"))
}

async fn sign_up(server: &TestServer, name: &str) {
    server.sign_up(name, &format!("{name}@example.com"), &format!("{name}'s passphrase")).await;
}

/// Turns on an authenticator app with the given session; returns the app's secret.
async fn enrol_app(server: &TestServer, access: &str) -> Vec<u8> {
    let begun = server.post_with_token("/api/v1/mfa/totp", access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    let secret = base32_decode(begun.json["secret"].as_str().unwrap());
    let confirmed =
        server.post_with_token("/api/v1/mfa/totp/confirm", access, json!({ "code": app_code(&secret, 0) })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    secret
}

async fn every_account_must_enrol_before_anything_else(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = Requirement::All).await;
    sign_up(&server, "vera").await;
    let (limited, enrolment_only) = sign_in(&server, "vera").await;
    assert!(enrolment_only, "the policy limits a password-only session");

    // Everything but enrolling, reading the profile and signing out is refused, with a clear code.
    for path in ["/api/v1/devices", "/api/v1/security-events"] {
        server
            .get_with_token(path, &limited.access)
            .await
            .assert_error(StatusCode::FORBIDDEN, "mfa_enrolment_required");
    }
    let change = json!({ "current_password": "vera's passphrase", "new_password": "a brand new passphrase" });
    server
        .post_with_token("/api/v1/password/change", &limited.access, change)
        .await
        .assert_error(StatusCode::FORBIDDEN, "mfa_enrolment_required");
    // Stepping up (which a session grown stale needs before it may enrol) lifts nothing else.
    let stepped = server
        .post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "password": "vera's passphrase" }))
        .await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    server
        .get_with_token("/api/v1/devices", &limited.access)
        .await
        .assert_error(StatusCode::FORBIDDEN, "mfa_enrolment_required");
    let me = server.me(&limited.access).await;
    assert_eq!((me.status, me.json["role"].as_str()), (StatusCode::OK, Some("user")), "{}", me.text);
    assert_eq!(server.get_with_token("/api/v1/mfa", &limited.access).await.status, StatusCode::OK);

    // The limit survives a refresh; enrolling lifts it for every session of the account at once.
    let (other, _) = sign_in(&server, "vera").await;
    let refreshed = server.refresh(&limited.refresh).await;
    assert_eq!(refreshed.json["mfa_enrolment_required"], json!(true), "{}", refreshed.text);
    let limited = Tokens::from(&refreshed.json);
    let secret = enrol_app(&server, &limited.access).await;
    assert_eq!(server.get_with_token("/api/v1/devices", &limited.access).await.status, StatusCode::OK);
    assert_eq!(server.get_with_token("/api/v1/devices", &other.access).await.status, StatusCode::OK);

    // The last factor cannot be removed while the policy requires one, even with a fresh step-up.
    let stepped = server
        .post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "code": app_code(&secret, 1) }))
        .await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    server
        .delete_with_token("/api/v1/mfa/totp", &limited.access)
        .await
        .assert_error(StatusCode::CONFLICT, "second_factor_required");

    // From now on the password alone is not enough.
    let again = server.post("/api/v1/sessions", json!({ "login": "vera", "password": "vera's passphrase" })).await;
    again.assert_error(StatusCode::UNAUTHORIZED, "mfa_required");
    server.stop().await;
}

async fn admins_must_enrol_and_operators_can_reset_a_lost_factor(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = Requirement::Admins).await;
    sign_up(&server, "wim").await;
    sign_up(&server, "xena").await;
    assert!(!sign_in(&server, "wim").await.1, "users are not affected by an admins-only policy");

    let granted = server.admin(&["users", "set-role", "wim", "admin"]);
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    assert!(String::from_utf8_lossy(&granted.stdout).contains("now has the role admin"));
    let refused = server.admin(&["users", "set-role", "wim", "root"]);
    assert!(!refused.status.success(), "an unknown role is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown role"));

    let (wim, enrolment_only) = sign_in(&server, "wim").await;
    assert!(enrolment_only, "an admin without a second factor must enrol");
    assert!(!sign_in(&server, "xena").await.1);
    assert_eq!(server.me(&wim.access).await.json["role"], "admin");
    enrol_app(&server, &wim.access).await;
    let shown = server.admin(&["users", "show", "wim"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!((shown["role"].as_str(), shown["second_factors"][0].as_str()), (Some("admin"), Some("totp")));

    // The owner lost the phone and the codes: after checking who asks, the operator clears them.
    let reset = server.admin(&["users", "reset-mfa", "wim", "--reason", "ticket 4711"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(String::from_utf8_lossy(&reset.stdout).contains("11 second-factor record(s) removed"));
    wait_for_mail(&server, "Two-factor settings of your keywarden account changed").await;
    let (wim, enrolment_only) = sign_in(&server, "wim").await;
    assert!(enrolment_only, "the password signs in again, but only to enrol anew");
    let events = server.admin(&["users", "show", "wim"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("mfa.reset_by_operator") && events.contains("ticket 4711"), "{events}");
    assert!(events.contains("account.role_changed"), "{events}");
    server.sign_out(&wim.access).await;
    server.stop().await;
}

async fn an_email_change_needs_a_step_up_and_the_new_mailbox(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    sign_up(&server, "yuri").await;
    sign_up(&server, "zoe").await;
    let (yuri, _) = sign_in(&server, "yuri").await;

    // A session that proved itself long ago must step up first (with the password: no factor).
    crate::revocation::sql(&engine, &server.database_url, "UPDATE sessions SET verified_at = 0").await;
    server.catch_up().await;
    let change = |email: &str| json!({ "new_email": email });
    server
        .post_with_token("/api/v1/email/change", &yuri.access, change("yuri@new.example"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    let stepped = server
        .post_with_token("/api/v1/sessions/step-up", &yuri.access, json!({ "password": "yuri's passphrase" }))
        .await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    for (email, status, code) in [
        ("not an address", StatusCode::UNPROCESSABLE_ENTITY, "invalid_email"),
        ("YURI@example.com", StatusCode::UNPROCESSABLE_ENTITY, "email_unchanged"),
        ("zoe@example.com", StatusCode::CONFLICT, "email_taken"),
    ] {
        server.post_with_token("/api/v1/email/change", &yuri.access, change(email)).await.assert_error(status, code);
    }
    let accepted = server.post_with_token("/api/v1/email/change", &yuri.access, change("Yuri@New.example")).await;
    assert_eq!((accepted.status, &accepted.json["status"]), (StatusCode::ACCEPTED, &json!("confirmation_sent")));

    // Nothing changes until the link mailed to the new address is used; the old address is told.
    let me = server.me(&yuri.access).await;
    assert_eq!(
        (me.json["email"].as_str(), me.json["pending_email"].as_str()),
        (Some("yuri@example.com"), Some("yuri@new.example"))
    );
    let warned = server.wait_for_outbox(0, |m| m.subject().contains("email address was requested")).await;
    assert_eq!(warned.to, vec!["yuri@example.com"]);
    assert!(warned.text().contains("y•••@new.example"), "{}", warned.text());
    let link = server.wait_for_outbox(0, |m| m.token("kw_ec_").is_some()).await;
    assert_eq!(link.to, vec!["yuri@new.example"]);
    let token = link.token("kw_ec_").unwrap();
    server
        .post("/api/v1/email/verify", json!({ "token": "kw_ec_forged" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    assert_eq!(server.post("/api/v1/email/verify", json!({ "token": token })).await.status, StatusCode::NO_CONTENT);
    server
        .post("/api/v1/email/verify", json!({ "token": token }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_link");

    let me = server.me(&yuri.access).await;
    assert_eq!(
        (me.json["email"].as_str(), me.json["email_verified"].as_bool()),
        (Some("yuri@new.example"), Some(true))
    );
    assert!(me.json.get("pending_email").is_none(), "{}", me.text);
    let done = server.wait_for_outbox(0, |m| m.subject().contains("account was changed")).await;
    assert_eq!(done.to, vec!["yuri@example.com"], "the old address hears of the change");
    server.sign_in("yuri@new.example", "yuri's passphrase", None).await;
    server
        .post("/api/v1/sessions", json!({ "login": "yuri@example.com", "password": "yuri's passphrase" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // The old address is free again for someone else.
    server.sign_up("yuri2", "yuri@example.com", "another long passphrase").await;
    server.stop().await;
}
