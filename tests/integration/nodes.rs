//! Several keywarden processes sharing one PostgreSQL database: a revocation made through any node
//! (or the admin CLI) is enforced by every node within one second.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::dpop_client::{DpopKey, ProofFor};
use crate::harness::{create_database, drop_database, Engine};
use crate::process::{command, Process};

/// A node: the binary serving on an ephemeral port against the shared database and key file.
fn node(dir: &std::path::Path, database_url: &str) -> (Process, String) {
    let key_file = dir.join("keys.toml");
    let mut process = Process::spawn(
        dir,
        &["serve", "--listen", "127.0.0.1:0", "--database-url", database_url, "--key-file", key_file.to_str().unwrap()],
    );
    let addr = process.wait_until_listening();
    (process, format!("http://{addr}"))
}

async fn status(http: &reqwest::Client, base: &str, token: &str) -> StatusCode {
    http.get(format!("{base}/api/v1/me")).bearer_auth(token).send().await.unwrap().status()
}

/// How long until `base` refuses `token`; fails after one second.
async fn until_refused(http: &reqwest::Client, base: &str, token: &str, since: Instant) -> Duration {
    loop {
        if status(http, base, token).await == StatusCode::UNAUTHORIZED {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(1), "{base} still accepts the token after one second");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(keywarden_postgres_tests), ignore = "needs PostgreSQL: set KEYWARDEN_TEST_POSTGRES_URL")]
async fn a_revocation_through_one_node_is_enforced_by_the_other_within_a_second() {
    let Some(Engine::Postgres { admin_url }) = Engine::postgres() else { return };
    let (database_url, name) = create_database(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, node_a) = node(dir.path(), &database_url);
    let (b, node_b) = node(dir.path(), &database_url);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let post = |base: &str, path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let created = post(
        &node_a,
        "/api/v1/accounts",
        json!({ "email": "sam@example.com", "username": "sam", "password": "sam's passphrase" }),
    );
    assert_eq!(created.await.unwrap().status(), StatusCode::CREATED);
    let sign_in = |base: String, device: Option<Value>| {
        let http = http.clone();
        async move {
            let mut body = json!({ "login": "sam", "password": "sam's passphrase" });
            if let Some(device) = device {
                body["device"] = device;
            }
            let reply = http.post(format!("{base}/api/v1/sessions")).json(&body).send().await.unwrap();
            assert_eq!(reply.status(), StatusCode::CREATED);
            let tokens: Value = reply.json().await.unwrap();
            tokens["access_token"].as_str().unwrap().to_owned()
        }
    };

    // Tokens issued by one node work on the other.
    let laptop = sign_in(node_a.clone(), None).await;
    let tv = sign_in(node_b.clone(), Some(json!({ "client_id": "tv" }))).await;
    for base in [&node_a, &node_b] {
        assert_eq!(status(&http, base, &laptop).await, StatusCode::OK);
        assert_eq!(status(&http, base, &tv).await, StatusCode::OK);
    }

    // "Sign out of all devices" on node A: node B refuses the TV's token within a second.
    let started = Instant::now();
    let reply = http
        .post(format!("{node_a}/api/v1/sessions/revoke-all"))
        .bearer_auth(&laptop)
        .json(&json!({ "keep_current": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::NO_CONTENT);
    let across_nodes = until_refused(&http, &node_b, &tv, started).await;
    assert_eq!(status(&http, &node_b, &laptop).await, StatusCode::OK, "the kept session works on both nodes");

    // The proxy-leak drill across nodes. A browser holding a DPoP key signs in through node A.
    let key = DpopKey::generate();
    let url = format!("{node_a}/api/v1/sessions");
    let bound: Value = http
        .post(&url)
        .header("dpop", key.proof(ProofFor::new("POST", &url)))
        .json(&json!({ "login": "sam", "password": "sam's passphrase" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bound["token_type"], "DPoP");

    // The admin CLI, a third process, revokes the web channel: both nodes refuse within a second.
    let web = sign_in(node_b.clone(), None).await;
    let device = sign_in(node_a.clone(), Some(json!({ "client_id": "tv" }))).await;
    let started = Instant::now();
    let out = command(dir.path())
        .args(["admin", "revoke", "--channel", "web", "--database-url", &database_url])
        .args(["--key-file", dir.path().join("keys.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli_written = started.elapsed();
    let on_a = until_refused(&http, &node_a, &web, Instant::now()).await;
    let on_b = until_refused(&http, &node_b, &laptop, Instant::now()).await;
    for base in [&node_a, &node_b] {
        assert_eq!(status(&http, base, &device).await, StatusCode::OK, "the device channel is untouched");
    }
    eprintln!(
        "propagation: revoke-all node A -> node B {across_nodes:?}; admin CLI ({cli_written:?} to run) -> node A {on_a:?}, node B {on_b:?}"
    );
    // The browser that kept its key recovers through the other node, without its password.
    let url = format!("{node_b}/api/v1/token/refresh");
    let recovered = http
        .post(&url)
        .header("dpop", key.proof(ProofFor::new("POST", &url)))
        .json(&json!({ "refresh_token": bound["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(recovered.status(), StatusCode::OK);
    let recovered: Value = recovered.json().await.unwrap();
    assert_eq!(recovered["recovered"], true);
    let access = recovered["access_token"].as_str().unwrap();
    let me = format!("{node_a}/api/v1/me");
    let reply = http
        .get(&me)
        .header("authorization", format!("DPoP {access}"))
        .header("dpop", key.proof(ProofFor::new("GET", &me).with_token(access)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "the recovered session works on node A too");

    for process in [a, b] {
        let (clean, log) = process.terminate();
        assert!(clean, "{log}");
    }
    drop_database(&admin_url, &name).await;
}
