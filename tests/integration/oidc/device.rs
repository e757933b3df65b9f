//! The device authorization grant (RFC 8628): a TV links with a short code, codes expire, guesses are throttled.

use super::*;

crate::on_both_engines!(
    a_tv_links_with_a_short_code_polls_and_is_listed_on_the_security_page,
    device_codes_expire_and_link_guesses_are_throttled,
);

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
