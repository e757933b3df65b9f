//! Malformed and invalid requests get a clear 4xx with a stable code, never a 500, and write nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Engine, Reply, TestServer};

crate::on_both_engines!(every_bad_request_gets_its_code_and_writes_nothing);

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    bearer: Option<String>,
    status: StatusCode,
    code: &'static str,
}

fn json_case(
    what: &'static str,
    path: &'static str,
    body: serde_json::Value,
    status: StatusCode,
    code: &'static str,
) -> Case {
    raw_case(what, path, body.to_string(), status, code)
}

fn raw_case(what: &'static str, path: &'static str, body: String, status: StatusCode, code: &'static str) -> Case {
    Case { what, method: Method::POST, path, content_type: Some("application/json"), body, bearer: None, status, code }
}

async fn every_bad_request_gets_its_code_and_writes_nothing(engine: Engine) {
    let server = TestServer::start(engine).await;
    server.sign_up("dave", "dave@example.com", "dave's fine passphrase").await;
    let dave = server.sign_in("dave", "dave's fine passphrase", None).await;
    let good = |username: &str| json!({ "email": format!("{username}@example.org"), "username": username, "password": "a fine passphrase" });
    let with = |field: &str, value: serde_json::Value| {
        let mut body = good("erin");
        body[field] = value;
        body
    };
    let (bad, unprocessable, unauthorized) =
        (StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY, StatusCode::UNAUTHORIZED);
    let accounts = "/api/v1/accounts";
    let sessions = "/api/v1/sessions";
    let device = |d: serde_json::Value| json!({ "login": "dave", "password": "dave's fine passphrase", "device": d });
    let mut cases = vec![
        raw_case("truncated JSON", accounts, "{\"email\":".into(), bad, "malformed_json"),
        raw_case("not JSON at all", accounts, "email=a@b.c".into(), bad, "malformed_json"),
        raw_case("empty body", accounts, String::new(), bad, "malformed_json"),
        json_case("an array", accounts, json!([1, 2]), unprocessable, "invalid_request"),
        json_case(
            "missing password",
            accounts,
            json!({ "email": "e@x.io", "username": "erin" }),
            unprocessable,
            "invalid_request",
        ),
        json_case(
            "password is a number",
            accounts,
            with("password", json!(12345678)),
            unprocessable,
            "invalid_request",
        ),
        json_case("username is null", accounts, with("username", json!(null)), unprocessable, "invalid_request"),
        json_case("bad email", accounts, with("email", json!("erin.example.org")), unprocessable, "invalid_email"),
        json_case(
            "email without domain dot",
            accounts,
            with("email", json!("erin@localhost")),
            unprocessable,
            "invalid_email",
        ),
        json_case("username with @", accounts, with("username", json!("erin@x")), unprocessable, "invalid_username"),
        json_case("username too short", accounts, with("username", json!("er")), unprocessable, "invalid_username"),
        json_case(
            "username with spaces",
            accounts,
            with("username", json!("erin smith")),
            unprocessable,
            "invalid_username",
        ),
        json_case("short password", accounts, with("password", json!("seven77")), unprocessable, "password_too_short"),
        json_case(
            "long password",
            accounts,
            with("password", json!("x".repeat(257))),
            unprocessable,
            "password_too_long",
        ),
        json_case(
            "common password",
            accounts,
            with("password", json!("password123")),
            unprocessable,
            "password_too_common",
        ),
        json_case(
            "password is the username",
            accounts,
            with("password", json!("Erin-The-Great")).tap_username("erin-the-great"),
            unprocessable,
            "password_too_common",
        ),
        json_case(
            "username taken in another case",
            accounts,
            json!({ "email": "d2@example.com", "username": "DAVE", "password": "a fine passphrase" }),
            StatusCode::CONFLICT,
            "username_taken",
        ),
        json_case(
            "email taken in another case",
            accounts,
            json!({ "email": "Dave@Example.COM", "username": "dave2", "password": "a fine passphrase" }),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        raw_case(
            "oversized body",
            accounts,
            json!({ "email": "e@x.io", "username": "erin", "password": "p".repeat(100_000) }).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        Case {
            content_type: None,
            ..json_case(
                "no content type",
                accounts,
                good("erin"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..json_case(
                "text content type",
                accounts,
                good("erin"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
        },
        json_case("sign-in without password", sessions, json!({ "login": "dave" }), unprocessable, "invalid_request"),
        json_case(
            "login is an object",
            sessions,
            json!({ "login": {}, "password": "x" }),
            unprocessable,
            "invalid_request",
        ),
        json_case(
            "device without client_id",
            sessions,
            device(json!({ "product": "TV" })),
            unprocessable,
            "invalid_request",
        ),
        json_case(
            "empty device client_id",
            sessions,
            device(json!({ "client_id": "  " })),
            unprocessable,
            "invalid_device",
        ),
        json_case(
            "control characters in device name",
            sessions,
            device(json!({ "client_id": "tv", "name": "a\u{7}b" })),
            unprocessable,
            "invalid_device",
        ),
        json_case(
            "overlong device product",
            sessions,
            device(json!({ "client_id": "tv", "product": "p".repeat(129) })),
            unprocessable,
            "invalid_device",
        ),
        json_case(
            "refresh with an access token",
            "/api/v1/token/refresh",
            json!({ "refresh_token": dave.access }),
            unauthorized,
            "invalid_token",
        ),
        json_case(
            "refresh with garbage",
            "/api/v1/token/refresh",
            json!({ "refresh_token": "kw_rt_nope" }),
            unauthorized,
            "invalid_token",
        ),
        json_case(
            "refresh with a well-formed unknown token",
            "/api/v1/token/refresh",
            json!({ "refresh_token": format!("kw_rt_{}", "A".repeat(43)) }),
            unauthorized,
            "invalid_token",
        ),
        json_case(
            "refresh token of wrong type",
            "/api/v1/token/refresh",
            json!({ "refresh_token": 42 }),
            unprocessable,
            "invalid_request",
        ),
    ];
    let me = |what, bearer: Option<String>, code| Case {
        what,
        method: Method::GET,
        path: "/api/v1/me",
        content_type: None,
        body: String::new(),
        bearer,
        status: unauthorized,
        code,
    };
    cases.extend([
        me("no token", None, "missing_token"),
        me("garbage token", Some("garbage".into()), "invalid_token"),
        me("refresh token as bearer", Some(dave.refresh.clone()), "invalid_token"),
        me("unknown well-formed token", Some(format!("kw_at_{}", "A".repeat(43))), "invalid_token"),
    ]);
    cases.push(Case {
        what: "unknown path",
        method: Method::GET,
        path: "/api/v1/nope",
        content_type: None,
        body: String::new(),
        bearer: None,
        status: StatusCode::NOT_FOUND,
        code: "not_found",
    });
    cases.push(Case {
        what: "wrong method",
        method: Method::PUT,
        path: "/api/v1/me",
        content_type: None,
        body: String::new(),
        bearer: None,
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
    });

    for case in cases {
        let mut request = server.http.request(case.method.clone(), server.url(case.path)).body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(token) = &case.bearer {
            request = request.bearer_auth(token);
        }
        let reply = Reply::from(request.send().await.unwrap()).await;
        assert_eq!((reply.status, reply.error_code()), (case.status, case.code), "{}: {}", case.what, reply.text);
        assert!(reply.json["message"].is_string(), "{}: no message", case.what);
    }

    // Nothing was half-written: every refused name is still free, dave still works.
    server.sign_up("erin", "erin@example.org", "a fine passphrase").await;
    server.sign_up("erin-the-great", "etg@example.org", "a fine passphrase").await;
    server.sign_up("dave2", "d2@example.com", "a fine passphrase").await;
    assert_eq!(server.me(&dave.access).await.status, StatusCode::OK);
    server.stop().await;
}

trait TapUsername {
    fn tap_username(self, username: &str) -> Self;
}

impl TapUsername for serde_json::Value {
    fn tap_username(mut self, username: &str) -> Self {
        self["username"] = json!(username);
        self
    }
}
