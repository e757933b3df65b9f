//! Sender-constrained tokens (DPoP, RFC 9449) and the 2017 proxy-leak drill: leaked tokens die with
//! their channel, clients that kept their key recover without a password, other channels carry on.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::dpop_client::{DpopKey, ProofFor};
use crate::harness::{Engine, Reply, TestServer, Tokens};

crate::on_both_engines!(bound_tokens_need_a_fresh_proof_from_their_key, the_proxy_leak_drill);

impl TestServer {
    async fn post_dpop(&self, path: &str, proof: &str, body: Value) -> Reply {
        let request = self.http.post(self.url(path)).header("dpop", proof).json(&body);
        Reply::from(request.send().await.unwrap()).await
    }

    /// `GET /api/v1/me` with `Authorization: DPoP` and the given proof (if any).
    async fn me_dpop(&self, token: &str, proof: Option<&str>) -> Reply {
        let mut request = self.http.get(self.url("/api/v1/me")).header("authorization", format!("DPoP {token}"));
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        Reply::from(request.send().await.unwrap()).await
    }

    async fn sign_in_dpop(&self, key: &DpopKey, login: &str, password: &str) -> Tokens {
        let url = self.url("/api/v1/sessions");
        let proof = key.proof(ProofFor::new("POST", &url));
        let reply = self.post_dpop("/api/v1/sessions", &proof, json!({ "login": login, "password": password })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        assert_eq!(reply.json["token_type"], "DPoP");
        assert!(reply.headers.contains_key("dpop-nonce"));
        Tokens::from(&reply.json)
    }

    async fn refresh_dpop(&self, key: &DpopKey, refresh_token: &str) -> Reply {
        let url = self.url("/api/v1/token/refresh");
        self.post_dpop(
            "/api/v1/token/refresh",
            &key.proof(ProofFor::new("POST", &url)),
            json!({ "refresh_token": refresh_token }),
        )
        .await
    }
}

async fn bound_tokens_need_a_fresh_proof_from_their_key(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("dora", "dora@example.com", "dora's passphrase").await;
    let key = DpopKey::generate();
    let other = DpopKey::generate();
    let tokens = server.sign_in_dpop(&key, "dora", "dora's passphrase").await;
    let me = server.url("/api/v1/me");
    let proof = |k: &DpopKey, f: ProofFor<'_>| k.proof(f);

    let ok =
        server.me_dpop(&tokens.access, Some(&proof(&key, ProofFor::new("GET", &me).with_token(&tokens.access)))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert!(ok.headers.contains_key("dpop-nonce"));

    // Seen in transit, the token alone is worth nothing.
    server.me(&tokens.access).await.assert_error(StatusCode::UNAUTHORIZED, "dpop_proof_required");
    server.me_dpop(&tokens.access, None).await.assert_error(StatusCode::UNAUTHORIZED, "dpop_proof_required");
    let cases: Vec<(&str, String, &str)> = vec![
        ("another key", proof(&other, ProofFor::new("GET", &me).with_token(&tokens.access)), "another key"),
        (
            "another URL",
            proof(&key, ProofFor::new("GET", &server.url("/api/v1/devices")).with_token(&tokens.access)),
            "another URL",
        ),
        ("another method", proof(&key, ProofFor::new("POST", &me).with_token(&tokens.access)), "another HTTP method"),
        (
            "no ath",
            proof(&key, ProofFor { omit_ath: true, ..ProofFor::new("GET", &me).with_token(&tokens.access) }),
            "ath",
        ),
        ("another token's ath", proof(&key, ProofFor::new("GET", &me).with_token("kw_at_other")), "ath"),
        (
            "an old proof",
            proof(&key, ProofFor { iat_offset_secs: -600, ..ProofFor::new("GET", &me).with_token(&tokens.access) }),
            "too old",
        ),
        ("not a JWT", "garbage".to_owned(), "not a JWT"),
    ];
    for (what, bad, message) in cases {
        let reply = server.me_dpop(&tokens.access, Some(&bad)).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
        assert!(reply.json["message"].as_str().unwrap().contains(message), "{what}: {}", reply.text);
        assert!(reply.headers["www-authenticate"].to_str().unwrap().starts_with("DPoP"), "{what}");
    }

    // A proof works once.
    let once = proof(&key, ProofFor::new("GET", &me).with_token(&tokens.access));
    assert_eq!(server.me_dpop(&tokens.access, Some(&once)).await.status, StatusCode::OK);
    let replayed = server.me_dpop(&tokens.access, Some(&once)).await;
    replayed.assert_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
    assert!(replayed.text.contains("replayed"));

    // Nonces: a stale one is refused with a fresh one offered; the offered one works.
    let stale = proof(&key, ProofFor { nonce: Some("stale"), ..ProofFor::new("GET", &me).with_token(&tokens.access) });
    let refused = server.me_dpop(&tokens.access, Some(&stale)).await;
    refused.assert_error(StatusCode::UNAUTHORIZED, "use_dpop_nonce");
    let nonce = refused.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let fresh = proof(&key, ProofFor { nonce: Some(&nonce), ..ProofFor::new("GET", &me).with_token(&tokens.access) });
    assert_eq!(server.me_dpop(&tokens.access, Some(&fresh)).await.status, StatusCode::OK);

    // The refresh token is bound too.
    server.refresh(&tokens.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "dpop_proof_required");
    server.refresh_dpop(&other, &tokens.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");
    let refreshed = server.refresh_dpop(&key, &tokens.refresh).await;
    assert_eq!(
        (refreshed.status, refreshed.json["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP")),
        "{}",
        refreshed.text
    );

    // A bearer token cannot be passed off as a DPoP one.
    let bearer = server.sign_in("dora", "dora's passphrase", None).await;
    let claimed = proof(&key, ProofFor::new("GET", &me).with_token(&bearer.access));
    server.me_dpop(&bearer.access, Some(&claimed)).await.assert_error(StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(server.me(&bearer.access).await.status, StatusCode::OK);
    server.stop().await;
}

async fn the_proxy_leak_drill(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("eve", "eve@example.com", "eve's passphrase").await;
    let browser_key = DpopKey::generate();
    let dpop_browser = server.sign_in_dpop(&browser_key, "eve", "eve's passphrase").await;
    let bearer_browser = server.sign_in("eve", "eve's passphrase", None).await;
    let media_server =
        server.sign_in("eve", "eve's passphrase", Some(json!({ "client_id": "pms", "product": "Media Server" }))).await;
    let me = server.url("/api/v1/me");

    // The proxy leaked both browsers' tokens. The operator revokes the web channel.
    let out = server.admin(&["revoke", "--channel", "web", "--reason", "proxy leak"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("may recover silently"));
    server.catch_up().await;

    // The leaked tokens are dead, whoever holds them.
    let proof = browser_key.proof(ProofFor::new("GET", &me).with_token(&dpop_browser.access));
    server.me_dpop(&dpop_browser.access, Some(&proof)).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.me(&bearer_browser.access).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.refresh(&bearer_browser.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    // An attacker with the leaked refresh token but without the browser's key gets nothing.
    let attacker = DpopKey::generate();
    server.refresh(&dpop_browser.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "dpop_proof_required");
    server
        .refresh_dpop(&attacker, &dpop_browser.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_dpop_proof");

    // The real browser still holds its key: it gets back in without a password.
    let recovered = server.refresh_dpop(&browser_key, &dpop_browser.refresh).await;
    assert_eq!(recovered.status, StatusCode::OK, "{}", recovered.text);
    assert_eq!((recovered.json["recovered"].as_bool(), recovered.json["channel"].as_str()), (Some(true), Some("web")));
    assert_ne!(recovered.json["session_id"], dpop_browser.session_id.as_str(), "a fresh session");
    assert_eq!(recovered.json["device_id"], dpop_browser.device_id.as_str(), "on the same device");
    let fresh = Tokens::from(&recovered.json);
    let proof = browser_key.proof(ProofFor::new("GET", &me).with_token(&fresh.access));
    assert_eq!(server.me_dpop(&fresh.access, Some(&proof)).await.status, StatusCode::OK);
    // Recovery works once: the old refresh token cannot fork a second session.
    server
        .refresh_dpop(&browser_key, &dpop_browser.refresh)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "token_revoked");

    // The media server, on the device channel, never noticed.
    assert_eq!(server.me(&media_server.access).await.status, StatusCode::OK);
    let events = server.get_with_token("/api/v1/security-events", &media_server.access).await;
    assert!(events.text.contains("session.recovered"), "{}", events.text);

    // A final revocation (--no-recovery) gives key holders no way back either.
    let out = server.admin(&["revoke", "--channel", "web", "--no-recovery"]);
    assert!(out.status.success());
    server.catch_up().await;
    server.refresh_dpop(&browser_key, &fresh.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    // A user's own "sign out of all devices" is final as well.
    let again = server.sign_in_dpop(&browser_key, "eve", "eve's passphrase").await;
    server.post_with_token("/api/v1/sessions/revoke-all", &media_server.access, json!({})).await;
    server.refresh_dpop(&browser_key, &again.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "token_revoked");
    server.stop().await;
}
