//! Clients and keys: service tokens, DPoP-bound grants, signing-key rotation, configured clients, signed client assertions and prompt=login.

use super::*;

crate::on_both_engines!(
    service_tokens_and_dpop_bound_grants,
    signing_keys_rotate_with_overlap,
    first_party_clients_come_from_the_configuration,
    clients_authenticate_with_signed_assertions,
    prompt_login_and_max_age_ask_for_a_fresh_sign_in,
);

/// A client's key pair for `private_key_jwt`: its JWKS (public) and a signer of assertions.
struct AssertionKey {
    jwks: String,
    encoding: jsonwebtoken::EncodingKey,
}

impl AssertionKey {
    fn generate() -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let der = secret.to_pkcs8_der().unwrap();
        let mut jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string()).unwrap();
        jwk["kid"] = "k1".into();
        jwk["alg"] = "ES256".into();
        Self {
            jwks: serde_json::json!({ "keys": [jwk] }).to_string(),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
        }
    }

    fn assertion(&self, client_id: &str, audience: &str, jti: &str) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = serde_json::json!({ "iss": client_id, "sub": client_id, "aud": audience, "jti": jti, "iat": now, "exp": now + 60 });
        let header = jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256)
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

async fn service_tokens_and_dpop_bound_grants(engine: Engine) {
    use crate::dpop_client::{DpopKey, ProofFor};
    let server = TestServer::start(engine).await;
    let secret = register(&server, "forum", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let shop = register(&server, "shop", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;

    // client_credentials: a short-lived signed token for the client itself, introspectable by it alone.
    let (status, issued) =
        token_request(&server, Some(("forum", &secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert!(issued.get("refresh_token").is_none() && issued.get("id_token").is_none());
    let service = issued["access_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(service).unwrap().typ.as_deref(), Some("at+jwt"));
    let (_, seen) = introspect(&server, "forum", &secret, service).await;
    assert_eq!((seen["active"].as_bool(), seen["sub"].as_str()), (Some(true), Some("forum")));
    assert_eq!(introspect(&server, "shop", &shop, service).await.1, serde_json::json!({ "active": false }));
    let form = [("grant_type", "client_credentials"), ("client_id", "tv")];
    assert_eq!(token_request(&server, None, &form).await.1["error"], "unauthorized_client");
    let revoke = Client::new()
        .post(server.url("/oauth/revoke"))
        .basic_auth("forum", Some(&secret))
        .form(&[("token", service)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.json::<Value>().await.unwrap()["error"], "unsupported_token_type");
    let out = server.admin(&["revoke", "--channel", "forum", "--reason", "rotate the forum's service tokens"]);
    assert!(out.status.success());
    let dead =
        within_seconds(4, || async { introspect(&server, "forum", &secret, service).await.1["active"] == false });
    assert!(dead.await, "channel revocation kills service tokens too");

    // DPoP (RFC 9449) at the token endpoint: the grant's tokens are bound to the client's key.
    let laptop = signed_in_browser(&server, "hal").await;
    let key = DpopKey::generate();
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let token_url = server.url("/oauth/token");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", FORUM_CB),
        ("code_verifier", VERIFIER),
    ];
    let response = Client::new()
        .post(&token_url)
        .basic_auth("forum", Some(&secret))
        .header("dpop", key.proof(ProofFor::new("POST", &token_url)))
        .form(&form)
        .send()
        .await
        .unwrap();
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP", "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let userinfo_url = server.url("/oauth/userinfo");
    let bearer = Client::new().get(&userinfo_url).bearer_auth(access).send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED, "a bound token without its proof is refused");
    let proven = Client::new()
        .get(&userinfo_url)
        .header("authorization", format!("DPoP {access}"))
        .header("dpop", key.proof(ProofFor::new("GET", &userinfo_url).with_token(access)))
        .send()
        .await
        .unwrap();
    assert_eq!(proven.status(), StatusCode::OK);
    let (_, seen) = introspect(&server, "forum", &secret, access).await;
    assert_eq!(seen["cnf"]["jkt"].as_str().map(str::len), Some(43), "introspection names the key: {seen}");
    // Refreshing needs a proof from the same key.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = token_request(
        &server,
        Some(("forum", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")));
    server.stop().await;
}

async fn signing_keys_rotate_with_overlap(engine: Engine) {
    // A fixed issuer: the restarted server listens on another port.
    let server = TestServer::start_with(engine, |c| c.public_url = Some("http://localhost:4455".into())).await;
    let secret = register(&server, "forum", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let laptop = signed_in_browser(&server, "ida").await;
    let id_token_now = |laptop: Client, server: &TestServer| {
        let url = server.url(&authorize_path("forum", &[]));
        let secret = secret.clone();
        async move {
            let response = laptop.get(url).send().await.unwrap();
            let code = callback_params(&location(&response))["code"].clone();
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", FORUM_CB),
                ("code_verifier", VERIFIER),
            ];
            let mut request = Client::new().post(response.url().join("/oauth/token").unwrap()).form(&form);
            request = request.basic_auth("forum", Some(secret));
            let tokens: Value = request.send().await.unwrap().json().await.unwrap();
            tokens["id_token"].as_str().unwrap().to_owned()
        }
    };
    let before = id_token_now(laptop.clone(), &server).await;

    // By default a new key is published a minute before it signs anything.
    let out = server.admin(&["keys", "rotate", "--signing-key"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("new signing key sig-"));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let jwks: Value = reqwest::get(server.url("/oauth/jwks")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 4, "published without a restart");
    let laptop = signed_in_browser(&server, "ida1").await;
    let waiting = id_token_now(laptop, &server).await;
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_eq!(kid(&before), kid(&waiting), "the new key does not sign before its time");
    let out = server.admin(&["keys", "rotate", "--signing-key", "--activate-in", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = server.restart_with(|_| {}).await;
    let jwks: Value = reqwest::get(server.url("/oauth/jwks")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 6, "the old and both new keys are published");
    verified_id_token(&server, &before, "forum").await;

    let laptop = signed_in_browser(&server, "ida2").await;
    let after = id_token_now(laptop, &server).await;
    verified_id_token(&server, &after, "forum").await;
    assert_ne!(kid(&before), kid(&after), "new tokens are signed with the new key");
    let events = server.admin(&["audit", "verify"]);
    assert!(events.status.success());
    server.stop().await;
}

async fn first_party_clients_come_from_the_configuration(engine: Engine) {
    use keywarden::domain::oauth::clients::ConfiguredClient;
    let mint = || keywarden::domain::tokens::TokenKind::ClientSecret.mint().to_string();
    let (first, second) = (mint(), mint());
    let site = |name: &str, secret: &str| ConfiguredClient {
        id: "site".into(),
        name: name.into(),
        public: false,
        redirect_uris: vec![FORUM_CB.into()],
        backchannel_logout_uri: None,
        security_event_uri: None,
        secret: Some(secret.into()),
        secret_file: None,
        id_token_alg: SigningAlg::EdDsa,
        first_party: true,
    };
    let configured = site("The Site", &first);
    let server = TestServer::start_with(engine, |c| c.oauth.clients = vec![configured]).await;
    let laptop = signed_in_browser(&server, "joy").await;
    let response = laptop.get(server.url(&authorize_path("site", &[]))).send().await.unwrap();
    let code = callback_params(&location(&response))["code"].clone();
    let (status, tokens) = exchange_as(&server, "site", &first, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "a configured first-party client skips consent: {tokens}");

    // The file is the truth: a new secret in the configuration replaces the old one at start.
    let renamed = site("Our Site", &second);
    let server = server.restart_with(|c| c.oauth.clients = vec![renamed]).await;
    let form = [("grant_type", "client_credentials")];
    assert_eq!(token_request(&server, Some(("site", &first)), &form).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(token_request(&server, Some(("site", &second)), &form).await.0, StatusCode::OK);
    let listed = server.admin(&["clients", "list", "--json"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Our Site"));
    let generated = server.admin(&["clients", "generate-secret"]);
    assert!(String::from_utf8_lossy(&generated.stdout).trim().starts_with("kw_cs_"));

    // A confidential client without a usable secret is refused with the reason (the start fails).
    let clients = server.running_state().oauth.clients();
    let refused = clients.sync_configured(&[site("Site", "not-a-secret")]).await.unwrap_err();
    assert!(refused.to_string().contains("generate-secret"), "{refused}");
    server.stop().await;
}

async fn clients_authenticate_with_signed_assertions(engine: Engine) {
    let server = TestServer::start(engine).await;
    let key = AssertionKey::generate();
    let state = server.running_state();
    let clients = state.oauth.clients().clone();
    let new = NewClient {
        id: "reports".into(),
        name: "Reports".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![],
        backchannel_logout_uri: None,
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: Some(key.jwks.clone()),
    };
    let (_, secret) = clients.register(new, &Actor::System).await.unwrap();
    assert!(secret.is_none(), "a private_key_jwt client gets no secret");
    let discovery: Value =
        reqwest::get(server.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert!(discovery["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&"private_key_jwt".into()));
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_owned();

    let grant = |assertion: String| {
        let server = &server;
        async move {
            let form = [
                ("grant_type", "client_credentials".to_owned()),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
                ("client_assertion", assertion),
            ];
            let response = Client::new().post(server.url("/oauth/token")).form(&form).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let assertion = key.assertion("reports", &token_endpoint, "a-1");
    let (status, tokens) = grant(assertion.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, body) = grant(assertion).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "a replayed assertion"
    );
    let (_, body) = grant(key.assertion("reports", "https://elsewhere.example/token", "a-2")).await;
    assert_eq!(body["error"], "invalid_client", "an assertion for another audience");
    let (_, body) = grant(AssertionKey::generate().assertion("reports", &token_endpoint, "a-3")).await;
    assert_eq!(body["error"], "invalid_client", "an assertion signed by another key");
    let (_, body) = grant(key.assertion("forum", &token_endpoint, "a-4")).await;
    assert_eq!(body["error"], "invalid_client", "an assertion naming another client");
    let (status, _) = grant(key.assertion("reports", server.url("").trim_end_matches('/'), "a-5")).await;
    assert_eq!(status, StatusCode::OK, "the issuer is an accepted audience too");

    // A JWKS with a private key is refused at registration.
    let private: Value = serde_json::json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "d" }] });
    let new = NewClient {
        id: "leaky".into(),
        name: "Leaky".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec![],
        backchannel_logout_uri: None,
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: Some(private.to_string()),
    };
    assert_eq!(clients.register(new, &Actor::System).await.unwrap_err().code(), "invalid_client_metadata");
    server.stop().await;
}

async fn prompt_login_and_max_age_ask_for_a_fresh_sign_in(engine: Engine) {
    let server = TestServer::start(engine).await;
    let secret = register(&server, "forum", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let laptop = signed_in_browser(&server, "lou").await;
    let tokens_for = |response: reqwest::Response| {
        let server = &server;
        let secret = secret.clone();
        async move {
            let code = callback_params(&location(&response))["code"].clone();
            let (status, tokens) = exchange(server, &secret, &code, VERIFIER).await;
            assert_eq!(status, StatusCode::OK);
            verified_id_token(server, tokens["id_token"].as_str().unwrap(), "forum").await
        }
    };
    let first = tokens_for(laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap()).await;
    server.advance(std::time::Duration::from_millis(1100));

    // prompt=login: to the sign-in page although signed in, and back once signed in again.
    let response = laptop.get(server.url(&authorize_path("forum", &[("prompt", "login")]))).send().await.unwrap();
    let signin = location(&response);
    assert!(signin.starts_with("/signin?next=") && signin.contains("kw_auth_after"), "{signin}");
    let next: String = url::form_urlencoded::parse(signin.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "next")
        .unwrap()
        .1
        .into_owned();
    assert!(!next.contains("prompt=login"), "the fresh sign-in is not asked for again and again");
    // The old session alone does not satisfy it.
    let again = laptop.get(server.url(&next)).send().await.unwrap();
    assert!(location(&again).starts_with("/signin?next="));
    let fields = [("login", "lou"), ("password", "lou's passphrase"), ("next", next.as_str())];
    let signed_in = submit(&laptop, &server, &signin, "/signin", &fields).await;
    assert_eq!(location(&signed_in), next);
    let second = tokens_for(laptop.get(server.url(&next)).send().await.unwrap()).await;
    assert!(second["auth_time"].as_i64() > first["auth_time"].as_i64(), "auth_time is the new sign-in's");

    // max_age=0 with prompt=none cannot be met silently.
    let response =
        laptop.get(server.url(&authorize_path("forum", &[("max_age", "0"), ("prompt", "none")]))).send().await.unwrap();
    assert_eq!(callback_params(&location(&response))["error"], "login_required");
    server.stop().await;
}
