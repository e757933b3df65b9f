//! A stolen session or a squatter's account adding credentials: every new credential needs a fresh proof of the person, and what a thief added is listed for removal.

use super::*;

crate::on_both_engines!(
    a_stolen_session_adds_no_credential_without_a_fresh_sign_in,
    a_leaked_plex_token_cannot_approve_a_pin_or_register_a_device_key,
    an_enrolment_only_session_is_fresh_for_its_first_factor_only,
    a_provider_does_not_stand_in_for_the_second_factor,
    an_unproven_address_gets_no_new_credential,
    the_first_proof_of_an_address_removes_what_a_squatter_set_up,
    the_reset_page_lists_what_a_thief_added_and_removes_it_in_one_click,
    after_signing_out_everywhere_what_was_added_lately_is_listed_for_removal,
    a_stale_browser_session_approves_a_device_code_only_with_its_password,
    an_unproven_address_can_have_its_link_sent_again_a_bounded_number_of_times,
);

async fn a_stolen_session_adds_no_credential_without_a_fresh_sign_in(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("ivy", "ivy@example.com", "ivy's passphrase").await;
    let stolen = server.sign_in("ivy", "ivy's passphrase", None).await;
    age_sessions(&engine, &server).await;

    // Every way of adding a credential, or changing where reset links go, asks for a fresh proof.
    for (path, body) in [
        ("/api/v1/mfa/passkeys/options", json!({})),
        (
            "/api/v1/mfa/passkeys",
            json!({ "ceremony_id": "x", "name": "Mine", "webauthn_response": crate::passkeys::forged_registration() }),
        ),
        ("/api/v1/mfa/totp", json!({})),
        ("/api/v1/email/change", json!({ "new_email": "thief@example.net" })),
    ] {
        server
            .post_with_token(path, &stolen.access, body)
            .await
            .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    }
    // Refreshing the stolen session does not make it fresh.
    let refreshed = server.refresh(&stolen.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
    let refreshed = crate::harness::Tokens::from(&refreshed.json);
    server
        .post_with_token("/api/v1/mfa/totp", &refreshed.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");

    // The owner, who knows the password, steps up and then may.
    let stepped = server
        .post_with_token("/api/v1/sessions/step-up", &refreshed.access, json!({ "password": "ivy's passphrase" }))
        .await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &refreshed.access, json!({})).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text);
    let begun = server.post_with_token("/api/v1/mfa/totp", &refreshed.access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    server.stop().await;
}

async fn a_leaked_plex_token_cannot_approve_a_pin_or_register_a_device_key(engine: Engine) {
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("lee", "lee@example.com", "lee's passphrase").await;
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "lee", "lee's passphrase", "lee-phone").await;
    let leaked = attribute(&signed_in.text().await.unwrap(), "authToken");
    age_sessions(&engine, &server).await;

    // The thief's own stick shows a PIN; the leaked token may not approve it.
    let pin = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "thief-stick").send().await.unwrap();
    let pin = pin.text().await.unwrap();
    let (id, code) = (attribute(&pin, "id"), attribute(&pin, "code"));
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &leaked).form(&[("code", &code)]);
    let refused = approve.send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("recent sign-in"), "in plex.tv's dialect");
    let polled = plex(&client, reqwest::Method::GET, server.url(&format!("/api/v2/pins/{id}")), "thief-stick");
    assert_eq!(
        attribute(&polled.send().await.unwrap().text().await.unwrap(), "authToken"),
        "",
        "no token for the thief"
    );

    // Nor register a device key that would mint tokens of its own.
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "thief", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "lee-phone")
        .header("X-Plex-Token", &leaked)
        .json(&jwk);
    assert_eq!(register.send().await.unwrap().status(), StatusCode::FORBIDDEN);

    // Signed out, the leaked token is dead, and nothing it could have made lives on.
    let signed_out = client.delete(server.url("/api/v2/users/signout")).header("X-Plex-Token", &leaked).send().await;
    assert_eq!(signed_out.unwrap().status(), StatusCode::NO_CONTENT);
    let user = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &leaked).send().await.unwrap();
    assert_eq!(user.status(), StatusCode::UNAUTHORIZED);

    // A fresh sign-in (what plex clients can give) approves it.
    let fresh = crate::plex::sign_in(&server, "lee", "lee's passphrase", "lee-phone").await;
    let fresh = attribute(&fresh.text().await.unwrap(), "authToken");
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &fresh).form(&[("code", &code)]);
    assert_eq!(approve.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    server.stop().await;
}

async fn an_enrolment_only_session_is_fresh_for_its_first_factor_only(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = keywarden::domain::policy::Requirement::All).await;
    server.sign_up("nia", "nia@example.com", "nia's passphrase").await;
    let limited = server.sign_in("nia", "nia's passphrase", None).await;
    // Right after its password, the limited session enrols the account's first factor…
    let begun = server.post_with_token("/api/v1/mfa/totp", &limited.access, json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.text);
    let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = server.post_with_token("/api/v1/mfa/totp/confirm", &limited.access, json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
    // …and nothing more: its proof was a password, and the account now has a second factor.
    for path in ["/api/v1/mfa/passkeys/options", "/api/v1/mfa/recovery-codes"] {
        server
            .post_with_token(path, &limited.access, json!({}))
            .await
            .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    }
    // A password is no step-up on such an account; its code is.
    server
        .post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "password": "nia's passphrase" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_factor");
    let code = crate::mfa::app_code(&secret, 1);
    let stepped = server.post_with_token("/api/v1/sessions/step-up", &limited.access, json!({ "code": code })).await;
    assert_eq!(stepped.status, StatusCode::NO_CONTENT, "{}", stepped.text);
    let options = server.post_with_token("/api/v1/mfa/passkeys/options", &limited.access, json!({})).await;
    assert_eq!(options.status, StatusCode::OK, "{}", options.text);
    server.stop().await;
}

async fn a_provider_does_not_stand_in_for_the_second_factor(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (tokens, _secret, _codes) = crate::mfa::enrol(&server, "omar").await;
    age_sessions(&engine, &server).await;
    // What a re-authentication at a sign-in provider does to the session (`Reauth` trips).
    let state = server.running_state();
    let who = state.sessions.authenticate(&tokens.access, &Default::default()).await.expect("a live session");
    state.sessions.mark_verified(&who, None, "home").await.expect("marked");
    server
        .post_with_token("/api/v1/mfa/passkeys/options", &tokens.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server
        .post_with_token("/api/v1/mfa/recovery-codes", &tokens.access, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "step_up_required");
    server.stop().await;
}

async fn an_unproven_address_gets_no_new_credential(engine: Engine) {
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine).await;
    // A squatter signs up with the victim's address, which it cannot read.
    server.sign_up_unverified("squatter", "victim@example.com", "the squatter's passphrase").await;
    let fresh = server.sign_in("squatter", "the squatter's passphrase", None).await;
    for path in ["/api/v1/mfa/passkeys/options", "/api/v1/mfa/totp"] {
        server
            .post_with_token(path, &fresh.access, json!({}))
            .await
            .assert_error(StatusCode::FORBIDDEN, "email_not_verified");
    }
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "squatter", "the squatter's passphrase", "squat-box").await;
    let token = attribute(&signed_in.text().await.unwrap(), "authToken");
    let pin = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "squat-stick").send().await.unwrap();
    let code = attribute(&pin.text().await.unwrap(), "code");
    let approve = client.put(server.url("/api/v2/pins/link")).header("X-Plex-Token", &token).form(&[("code", &code)]);
    assert_eq!(approve.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "squat", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "squat-box")
        .header("X-Plex-Token", &token);
    assert_eq!(register.json(&jwk).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

async fn the_first_proof_of_an_address_removes_what_a_squatter_set_up(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    let (engine_ref, server_ref) = (&engine, &server);
    let sql = |statement: &'static str| async move {
        crate::revocation::sql(engine_ref, &server_ref.database_url, statement).await;
        server_ref.catch_up().await;
    };
    for (name, email) in [("squat-a", "owner-a@example.com"), ("squat-b", "owner-b@example.com")] {
        // Accounts a squatter set up before this rule (an older release let unproven ones add factors).
        server.sign_up_unverified(name, email, "the squatter's passphrase").await;
    }
    sql("UPDATE users SET email_verified_at = 1").await;
    let mut squatter_sessions = Vec::new();
    for name in ["squat-a", "squat-b"] {
        let session = server.sign_in(name, "the squatter's passphrase", None).await;
        let begun = server.post_with_token("/api/v1/mfa/totp", &session.access, json!({})).await;
        let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
        let code = crate::mfa::app_code(&secret, 0);
        let confirmed =
            server.post_with_token("/api/v1/mfa/totp/confirm", &session.access, json!({ "code": code })).await;
        assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
        squatter_sessions.push(session);
    }
    sql("UPDATE users SET email_verified_at = NULL").await;

    // Owner A opens the verification link that reached her mailbox; owner B asks for a reset.
    let to_a = |m: &crate::smtp::Received| m.to == ["owner-a@example.com"] && m.token("kw_ev_").is_some();
    let link = server.wait_for_outbox(0, to_a).await.token("kw_ev_").unwrap();
    let verified = server.post("/api/v1/email/verify", json!({ "token": link })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    server.post("/api/v1/password/reset-request", json!({ "email": "owner-b@example.com" })).await;
    let to_b = |m: &crate::smtp::Received| m.to == ["owner-b@example.com"] && m.token("kw_pr_").is_some();
    let link = server.wait_for_outbox(0, to_b).await.token("kw_pr_").unwrap();
    let reset = server
        .post(
            "/api/v1/password/reset",
            json!({ "token": link, "new_password": "owner b's own passphrase", "sign_out_devices": false }),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);

    // The squatter's sessions are dead (B's too, though the reset kept devices), its
    // authenticator apps are gone, and each owner is told what was removed.
    for session in &squatter_sessions {
        server.me(&session.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    }
    let a =
        server.post("/api/v1/sessions", json!({ "login": "squat-a", "password": "the squatter's passphrase" })).await;
    assert_eq!(a.status, StatusCode::CREATED, "no second step is left: {}", a.text);
    server.sign_in("squat-b", "owner b's own passphrase", None).await;
    for owner in ["owner-a@example.com", "owner-b@example.com"] {
        let told = server.wait_for_outbox(0, |m| m.to == [owner] && m.subject().contains("was secured")).await;
        assert!(told.text().contains("authenticator app"), "{}", told.text());
    }
    server.stop().await;
}

async fn the_reset_page_lists_what_a_thief_added_and_removes_it_in_one_click(engine: Engine) {
    use crate::pages::{browser, get, location, submit};
    use crate::plex::{attribute, plex};
    let server = TestServer::start(engine).await;
    // A thief with fresh sessions (right after the owner signed in, say) adds a device key and an
    // authenticator app of their own.
    server.sign_up("tess", "tess@example.com", "tess's passphrase").await;
    let client = reqwest::Client::new();
    let signed_in = crate::plex::sign_in(&server, "tess", "tess's passphrase", "thief-box").await;
    let token = attribute(&signed_in.text().await.unwrap(), "authToken");
    let jwk = json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "thief-key", "alg": "EdDSA" } });
    let register = plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "thief-box")
        .header("X-Plex-Token", &token);
    assert_eq!(register.json(&jwk).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let session = server.sign_in("tess", "tess's passphrase", None).await;
    let begun = server.post_with_token("/api/v1/mfa/totp", &session.access, json!({})).await;
    let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = server.post_with_token("/api/v1/mfa/totp/confirm", &session.access, json!({ "code": code })).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);

    // The owner asks for a reset; the page lists what was added, each with its own button.
    server.post("/api/v1/password/reset-request", json!({ "email": "tess@example.com" })).await;
    let link = server.wait_for_outbox(0, |m| m.token("kw_pr_").is_some()).await.token("kw_pr_").unwrap();
    let page = format!("/reset/{link}");
    let owner = browser();
    let (status, html, _) = get(&owner, &server, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Authenticator app and its recovery codes") && html.contains("thief-key"), "{html}");
    let remove = format!("{page}/remove");
    let removed = submit(&owner, &server, &page, &remove, &[("kind", "authenticator_app"), ("id", "totp")]).await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&removed), format!("{page}?removed=1"));
    let (_, html, _) = get(&owner, &server, &page).await;
    assert!(html.contains("thief-key") && !html.contains("Authenticator app and its"), "{html}");
    let removed = submit(&owner, &server, &page, &remove, &[("kind", "device_key"), ("id", "thief-key")]).await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    let (_, html, _) = get(&owner, &server, &page).await;
    assert!(html.contains("Nothing was added"), "{html}");
    // Something not on the account, or of no known kind, is refused; a forged link too.
    let again = submit(&owner, &server, &page, &remove, &[("kind", "authenticator_app"), ("id", "totp")]).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let odd = submit(&owner, &server, &page, &remove, &[("kind", "password"), ("id", "x")]).await;
    assert_eq!(odd.status(), StatusCode::NOT_FOUND);
    let forged = owner.get(server.url("/reset/kw_pr_forged")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);

    // The link still sets the new password, and the password alone signs in again.
    let reset = server
        .post("/api/v1/password/reset", json!({ "token": link, "new_password": "tess's own new passphrase" }))
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    server.sign_in("tess", "tess's own new passphrase", None).await;
    server.stop().await;
}

async fn after_signing_out_everywhere_what_was_added_lately_is_listed_for_removal(engine: Engine) {
    use crate::pages::{browser, get, location, submit};
    let server = TestServer::start(engine).await;
    let (thief, secret, _) = crate::mfa::enrol(&server, "vik").await;
    // The owner, in a browser: password and code, then "Sign out of all devices" (keeping this one).
    let laptop = browser();
    let step =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "vik"), ("password", "vik's passphrase")]).await;
    let step = step.text().await.unwrap();
    let marker = "name=\"mfa_token\" value=\"";
    let start = step.find(marker).expect("the second step") + marker.len();
    let mfa_token: String = step[start..].chars().take_while(|c| *c != '"').collect();
    let code = crate::mfa::app_code(&secret, 1);
    let csrf = crate::pages::csrf(&step);
    let form =
        [("csrf", csrf.as_str()), ("mfa_token", mfa_token.as_str()), ("code", code.as_str()), ("next", "/security")];
    let finished = laptop.post(server.url("/signin/mfa")).form(&form).send().await.unwrap();
    assert_eq!(location(&finished), "/security");
    let out = submit(&laptop, &server, "/security", "/security/signout-all", &[("keep_current", "true")]).await;
    assert_eq!(location(&out), "/security?done=everywhere");
    server.me(&thief.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    let (_, html, _) = get(&laptop, &server, "/security?done=everywhere").await;
    assert!(html.contains("Added to your account lately") && html.contains("Authenticator app and its"), "{html}");
    assert!(!get(&laptop, &server, "/security").await.1.contains("Added to your account lately"));

    // One click removes it (the session proved itself with the code just now).
    let page = "/security?done=everywhere";
    let fields = [("kind", "authenticator_app"), ("id", "totp")];
    let removed = submit(&laptop, &server, page, "/security/recent/remove", &fields).await;
    assert_eq!(location(&removed), "/security?done=everywhere&removed=1");
    let (_, html, _) = get(&laptop, &server, "/security?done=everywhere&removed=1").await;
    assert!(html.contains("It was removed") && !html.contains("Authenticator app and its"), "{html}");
    let signed_in = server.post("/api/v1/sessions", json!({ "login": "vik", "password": "vik's passphrase" })).await;
    assert_eq!(signed_in.status, StatusCode::CREATED, "no second step is left: {}", signed_in.text);
    server.stop().await;
}

async fn a_stale_browser_session_approves_a_device_code_only_with_its_password(engine: Engine) {
    use crate::pages::{browser, get, submit};
    use keywarden::domain::oauth::clients::ClientKind;
    use keywarden::keys::signing::SigningAlg;
    let server = TestServer::start(engine.clone()).await;
    crate::oidc::register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    server.sign_up("dora", "dora@example.com", "dora's passphrase").await;
    let laptop = browser();
    let signed_in =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "dora"), ("password", "dora's passphrase")]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    // The cookie was copied a while ago; the thief's TV shows a code.
    age_sessions(&engine, &server).await;
    let started = server
        .http
        .post(server.url("/oauth/device_authorization"))
        .form(&[("client_id", "tv"), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    let started: Value = started.json().await.unwrap();
    let (user_code, device_code) =
        (started["user_code"].as_str().unwrap().to_owned(), started["device_code"].as_str().unwrap().to_owned());
    let page = format!("/link?code={user_code}");
    let (status, html, _) = get(&laptop, &server, &page).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"link_password\""), "the confirmation asks for the password: {html}");

    let approve = |password: &'static str| {
        let fields = [("code", user_code.clone()), ("decision", "allow".to_owned()), ("password", password.to_owned())];
        let (laptop, server, page) = (&laptop, &server, page.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            submit(laptop, server, &page, "/link/confirm", &fields).await.text().await.unwrap()
        }
    };
    let poll = || async {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", "tv"),
        ];
        let answer = server.http.post(server.url("/oauth/token")).form(&form).send().await.unwrap();
        answer.json::<Value>().await.unwrap()["error"].as_str().map(str::to_owned)
    };
    for password in ["", "not dora's password"] {
        let refused = approve(password).await;
        assert!(!refused.contains("Device linked"), "approved without the password: {refused}");
        assert!(refused.contains("id=\"link_password\""), "the confirmation is shown again: {refused}");
    }
    let approved = approve("dora's passphrase").await;
    assert!(approved.contains("Device linked"), "{approved}");
    // Its first poll (none came before: polling faster than the interval would be `slow_down`).
    assert_eq!(poll().await, None, "the TV gets its tokens");
    server.stop().await;
}

async fn an_unproven_address_can_have_its_link_sent_again_a_bounded_number_of_times(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up_unverified("wren", "wren@example.com", "wren's passphrase").await;
    let wren = server.sign_in("wren", "wren's passphrase", None).await;
    let links = |server: &TestServer| {
        server
            .outbox()
            .iter()
            .filter(|m| m.to == ["wren@example.com"])
            .filter_map(|m| m.token("kw_ev_"))
            .collect::<Vec<_>>()
    };
    server.wait_for_outbox(0, |m| m.token("kw_ev_").is_some()).await;
    let sent = server.post_with_token("/api/v1/email/verification", &wren.access, json!({})).await;
    assert_eq!(
        (sent.status, &sent.json["status"]),
        (StatusCode::ACCEPTED, &json!("verification_sent")),
        "{}",
        sent.text
    );
    server.wait_for_outbox(1, |m| m.token("kw_ev_").is_some()).await;
    let links = links(&server);
    assert_eq!(links.len(), 2);
    // The new link works; the first one died with it.
    let old = server.post("/api/v1/email/verify", json!({ "token": links[0] })).await;
    old.assert_error(StatusCode::BAD_REQUEST, "invalid_link");
    let verified = server.post_with_token("/api/v1/email/verify", &wren.access, json!({ "token": links[1] })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    server
        .post_with_token("/api/v1/email/verification", &wren.access, json!({}))
        .await
        .assert_error(StatusCode::CONFLICT, "email_already_verified");

    // Mailing links again is bounded per account, however fast it is asked for.
    server.sign_up_unverified("xavi", "xavi@example.com", "xavi's passphrase").await;
    let xavi = server.sign_in("xavi", "xavi's passphrase", None).await;
    let free = server.config.throttle.client_free_creations as usize;
    let replies =
        in_parallel(free + 10, |_| server.post_with_token("/api/v1/email/verification", &xavi.access, json!({}))).await;
    let sent = count(&replies, StatusCode::ACCEPTED);
    assert!(sent <= free + 2, "{sent} links mailed again: {:?}", statuses(&replies));
    assert!(count(&replies, StatusCode::TOO_MANY_REQUESTS) >= 8);
    server.stop().await;
}
