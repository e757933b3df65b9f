//! What an operator's tooling sees: health, readiness, metrics, the OpenAPI document, hash upgrades.

use keywarden::config::HashProfile;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(
    health_readiness_metrics_and_openapi,
    outdated_password_hashes_are_upgraded_at_sign_in,
    the_purge_counts_every_expired_row_it_deletes
);

async fn health_readiness_metrics_and_openapi(engine: Engine) {
    let expected_engine = match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres { .. } => "postgres",
    };
    let server = TestServer::start(engine).await;
    let get = |path: &str| server.http.get(server.url(path)).send();

    let health: Value = get("/healthz").await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!((ready["status"].as_str(), ready["database"].as_str()), (Some("ready"), Some(expected_engine)));

    server.sign_up("ivan", "ivan@example.com", "ivan's passphrase").await;
    let ivan = server.sign_in("ivan", "ivan's passphrase", None).await;
    server.me(&ivan.access).await;
    let metrics = get("/metrics").await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    for expected in [
        "keywarden_sign_ins_total{outcome=\"success\"} 1",
        "keywarden_token_validations_total{outcome=\"valid\"} 1",
        "keywarden_password_hash_queue_depth 0",
        "keywarden_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/me\",status=\"200\"} 1",
    ] {
        assert!(text.contains(expected), "metrics lack {expected:?}:\n{text}");
    }

    let openapi: Value = get("/api/v1/openapi.json").await.unwrap().json().await.unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/v1/accounts", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/token/refresh", "post"),
        ("/api/v1/me", "get"),
    ] {
        assert!(openapi["paths"][path][method].is_object(), "OpenAPI lacks {method} {path}");
    }
    assert!(openapi["components"]["schemas"]["ErrorBody"].is_object());
    // Every status the server can answer is documented, the HTTP layer's refusals included.
    let responses = |path: &str, method: &str| openapi["paths"][path][method]["responses"].clone();
    for status in ["400", "408", "413", "415", "422", "503"] {
        assert!(responses("/api/v1/accounts", "post")[status].is_object(), "POST /accounts lacks {status}");
    }
    for status in ["401", "414", "431", "503"] {
        assert!(responses("/api/v1/me", "get")[status].is_object(), "GET /me lacks {status}");
    }
    assert!(responses("/api/v1/security-events", "get")["400"].is_object(), "a query that does not parse");
    assert_eq!(get("/api/v1/me").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn outdated_password_hashes_are_upgraded_at_sign_in(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("judy", "judy@example.com", "judy's passphrase").await;
    let before = stored_hash(&engine, &server.database_url).await;
    assert!(before.contains("m=64,t=1,p=1"), "{before}");

    // The operator raises the cost: the next sign-in re-hashes at the new parameters.
    let server = server.restart_with(|c| c.password_hashing.profile = HashProfile::Standard).await;
    server.sign_in("judy", "judy's passphrase", None).await;
    let mut after = String::new();
    for _ in 0..100 {
        after = stored_hash(&engine, &server.database_url).await;
        if after != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(after.contains("m=19456,t=2,p=1"), "hash not upgraded: {after}");
    server.sign_in("judy@example.com", "judy's passphrase", None).await;
    server.stop().await;
}

async fn stored_hash(engine: &Engine, url: &str) -> String {
    let query = "SELECT password_hash FROM users";
    let (hash,): (String,) = match engine {
        Engine::Sqlite => {
            sqlx::query_as(query).fetch_one(&mut sqlx::SqliteConnection::connect(url).await.unwrap()).await
        }
        Engine::Postgres { .. } => {
            sqlx::query_as(query).fetch_one(&mut sqlx::PgConnection::connect(url).await.unwrap()).await
        }
    }
    .unwrap();
    hash
}

/// The purge reports what it removed from every table it cleans, not from some of them.
async fn the_purge_counts_every_expired_row_it_deletes(engine: Engine) {
    let server = TestServer::start(engine.clone()).await;
    server.sign_up("kim", "kim@example.com", "kim's passphrase").await;
    server.sign_in("kim", "kim's passphrase", None).await;
    let pin = server
        .http
        .post(server.url("/api/v2/pins"))
        .header("accept", "application/json")
        .header("x-plex-client-identifier", "purge-tv")
        .header("x-plex-product", "Plex for TV")
        .send()
        .await
        .unwrap();
    assert_eq!(pin.status(), StatusCode::CREATED);
    // Everything short-lived expires: the session's tokens and the PIN (not only tokens).
    let url = &server.database_url;
    crate::revocation::sql(&engine, url, "UPDATE tokens SET expires_at = 1").await;
    crate::revocation::sql(&engine, url, "UPDATE plex_pins SET expires_at = 1").await;
    let expired = |table: &str| format!("SELECT COUNT(*) FROM {table} WHERE expires_at = 1");
    let (tokens, pins) = (
        crate::harness::count_rows(&engine, url, &expired("tokens")).await,
        crate::harness::count_rows(&engine, url, &expired("plex_pins")).await,
    );
    assert!(tokens > 0 && pins == 1, "{tokens} tokens, {pins} PINs");
    let purged = server.running_store().purge_expired_tokens(2).await.unwrap();
    assert_eq!(purged, u64::try_from(tokens + pins).unwrap(), "every deleted row is counted, the PIN too");
    assert_eq!(crate::harness::count_rows(&engine, url, &expired("plex_pins")).await, 0);
    server.stop().await;
}
