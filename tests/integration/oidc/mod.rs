//! The OpenID Connect provider over HTTP (issue 6): the authorization code flow with PKCE and the
//! consent page, ID tokens checked against the published JWKS, userinfo, refresh, introspection
//! and revocation, channel revocation — and the negative cases the issue lists. Interop with
//! client libraries nobody here wrote lives in the end-to-end suite.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keywarden::domain::audit::Actor;
use keywarden::domain::oauth::clients::{ClientKind, NewClient};
use keywarden::keys::signing::SigningAlg;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{Engine, TestServer};
use crate::pages::{browser, get, location, submit};

mod clients;
mod device;
mod logout;

crate::on_both_engines!(
    a_third_party_app_signs_a_person_in_with_consent_pkce_and_an_id_token,
    codes_are_single_use_bound_to_their_client_redirect_and_verifier,
    bad_authorization_requests_are_refused_without_redirecting_to_strangers,
    an_unproven_address_signs_in_to_no_client_when_the_policy_says_so,
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
        security_event_uri: None,
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

/// `signup.require_verified_email`: an account whose address is unproven signs in to keywarden
/// (to reach its verification flow) but to no client, until the link is used.
async fn an_unproven_address_signs_in_to_no_client_when_the_policy_says_so(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.signup.require_verified_email = true).await;
    register(&server, "forum", ClientKind::Confidential, true, SigningAlg::Es256).await;
    server.sign_up_unverified("ned", "ned@example.com", "ned's passphrase").await;
    let laptop = browser();
    let done =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "ned"), ("password", "ned's passphrase")]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER, "keywarden's own pages still let it in");
    let (status, page, _) = get(&laptop, &server, &authorize_path("forum", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("confirm"), "the page says what to do: {page}");
    let (_, security, _) = get(&laptop, &server, "/security").await;
    assert!(security.contains("/security/verify-email"), "with the link sent again from here");

    // Once the address is proven (a first proof signs every session out), the client signs it in.
    let link = server.wait_for_outbox(0, |m| m.subject().contains("Confirm your email")).await.token("kw_ev_").unwrap();
    let verified = server.post("/api/v1/email/verify", serde_json::json!({ "token": link })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    let laptop = browser();
    let done =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "ned"), ("password", "ned's passphrase")]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let response = laptop.get(server.url(&authorize_path("forum", &[]))).send().await.unwrap();
    assert!(location(&response).starts_with(FORUM_CB), "{}", location(&response));
    server.stop().await;
}
