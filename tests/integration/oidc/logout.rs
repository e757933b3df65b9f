//! Signing out of relying parties: back-channel logout, id_token_hint, and native apps' loopback redirects.

use super::*;

crate::on_both_engines!(
    clients_hear_of_sign_out_everywhere_and_channel_revocation_by_back_channel,
    a_client_signs_its_person_out_with_an_id_token_hint,
    native_apps_use_any_loopback_port_and_logout_without_a_hint_asks,
    deleting_an_account_tells_its_clients_by_back_channel,
    an_erased_account_reaches_its_clients_as_an_account_purged_security_event,
);

/// A relying party's back-channel logout endpoint: it records every `logout_token` it receives.
async fn logout_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use axum::routing::post;
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/logout",
        post(move |axum::Form(form): axum::Form<std::collections::HashMap<String, String>>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(form.get("logout_token").cloned().unwrap_or_default());
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/logout", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn next_logout(received: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("a logout token within 10 s")
        .unwrap()
}

async fn clients_hear_of_sign_out_everywhere_and_channel_revocation_by_back_channel(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (logout_uri, mut received) = logout_receiver().await;
    let state = server.running_state();
    let clients = state.oauth.clients().clone();
    let new = NewClient {
        id: "forum".into(),
        name: "Forum".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![FORUM_CB.into()],
        backchannel_logout_uri: Some(logout_uri),
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: None,
    };
    let secret = clients.register(new, &Actor::System).await.unwrap().1.unwrap().to_string();
    let laptop = signed_in_browser(&server, "fay").await;
    let grant = |laptop: Client| {
        let server = &server;
        let secret = secret.clone();
        async move {
            let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
            let code = callback_params(&location(&response))["code"].clone();
            let (status, tokens) = exchange(server, &secret, &code, VERIFIER).await;
            assert_eq!(status, StatusCode::OK);
            verified_id_token(server, tokens["id_token"].as_str().unwrap(), "forum").await
        }
    };
    let id_token = grant(laptop.clone()).await;

    // "Sign out of all devices" on /security: the forum is told, with a token it can verify.
    let out = submit(&laptop, &server, "/security", "/security/signout-all", &[]).await;
    assert!(out.status().is_redirection() || out.status().is_success());
    let token = next_logout(&mut received).await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let claims = verified_id_token(&server, &token, "forum").await;
    assert_eq!((claims["sub"].clone(), claims["sid"].clone()), (id_token["sub"].clone(), id_token["sid"].clone()));
    assert!(claims["events"].get("http://schemas.openid.net/event/backchannel-logout").is_some());
    assert!(claims.get("nonce").is_none(), "a logout token never passes for an ID token");

    // `admin revoke --channel forum` (another process) ends the forum's sessions: told again.
    let laptop = browser();
    let done =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "fay"), ("password", "fay's passphrase")]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let second = grant(laptop.clone()).await;
    let out = server.admin(&["revoke", "--channel", "forum", "--reason", "forum proxy leaked tokens"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = next_logout(&mut received).await;
    assert_eq!(verified_id_token(&server, &token, "forum").await["sid"], second["sid"]);
    let (_, page, _) = get(&laptop, &server, "/security").await;
    assert!(page.contains("Your devices"), "the browser itself was not in the forum's channel");

    // A password reset with "sign out connected devices" (the default) tells the forum too.
    let third = grant(laptop.clone()).await;
    let asked = server.post("/api/v1/password/reset-request", serde_json::json!({ "email": "fay@example.com" })).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let link = server.wait_for_outbox(0, |m| m.token("kw_pr_").is_some()).await.token("kw_pr_").unwrap();
    let reset = server
        .post("/api/v1/password/reset", serde_json::json!({ "token": link, "new_password": "fay's new passphrase" }))
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.text);
    let token = next_logout(&mut received).await;
    assert_eq!(verified_id_token(&server, &token, "forum").await["sid"], third["sid"]);

    // A replayed authorization code ends the session it gave, and the forum is told of that too.
    let laptop = browser();
    let login = [("login", "fay"), ("password", "fay's new passphrase")];
    assert_eq!(submit(&laptop, &server, "/signin", "/signin", &login).await.status(), StatusCode::SEE_OTHER);
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let (_, tokens) = exchange(&server, &secret, &code, VERIFIER).await;
    let fourth = verified_id_token(&server, tokens["id_token"].as_str().unwrap(), "forum").await;
    assert_eq!(exchange(&server, &secret, &code, VERIFIER).await.1["error"], "invalid_grant");
    let token = next_logout(&mut received).await;
    assert_eq!(verified_id_token(&server, &token, "forum").await["sid"], fourth["sid"]);
    server.stop().await;
}

async fn a_client_signs_its_person_out_with_an_id_token_hint(engine: Engine) {
    let server = TestServer::start(engine).await;
    let secret = register(&server, "forum", ClientKind::Confidential, true, SigningAlg::EdDsa).await.unwrap();
    let laptop = signed_in_browser(&server, "gus").await;
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let (_, tokens) = exchange(&server, &secret, &code, VERIFIER).await;
    let (id_token, access) = (tokens["id_token"].as_str().unwrap(), tokens["access_token"].as_str().unwrap());
    let discovery: Value =
        reqwest::get(server.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert_eq!(discovery["end_session_endpoint"], server.url("/oauth/logout"));

    let logout = |hint: &str, redirect: &str| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("id_token_hint", hint), ("post_logout_redirect_uri", redirect), ("state", "bye")])
            .finish();
        laptop.get(server.url(&format!("/oauth/logout?{query}"))).send()
    };
    // A forged hint or an unregistered destination changes nothing.
    let forged = format!("{}x", &id_token[..id_token.len() - 1]);
    assert_eq!(logout(&forged, FORUM_CB).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(logout(id_token, "https://evil.example/").await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(introspect(&server, "forum", &secret, access).await.1["active"], true);

    let done = logout(id_token, FORUM_CB).await.unwrap();
    assert_eq!(location(&done), format!("{FORUM_CB}?state=bye"));
    assert_eq!(introspect(&server, "forum", &secret, access).await.1["active"], false, "the forum's session ended");
    let after = laptop.get(server.url("/security")).send().await.unwrap();
    assert!(location(&after).starts_with("/signin"), "and the browser is signed out of keywarden");
    server.stop().await;
}

async fn native_apps_use_any_loopback_port_and_logout_without_a_hint_asks(engine: Engine) {
    let server = TestServer::start(engine).await;
    let state = server.running_state();
    let clients = state.oauth.clients().clone();
    let new = NewClient {
        id: "cli".into(),
        name: "Command line".into(),
        kind: ClientKind::Public,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        backchannel_logout_uri: None,
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: None,
    };
    clients.register(new, &Actor::System).await.unwrap();
    let laptop = signed_in_browser(&server, "kim").await;
    let redirect = "http://127.0.0.1:53127/callback";
    let path = authorize_path("cli", &[("redirect_uri", redirect)]);
    let response = laptop.get(server.url(&path)).send().await.unwrap();
    assert!(location(&response).starts_with("http://127.0.0.1:53127/callback?code=kw_ac_"), "{}", location(&response));
    let code =
        url::Url::parse(&location(&response)).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
        ("client_id", "cli"),
    ];
    assert_eq!(token_request(&server, None, &form).await.0, StatusCode::OK);
    let other_path = authorize_path("cli", &[("redirect_uri", "http://127.0.0.1:53127/elsewhere")]);
    assert_eq!(laptop.get(server.url(&other_path)).send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    // /oauth/logout without an id_token_hint only asks; nothing is signed out by the link itself.
    let (status, page, _) = get(&laptop, &server, "/oauth/logout?client_id=cli").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Command line asked to sign you out") && page.contains("action=\"/signout\""));
    let (status, page, _) = get(&laptop, &server, "/security").await;
    assert!(status == StatusCode::OK && page.contains("Your devices"), "still signed in");
    server.stop().await;
}

async fn deleting_an_account_tells_its_clients_by_back_channel(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (logout_uri, mut received) = logout_receiver().await;
    let clients = server.running_state().oauth.clients().clone();
    let new = NewClient {
        id: "forum".into(),
        name: "Forum".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![FORUM_CB.into()],
        backchannel_logout_uri: Some(logout_uri),
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: None,
    };
    let secret = clients.register(new, &Actor::System).await.unwrap().1.unwrap().to_string();
    let laptop = signed_in_browser(&server, "gil").await;
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let (status, tokens) = exchange(&server, &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let id_token = verified_id_token(&server, tokens["id_token"].as_str().unwrap(), "forum").await;

    // "Delete my account" on /security, confirmed with the username, in a session just signed in.
    let deleted = submit(&laptop, &server, "/security", "/security/delete", &[("confirm", "gil")]).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(deleted.text().await.unwrap().contains("Your account will be deleted"));
    let token = next_logout(&mut received).await;
    let claims = verified_id_token(&server, &token, "forum").await;
    assert_eq!((claims["sub"].clone(), claims["sid"].clone()), (id_token["sub"].clone(), id_token["sid"].clone()));
    let userinfo = reqwest::Client::new()
        .get(server.url("/oauth/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED, "the client's tokens died with the sessions");
    server.stop().await;
}

/// A relying party's Security Event Token endpoint (RFC 8935 push): it records every SET it is sent
/// with the content type it came with.
async fn event_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    use axum::routing::post;
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/events",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sender = sender.clone();
            async move {
                let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let _ = sender.send((kind, body));
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn an_erased_account_reaches_its_clients_as_an_account_purged_security_event(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (events_uri, mut received) = event_receiver().await;
    let clients = server.running_state().oauth.clients().clone();
    let new = |id: &str, uri: Option<String>| NewClient {
        id: id.into(),
        name: id.into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![FORUM_CB.into()],
        backchannel_logout_uri: None,
        security_event_uri: uri,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: None,
    };
    let secret =
        clients.register(new("forum", Some(events_uri.clone())), &Actor::System).await.unwrap().1.unwrap().to_string();
    // A client that asked for events but never saw this account hears nothing of it.
    clients.register(new("stranger", Some(events_uri)), &Actor::System).await.unwrap();
    let laptop = signed_in_browser(&server, "hal").await;
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let (status, tokens) = exchange(&server, &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let id_token = verified_id_token(&server, tokens["id_token"].as_str().unwrap(), "forum").await;

    let erased = server.admin(&["users", "delete", "hal", "--now", "--reason", "owner's request by mail"]);
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    let (content_type, set) = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("a security event within 10 s")
        .unwrap();
    assert_eq!(content_type, "application/secevent+jwt");
    assert_eq!(jsonwebtoken::decode_header(&set).unwrap().typ.as_deref(), Some("secevent+jwt"));
    // A SET has no `exp` (RFC 8417 §2.2): checked for its signature, issuer and audience.
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(server.url("/oauth/jwks")).await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&set).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.required_spec_claims = ["iss", "aud"].iter().map(|c| c.to_string()).collect();
    validation.validate_exp = false;
    validation.set_audience(&["forum"]);
    validation.set_issuer(&[id_token["iss"].as_str().unwrap()]);
    let claims = jsonwebtoken::decode::<Value>(&set, &key, &validation).expect("a valid SET").claims;
    let event = &claims["events"]["https://schemas.openid.net/secevent/risc/event-type/account-purged"];
    assert_eq!(event["subject"]["subject_type"], "iss_sub");
    assert_eq!(
        (event["subject"]["sub"].clone(), event["subject"]["iss"].clone()),
        (id_token["sub"].clone(), id_token["iss"].clone())
    );
    assert!(claims.get("jti").is_some() && claims.get("nonce").is_none());
    let more = tokio::time::timeout(std::time::Duration::from_millis(1500), received.recv()).await;
    assert!(more.is_err(), "one event, to the client that knew the account");
    server.stop().await;
}
