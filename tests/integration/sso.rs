//! Sign-in with an upstream provider on both engines (issue 7). The upstream here is a second
//! keywarden acting as an OpenID provider, so every SQL path of trips, accounts, links and unlinks
//! runs on SQLite and PostgreSQL; the provider nobody here wrote (node's oidc-provider) and the
//! browser are in the end-to-end suite.

use keywarden::domain::audit::Actor;
use keywarden::domain::oauth::clients::{ClientKind, NewClient};
use keywarden::domain::sso::ProviderSettings;
use keywarden::keys::signing::SigningAlg;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::harness::{Engine, TestServer};
use crate::pages::{browser, get, location, submit};

crate::on_both_engines!(
    an_upstream_account_creates_an_account_then_signs_in_to_it,
    an_account_without_a_password_keeps_its_last_way_in_and_has_nothing_to_reset,
    linking_from_security_needs_a_fresh_proof_and_refuses_a_taken_upstream_account,
    an_account_with_an_authenticator_app_is_asked_for_its_code_after_the_provider,
    a_provider_that_takes_a_signed_assertion_instead_of_a_secret
);

/// An upstream keywarden with a first-party client for the downstream one (loopback, any port),
/// and a downstream keywarden configured with it as the provider `home`, using a client secret.
async fn pair(engine: Engine) -> (TestServer, TestServer) {
    pair_with(engine, false).await
}

/// The same, the downstream proving itself with `private_key_jwt` when `signed`.
async fn pair_with(engine: Engine, signed: bool) -> (TestServer, TestServer) {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let mut jwk: serde_json::Value = serde_json::from_str(&key.public_key().to_jwk_string()).unwrap();
    jwk["kid"] = "downstream-1".into();
    jwk["alg"] = "ES256".into();
    let pem_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem_file.path(), key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let upstream = TestServer::start(engine.clone()).await;
    let state = upstream.running_state();
    let clients = state.oauth.clients().clone();
    let client = NewClient {
        id: "downstream".into(),
        name: "Downstream".into(),
        kind: ClientKind::Confidential,
        redirect_uris: vec!["http://127.0.0.1/sso/home/callback".into()],
        backchannel_logout_uri: None,
        security_event_uri: None,
        first_party: true,
        id_token_alg: SigningAlg::Es256,
        jwks: signed.then(|| json!({ "keys": [jwk] }).to_string()),
    };
    let secret = clients.register(client, &Actor::System).await.unwrap().1.map(|s| s.to_string());
    assert_eq!(secret.is_none(), signed, "a private_key_jwt client has no secret");
    let key_path = pem_file.path().to_owned();
    let issuer = upstream.url("").trim_end_matches('/').to_owned();
    let downstream = TestServer::start_with(engine, |config| {
        config.sso.providers = vec![ProviderSettings {
            id: "home".into(),
            name: "Home".into(),
            issuer,
            client_id: "downstream".into(),
            client_secret: secret,
            client_secret_file: None,
            private_key_file: signed.then_some(key_path),
            private_key_id: signed.then(|| "downstream-1".to_owned()),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            icon: None,
        }];
    })
    .await;
    (upstream, downstream)
}

/// A browser signed in at the upstream provider as `username`.
async fn upstream_person(upstream: &TestServer, username: &str) -> Client {
    let password = format!("{username}'s passphrase");
    upstream.sign_up_unverified(username, &format!("{username}@upstream.example"), &password).await;
    let at_upstream = browser();
    let done =
        submit(&at_upstream, upstream, "/signin", "/signin", &[("login", username), ("password", &password)]).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    at_upstream
}

/// One trip: `at_home` (the downstream browser) leaves for the provider, `at_upstream` (the same
/// person's cookies there) answers, and the answer is brought back. Returns where it ends.
async fn trip(
    downstream: &TestServer,
    at_home: &Client,
    at_upstream: &Client,
    start: reqwest::Response,
) -> reqwest::Response {
    assert_eq!(start.status(), StatusCode::SEE_OTHER, "the trip starts");
    let authorize = location(&start);
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="), "{authorize}");
    let answered = at_upstream.get(&authorize).send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::SEE_OTHER);
    let callback = location(&answered);
    assert!(callback.starts_with(&downstream.url("/sso/home/callback?")), "{callback}");
    at_home.get(&callback).send().await.unwrap()
}

async fn sign_in_through_home(downstream: &TestServer, at_home: &Client, at_upstream: &Client) -> reqwest::Response {
    let start = at_home.get(downstream.url("/sso/home/start")).send().await.unwrap();
    trip(downstream, at_home, at_upstream, start).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_exchange_is_a_warning_for_the_operator() {
    let engine = Engine::Sqlite;
    crate::harness::warnings_logged();
    let (upstream, downstream) = pair(engine.clone()).await;
    // The operator's copy of the client secret is wrong (rotated at the provider, say).
    let downstream =
        downstream.restart_with(|c| c.sso.providers[0].client_secret = Some("not-the-secret-7f3a".into())).await;
    let at_upstream = upstream_person(&upstream, "wren").await;
    let laptop = browser();
    let back = sign_in_through_home(&downstream, &laptop, &at_upstream).await;
    assert!(back.status().is_client_error(), "the person sees a refusal, not a sign-in");
    let logged = crate::harness::warnings_logged();
    let line = logged
        .lines()
        .find(|l| l.contains("the sign-in provider refused the code exchange") && l.contains("provider=home"))
        .unwrap_or_else(|| panic!("no WARN line for the refused exchange:\n{logged}"));
    assert!(line.contains("WARN") && line.contains("invalid_client"), "{line}");
    assert!(!logged.contains("not-the-secret-7f3a"), "the secret never reaches the log");
    downstream.stop().await;
    upstream.stop().await;
}

async fn an_upstream_account_creates_an_account_then_signs_in_to_it(engine: Engine) {
    let (upstream, downstream) = pair(engine.clone()).await;
    let at_upstream = upstream_person(&upstream, "ada").await;

    let laptop = browser();
    let (_, signin, _) = get(&laptop, &downstream, "/signin").await;
    assert!(signin.contains("href=\"/sso/home/start?next=") && signin.contains("Sign in with Home"));
    let back = sign_in_through_home(&downstream, &laptop, &at_upstream).await;
    assert_eq!(location(&back), "/sso/finish");
    let (status, finish, _) = get(&laptop, &downstream, "/sso/finish").await;
    assert_eq!(status, StatusCode::OK);
    assert!(finish.contains("value=\"ada@upstream.example\""), "the provider's address is offered");

    // A taken username is refused on the same page, and the upstream account stays waiting.
    downstream.sign_up("taken", "taken@example.com", "a long enough passphrase").await;
    let taken = submit(
        &laptop,
        &downstream,
        "/sso/finish",
        "/sso/finish",
        &[("username", "taken"), ("email", "ada@upstream.example")],
    )
    .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let created = submit(
        &laptop,
        &downstream,
        "/sso/finish",
        "/sso/finish",
        &[("username", "ada"), ("email", "ada@upstream.example")],
    )
    .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&created), "/security?welcome=1");
    let (_, security, _) = get(&laptop, &downstream, "/security").await;
    assert!(security.contains("Home") && security.contains("Your account has no password"));
    // The upstream never verified ada's address (`email_verified: false`), so it gets our own link.
    let to_ada = |m: &crate::smtp::Received| m.to.iter().any(|to| to.contains("ada@upstream.example"));
    downstream.wait_for_outbox(0, |m| to_ada(m) && m.token("kw_ev_").is_some()).await;
    let pending_again = laptop.get(downstream.url("/sso/finish")).send().await.unwrap();
    assert_eq!(pending_again.status(), StatusCode::BAD_REQUEST, "the waiting upstream account was used up");

    // A copy of the database holds neither the provider's address for ada nor its subject for her.
    let subject = upstream.post("/api/v1/sessions", json!({ "login": "ada", "password": "ada's passphrase" })).await;
    let me = upstream.get_with_token("/api/v1/me", subject.json["access_token"].as_str().unwrap()).await;
    let subject = me.json["id"].as_str().unwrap().to_owned();
    for (place, value) in crate::breach_drill::dump(&engine, &downstream.database_url).await {
        for secret in ["ada@upstream.example", subject.as_str()] {
            assert!(!crate::breach_drill::contains(&value, secret.as_bytes()), "{secret} in {place}");
        }
    }

    // Another browser: the same upstream account finds the same account.
    let phone = browser();
    let back = sign_in_through_home(&downstream, &phone, &at_upstream).await;
    assert_eq!(location(&back), "/security");
    let (_, security, _) = get(&phone, &downstream, "/security").await;
    assert!(security.contains("ada@upstream.example"));

    // The answer of a trip works once.
    let start = phone.get(downstream.url("/sso/home/start")).send().await.unwrap();
    let answered = at_upstream.get(location(&start)).send().await.unwrap();
    let callback = location(&answered);
    assert_eq!(phone.get(&callback).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(phone.get(&callback).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    upstream.stop().await;
    downstream.stop().await;
}

async fn an_account_without_a_password_keeps_its_last_way_in_and_has_nothing_to_reset(engine: Engine) {
    let (upstream, downstream) = pair(engine).await;
    let at_upstream = upstream_person(&upstream, "bob").await;
    let laptop = browser();
    sign_in_through_home(&downstream, &laptop, &at_upstream).await;
    let created = submit(
        &laptop,
        &downstream,
        "/sso/finish",
        "/sso/finish",
        &[("username", "bob"), ("email", "bob@upstream.example")],
    )
    .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);

    // The operator sees how it signs in.
    let shown = downstream.admin(&["users", "show", "bob"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["has_password"], false);
    assert_eq!(shown["sign_in_providers"][0]["provider"], "home");

    // An empty password is not this account's password.
    let reply = downstream.post("/api/v1/sessions", json!({ "login": "bob", "password": "" })).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json["error"], "invalid_credentials");

    // Its only upstream account cannot be unlinked, even right after signing in.
    let (_, security, _) = get(&laptop, &downstream, "/security").await;
    let start = security.find("/security/sso/identities/").expect("an unlink form");
    let action: String = security[start..].chars().take_while(|c| *c != '"').collect();
    let refused = submit(&laptop, &downstream, "/security", &action, &[]).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("last way to sign in"));

    // A reset asked for it mails how it signs in instead of a link.
    let asked = downstream.post("/api/v1/password/reset-request", json!({ "email": "bob@upstream.example" })).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let mail = downstream.wait_for_outbox(0, |m| m.subject().contains("no password")).await;
    assert!(mail.text().contains("you sign in with Home"), "{}", mail.text());
    assert!(mail.token("kw_pr_").is_none());

    // Sign out of all devices ends the session; coming back takes another trip.
    let (_, security, _) = get(&laptop, &downstream, "/security").await;
    assert!(security.contains("Sign out of all devices"));
    let out = submit(&laptop, &downstream, "/security", "/security/signout-all", &[]).await;
    // Signed in again, the person sees what was added lately.
    assert_eq!(location(&out), "/signin?next=%2Fsecurity%3Fdone%3Deverywhere");
    let gone = laptop.get(downstream.url("/security")).send().await.unwrap();
    assert_eq!(location(&gone), "/signin?next=/security");
    let back = sign_in_through_home(&downstream, &laptop, &at_upstream).await;
    assert_eq!(location(&back), "/security");
    upstream.stop().await;
    downstream.stop().await;
}

async fn linking_from_security_needs_a_fresh_proof_and_refuses_a_taken_upstream_account(engine: Engine) {
    let (upstream, downstream) = pair(engine).await;
    let at_upstream = upstream_person(&upstream, "cyd").await;
    downstream.sign_up("cy-here", "cy@example.com", "cy's long passphrase").await;
    let tokens = downstream.sign_in("cy-here", "cy's long passphrase", None).await;
    assert_eq!(downstream.get_with_token("/api/v1/me", &tokens.access).await.json["has_password"], true);
    let laptop = browser();
    let signed_in = submit(
        &laptop,
        &downstream,
        "/signin",
        "/signin",
        &[("login", "cy-here"), ("password", "cy's long passphrase")],
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);

    let wrong = submit(&laptop, &downstream, "/security", "/security/sso/home/link", &[("password", "wrong")]).await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "a wrong password goes nowhere");
    let start =
        submit(&laptop, &downstream, "/security", "/security/sso/home/link", &[("password", "cy's long passphrase")])
            .await;
    let linked = trip(&downstream, &laptop, &at_upstream, start).await;
    assert_eq!(location(&linked), "/security?done=sso-linked");
    let (_, security, _) = get(&laptop, &downstream, "/security").await;
    assert!(security.contains("cyd@upstream.example"));

    // With a password left, the upstream account can be unlinked (after confirming).
    let start = security.find("/security/sso/identities/").unwrap();
    let action: String = security[start..].chars().take_while(|c| *c != '"').collect();

    // The same upstream account cannot join a second account.
    downstream.sign_up("cy-other", "cy2@example.com", "cy's other passphrase").await;
    let other = browser();
    submit(&other, &downstream, "/signin", "/signin", &[("login", "cy-other"), ("password", "cy's other passphrase")])
        .await;
    let start =
        submit(&other, &downstream, "/security", "/security/sso/home/link", &[("password", "cy's other passphrase")])
            .await;
    let taken = trip(&downstream, &other, &at_upstream, start).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert!(taken.text().await.unwrap().contains("already linked to another account"));

    let unlinked = submit(&laptop, &downstream, "/security", &action, &[("password", "cy's long passphrase")]).await;
    assert_eq!(location(&unlinked), "/security?done=sso-unlinked");
    let back = sign_in_through_home(&downstream, &browser(), &at_upstream).await;
    assert_eq!(location(&back), "/sso/finish", "once unlinked, the upstream account finds nothing");
    upstream.stop().await;
    downstream.stop().await;
}

async fn an_account_with_an_authenticator_app_is_asked_for_its_code_after_the_provider(engine: Engine) {
    let (upstream, downstream) = pair(engine).await;
    let at_upstream = upstream_person(&upstream, "dee").await;
    let (_, secret, recovery_codes) = crate::mfa::enrol(&downstream, "dee-here").await;
    let laptop = browser();
    let first = submit(
        &laptop,
        &downstream,
        "/signin",
        "/signin",
        &[("login", "dee-here"), ("password", "dee-here's passphrase")],
    )
    .await;
    let html = first.text().await.unwrap();
    let mfa_token = field(&html, "mfa_token");
    let done = laptop
        .post(downstream.url("/signin/mfa"))
        .form(&[
            ("csrf", crate::pages::csrf(&html).as_str()),
            ("mfa_token", &mfa_token),
            ("code", &crate::mfa::app_code(&secret, 1)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);

    // With a second factor, linking is confirmed with a code, never the password alone.
    let password_only =
        submit(&laptop, &downstream, "/security", "/security/sso/home/link", &[("password", "dee-here's passphrase")])
            .await;
    assert_eq!(password_only.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let code = &recovery_codes[0];
    let start = submit(&laptop, &downstream, "/security", "/security/sso/home/link", &[("code", code)]).await;
    let linked = trip(&downstream, &laptop, &at_upstream, start).await;
    assert_eq!(location(&linked), "/security?done=sso-linked");

    // The provider is the first step only: the authenticator app is still asked for.
    let phone = browser();
    let back = sign_in_through_home(&downstream, &phone, &at_upstream).await;
    assert_eq!(back.status(), StatusCode::OK);
    let html = back.text().await.unwrap();
    assert!(html.contains("Two-step verification"), "the second step is asked for");
    assert_eq!(location(&phone.get(downstream.url("/security")).send().await.unwrap()), "/signin?next=/security");
    let mfa_token = field(&html, "mfa_token");
    let finished = phone
        .post(downstream.url("/signin/mfa"))
        .form(&[
            ("csrf", crate::pages::csrf(&html).as_str()),
            ("mfa_token", &mfa_token),
            ("recovery_code", &recovery_codes[1]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&finished), "/security");
    let (status, _, _) = get(&phone, &downstream, "/security").await;
    assert_eq!(status, StatusCode::OK);
    upstream.stop().await;
    downstream.stop().await;
}

/// The value of a hidden form field.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..].chars().take_while(|c| *c != '"').collect()
}

async fn a_provider_that_takes_a_signed_assertion_instead_of_a_secret(engine: Engine) {
    let (upstream, downstream) = pair_with(engine, true).await;
    let at_upstream = upstream_person(&upstream, "eli").await;
    let laptop = browser();
    let back = sign_in_through_home(&downstream, &laptop, &at_upstream).await;
    assert_eq!(location(&back), "/sso/finish", "the code was exchanged with a private_key_jwt assertion");
    let created = submit(
        &laptop,
        &downstream,
        "/sso/finish",
        "/sso/finish",
        &[("username", "eli"), ("email", "eli@upstream.example")],
    )
    .await;
    assert_eq!(location(&created), "/security?welcome=1");
    upstream.stop().await;
    downstream.stop().await;
}
