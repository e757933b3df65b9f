//! Every way a token dies reaches every node's validation cache: within a second on the other node
//! of a PostgreSQL pair, and on the node that made the change (the single SQLite node) at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keywarden::server::RunningServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, TestServer, Tokens};

const PROMISE: Duration = Duration::from_secs(1);

/// One node on SQLite; two on PostgreSQL, each with its own caches.
struct Nodes {
    engine: Engine,
    server: TestServer,
    other: Option<RunningServer>,
    other_base: String,
}

impl Nodes {
    async fn start(engine: Engine) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    async fn start_with(engine: Engine, tweak: impl FnOnce(&mut keywarden::config::Config)) -> Self {
        let server = TestServer::start_with(engine.clone(), tweak).await;
        let (other, other_base) = match &engine {
            Engine::Postgres { .. } => {
                let node = server.another_node().await;
                let base = format!("http://{}", node.addr);
                (Some(node), base)
            }
            Engine::Sqlite => (None, server.base.clone()),
        };
        Self { engine, server, other, other_base }
    }

    fn bases(&self) -> Vec<String> {
        let mut bases = vec![self.server.base.clone()];
        if self.other.is_some() {
            bases.push(self.other_base.clone());
        }
        bases
    }

    async fn get(&self, base: &str, path: &str, token: &str) -> (StatusCode, Value) {
        let reply = self.server.http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    /// Every node validated the token twice (the second time from its cache).
    async fn warm(&self, token: &str) {
        for base in self.bases() {
            for _ in 0..2 {
                assert_eq!(self.get(&base, "/api/v1/me", token).await.0, StatusCode::OK, "{base}");
            }
        }
    }

    /// Every node refuses `token`: `made_on` (the node that made the change) at once, the others
    /// within a second of `since`.
    async fn refused_everywhere(&self, token: &str, made_on: Option<&str>, since: Instant) {
        for base in self.bases() {
            loop {
                let (status, body) = self.get(&base, "/api/v1/me", token).await;
                if status == StatusCode::UNAUTHORIZED {
                    break;
                }
                assert_ne!(made_on, Some(base.as_str()), "the node that made the change still accepts the token");
                assert!(since.elapsed() < PROMISE, "{base} still accepts the token after a second: {status} {body}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Waits (at most a second) until every node's answer at `path` satisfies `check`.
    async fn seen_everywhere(&self, path: &str, token: &str, since: Instant, check: impl Fn(&Value) -> bool) {
        for base in self.bases() {
            loop {
                let (status, body) = self.get(&base, path, token).await;
                if status == StatusCode::OK && check(&body) {
                    break;
                }
                assert!(since.elapsed() < PROMISE, "{base} still answers the old {path} after a second: {body}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    async fn stop(self) {
        if let Some(other) = self.other {
            other.stop().await.unwrap();
        }
        self.server.stop().await;
    }
}

async fn signed_up(nodes: &Nodes, name: &str) -> (Tokens, Tokens) {
    let server = &nodes.server;
    server.sign_up(name, &format!("{name}@example.com"), "a long passphrase").await;
    let first = server.sign_in(name, "a long passphrase", Some(json!({ "client_id": "laptop" }))).await;
    let second = server.sign_in(name, "a long passphrase", Some(json!({ "client_id": "tv" }))).await;
    nodes.warm(&first.access).await;
    nodes.warm(&second.access).await;
    (first, second)
}

async fn signing_out_one_session_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "ona").await;
    let since = Instant::now();
    assert_eq!(nodes.server.sign_out(&tv.access).await.status, StatusCode::NO_CONTENT);
    nodes.refused_everywhere(&tv.access, Some(&nodes.server.base), since).await;
    nodes.warm(&laptop.access).await;
    nodes.stop().await;
}

async fn a_revocation_rule_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "rue").await;
    let since = Instant::now();
    let reply = nodes
        .server
        .post_with_token("/api/v1/sessions/revoke-all", &laptop.access, json!({ "keep_current": true }))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    nodes.refused_everywhere(&tv.access, Some(&nodes.server.base), since).await;
    nodes.warm(&laptop.access).await;
    nodes.stop().await;
}

async fn removing_a_device_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "dev").await;
    let since = Instant::now();
    let reply = nodes.server.delete_with_token(&format!("/api/v1/devices/{}", tv.device_id), &laptop.access).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    nodes.refused_everywhere(&tv.access, Some(&nodes.server.base), since).await;
    nodes.stop().await;
}

async fn refresh_token_reuse_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start_with(engine, |c| c.tokens.refresh_reuse_grace_secs = 0).await;
    let (_, tv) = signed_up(&nodes, "reu").await;
    let rotated = nodes.server.refresh(&tv.refresh).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let successor = rotated.json["access_token"].as_str().unwrap().to_owned();
    nodes.warm(&successor).await;
    nodes.server.advance(Duration::from_millis(1100)); // past the (zero-second) grace, by the clock's second
    let since = Instant::now();
    nodes.server.refresh(&tv.refresh).await.assert_error(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    nodes.refused_everywhere(&successor, Some(&nodes.server.base), since).await;
    nodes.stop().await;
}

async fn a_password_change_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "pat").await;
    let change = json!({ "current_password": "a long passphrase", "new_password": "another long passphrase", "sign_out_devices": true });
    let since = Instant::now();
    let reply = nodes.server.post_with_token("/api/v1/password/change", &laptop.access, change).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    nodes.refused_everywhere(&tv.access, Some(&nodes.server.base), since).await;
    nodes.stop().await;
}

async fn a_password_reset_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "res").await;
    let server = &nodes.server;
    server.post("/api/v1/password/reset-request", json!({ "email": "res@example.com" })).await;
    let link = server.wait_for_outbox(0, |m| m.token("kw_pr_").is_some()).await.token("kw_pr_").unwrap();
    let since = Instant::now();
    let reset = json!({ "token": link, "new_password": "a brand new passphrase" });
    assert_eq!(server.post("/api/v1/password/reset", reset).await.status, StatusCode::NO_CONTENT);
    for token in [&laptop.access, &tv.access] {
        nodes.refused_everywhere(token, Some(&server.base), since).await;
    }
    nodes.stop().await;
}

async fn a_forced_reset_by_the_operator_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, _) = signed_up(&nodes, "frc").await;
    let list = nodes.server.data_dir().join("accounts.txt");
    std::fs::write(&list, "frc\n").unwrap();
    let since = Instant::now();
    let out = nodes.server.admin(&["force-password-reset", "--users", list.to_str().unwrap(), "--sign-out-devices"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    nodes.refused_everywhere(&laptop.access, None, since).await;
    nodes.stop().await;
}

async fn a_first_proof_of_the_address_that_ends_sessions_reaches_every_node(engine: Engine) {
    // Someone signed up with another's address; the owner's verification link removes whatever
    // they set up (second factors, passkeys, device keys) and ends every session of the account.
    let nodes = Nodes::start(engine).await;
    let server = &nodes.server;
    server.sign_up_unverified("sqt", "sqt@example.com", "a long passphrase").await;
    let squatter = server.sign_in("sqt", "a long passphrase", None).await;
    nodes.warm(&squatter.access).await;
    let link = server.wait_for_outbox(0, |m| m.token("kw_ev_").is_some()).await.token("kw_ev_").unwrap();
    let since = Instant::now();
    assert_eq!(server.post("/api/v1/email/verify", json!({ "token": link })).await.status, StatusCode::NO_CONTENT);
    nodes.refused_everywhere(&squatter.access, Some(&server.base), since).await;
    nodes.stop().await;
}

async fn a_session_ended_in_the_database_reaches_every_node(engine: Engine) {
    // An operator ending a session with SQL, outside keywarden: the database's trigger tells every node.
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "sql").await;
    let since = Instant::now();
    let statement = format!("UPDATE sessions SET revoked_at = 1 WHERE id = '{}'", tv.session_id);
    crate::revocation::sql(&nodes.engine, &nodes.server.database_url, &statement).await;
    nodes.refused_everywhere(&tv.access, None, since).await;
    nodes.warm(&laptop.access).await;
    nodes.stop().await;
}

async fn a_retired_token_key_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (early, _) = signed_up(&nodes, "key").await;
    let out = nodes.server.admin(&["keys", "rotate", "--token-key", "--activate-in", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Vec<Value> =
        serde_json::from_slice(&nodes.server.admin(&["keys", "status", "--json"]).stdout).expect("keys status --json");
    let old = status
        .iter()
        .find(|k| k["purpose"] == "token_hash" && k["active"] == false)
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .expect("the old token key");
    nodes.warm(&early.access).await;
    let since = Instant::now();
    let out = nodes.server.admin(&["keys", "retire", "--token-key", &old, "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    nodes.refused_everywhere(&early.access, None, since).await;
    nodes.stop().await;
}

async fn an_account_change_reaches_every_nodes_profiles(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, _) = signed_up(&nodes, "pro").await;
    let server = &nodes.server;
    let since = Instant::now();
    let out = server.admin(&["users", "set-role", "pro", "admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    nodes.seen_everywhere("/api/v1/me", &laptop.access, since, |me| me["role"] == "admin").await;
    // Changed by the node itself: an email change is pending at once there, within a second elsewhere.
    let step_up = json!({ "password": "a long passphrase" });
    assert!(server.post_with_token("/api/v1/sessions/step-up", &laptop.access, step_up).await.status.is_success());
    let since = Instant::now();
    let change = json!({ "new_email": "pro.new@example.com" });
    let reply = server.post_with_token("/api/v1/email/change", &laptop.access, change).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let at_once = server.me(&laptop.access).await;
    assert_eq!(at_once.json["pending_email"], "pro.new@example.com", "the node that made the change shows it");
    nodes.seen_everywhere("/api/v1/me", &laptop.access, since, |me| me["pending_email"] == "pro.new@example.com").await;
    nodes.stop().await;
}

async fn a_plex_users_second_factor_change_reaches_every_node(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, _) = signed_up(&nodes, "plx").await;
    let server = &nodes.server;
    let plex_user = |base: String, token: String| {
        let http = server.http.clone();
        async move {
            let reply = http
                .get(format!("{base}/api/v2/user"))
                .header("X-Plex-Token", token)
                .header("X-Plex-Client-Identifier", "cache-test")
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
            reply.json::<Value>().await.unwrap()
        }
    };
    let signed_in = server
        .http
        .post(server.url("/api/v2/users/signin"))
        .header("X-Plex-Client-Identifier", "cache-test")
        .header("Accept", "application/json")
        .form(&[("login", "plx"), ("password", "a long passphrase")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::CREATED);
    let token = signed_in.json::<Value>().await.unwrap()["authToken"].as_str().unwrap().to_owned();
    for base in nodes.bases() {
        assert_eq!(plex_user(base.clone(), token.clone()).await["twoFactorEnabled"], false);
    }
    // The owner enrols an authenticator app on one node; every node's user element says so.
    let step_up = json!({ "password": "a long passphrase" });
    assert!(server.post_with_token("/api/v1/sessions/step-up", &laptop.access, step_up).await.status.is_success());
    let begun = server.post_with_token("/api/v1/mfa/totp", &laptop.access, json!({})).await;
    let secret = crate::mfa::base32_decode(begun.json["secret"].as_str().unwrap());
    let code = json!({ "code": crate::mfa::app_code(&secret, 0) });
    let since = Instant::now();
    assert_eq!(server.post_with_token("/api/v1/mfa/totp/confirm", &laptop.access, code).await.status, StatusCode::OK);
    for base in nodes.bases() {
        loop {
            if plex_user(base.clone(), token.clone()).await["twoFactorEnabled"] == true {
                break;
            }
            assert_ne!(base, server.base, "the node that made the change shows it at once");
            assert!(since.elapsed() < PROMISE, "{base} still says no second factor after a second");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    nodes.stop().await;
}

async fn no_success_later_than_a_second_after_a_revocation_under_load(engine: Engine) {
    let nodes = Nodes::start(engine).await;
    let (laptop, tv) = signed_up(&nodes, "lod").await;
    let stop = Arc::new(AtomicBool::new(false));
    let successes: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let bases = nodes.bases();
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, successes) = (stop.clone(), successes.clone());
            let (base, token, http) = (bases[i % bases.len()].clone(), tv.access.clone(), nodes.server.http.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let reply = http.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().await.unwrap();
                    match reply.status() {
                        StatusCode::OK => successes.lock().unwrap().push(sent),
                        StatusCode::UNAUTHORIZED => {}
                        other => panic!("unexpected {other}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = nodes
        .server
        .post_with_token("/api/v1/sessions/revoke-all", &laptop.access, json!({ "keep_current": true }))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let committed = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let successes = successes.lock().unwrap().clone();
    let before = successes.iter().filter(|at| **at < committed).count();
    let late = successes.iter().filter(|at| **at > committed + PROMISE).count();
    assert!(before > 50, "the clients were served before the revocation ({before})");
    assert_eq!(late, 0, "requests sent more than a second after the revocation committed succeeded");
    nodes.stop().await;
}

crate::on_both_engines!(
    signing_out_one_session_reaches_every_node,
    a_revocation_rule_reaches_every_node,
    removing_a_device_reaches_every_node,
    refresh_token_reuse_reaches_every_node,
    a_password_change_reaches_every_node,
    a_password_reset_reaches_every_node,
    a_forced_reset_by_the_operator_reaches_every_node,
    a_first_proof_of_the_address_that_ends_sessions_reaches_every_node,
    a_session_ended_in_the_database_reaches_every_node,
    a_retired_token_key_reaches_every_node,
    an_account_change_reaches_every_nodes_profiles,
    a_plex_users_second_factor_change_reaches_every_node,
    no_success_later_than_a_second_after_a_revocation_under_load,
);
