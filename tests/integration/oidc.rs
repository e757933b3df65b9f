//! The OpenID Connect provider over HTTP (issue 6): the authorization code flow with PKCE and the
//! consent page, ID tokens checked against the published JWKS, userinfo, refresh, introspection
//! and revocation, channel revocation — and the negative cases the issue lists. Interop with
//! client libraries nobody here wrote lives in the end-to-end suite.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keywarden::domain::audit::Actor;
use keywarden::domain::clients::{ClientKind, NewClient};
use keywarden::keys::signing::SigningAlg;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{Engine, TestServer};
use crate::pages::{browser, get, location, submit};

crate::on_both_engines!(
    a_third_party_app_signs_a_person_in_with_consent_pkce_and_an_id_token,
    codes_are_single_use_bound_to_their_client_redirect_and_verifier,
    bad_authorization_requests_are_refused_without_redirecting_to_strangers,
    a_tv_links_with_a_short_code_polls_and_is_listed_on_the_security_page,
    device_codes_expire_and_link_guesses_are_throttled,
    clients_hear_of_sign_out_everywhere_and_channel_revocation_by_back_channel,
    a_client_signs_its_person_out_with_an_id_token_hint,
    service_tokens_and_dpop_bound_grants,
    signing_keys_rotate_with_overlap,
    first_party_clients_come_from_the_configuration,
    clients_authenticate_with_signed_assertions,
    native_apps_use_any_loopback_port_and_logout_without_a_hint_asks,
    prompt_login_and_max_age_ask_for_a_fresh_sign_in
);

const FORUM_CB: &str = "https://forum.example/auth/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// Whether `check` turns true within `secs` (revocation rules reach the server by polling).
async fn within_seconds<F, Fut>(secs: u64, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub(crate) async fn register(
    server: &TestServer,
    id: &str,
    kind: ClientKind,
    first_party: bool,
    alg: SigningAlg,
) -> Option<String> {
    let state = server.running_state();
    let clients = state.oauth.clients().clone();
    let new = NewClient {
        id: id.into(),
        name: format!("The {id}"),
        kind,
        redirect_uris: vec![FORUM_CB.into(), "http://127.0.0.1:9/cb".into()],
        backchannel_logout_uri: None,
        first_party,
        id_token_alg: alg,
        jwks: None,
    };
    clients.register(new, &Actor::System).await.unwrap().1.map(|s| s.to_string())
}

/// A browser signed in to keywarden's pages.
async fn signed_in_browser(server: &TestServer, username: &str) -> Client {
    server.sign_up(username, &format!("{username}@example.com"), &format!("{username}'s passphrase")).await;
    let laptop = browser();
    let password = format!("{username}'s passphrase");
    let done = submit(&laptop, server, "/signin", "/signin", &[("login", username), ("password", &password)]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    laptop
}

fn authorize_path(client_id: &str, extra: &[(&str, &str)]) -> String {
    let challenge = challenge(VERIFIER);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", FORUM_CB),
        ("scope", "openid profile email"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        params.push((k, v));
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("/oauth/authorize?{query}")
}

/// The query parameters of a redirect to the client.
fn callback_params(location: &str) -> std::collections::HashMap<String, String> {
    assert!(location.starts_with(FORUM_CB), "redirected to the client: {location:?}");
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

async fn token_request(server: &TestServer, auth: Option<(&str, &str)>, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut request = Client::new().post(server.url("/oauth/token")).form(form);
    if let Some((id, secret)) = auth {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn exchange(server: &TestServer, secret: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    exchange_as(server, "forum", secret, code, verifier).await
}

/// Exchanges a code sent to `FORUM_CB` for `client`, authenticating with HTTP Basic.
async fn exchange_as(
    server: &TestServer,
    client: &str,
    secret: &str,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    let form =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", FORUM_CB), ("code_verifier", verifier)];
    token_request(server, Some((client, secret)), &form).await
}

/// Checks an ID token's signature against the published JWKS, as a relying party would.
async fn verified_id_token(server: &TestServer, token: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(server.url("/oauth/jwks")).await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let discovery: Value =
        reqwest::get(server.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("a valid ID token").claims
}

async fn introspect(server: &TestServer, id: &str, secret: &str, token: &str) -> (StatusCode, Value) {
    let response = Client::new()
        .post(server.url("/oauth/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

async fn a_third_party_app_signs_a_person_in_with_consent_pkce_and_an_id_token(engine: Engine) {
    let server = TestServer::start(engine).await;
    let secret = register(&server, "forum", ClientKind::Confidential, false, SigningAlg::EdDsa).await.unwrap();
    let wiki_secret = register(&server, "wiki", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let discovery: Value =
        reqwest::get(server.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    assert_eq!(discovery["issuer"], server.url("").trim_end_matches('/'));
    assert_eq!(discovery["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["ES256", "EdDSA"]));

    // Not signed in: off to the sign-in page, which comes back to the same request.
    let stranger = browser();
    let to_signin = stranger.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    let signin = location(&to_signin);
    assert!(signin.starts_with("/signin?next=%2Foauth%2Fauthorize%3F"), "{signin}");
    let (_, page, headers) = get(&stranger, &server, &signin).await;
    assert!(page.contains("Sign in"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self' https://forum.example;"), "the sign-in form may end at the client: {csp}");

    // A signed-in person is asked once, on a page that names the app and what it gets.
    let laptop = signed_in_browser(&server, "ada").await;
    let (status, consent, headers) = get(&laptop, &server, &authorize_path("forum", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(consent.contains("Allow The forum to use your account?") && consent.contains("see your email address"));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("form-action 'self' https://forum.example;"));
    let (_, refused_page, _) = get(&laptop, &server, &authorize_path("forum", &[("state", "st-deny")])).await;
    let denied = laptop
        .post(server.url("/oauth/authorize/decision"))
        .form(&form_of(&refused_page, "deny"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::SEE_OTHER, "{:?}", form_of(&refused_page, "deny"));
    let params = callback_params(&location(&denied));
    assert_eq!((params["error"].as_str(), params["state"].as_str()), ("access_denied", "st-deny"));

    let allowed =
        laptop.post(server.url("/oauth/authorize/decision")).form(&form_of(&consent, "allow")).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::SEE_OTHER);
    let params = callback_params(&location(&allowed));
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], server.url("").trim_end_matches('/'));
    let code = &params["code"];
    assert!(code.starts_with("kw_ac_"));

    let (status, tokens) = exchange(&server, &secret, code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(
        (tokens["token_type"].as_str(), tokens["scope"].as_str()),
        (Some("Bearer"), Some("openid profile email"))
    );
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jsonwebtoken::decode_header(id_token).unwrap().alg, jsonwebtoken::Algorithm::EdDSA);
    let claims = verified_id_token(&server, id_token, "forum").await;
    assert_eq!((claims["nonce"].as_str(), claims["preferred_username"].as_str()), (Some("n-456"), Some("ada")));
    assert_eq!((claims["email"].as_str(), claims["azp"].as_str()), (Some("ada@example.com"), Some("forum")));
    let access = tokens["access_token"].as_str().unwrap();

    // The access token is for the client's userinfo, never for the account API.
    let info = Client::new().get(server.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap();
    let info: Value = info.json().await.unwrap();
    assert_eq!((info["sub"].clone(), info["email"].as_str()), (claims["sub"].clone(), Some("ada@example.com")));
    server.me(access).await.assert_error(StatusCode::FORBIDDEN, "insufficient_scope");

    // The consent is remembered: the next request goes straight back with a code.
    let again = laptop.get(server.url(&authorize_path("forum", &[("scope", "openid email")]))).send().await.unwrap();
    let again_code = callback_params(&location(&again))["code"].clone();
    let (status, again_tokens) = exchange(&server, &secret, &again_code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    // First-party apps never ask; prompt=none works once signed in.
    let wiki = laptop.get(server.url(&authorize_path("wiki", &[("prompt", "none")]))).send().await.unwrap();
    let wiki_code = callback_params(&location(&wiki))["code"].clone();
    let (status, wiki_tokens) = exchange_as(&server, "wiki", &wiki_secret, &wiki_code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{wiki_tokens}");

    // Introspection: a client sees its own tokens; another client learns nothing.
    let (_, own) = introspect(&server, "forum", &secret, access).await;
    assert_eq!(
        (own["active"].as_bool(), own["client_id"].as_str(), own["username"].as_str()),
        (Some(true), Some("forum"), Some("ada"))
    );
    let (_, foreign) = introspect(&server, "wiki", &wiki_secret, access).await;
    assert_eq!(
        foreign,
        serde_json::json!({ "active": false }),
        "a token of one client refused at another's introspection"
    );
    let (status, body) = introspect(&server, "wiki", "kw_cs_wrong", access).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

    // Refresh rotates; the forum cannot use the wiki's refresh token.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = token_request(
        &server,
        Some(("wiki", &wiki_secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, refreshed) = token_request(
        &server,
        Some(("forum", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let claims = verified_id_token(&server, refreshed["id_token"].as_str().unwrap(), "forum").await;
    assert!(claims.get("nonce").is_none());
    let new_access = refreshed["access_token"].as_str().unwrap();

    // Revocation (RFC 7009) ends the grant's session; the other client's grant lives on.
    let revoked = Client::new()
        .post(server.url("/oauth/revoke"))
        .basic_auth("forum", Some(&secret))
        .form(&[("token", refreshed["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(introspect(&server, "forum", &secret, new_access).await.1["active"], false);
    let wiki_access = wiki_tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&server, "wiki", &wiki_secret, wiki_access).await.1["active"], true);

    // `admin revoke --channel wiki` kills exactly the wiki's tokens: the browser stays signed in.
    let out = server.admin(&["revoke", "--channel", "wiki", "--reason", "wiki proxy leaked tokens"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = within_seconds(4, || async {
        introspect(&server, "wiki", &wiki_secret, wiki_access).await.1["active"] == false
    });
    assert!(dead.await, "the wiki's token dies with its channel");
    let (status, page, _) = get(&laptop, &server, "/security").await;
    assert!(status == StatusCode::OK && page.contains("Your devices"), "the browser session is untouched");
    assert!(page.contains("The forum"), "the app's grant is listed as a device on /security");

    // "Apps you allowed": removing the forum's access forgets the consent and ends its sessions.
    assert!(page.contains("Apps you allowed") && page.contains("Remove access for The forum"));
    let removed = laptop
        .post(server.url("/security/apps/forum/remove"))
        .form(&[("csrf", crate::pages::csrf(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&removed), "/security?done=app");
    let again_access = again_tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&server, "forum", &secret, again_access).await.1["active"], false);
    let (status, asked, _) = get(&laptop, &server, &authorize_path("forum", &[])).await;
    assert!(status == StatusCode::OK && asked.contains("Allow The forum"), "the consent is asked again");
    server.stop().await;
}

/// The consent form's fields as the browser would send them, with the chosen button.
fn form_of(page: &str, decision: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = &page[page.find("action=\"/oauth/authorize/decision\"").expect("the consent form")..];
    while let Some(start) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[start + 27..];
        let name: String = rest.chars().take_while(|c| *c != '"').collect();
        let value_start = rest.find("value=\"").unwrap() + 7;
        let raw: String = rest[value_start..].chars().take_while(|c| *c != '"').collect();
        let value = raw.replace("&amp;", "&").replace("&#x2f;", "/").replace("&#x27;", "'").replace("&quot;", "\"");
        fields.push((name, value));
    }
    fields.push(("decision".into(), decision.into()));
    fields
}

async fn codes_are_single_use_bound_to_their_client_redirect_and_verifier(engine: Engine) {
    let server = TestServer::start(engine).await;
    let secret = register(&server, "forum", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let other_secret = register(&server, "shop", ClientKind::Confidential, true, SigningAlg::Es256).await.unwrap();
    let laptop = signed_in_browser(&server, "bea").await;
    let code_for = |response: reqwest::Response| callback_params(&location(&response))["code"].clone();
    let code = code_for(laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap());

    // Wrong verifier, wrong redirect URI, wrong client, wrong secret: all refused, the code unspent.
    let wrong_verifier = "x".repeat(43);
    let (status, body) = exchange(&server, &secret, &code, &wrong_verifier).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "PKCE mismatch");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token_request(&server, Some(("forum", &secret)), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "wrong redirect URI"
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", FORUM_CB),
        ("code_verifier", VERIFIER),
    ];
    let (_, body) = token_request(&server, Some(("shop", &other_secret)), &form).await;
    assert_eq!(body["error"], "invalid_grant", "another client's code");
    let (status, body) = token_request(&server, Some(("forum", "kw_cs_nope")), &form).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let (status, body) = token_request(&server, None, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "no client at all"
    );

    // The right exchange works once; a second one is refused and kills what the first one gave.
    let (status, tokens) = exchange(&server, &secret, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&server, "forum", &secret, access).await.1["active"], true);
    let (status, body) = exchange(&server, &secret, &code, VERIFIER).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(
        introspect(&server, "forum", &secret, access).await.1["active"],
        false,
        "the reused code's tokens are revoked"
    );
    let (_, body) = token_request(
        &server,
        Some(("forum", &secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(body["error"], "invalid_grant");

    // Public clients must use PKCE and cannot introspect; they redeem with their id alone.
    register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    let no_pkce = laptop
        .get(server.url(&authorize_path("tv", &[("code_challenge", ""), ("code_challenge_method", "")])))
        .send()
        .await
        .unwrap();
    let params = callback_params(&location(&no_pkce));
    assert_eq!(params["error"], "invalid_request");
    let tv_code = code_for(laptop.get(server.url(&authorize_path("tv", &[]))).send().await.unwrap());
    let form = [
        ("grant_type", "authorization_code"),
        ("code", tv_code.as_str()),
        ("redirect_uri", FORUM_CB),
        ("code_verifier", VERIFIER),
        ("client_id", "tv"),
    ];
    let (status, tv_tokens) = token_request(&server, None, &form).await;
    assert_eq!(status, StatusCode::OK, "{tv_tokens}");
    let response = Client::new()
        .post(server.url("/oauth/introspect"))
        .form(&[("token", tv_tokens["access_token"].as_str().unwrap()), ("client_id", "tv")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Unknown grants and malformed bodies get OAuth errors, not 500s.
    let (status, body) = token_request(&server, Some(("forum", &secret)), &[("grant_type", "password")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));
    let response = Client::new().post(server.url("/oauth/token")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_request");
    server.stop().await;
}

async fn bad_authorization_requests_are_refused_without_redirecting_to_strangers(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = keywarden::domain::policy::Requirement::All).await;
    register(&server, "forum", ClientKind::Confidential, false, SigningAlg::Es256).await;
    let anonymous = browser();

    // Unknown client or unregistered redirect URI: an error page, never a redirect.
    for path in [
        authorize_path("nobody", &[]),
        authorize_path("forum", &[("redirect_uri", "https://evil.example/cb")]),
        authorize_path("forum", &[("redirect_uri", "https://forum.example/auth/callback/../x")]),
    ] {
        let response = anonymous.get(server.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(response.headers().get("location").is_none());
        assert!(response.text().await.unwrap().contains("This sign-in link does not work"));
    }
    // Other mistakes go back to the client with an error and the state.
    for (extra, error) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let response = anonymous.get(server.url(&authorize_path("forum", &extra))).send().await.unwrap();
        let params = callback_params(&location(&response));
        assert_eq!((params["error"].as_str(), params["state"].as_str()), (error, "st-123"), "{extra:?}");
    }

    // A session that must first enrol a second factor is sent to do that, not to the client.
    let laptop = signed_in_browser(&server, "cyd").await;
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    assert_eq!(location(&response), "/security");
    let response = laptop.get(server.url(&authorize_path("forum", &[("prompt", "none")]))).send().await.unwrap();
    assert_eq!(callback_params(&location(&response))["error"], "interaction_required");
    server.stop().await;
}

async fn poll(server: &TestServer, device_code: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", "tv"),
    ];
    token_request(server, None, &form).await
}

async fn start_device(server: &TestServer, name: &str) -> Value {
    let response = Client::new()
        .post(server.url("/oauth/device_authorization"))
        .form(&[("client_id", "tv"), ("scope", "openid profile"), ("device_name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn a_tv_links_with_a_short_code_polls_and_is_listed_on_the_security_page(engine: Engine) {
    let server = TestServer::start(engine).await;
    register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    let laptop = signed_in_browser(&server, "dee").await;

    let started = start_device(&server, "Living-room TV").await;
    let user_code = started["user_code"].as_str().unwrap();
    assert!(
        user_code.len() == 9 && user_code.chars().all(|c| c == '-' || "BCDFGHJKLMNPQRSTVWXZ".contains(c)),
        "{user_code}"
    );
    assert_eq!((started["expires_in"].as_i64(), started["interval"].as_i64()), (Some(600), Some(5)));
    assert_eq!(started["verification_uri"], server.url("/link"));
    let device_code = started["device_code"].as_str().unwrap();

    // Polling before the person answers: pending, and too fast is told to slow down.
    assert_eq!(poll(&server, device_code).await.1["error"], "authorization_pending");
    let (status, body) = poll(&server, device_code).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("slow_down")));

    // The person types the code (any case, without the dash) and sees what they are linking.
    let found =
        submit(&laptop, &server, "/link", "/link", &[("code", &user_code.to_lowercase().replace('-', ""))]).await;
    let page = found.text().await.unwrap();
    assert!(page.contains("You are linking: <strong>The tv</strong>, <strong>Living-room TV</strong>"), "{page}");
    assert!(page.contains(user_code), "the code to compare with the screen");
    let confirmed = laptop
        .post(server.url("/link/confirm"))
        .form(&[("csrf", crate::pages::csrf(&page).as_str()), ("code", user_code), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert!(confirmed.text().await.unwrap().contains("Device linked"));

    // The device's next poll (after the interval) gets its tokens, once.
    let mut tokens = Value::Null;
    for _ in 0..20 {
        let (status, body) = poll(&server, device_code).await;
        if status == StatusCode::OK {
            tokens = body;
            break;
        }
        assert!(["slow_down", "authorization_pending"].contains(&body["error"].as_str().unwrap()), "{body}");
        server.advance(std::time::Duration::from_millis(600));
    }
    let claims = verified_id_token(&server, tokens["id_token"].as_str().expect("tokens after approval"), "tv").await;
    assert_eq!(claims["preferred_username"], "dee");
    assert_eq!(poll(&server, device_code).await.1["error"], "invalid_grant", "a device code works once");

    // The linked device is on /security under its own name, and signing it out there ends its tokens.
    let (_, security, _) = get(&laptop, &server, "/security").await;
    assert!(security.contains("Living-room TV"), "listed by name");
    let access = tokens["access_token"].as_str().unwrap();
    let info = Client::new().get(server.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let marker = "Sign out Living-room TV";
    let before = &security[..security.find(marker).expect("a sign-out button for the device")];
    let action_start = before.rfind("action=\"").unwrap() + 8;
    let action: String = before[action_start..].chars().take_while(|c| *c != '"').collect();
    let out = laptop
        .post(server.url(&action))
        .form(&[("csrf", crate::pages::csrf(&security).as_str())])
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success() || out.status().is_redirection());
    let refused = within_seconds(4, || async {
        let info = Client::new().get(server.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap();
        info.status() == StatusCode::UNAUTHORIZED
    });
    assert!(refused.await, "signed out from /security");

    // Cancelling tells the device access_denied.
    let declined = start_device(&server, "Kitchen speaker").await;
    let code = declined["user_code"].as_str().unwrap();
    let (_, page, _) = get(&laptop, &server, &format!("/link?code={code}")).await;
    assert!(page.contains("Kitchen speaker"));
    laptop
        .post(server.url("/link/confirm"))
        .form(&[("csrf", crate::pages::csrf(&page).as_str()), ("code", code), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(poll(&server, declined["device_code"].as_str().unwrap()).await.1["error"], "access_denied");
    server.stop().await;
}

async fn device_codes_expire_and_link_guesses_are_throttled(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.oauth.device_code_ttl_secs = 1).await;
    register(&server, "tv", ClientKind::Public, true, SigningAlg::Es256).await;
    let laptop = signed_in_browser(&server, "eve").await;
    let started = start_device(&server, "Old TV").await;
    server.advance(std::time::Duration::from_millis(1200));
    let (status, body) = poll(&server, started["device_code"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("expired_token")));
    let (status, page, _) =
        get(&laptop, &server, &format!("/link?code={}", started["user_code"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an expired code cannot be approved");
    assert!(page.contains("not valid or has expired"));

    // Guessing: the expired code counted, four more wrong ones, then the account must wait.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(submit(&laptop, &server, "/link", "/link", &[("code", "BCDF-GHJK")]).await.status());
    }
    assert_eq!(statuses[..4], [StatusCode::BAD_REQUEST; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    let throttled = submit(&laptop, &server, "/link", "/link", &[("code", "BCDF-GHJK")]).await;
    let wait: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 900, "Retry-After says when: {wait}");

    // Not signed in: /link sends the person to sign in first, and back with the code.
    let response = browser().get(server.url("/link?code=WDJB-MJHT")).send().await.unwrap();
    assert_eq!(location(&response), "/signin?next=%2Flink%3Fcode%3DWDJB-MJHT");
    // Unknown clients get invalid_client; a confidential client needs its secret.
    let response = Client::new()
        .post(server.url("/oauth/device_authorization"))
        .form(&[("client_id", "nobody")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

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
    use keywarden::domain::clients::ConfiguredClient;
    let mint = || keywarden::domain::tokens::TokenKind::ClientSecret.mint().to_string();
    let (first, second) = (mint(), mint());
    let site = |name: &str, secret: &str| ConfiguredClient {
        id: "site".into(),
        name: name.into(),
        public: false,
        redirect_uris: vec![FORUM_CB.into()],
        backchannel_logout_uri: None,
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
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: Some(private.to_string()),
    };
    assert_eq!(clients.register(new, &Actor::System).await.unwrap_err().code(), "invalid_client_metadata");
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
