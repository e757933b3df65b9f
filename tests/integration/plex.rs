//! The plex.tv-compatible account API (issue 8) on both engines: answers in XML by default and JSON
//! on request, devices named from the `X-Plex-*` headers, errors as plex.tv writes them, and its
//! tokens killed like every other device token. `plexapi` itself judges it in the e2e suite.

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(
    plex_clients_sign_in_read_their_user_and_devices_in_xml_or_json,
    plex_tokens_die_with_channel_revocation_and_bad_requests_get_plex_errors,
    a_pin_is_approved_once_collected_once_and_only_by_its_device,
    a_device_key_mints_tokens_once_per_nonce_until_its_sign_in_is_revoked,
    friends_and_shares_are_empty_xml_containers_for_the_owners_server_only
);

pub(crate) fn plex(client: &Client, method: reqwest::Method, url: String, device: &str) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .header("X-Plex-Client-Identifier", device)
        .header("X-Plex-Product", "Plex Media Server")
        .header("X-Plex-Platform", "Linux")
        .header("X-Plex-Provides", "server,  , <bad>")
        .header("X-Plex-Device-Name", format!("{device} box"))
}

pub(crate) async fn sign_in(server: &TestServer, login: &str, password: &str, device: &str) -> reqwest::Response {
    plex(&Client::new(), reqwest::Method::POST, server.url("/api/v2/users/signin"), device)
        .form(&[("login", login), ("password", password), ("rememberMe", "true")])
        .send()
        .await
        .unwrap()
}

/// The value of `name="…"` in the first element that has it.
pub(crate) fn attribute(xml: &str, name: &str) -> String {
    let marker = format!(" {name}=\"");
    let start = xml.find(&marker).unwrap_or_else(|| panic!("no {name} in {xml}")) + marker.len();
    xml[start..].chars().take_while(|c| *c != '"').collect()
}

async fn plex_clients_sign_in_read_their_user_and_devices_in_xml_or_json(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("Pat", "pat@example.com", "pat's long passphrase").await;
    let signed_in = sign_in(&server, "pat@example.com", "pat's long passphrase", "nas-1").await;
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    assert!(signed_in.headers()["content-type"].to_str().unwrap().starts_with("application/xml"));
    let xml = signed_in.text().await.unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<user ") && xml.contains("<subscription "), "{xml}");
    assert_eq!(attribute(&xml, "username"), "Pat");
    let numeric_id: i64 = attribute(&xml, "id").parse().expect("a numeric user id");
    assert!(numeric_id > 0);
    let token = attribute(&xml, "authToken");
    assert!(token.starts_with("kw_pt_"), "{token}");

    let client = Client::new();
    let json: Value = client
        .get(server.url("/api/v2/user"))
        .header("X-Plex-Token", &token)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((json["username"].as_str(), json["email"].as_str()), (Some("Pat"), Some("pat@example.com")));
    assert_eq!(json["authToken"], token.as_str());
    assert_eq!(json["id"], numeric_id, "the same id every time, as a number");
    // The token also works as a query parameter, as plex.tv allows.
    let by_query = client.get(server.url(&format!("/api/v2/ping?X-Plex-Token={token}"))).send().await.unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    assert!(by_query.text().await.unwrap().contains("<pong>true</pong>"));

    let devices = client.get(server.url("/devices.xml")).header("X-Plex-Token", &token).send().await.unwrap();
    let devices = devices.text().await.unwrap();
    assert!(devices.contains("clientIdentifier=\"nas-1\"") && devices.contains("name=\"nas-1 box\""), "{devices}");
    assert!(devices.contains("product=\"Plex Media Server\"") && !devices.contains("kw_pt_"), "no token is listed");

    // A media server publishes its addresses (for itself only) and is then a resource.
    let publish = |device: &str| {
        plex(
            &client,
            reqwest::Method::PUT,
            server.url("/devices/nas-1?Connection[][uri]=http://10.0.0.5:32400"),
            device,
        )
        .header("X-Plex-Token", &token)
    };
    assert_eq!(publish("someone-else").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(publish("nas-1").send().await.unwrap().status(), StatusCode::OK);
    let bad = plex(&client, reqwest::Method::PUT, server.url("/devices/nas-1?Connection[][uri]=javascript:x"), "nas-1")
        .header("X-Plex-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resources = client.get(server.url("/api/v2/resources")).header("X-Plex-Token", &token).send().await.unwrap();
    let resources = resources.text().await.unwrap();
    assert_eq!(resources.matches("<resource ").count(), 1, "{resources}");
    assert!(resources.contains("provides=\"server\"") && resources.contains("uri=\"http://10.0.0.5:32400\""));
    assert!(resources.contains(&format!("accessToken=\"{token}\"")) && resources.contains("local=\"1\""));

    // The same device is on the account API, in the `device` channel.
    let api = server.sign_in("Pat", "pat's long passphrase", None).await;
    let listed = server.get_with_token("/api/v1/devices", &api.access).await;
    let nas = listed.json.as_array().unwrap().iter().find(|d| d["client_identifier"] == "nas-1").cloned().unwrap();
    assert_eq!(nas["channels"], serde_json::json!(["device"]));

    // The web app signs in from a browser: its token is in the `web` channel.
    let web = Client::new()
        .post(server.url("/api/v2/users/signin"))
        .header("X-Plex-Client-Identifier", "web-tab")
        .header("X-Plex-Product", "Plex Web")
        .header("X-Plex-Platform", "Firefox")
        .form(&[("login", "Pat"), ("password", "pat's long passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(web.status(), StatusCode::CREATED);
    let listed = server.get_with_token("/api/v1/devices", &api.access).await;
    let tab = listed.json.as_array().unwrap().iter().find(|d| d["client_identifier"] == "web-tab").cloned().unwrap();
    assert_eq!(tab["channels"], serde_json::json!(["web"]));
    server.stop().await;
}

async fn plex_tokens_die_with_channel_revocation_and_bad_requests_get_plex_errors(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("quin", "quin@example.com", "quin's long passphrase").await;
    let client = Client::new();

    let wrong = sign_in(&server, "quin", "wrong", "tv-1").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body = wrong.text().await.unwrap();
    assert!(body.contains("<errors><error code=\"1001\"") && body.contains("status=\"401\""), "{body}");
    let anonymous = client
        .post(server.url("/api/v2/users/signin"))
        .form(&[("login", "quin"), ("password", "quin's long passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::BAD_REQUEST, "a client must say which device it is");
    let no_token = client.get(server.url("/api/v2/user")).header("Accept", "application/json").send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let errors: Value = no_token.json().await.unwrap();
    assert_eq!(errors["errors"][0]["code"], 1001);
    assert_eq!(errors["errors"][0]["status"], 401);
    let forged = client.get(server.url("/api/v2/user")).header("X-Plex-Token", "kw_pt_forged").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let other_kind = server.sign_in("quin", "quin's long passphrase", None).await;
    let access_as_plex =
        client.get(server.url("/api/v2/user")).header("X-Plex-Token", &other_kind.access).send().await.unwrap();
    assert_eq!(access_as_plex.status(), StatusCode::UNAUTHORIZED, "an access token is not a plex token");

    let xml = sign_in(&server, "quin", "quin's long passphrase", "tv-1").await.text().await.unwrap();
    let token = attribute(&xml, "authToken");
    let revoked = server.admin(&["revoke", "--channel", "device", "--reason", "proxy leak drill"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let mut dead = false;
    for _ in 0..50 {
        let answer = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &token).send().await.unwrap();
        if answer.status() == StatusCode::UNAUTHORIZED {
            dead = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(dead, "channel revocation reaches plex tokens");
    server.stop().await;
}

/// Ends every PIN's life now, as fifteen minutes passing would.
async fn expire_pins(engine: &Engine, url: &str) {
    use sqlx::Connection as _;
    let sql = "UPDATE plex_pins SET expires_at = 0";
    match engine {
        Engine::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
        Engine::Postgres { .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut db).await.unwrap();
        }
    }
}

async fn a_pin_is_approved_once_collected_once_and_only_by_its_device(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("rae", "rae@example.com", "rae's long passphrase").await;
    let client = Client::new();
    let owner =
        attribute(&sign_in(&server, "rae", "rae's long passphrase", "phone").await.text().await.unwrap(), "authToken");

    let created = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "tv").send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let pin = created.text().await.unwrap();
    let (id, code) = (attribute(&pin, "id"), attribute(&pin, "code"));
    assert_eq!(code.len(), 4);
    let strong =
        plex(&client, reqwest::Method::POST, server.url("/api/v2/pins?strong=true"), "tv").send().await.unwrap();
    assert_eq!(attribute(&strong.text().await.unwrap(), "code").len(), 25);

    let poll = |device: &'static str| {
        let url = server.url(&format!("/api/v2/pins/{id}"));
        let client = client.clone();
        async move { plex(&client, reqwest::Method::GET, url, device).send().await.unwrap() }
    };
    let pending = poll("tv").await.text().await.unwrap();
    assert_eq!(attribute(&pending, "authToken"), "", "nothing before approval");
    assert_eq!(poll("another-box").await.status(), StatusCode::NOT_FOUND, "only the device that asked may poll");

    let approve = |typed: String| {
        let url = server.url("/api/v2/pins/link");
        let (client, owner) = (client.clone(), owner.clone());
        async move { client.put(url).header("X-Plex-Token", owner).form(&[("code", typed)]).send().await.unwrap() }
    };
    let unsigned = client.put(server.url("/api/v2/pins/link")).form(&[("code", code.as_str())]).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(approve(code.to_lowercase()).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(approve(code.clone()).await.status(), StatusCode::BAD_REQUEST, "approved once");

    let collected = poll("tv").await.text().await.unwrap();
    let token = attribute(&collected, "authToken");
    assert!(token.starts_with("kw_pt_"), "{collected}");
    assert_eq!(attribute(&poll("tv").await.text().await.unwrap(), "authToken"), "", "collected once");
    let user = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &token).send().await.unwrap();
    assert_eq!(attribute(&user.text().await.unwrap(), "username"), "rae");

    // An expired PIN can be neither approved nor polled.
    let late = plex(&client, reqwest::Method::POST, server.url("/api/v2/pins"), "radio").send().await.unwrap();
    let late = late.text().await.unwrap();
    expire_pins(&engine, &server.database_url).await;
    assert_eq!(approve(attribute(&late, "code")).await.status(), StatusCode::BAD_REQUEST);
    let polled =
        plex(&client, reqwest::Method::GET, server.url(&format!("/api/v2/pins/{}", attribute(&late, "id"))), "radio")
            .send()
            .await
            .unwrap();
    assert_eq!(polled.status(), StatusCode::NOT_FOUND);
    assert!(polled.text().await.unwrap().contains("Code not found or expired"));

    // Guessing codes is throttled per account: with the two spent codes above, five wrong ones in all.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(approve("ZZZZ".into()).await.status());
    }
    assert_eq!(statuses, [StatusCode::BAD_REQUEST; 3]);
    let limited = approve("ZZZZ".into()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    server.stop().await;
}

/// A device's JWT for the token endpoint, signed with its Ed25519 key.
fn device_jwt(key: &ed25519_dalek::SigningKey, kid: &str, iss: &str, nonce: &str) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = key.to_pkcs8_der().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({ "nonce": nonce, "scope": "username", "aud": "plex.tv", "iss": iss, "iat": now, "exp": now + 300 });
    let header =
        jsonwebtoken::Header { kid: Some(kid.into()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA) };
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

async fn a_device_key_mints_tokens_once_per_nonce_until_its_sign_in_is_revoked(engine: Engine) {
    use base64::Engine as _;
    let server = TestServer::start(engine).await;
    server.sign_up("sam", "sam@example.com", "sam's long passphrase").await;
    let client = Client::new();
    let token = attribute(
        &sign_in(&server, "sam", "sam's long passphrase", "jwt-box").await.text().await.unwrap(),
        "authToken",
    );
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let jwk =
        serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "box-key", "alg": "EdDSA", "use": "sig" });
    let register = |body: Value| {
        plex(&client, reqwest::Method::POST, server.url("/api/v2/auth/jwk"), "jwt-box")
            .header("X-Plex-Token", &token)
            .json(&body)
    };
    let private = serde_json::json!({ "jwk": { "kty": "OKP", "crv": "Ed25519", "x": x, "d": x, "kid": "box-key" } });
    assert_eq!(
        register(private).send().await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "never a private key"
    );
    assert_eq!(register(serde_json::json!({ "jwk": jwk })).send().await.unwrap().status(), StatusCode::NO_CONTENT);

    let nonce = || async {
        let answer: Value = client.get(server.url("/api/v2/auth/nonce")).send().await.unwrap().json().await.unwrap();
        answer["nonce"].as_str().unwrap().to_owned()
    };
    let exchange = |jwt: String| {
        let url = server.url("/api/v2/auth/token");
        let client = client.clone();
        async move {
            client
                .post(url)
                .header("Accept", "application/json")
                .json(&serde_json::json!({ "jwt": jwt }))
                .send()
                .await
                .unwrap()
        }
    };
    let jwt = device_jwt(&key, "box-key", "jwt-box", &nonce().await);
    let minted = exchange(jwt.clone()).await;
    assert_eq!(minted.status(), StatusCode::OK);
    let minted: Value = minted.json().await.unwrap();
    let device_token = minted["auth_token"].as_str().unwrap().to_owned();
    let keys: jsonwebtoken::jwk::JwkSet =
        client.get(server.url("/api/v2/auth/keys")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&device_token).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(keys.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["jwt-box"]);
    validation.set_issuer(&["plex.tv"]);
    let claims = jsonwebtoken::decode::<Value>(&device_token, &decoding, &validation).unwrap().claims;
    assert_eq!(claims["thumbprint"], "box-key");
    let user = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &device_token).send().await.unwrap();
    assert_eq!(user.status(), StatusCode::OK);

    assert_eq!(exchange(jwt).await.status(), StatusCode::UNAUTHORIZED, "a nonce works once");
    let forged_nonce = device_jwt(&key, "box-key", "jwt-box", "made.up.nonce");
    assert_eq!(exchange(forged_nonce).await.status(), StatusCode::UNAUTHORIZED);
    let other_device = device_jwt(&key, "box-key", "another-box", &nonce().await);
    assert_eq!(exchange(other_device).await.status(), StatusCode::UNAUTHORIZED, "only the registering device");
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
    assert_eq!(
        exchange(device_jwt(&stranger, "box-key", "jwt-box", &nonce().await)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let revoked = server.admin(&["revoke", "--user", "sam", "--reason", "stolen box"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let mut refused = false;
    for _ in 0..50 {
        if exchange(device_jwt(&key, "box-key", "jwt-box", &nonce().await)).await.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "a revoked sign-in's key mints nothing");
    let user = client.get(server.url("/api/v2/user")).header("X-Plex-Token", &device_token).send().await.unwrap();
    assert_eq!(user.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// Issue 21 §5: Tautulli's user refresh and `plexapi`'s `users()` read `/api/users` as XML whatever
/// they accept; a server's shares are listed for its owner only.
async fn friends_and_shares_are_empty_xml_containers_for_the_owners_server_only(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("Tau", "tau@example.com", "tau's long passphrase").await;
    server.sign_up("Eve", "eve@example.com", "eve's long passphrase").await;
    let token =
        attribute(&sign_in(&server, "tau", "tau's long passphrase", "nas-7").await.text().await.unwrap(), "authToken");
    let eve = attribute(
        &sign_in(&server, "eve", "eve's long passphrase", "eve-box").await.text().await.unwrap(),
        "authToken",
    );
    let client = Client::new();
    let get = |path: &str, token: &str| {
        client.get(server.url(path)).header("X-Plex-Token", token).header("Accept", "application/json").send()
    };

    for path in ["/api/users", "/api/users/"] {
        let reply = get(path, &token).await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{path}");
        assert!(reply.headers()["content-type"].to_str().unwrap().starts_with("application/xml"), "{path}");
        let xml = reply.text().await.unwrap();
        assert!(xml.starts_with("<?xml") && xml.contains("<MediaContainer ") && !xml.contains("<User "), "{xml}");
        assert_eq!(attribute(&xml, "size"), "0");
        assert_eq!(attribute(&xml, "identifier"), "com.plexapp.plugins.myplex");
    }
    let refused = get("/api/users", "kw_pt_not-a-token").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.text().await.unwrap().contains("<error "), "plex.tv's error, in XML");

    let shares = get("/api/servers/nas-7/shared_servers", &token).await.unwrap();
    assert_eq!(shares.status(), StatusCode::OK);
    let xml = shares.text().await.unwrap();
    assert_eq!((attribute(&xml, "machineIdentifier"), attribute(&xml, "size")), ("nas-7".to_owned(), "0".to_owned()));
    // Someone else's server, and one nobody has, are not found.
    assert_eq!(get("/api/servers/nas-7/shared_servers", &eve).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(get("/api/servers/unknown/shared_servers", &token).await.unwrap().status(), StatusCode::NOT_FOUND);
    server.stop().await;
}
