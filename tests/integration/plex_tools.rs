//! What the tools beside a media server call on plex.tv (issue 21), on both engines: claiming a
//! server, tokens that live while used, the v1 account surface, server lists in every shape, CORS on
//! PINs only, `/auth`'s forward check, webhooks and plex.tv's JSON types. The tools themselves run
//! against it in the e2e suite.

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{count_rows, Engine, TestServer};
use crate::plex::{attribute, plex, sign_in};

crate::on_both_engines!(
    a_claim_token_makes_a_new_media_server_the_owners_once,
    a_plex_token_lives_while_used_until_its_maximum_and_still_dies_when_revoked,
    the_v1_account_and_sign_in_answer_as_tautulli_overseerr_and_ombi_read_them,
    servers_are_listed_in_every_shape_clients_parse,
    only_the_pin_endpoints_answer_browsers_from_other_origins,
    webhooks_are_bounded_http_urls_and_audited,
    an_app_gets_its_browser_back_only_to_its_own_http_address,
    a_token_extended_on_one_node_lives_on_every_node
);

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The request the official media server container's first-run script sends.
fn container_exchange(client: &Client, server: &TestServer, claim: &str, machine: &str) -> reqwest::RequestBuilder {
    client
        .post(server.url(&format!("/api/claim/exchange?token={claim}")))
        .header("X-Plex-Client-Identifier", machine)
        .header("X-Plex-Product", "Plex Media Server")
        .header("X-Plex-Version", "1.1")
        .header("X-Plex-Provides", "server")
        .header("X-Plex-Platform", "Linux")
        .header("X-Plex-Platform-Version", "1.0")
        .header("X-Plex-Device-Name", "PlexMediaServer")
        .header("X-Plex-Device", "Linux")
}

/// What the container's `sed -n 's/.*<authentication-token>\(.*\)<\/authentication-token>.*/\1/p'`
/// prints: the token, from the one line that holds it.
fn sed_token(body: &str) -> Option<String> {
    body.lines().find_map(|line| {
        let start = line.find("<authentication-token>")? + "<authentication-token>".len();
        let end = line.rfind("</authentication-token>")?;
        Some(line[start..end].to_owned())
    })
}

async fn claim_token(client: &Client, server: &TestServer, owner: &str) -> reqwest::Response {
    client
        .get(server.url("/api/claim/token.json"))
        .header("X-Plex-Token", owner)
        .header("X-Plex-Client-Identifier", "laptop")
        .send()
        .await
        .unwrap()
}

async fn a_claim_token_makes_a_new_media_server_the_owners_once(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("kim", "kim@example.com", "kim's long passphrase").await;
    let client = Client::new();
    let owner =
        attribute(&sign_in(&server, "kim", "kim's long passphrase", "laptop").await.text().await.unwrap(), "authToken");

    let asked = claim_token(&client, &server, &owner).await;
    assert_eq!(asked.status(), StatusCode::OK);
    let claim = asked.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert!(claim.starts_with("claim-") && claim.len() == 26, "{claim}");
    let stored =
        count_rows(&engine, &server.database_url, "SELECT COUNT(*) FROM plex_claims WHERE used_at IS NULL").await;
    assert_eq!(stored, 1, "one claim waiting (its code only as a keyed digest: the table has no code column)");

    let exchanged = container_exchange(&client, &server, &claim, "machine-1").send().await.unwrap();
    assert_eq!(exchanged.status(), StatusCode::OK);
    let body = exchanged.text().await.unwrap();
    let token = sed_token(&body).expect("the container's sed finds the token");
    assert!(token.starts_with("kw_pt_"), "{body}");
    assert_eq!(attribute(&body, "authenticationToken"), token);
    assert_eq!(attribute(&body, "username"), "kim");

    // The server's token is its own device's, a media server the owner's resources list.
    let resources =
        client.get(server.url("/api/resources?includeHttps=1")).header("X-Plex-Token", &owner).send().await.unwrap();
    let xml = resources.text().await.unwrap();
    assert!(xml.contains("clientIdentifier=\"machine-1\"") && xml.contains("provides=\"server\""), "{xml}");
    let me = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let mail =
        server.wait_for_outbox(0, |m| m.to == ["kim@example.com"] && m.subject().starts_with("New sign-in")).await;
    assert!(String::from_utf8_lossy(&mail.raw).contains("PlexMediaServer"), "the owner hears of the new server");
    let claimed = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'device.server_claimed'",
    )
    .await;
    assert_eq!(claimed, 1);

    // Presented by several servers at once, a claim is spent once: exactly one of them gets a token.
    let raced = claim_token(&client, &server, &owner).await.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let racers = (0..6).map(|i| container_exchange(&client, &server, &raced, &format!("racer-{i}")).send());
    let statuses: Vec<StatusCode> =
        futures::future::join_all(racers).await.into_iter().map(|r| r.unwrap().status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count(), 5, "{statuses:?}");
    // Used once; an unknown one, a malformed one and an expired one are refused in plex.tv's XML.
    let again = container_exchange(&client, &server, &claim, "machine-2").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let refusal = again.text().await.unwrap();
    assert!(refusal.contains("<errors><error ") && sed_token(&refusal).is_none(), "{refusal}");
    for wrong in ["claim-AAAAAAAAAAAAAAAAAAAA", "not-a-claim"] {
        let refused = container_exchange(&client, &server, wrong, "machine-3").send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{wrong}");
    }
    // The XML form (this one is left to expire).
    let xml = client.get(server.url("/api/claim/token")).header("X-Plex-Token", &owner).send().await.unwrap();
    let xml = xml.text().await.unwrap();
    assert!(attribute(&xml, "token").starts_with("claim-"), "{xml}");
    let late = claim_token(&client, &server, &owner).await.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.advance(std::time::Duration::from_secs(301));
    let expired = container_exchange(&client, &server, &late, "machine-4").send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST, "claims last five minutes");

    // No claim without a token.
    let anonymous = client.get(server.url("/api/claim/token.json")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A stale session (a token stored months ago by some tool) cannot mint a server credential.
    server.advance(DAY);
    let stale = claim_token(&client, &server, &owner).await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

async fn ping(client: &Client, server: &TestServer, token: &str) -> StatusCode {
    let reply =
        client.get(server.url("/api/v2/ping")).header("X-Plex-Token", token).header("Accept", "application/json");
    let reply = reply.send().await.unwrap();
    let status = reply.status();
    if status == StatusCode::OK {
        assert_eq!(reply.json::<Value>().await.unwrap(), json!({ "pong": true }), "Overseerr looks for pong");
    }
    status
}

async fn a_plex_token_lives_while_used_until_its_maximum_and_still_dies_when_revoked(engine: Engine) {
    let server = TestServer::start_with(engine.clone(), |config| {
        config.tokens.plex_idle_ttl_secs = 30 * 86_400;
        config.tokens.plex_max_ttl_secs = 90 * 86_400;
    })
    .await;
    server.sign_up("lee", "lee@example.com", "lee's long passphrase").await;
    let client = Client::new();
    let signed_in = sign_in(&server, "lee", "lee's long passphrase", "tautulli").await.text().await.unwrap();
    let token = attribute(&signed_in, "authToken");
    let idle =
        attribute(&sign_in(&server, "lee", "lee's long passphrase", "shelf").await.text().await.unwrap(), "authToken");
    let expiry = "SELECT MAX(expires_at) FROM tokens WHERE kind = 'plex_token'";
    let first = count_rows(&engine, &server.database_url, expiry).await;

    // Pings a minute apart write nothing; a day later one write moves the expiry a day.
    server.advance(std::time::Duration::from_secs(60));
    assert_eq!(ping(&client, &server, &token).await, StatusCode::OK);
    assert_eq!(count_rows(&engine, &server.database_url, expiry).await, first, "no write per request");
    server.advance(DAY);
    assert_eq!(ping(&client, &server, &token).await, StatusCode::OK);
    let moved = count_rows(&engine, &server.database_url, expiry).await;
    assert!((moved - first - DAY.as_millis() as i64).abs() < 120_000, "{first} → {moved}");

    // Used every 25 days it outlives the 30-day window; the one left alone does not.
    for _ in 0..2 {
        server.advance(25 * DAY);
        assert_eq!(ping(&client, &server, &token).await, StatusCode::OK);
    }
    assert_eq!(ping(&client, &server, &idle).await, StatusCode::UNAUTHORIZED, "unused for 51 days");
    // …but not past its maximum, 90 days from its issue.
    server.advance(25 * DAY);
    assert_eq!(ping(&client, &server, &token).await, StatusCode::OK, "day 76");
    server.advance(15 * DAY);
    assert_eq!(ping(&client, &server, &token).await, StatusCode::UNAUTHORIZED, "day 91: past the maximum");

    // Revocation kills a token that was extended, at once.
    let fresh =
        attribute(&sign_in(&server, "lee", "lee's long passphrase", "nas").await.text().await.unwrap(), "authToken");
    server.advance(DAY);
    assert_eq!(ping(&client, &server, &fresh).await, StatusCode::OK);
    let out = client.delete(server.url("/api/v2/users/signout")).header("X-Plex-Token", &fresh).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(ping(&client, &server, &fresh).await, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn the_v1_account_and_sign_in_answer_as_tautulli_overseerr_and_ombi_read_them(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("Ola", "ola@example.com", "ola's long passphrase").await;
    let client = Client::new();
    let token = attribute(
        &sign_in(&server, "ola", "ola's long passphrase", "tautulli").await.text().await.unwrap(),
        "authToken",
    );

    // Tautulli: `/users/account` in XML, whatever it accepts.
    let xml = client.get(server.url("/users/account")).header("X-Plex-Token", &token).send().await.unwrap();
    assert!(xml.headers()["content-type"].to_str().unwrap().starts_with("application/xml"));
    let xml = xml.text().await.unwrap();
    assert!(xml.contains("<user ") && xml.contains("<subscription active=\"0\" status=\"Inactive\""), "{xml}");
    assert_eq!((attribute(&xml, "username"), attribute(&xml, "authToken")), ("Ola".to_owned(), token.clone()));
    let numeric: i64 = attribute(&xml, "id").parse().unwrap();
    // Overseerr: `/users/account.json`, `id` a number it compares strictly.
    let json: Value = client
        .get(server.url("/users/account.json"))
        .header("X-Plex-Token", &token)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = &json["user"];
    assert_eq!(user["id"], numeric);
    assert_eq!((user["hasPassword"].clone(), user["authentication_token"].clone()), (json!(true), json!(token)));
    assert_eq!((user["roles"].clone(), user["entitlements"].clone()), (json!({ "roles": [] }), json!([])));

    // Ombi: `POST /users/sign_in.json` with `{"user": {"login", "password"}}`.
    let ombi = |login: &str, password: &str| {
        client
            .post(server.url("/users/sign_in.json"))
            .header("X-Plex-Client-Identifier", "0f1e2d3c4b5a")
            .header("X-Plex-Device", "Ombi")
            .header("X-Plex-Platform", "Web")
            .header("Accept", "application/json")
            .json(&json!({ "user": { "login": login, "password": password } }))
    };
    let signed_in = ombi("ola@example.com", "ola's long passphrase").send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    let user = signed_in.json::<Value>().await.unwrap()["user"].clone();
    let ombi_token = user["authentication_token"].as_str().unwrap().to_owned();
    assert!(ombi_token.starts_with("kw_pt_") && ombi_token != token);
    assert_eq!(user["username"], "Ola");
    let wrong = ombi("ola@example.com", "not it").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json::<Value>().await.unwrap()["errors"][0]["code"], 1001);
    // Older Tautulli: Basic credentials to `/users/sign_in.xml`, the token in `authenticationToken`.
    let basic = client
        .post(server.url("/users/sign_in.xml"))
        .header("X-Plex-Client-Identifier", "plexpy")
        .header("Content-Type", "application/xml; charset=utf-8")
        .basic_auth("Ola", Some("ola's long passphrase"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::CREATED);
    assert!(attribute(&basic.text().await.unwrap(), "authenticationToken").starts_with("kw_pt_"));
    // Two-step verification as on v2: no code is 1029; a recovery code in `verificationCode` signs in.
    let (_, _, recovery) = crate::mfa::enrol(&server, "vic").await;
    let v1 = |body: Value| {
        client.post(server.url("/users/sign_in.json")).header("X-Plex-Client-Identifier", "ombi-2").json(&body).send()
    };
    let asked = v1(json!({ "user": { "login": "vic", "password": "vic's passphrase" } })).await.unwrap();
    assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);
    let asked: Value = asked.json().await.unwrap();
    assert_eq!(asked["errors"][0]["code"], 1029, "{asked}");
    let body = json!({ "user": { "login": "vic", "password": "vic's passphrase", "verificationCode": recovery[0] } });
    assert_eq!(v1(body).await.unwrap().status(), StatusCode::CREATED);
    let empty =
        client.post(server.url("/users/sign_in.json")).header("X-Plex-Client-Identifier", "x").send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

async fn servers_are_listed_in_every_shape_clients_parse(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("max", "max@example.com", "max's long passphrase").await;
    let client = Client::new();
    let token =
        attribute(&sign_in(&server, "max", "max's long passphrase", "nas-9").await.text().await.unwrap(), "authToken");
    let published = plex(
        &client,
        Method::PUT,
        server.url(
            "/devices/nas-9?Connection[][uri]=http://127.0.0.1:32400&Connection[][uri]=https://media.example.net:443",
        ),
        "nas-9",
    )
    .header("X-Plex-Token", &token)
    .send()
    .await
    .unwrap();
    assert_eq!(published.status(), StatusCode::OK);
    let get = |path: &str| {
        client.get(server.url(path)).header("X-Plex-Token", &token).header("Accept", "application/json").send()
    };

    // v1 resources: XML even when JSON is asked for (Overseerr parses XML), Unix times, `<Connection>`s.
    let v1 = get("/api/resources?includeHttps=1").await.unwrap();
    assert!(v1.headers()["content-type"].to_str().unwrap().starts_with("application/xml"));
    let v1 = v1.text().await.unwrap();
    assert!(v1.contains("<MediaContainer size=\"1\"><Device "), "{v1}");
    for (name, value) in [("provides", "server"), ("owned", "1"), ("presence", "1"), ("clientIdentifier", "nas-9")] {
        assert_eq!(attribute(&v1, name), value, "{name}");
    }
    assert!(attribute(&v1, "createdAt").parse::<i64>().is_ok(), "Unix seconds");
    assert!(v1.contains("<Connection protocol=\"http\" address=\"127.0.0.1\" port=\"32400\" uri=\"http://127.0.0.1:32400\" local=\"1\"/>"), "{v1}");
    assert!(v1.contains("uri=\"https://media.example.net\" local=\"0\""), "{v1}");

    // v2 resources in JSON: a top-level array even with one server, typed fields.
    let v2: Value = get("/api/v2/resources").await.unwrap().json().await.unwrap();
    let list = v2.as_array().expect("a top-level array");
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["owned"].clone(), list[0]["presence"].clone()), (json!(true), json!(true)));
    assert_eq!(list[0]["connections"][0]["port"], 32400);
    assert_eq!(list[0]["connections"][0]["local"], true);

    // `pms/servers.xml` and `devices.xml` with each device's connections.
    let servers = get("/pms/servers.xml").await.unwrap().text().await.unwrap();
    assert!(servers.contains("<Server ") && servers.contains("machineIdentifier=\"nas-9\""), "{servers}");
    assert_eq!(attribute(&servers, "address"), "media.example.net");
    assert_eq!(attribute(&servers, "localAddresses"), "127.0.0.1");
    let devices = client.get(server.url("/devices.xml")).header("X-Plex-Token", &token).send().await.unwrap();
    let devices = devices.text().await.unwrap();
    assert!(devices.contains("<Connection uri=\"http://127.0.0.1:32400\"/>"), "{devices}");
    let devices: Value = get("/devices.xml").await.unwrap().json().await.unwrap();
    assert!(devices["Device"].is_array() && devices["Device"][0]["Connection"].is_array(), "{devices}");
    server.stop().await;
}

async fn only_the_pin_endpoints_answer_browsers_from_other_origins(engine: Engine) {
    let server = TestServer::start(engine).await;
    let client = Client::new();
    let origin = "https://requests.example.org";
    let preflight = |path: &str| {
        client
            .request(Method::OPTIONS, server.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "accept,x-plex-client-identifier,x-plex-product,x-plex-device-screen-resolution",
            )
            .send()
    };
    let pins = preflight("/api/v2/pins").await.unwrap();
    assert!(pins.status().is_success(), "{}", pins.status());
    assert_eq!(pins.headers()["access-control-allow-origin"], "*");
    let allowed = pins.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    for header in ["accept", "x-plex-client-identifier", "x-plex-device-screen-resolution"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(pins.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(pins.headers().get("access-control-allow-credentials").is_none(), "never with cookies");

    // Overseerr's own request: `?strong=true`, JSON, typed fields, and the answer readable cross-origin.
    let created = plex(&client, Method::POST, server.url("/api/v2/pins?strong=true"), "overseerr-web")
        .header("Origin", origin)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers()["access-control-allow-origin"], "*");
    let pin: Value = created.json().await.unwrap();
    assert!(pin["id"].is_i64() && pin["expiresIn"].is_i64() && pin["trusted"] == false, "{pin}");
    assert_eq!(pin["code"].as_str().unwrap().len(), 25, "strong=true gives a 25-character code");
    assert!(pin["authToken"].is_null());
    let polled = plex(&client, Method::GET, server.url(&format!("/api/v2/pins/{}", pin["id"])), "overseerr-web")
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(polled.headers()["access-control-allow-origin"], "*");

    // Nothing else: the account API, the pages and the PIN approval (it takes a token) get no CORS.
    for path in ["/api/v1/sessions", "/signin", "/api/v2/pins/link", "/api/v2/user"] {
        let other = preflight(path).await.unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none(), "{path}");
    }
    let page = client.get(server.url("/auth/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("/static/keywarden.js"), "the page's script reads the fragment");
    server.stop().await;
}

async fn webhooks_are_bounded_http_urls_and_audited(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("uma", "uma@example.com", "uma's long passphrase").await;
    let client = Client::new();
    let token =
        attribute(&sign_in(&server, "uma", "uma's long passphrase", "script").await.text().await.unwrap(), "authToken");
    let set = |urls: Vec<(&'static str, String)>| {
        client.post(server.url("/api/v2/user/webhooks")).header("X-Plex-Token", &token).form(&urls).send()
    };
    let list = || client.get(server.url("/api/v2/user/webhooks")).header("X-Plex-Token", &token).send();
    assert!(!list().await.unwrap().text().await.unwrap().contains("<webhook "), "none at first");

    let two =
        vec![("urls[]", "https://hooks.example.net/a".to_owned()), ("urls[]", "http://10.0.0.2:8181/b".to_owned())];
    assert_eq!(set(two).await.unwrap().status(), StatusCode::CREATED);
    let xml = list().await.unwrap().text().await.unwrap();
    assert!(
        xml.contains("<webhook url=\"https://hooks.example.net/a\"/><webhook url=\"http://10.0.0.2:8181/b\"/>"),
        "{xml}"
    );
    let json: Value = client
        .get(server.url("/api/v2/user/webhooks"))
        .header("X-Plex-Token", &token)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json[0]["url"], "https://hooks.example.net/a");

    for bad in ["javascript:alert(1)", "ftp://files.example.net/", "not a url"] {
        let refused = set(vec![("urls[]", bad.to_owned())]).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let many = (0..26).map(|i| ("urls[]", format!("https://hooks.example.net/{i}"))).collect();
    assert_eq!(set(many).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert!(
        list().await.unwrap().text().await.unwrap().contains("hooks.example.net/a"),
        "a refused list changes nothing"
    );
    // plexapi clears the list with `urls=` (empty).
    assert_eq!(set(vec![("urls", String::new())]).await.unwrap().status(), StatusCode::CREATED);
    assert!(!list().await.unwrap().text().await.unwrap().contains("<webhook "));
    let audited = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind = 'account.webhooks_changed'",
    )
    .await;
    assert_eq!(audited, 2);
    server.stop().await;
}

async fn an_app_gets_its_browser_back_only_to_its_own_http_address(engine: Engine) {
    use crate::pages::{browser, csrf, get, location, submit};
    let server = TestServer::start(engine).await;
    server.sign_up("ivy", "ivy@example.com", "ivy's long passphrase").await;
    let client = Client::new();
    let web = browser();
    let signed_in =
        submit(&web, &server, "/signin", "/signin", &[("login", "ivy"), ("password", "ivy's long passphrase")]).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let new_pin = || async {
        let created = plex(&client, Method::POST, server.url("/api/v2/pins?strong=true"), "ombi-web");
        created.send().await.unwrap().text().await.unwrap()
    };
    let own = server.url("/security");
    let cases = [
        ("https://requests.example.org/login?done=1", true),
        ("javascript:alert(document.cookie)", false),
        ("data:text/html,<script>alert(1)</script>", false),
        ("https://user:pass@requests.example.org/", false),
        (own.as_str(), false),
    ];
    for (forward, allowed) in cases {
        let pin = new_pin().await;
        let code = attribute(&pin, "code");
        let path = format!(
            "/link?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("code", &code)
                .append_pair("forward", forward)
                .finish()
        );
        let (status, html, headers) = get(&web, &server, &path).await;
        assert_eq!(status, StatusCode::OK, "{forward}");
        assert!(html.contains("You are signing in to Plex Media Server"), "{html}");
        assert_eq!(html.contains("name=\"forward\""), allowed, "{forward}");
        if allowed {
            let csp = headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("form-action 'self' https://requests.example.org"), "{csp}");
        }
        let token = csrf(&html);
        let confirmed = web
            .post(server.url("/link/confirm"))
            .form(&[("csrf", token.as_str()), ("code", code.as_str()), ("decision", "allow"), ("forward", forward)])
            .send()
            .await
            .unwrap();
        if allowed {
            assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
            assert_eq!(location(&confirmed), forward);
        } else {
            assert_eq!(confirmed.status(), StatusCode::OK, "{forward}: no redirect");
            assert!(confirmed.text().await.unwrap().contains("Device linked"));
        }
        let polled =
            plex(&client, Method::GET, server.url(&format!("/api/v2/pins/{}", attribute(&pin, "id"))), "ombi-web");
        let polled = polled.send().await.unwrap().text().await.unwrap();
        assert!(attribute(&polled, "authToken").starts_with("kw_pt_"), "the app collects its token: {polled}");
    }
    server.stop().await;
}

async fn a_token_extended_on_one_node_lives_on_every_node(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("ned", "ned@example.com", "ned's long passphrase").await;
    let client = Client::new();
    let token = attribute(
        &sign_in(&server, "ned", "ned's long passphrase", "overseerr").await.text().await.unwrap(),
        "authToken",
    );
    let other = server.another_node().await;
    let ping_at = |base: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            let reply = client.get(format!("{base}/api/v2/ping")).header("X-Plex-Token", token).send().await.unwrap();
            reply.status()
        }
    };
    let (first, second) = (server.url(""), format!("http://{}", other.addr));
    // The second node reads the token now, so it holds the first expiry (30 days) in its cache.
    assert_eq!(ping_at(second.clone()).await, StatusCode::OK);
    // Twenty days on, the first node extends it; fifteen more, past the first expiry, the second
    // node's copy says expired, and the database says otherwise: the database wins.
    server.advance(20 * DAY);
    assert_eq!(ping_at(first).await, StatusCode::OK);
    server.advance(15 * DAY);
    assert_eq!(ping_at(second).await, StatusCode::OK, "extended on the other node");
    other.stop().await.unwrap();
    server.stop().await;
}
