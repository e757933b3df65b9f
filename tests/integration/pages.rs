//! keywarden's pages driven like a browser (a client that keeps cookies and follows no redirects):
//! sign-up, verification, devices, "Sign out of all devices", reset with the checkbox, CSRF and headers.
//! The same stories run in real Chromium in the end-to-end suite (issue 4).

use reqwest::header::LOCATION;
use reqwest::{Client, StatusCode};

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(
    a_person_signs_up_verifies_and_signs_out_everywhere,
    forms_are_protected_and_pages_hardened,
    pages_set_up_ask_for_and_turn_off_an_authenticator_app,
    pages_hold_a_required_enrolment_then_change_the_email
);

async fn pages_hold_a_required_enrolment_then_change_the_email(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.mfa.require = keywarden::domain::policy::Requirement::All).await;
    server.sign_up("nils", "nils@example.com", "nils's passphrase").await;
    let laptop = browser();
    let signed_in = submit(
        &laptop,
        &server,
        "/signin",
        "/signin",
        &[("login", "nils"), ("password", "nils's passphrase"), ("next", "/security?from=forum")],
    )
    .await;
    assert_eq!((signed_in.status(), location(&signed_in)), (StatusCode::SEE_OTHER, "/security".to_owned()));

    // Until a factor is set up, the page offers only that, and other forms lead back to it.
    let (_, page, _) = get(&laptop, &server, "/security").await;
    assert!(page.contains("Set up two-step verification to continue") && page.contains("Set up an authenticator app"));
    assert!(!page.contains("Your devices") && !page.contains("Change password") && !page.contains("Email address"));
    let fields =
        [("current_password", "nils's passphrase"), ("new_password", "x y z w v"), ("confirm_password", "x y z w v")];
    let refused = submit(&laptop, &server, "/security", "/security/password", &fields).await;
    assert_eq!((refused.status(), location(&refused)), (StatusCode::SEE_OTHER, "/security".to_owned()));
    let refused = submit(&laptop, &server, "/security", "/security/signout-all", &[]).await;
    assert_eq!(location(&refused), "/security", "not signed out: the request never ran");

    let setup = submit(&laptop, &server, "/security", "/security/totp", &[]).await.text().await.unwrap();
    let marker = "<code class=\"secret\">";
    let key_start = setup.find(marker).unwrap() + marker.len();
    let secret = crate::mfa::base32_decode(&setup[key_start..].chars().take_while(|c| *c != '<').collect::<String>());
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = laptop
        .post(server.url("/security/totp/confirm"))
        .form(&[("csrf", csrf(&setup).as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let (_, page, _) = get(&laptop, &server, "/security").await;
    assert!(page.contains("Your devices") && page.contains("Email address") && !page.contains("to continue"));

    // Changing the address takes a fresh code in the same form, then the link sent to the new one.
    let code = crate::mfa::app_code(&secret, 1);
    let fields = [("new_email", "nils@elsewhere.example"), ("code", code.as_str())];
    let requested = submit(&laptop, &server, "/security", "/security/email", &fields).await;
    assert_eq!(location(&requested), "/security?done=email");
    let (_, page, _) = get(&laptop, &server, "/security?done=email").await;
    assert!(page.contains("Waiting for confirmation of <strong>nils@elsewhere.example</strong>"), "{page}");
    let token = wait_for_link(&server, "kw_ec_", 0).await;
    let done =
        submit(&laptop, &server, &format!("/verify-email/{token}"), &format!("/verify-email/{token}"), &[]).await;
    assert!(done.text().await.unwrap().contains("now confirmed for your account"));
    let (_, page, _) = get(&laptop, &server, "/security").await;
    assert!(page.contains("go to <strong>nils@elsewhere.example</strong>") && !page.contains("Waiting for"));
    server.stop().await;
}

async fn pages_set_up_ask_for_and_turn_off_an_authenticator_app(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("vera", "vera@example.com", "vera's passphrase").await;
    let laptop = browser();
    let signed_in =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "vera"), ("password", "vera's passphrase")]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let (_, security, _) = get(&laptop, &server, "/security").await;
    assert!(security.contains("Set up an authenticator app"));

    // Setup shows a QR code (an SVG image, no script) and the key; a wrong first code keeps the same key.
    let setup = submit(&laptop, &server, "/security", "/security/totp", &[]).await;
    let html = setup.text().await.unwrap();
    assert!(html.contains("src=\"data:image") && html.contains("svg+xml;base64,"), "a QR code image");
    let marker = "<code class=\"secret\">";
    let key_start = html.find(marker).unwrap() + marker.len();
    let key: String = html[key_start..].chars().take_while(|c| *c != '<').collect();
    let secret = crate::mfa::base32_decode(&key);
    let token = csrf(&html);
    let wrong = if crate::mfa::app_code(&secret, 0) == "000000" { "111111" } else { "000000" };
    let refused = laptop
        .post(server.url("/security/totp/confirm"))
        .form(&[("csrf", token.as_str()), ("code", wrong)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains(&key), "the same key is shown again");
    let code = crate::mfa::app_code(&secret, 0);
    let confirmed = laptop
        .post(server.url("/security/totp/confirm"))
        .form(&[("csrf", token.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    let codes_page = confirmed.text().await.unwrap();
    assert_eq!(codes_page.matches("<li><code>").count(), 10, "ten recovery codes shown once");

    // Another browser: password, then the second step, with a recovery code.
    let phone = browser();
    let step =
        submit(&phone, &server, "/signin", "/signin", &[("login", "vera"), ("password", "vera's passphrase")]).await;
    assert_eq!(step.status(), StatusCode::OK);
    let step_html = step.text().await.unwrap();
    assert!(step_html.contains("Two-step verification") && step_html.contains("name=\"mfa_token\" value=\"kw_mt_"));
    let marker = "name=\"mfa_token\" value=\"";
    let start = step_html.find(marker).unwrap() + marker.len();
    let mfa_token: String = step_html[start..].chars().take_while(|c| *c != '"').collect();
    let recovery_start = codes_page.find("<li><code>").unwrap() + "<li><code>".len();
    let recovery: String = codes_page[recovery_start..].chars().take_while(|c| *c != '<').collect();
    let finished = phone
        .post(server.url("/signin/mfa"))
        .form(&[
            ("csrf", csrf(&step_html).as_str()),
            ("mfa_token", mfa_token.as_str()),
            ("recovery_code", recovery.as_str()),
            ("next", "/security"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!((finished.status(), location(&finished)), (StatusCode::SEE_OTHER, "/security".to_owned()));
    let (_, phone_security, _) = get(&phone, &server, "/security").await;
    assert!(phone_security.contains("Authenticator app: on") && phone_security.contains("9 of 10 recovery codes left"));

    // Turning it off asks for a code in the same form.
    let off =
        submit(&phone, &server, "/security", "/security/totp/manage", &[("code", ""), ("action", "disable")]).await;
    assert_eq!(off.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let next_code = crate::mfa::app_code(&secret, 1);
    let off = submit(
        &phone,
        &server,
        "/security",
        "/security/totp/manage",
        &[("code", next_code.as_str()), ("action", "disable")],
    )
    .await;
    assert_eq!(location(&off), "/security?done=totp-off");
    let again =
        submit(&browser(), &server, "/signin", "/signin", &[("login", "vera"), ("password", "vera's passphrase")])
            .await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER, "password alone signs in again");
    server.stop().await;
}

/// Configuration only changes presentation and redirects; one engine is enough to prove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_the_operators_name_colours_and_origins() {
    let server = TestServer::start_with(Engine::Sqlite, |config| {
        config.product_name = "Mediaverse".into();
        config.pages.accent_color = "#ffd33d".into();
        config.pages.redirect_origins = vec!["https://forum.example.com".into()];
    })
    .await;
    server.sign_up("ida", "ida@example.com", "ida's passphrase").await;
    let client = browser();
    let (_, html, _) = get(&client, &server, "/signin").await;
    assert!(html.contains("<title>Sign in · Mediaverse</title>"), "the product name is on every page");
    let (_, css, _) = get(&client, &server, "/static/keywarden.css").await;
    // A pale accent gets dark text on buttons, and links fall back to the body colour to stay readable.
    assert!(css.contains(":root { --accent: #ffd33d; --accent-text: #11141c; --link: #1d2330; }"), "{css}");

    for (next, expected) in [
        ("https://forum.example.com/t/42?page=2", "https://forum.example.com/t/42?page=2"),
        ("https://forum.example.com.evil.example/", "/security"),
        ("http://forum.example.com/", "/security"),
    ] {
        let signed_in = submit(
            &client,
            &server,
            "/signin",
            "/signin",
            &[("login", "ida"), ("password", "ida's passphrase"), ("next", next)],
        )
        .await;
        assert_eq!((signed_in.status(), location(&signed_in)), (StatusCode::SEE_OTHER, expected.to_owned()), "{next}");
    }

    // An unknown address: a page for browsers (hardened like every page), JSON for API clients.
    let page = client.get(server.url("/no-such-page")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(page.text().await.unwrap().contains("Page not found"));
    let api = client.get(server.url("/api/v1/no-such-endpoint")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.json::<serde_json::Value>().await.unwrap()["error"], "not_found");
    server.stop().await;
}

pub(crate) fn browser() -> Client {
    Client::builder().no_proxy().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The CSRF token of the first form on a page.
pub(crate) fn csrf(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    html[start..].chars().take_while(|c| *c != '"').collect()
}

pub(crate) async fn get(
    client: &Client,
    server: &TestServer,
    path: &str,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let response = client.get(server.url(path)).send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, response.text().await.unwrap(), headers)
}

/// Submits the form of `page_path` to `action` with the page's CSRF token plus `fields`.
pub(crate) async fn submit(
    client: &Client,
    server: &TestServer,
    page_path: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (_, html, _) = get(client, server, page_path).await;
    let token = csrf(&html);
    let mut form: Vec<(&str, &str)> = vec![("csrf", token.as_str())];
    form.extend_from_slice(fields);
    client.post(server.url(action)).form(&form).send().await.unwrap()
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn wait_for_link(server: &TestServer, prefix: &str, nth: usize) -> String {
    server.wait_for_outbox(nth, |m| m.token(prefix).is_some()).await.token(prefix).unwrap()
}

async fn a_person_signs_up_verifies_and_signs_out_everywhere(engine: Engine) {
    let server = TestServer::start(engine).await;
    let laptop = browser();
    let signed_up = submit(
        &laptop,
        &server,
        "/signup",
        "/signup",
        &[("email", "Fay@Example.com"), ("username", "fay"), ("password", "fay's long passphrase")],
    )
    .await;
    assert_eq!(signed_up.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_up), "/security?welcome=1");
    let (status, security, _) = get(&laptop, &server, "/security?welcome=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        security.contains("This device")
            && security.contains("Sign out of all devices")
            && security.contains("Account created")
    );

    // The verification link from the outbox, confirmed with a button press.
    let token = wait_for_link(&server, "kw_ev_", 0).await;
    let (status, page, _) = get(&laptop, &server, &format!("/verify-email/{token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Confirm my email address"));
    let path = format!("/verify-email/{token}");
    assert_eq!(submit(&laptop, &server, &path, &path, &[]).await.status(), StatusCode::OK);
    assert_eq!(
        submit(&laptop, &server, &path, &path, &[]).await.status(),
        StatusCode::BAD_REQUEST,
        "a link works once"
    );

    // A second browser signs in; the first sees it and signs out everywhere, keeping itself.
    let phone = browser();
    let signed_in = submit(
        &phone,
        &server,
        "/signin",
        "/signin",
        &[("login", "fay@example.com"), ("password", "fay's long passphrase"), ("next", "/security")],
    )
    .await;
    assert_eq!((signed_in.status(), location(&signed_in)), (StatusCode::SEE_OTHER, "/security".to_owned()));
    assert_eq!(get(&phone, &server, "/security").await.0, StatusCode::OK);
    let (_, security, _) = get(&laptop, &server, "/security").await;
    assert_eq!(security.matches("<li>").count(), 2, "two devices listed");
    let out = submit(&laptop, &server, "/security", "/security/signout-all", &[("keep_current", "true")]).await;
    assert_eq!(location(&out), "/security?done=everywhere");
    let (status, _, headers) = get(&phone, &server, "/security").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the other browser is signed out");
    assert_eq!(headers[LOCATION], "/signin?next=/security");
    assert_eq!(get(&laptop, &server, "/security").await.0, StatusCode::OK);

    // Reset from the emailed link, with the checkbox: every session ends, the laptop's too.
    let requested = submit(&phone, &server, "/reset", "/reset", &[("email", "fay@example.com")]).await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    let token = wait_for_link(&server, "kw_pr_", 0).await;
    let path = format!("/reset/{token}");
    let mismatch = submit(
        &phone,
        &server,
        &path,
        &path,
        &[("new_password", "fay's new passphrase"), ("confirm_password", "typo"), ("sign_out_devices", "true")],
    )
    .await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reset = submit(
        &phone,
        &server,
        &path,
        &path,
        &[
            ("new_password", "fay's new passphrase"),
            ("confirm_password", "fay's new passphrase"),
            ("sign_out_devices", "true"),
        ],
    )
    .await;
    assert_eq!(reset.status(), StatusCode::OK);
    assert!(reset.text().await.unwrap().contains("Every device was signed out"));
    assert_eq!(get(&laptop, &server, "/security").await.0, StatusCode::SEE_OTHER, "old sessions are gone");
    let (status, again, _) = get(&phone, &server, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the link is spent");
    assert!(again.contains("This link no longer works"), "{again}");
    let back =
        submit(&laptop, &server, "/signin", "/signin", &[("login", "fay"), ("password", "fay's new passphrase")]).await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);

    // Sign-out ends the page session.
    let signed_out = submit(&laptop, &server, "/security", "/signout", &[]).await;
    assert_eq!(location(&signed_out), "/signin");
    assert_eq!(get(&laptop, &server, "/security").await.0, StatusCode::SEE_OTHER);
    server.stop().await;
}

async fn forms_are_protected_and_pages_hardened(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("gus", "gus@example.com", "gus's passphrase").await;
    let client = browser();

    for path in [
        "/signin",
        "/signup",
        "/reset",
        "/reset/kw_pr_x",
        "/verify-email/kw_ev_x",
        "/static/keywarden.css",
        "/static/keywarden.js",
    ] {
        let (status, _, headers) = get(&client, &server, path).await;
        // A reset link is looked up first, to list what was added lately: an unknown one says so.
        let expected = if path.starts_with("/reset/") { StatusCode::BAD_REQUEST } else { StatusCode::OK };
        assert_eq!(status, expected, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline"),
            "{path}"
        );
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let (_, html, _) = get(&client, &server, "/signin").await;
    let scripts = html.matches("<script").count();
    assert_eq!(
        scripts,
        html.matches("<script src=\"/static/").count(),
        "every script is loaded from this site, none inline"
    );
    assert!(!html.contains("style="), "no inline style");
    assert!(html.contains("<html lang=\"en\">") && html.contains("<label for=\"login\">"));

    // A form posted from another site: without our token, or flagged cross-site by the browser.
    let forged = client
        .post(server.url("/signin"))
        .form(&[("csrf", "forged"), ("login", "gus"), ("password", "gus's passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let token = csrf(&html);
    let cross = client
        .post(server.url("/signin"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", token.as_str()), ("login", "gus"), ("password", "gus's passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // Another browser's token is no good either.
    let other = browser();
    let (_, other_html, _) = get(&other, &server, "/signin").await;
    let stolen = client
        .post(server.url("/signin"))
        .form(&[("csrf", csrf(&other_html).as_str()), ("login", "gus"), ("password", "gus's passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::FORBIDDEN);

    // Unknown account and wrong password read the same; no open redirect after sign-in.
    let wrong = submit(&client, &server, "/signin", "/signin", &[("login", "gus"), ("password", "nope")]).await;
    let unknown = submit(&client, &server, "/signin", "/signin", &[("login", "nobody"), ("password", "nope")]).await;
    assert_eq!((wrong.status(), unknown.status()), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    let (wrong, unknown) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert!(
        wrong.contains("the login or the password is wrong") && unknown.contains("the login or the password is wrong")
    );
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example"] {
        let signed_in = submit(
            &client,
            &server,
            "/signin",
            "/signin",
            &[("login", "gus"), ("password", "gus's passphrase"), ("next", target)],
        )
        .await;
        assert_eq!(location(&signed_in), "/security", "{target}");
    }
    // The session cookie is HttpOnly and SameSite, and stored like every token: only as a digest.
    let signed_in =
        submit(&browser(), &server, "/signin", "/signin", &[("login", "gus"), ("password", "gus's passphrase")]).await;
    let set_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("kw_session="))
        .unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.starts_with("kw_session=kw_ws_"), "{set_cookie}");
    server.stop().await;
}
