//! Decoy accounts and tokens: normal traffic raises no alert; any use of a decoy raises one at once.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{Engine, Reply, TestServer};

crate::on_both_engines!(using_a_honeytoken_raises_the_alert_and_normal_traffic_none);

/// A webhook receiver on loopback: each POSTed JSON body comes out of the channel.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/keywarden", listener.local_addr().unwrap());
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    let _ = sender.send(serde_json::from_str(body).unwrap_or(Value::Null));
                    let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
                    break;
                }
            }
        }
    });
    (url, receiver)
}

async fn alerts(server: &TestServer) -> f64 {
    server.metric("keywarden_security_alerts_total", "kind=\"honeytoken_used\"").await
}

/// Waits (a little) for the alert count to reach `expected`: alerts are raised off the request's path.
async fn alerted(server: &TestServer, expected: f64) -> f64 {
    for _ in 0..100 {
        if alerts(server).await >= expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    alerts(server).await
}

async fn using_a_honeytoken_raises_the_alert_and_normal_traffic_none(engine: Engine) {
    let (webhook_url, mut posted) = webhook().await;
    let server = TestServer::start_with(engine, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.alerts.webhook_url = Some(webhook_url);
    })
    .await;
    server.sign_up("root", "root@example.com", "the admin's passphrase").await;
    assert!(server.admin(&["users", "set-role", "root", "admin"]).status.success());
    server.sign_up("alice", "alice@example.com", "alice's passphrase").await;

    let export = server.data_dir().join("decoys.json");
    let seeded = server.admin(&["honeytokens", "seed", "4", "--export", export.to_str().unwrap()]);
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    assert!(String::from_utf8_lossy(&seeded.stdout).contains("seeded 4 decoy account(s)"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&export).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let decoys: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(decoys.len(), 4);

    // Decoys are ordinary rows: listed like everyone, with devices, dated in the past.
    let listed = server.admin(&["users", "list", "--json"]);
    let users: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(users.len(), 6);
    let decoy = &decoys[0];
    let shown = server.admin(&["users", "show", decoy["username"].as_str().unwrap()]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(!shown["devices"].as_array().unwrap().is_empty(), "{shown}");

    // The keyring tells them apart: `honeytokens list` names the four decoys and no real account.
    let listed = server.admin(&["honeytokens", "list", "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let mut found: Vec<String> = serde_json::from_slice::<Vec<Value>>(&listed.stdout)
        .unwrap()
        .iter()
        .map(|d| d["username"].as_str().unwrap().to_owned())
        .collect();
    let mut planted: Vec<String> = decoys.iter().map(|d| d["username"].as_str().unwrap().to_owned()).collect();
    found.sort();
    planted.sort();
    assert_eq!(found, planted);

    // Normal traffic: sign-ins, a wrong password, an unknown name, tokens, a reset — no alert.
    let tokens = server.sign_in("alice", "alice's passphrase", None).await;
    assert_eq!(server.me(&tokens.access).await.status, StatusCode::OK);
    server.post("/api/v1/sessions", json!({ "login": "alice", "password": "wrong" })).await;
    server.post("/api/v1/sessions", json!({ "login": "mallory", "password": "wrong" })).await;
    assert_eq!(server.me("kw_at_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await.status, StatusCode::UNAUTHORIZED);
    server.post("/api/v1/password/reset-request", json!({ "email": "alice@example.com" })).await;
    server.wait_for_outbox(0, |m| m.to == ["alice@example.com"] && m.subject().contains("Reset")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(alerts(&server).await, 0.0, "normal traffic raised an alert");
    assert!(posted.try_recv().is_err(), "normal traffic reached the webhook");

    // A sign-in as a decoy (here with the right password, as after cracking a hash): refused like
    // any wrong password, and the alert is raised.
    let attempt = server
        .http
        .post(server.url("/api/v1/sessions"))
        .header("x-forwarded-for", "203.0.113.66")
        .json(&json!({ "login": decoy["username"], "password": decoy["password"] }))
        .send()
        .await
        .unwrap();
    let attempt = Reply::from(attempt).await;
    assert_eq!(attempt.status, StatusCode::UNAUTHORIZED, "{}", attempt.text);
    assert_eq!(alerted(&server, 1.0).await, 1.0);
    let mail =
        server.wait_for_outbox(0, |m| m.to == ["root@example.com"] && m.subject().contains("security alert")).await;
    assert!(mail.subject().contains("critical"), "{}", mail.subject());
    assert!(mail.text().contains("honeytoken") && mail.text().contains("203.0.113.66"), "{}", mail.text());
    let hook = tokio::time::timeout(std::time::Duration::from_secs(5), posted.recv()).await.unwrap().unwrap();
    assert_eq!(
        (hook["kind"].as_str(), hook["severity"].as_str()),
        (Some("honeytoken_used"), Some("critical")),
        "{hook}"
    );
    assert!(hook["text"].as_str().unwrap().contains("203.0.113.66"), "{hook}");

    // A decoy token, on the plex.tv-style API and on the account API.
    let token = decoys[1]["tokens"][0].as_str().unwrap();
    assert!(token.starts_with("kw_pt_"));
    let plex = server.http.get(server.url("/api/v2/user")).header("X-Plex-Token", token).send().await.unwrap();
    assert_eq!(plex.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(alerted(&server, 2.0).await, 2.0);
    assert_eq!(server.me(token).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(alerted(&server, 3.0).await, 3.0);

    // A reset asked for a decoy's address: the same answer as for anyone, an alert, and no mail.
    let reset = server.post("/api/v1/password/reset-request", json!({ "email": decoys[2]["email"] })).await;
    assert_eq!(reset.status, StatusCode::ACCEPTED);
    assert_eq!(alerted(&server, 4.0).await, 4.0);
    let decoy_addresses: Vec<&str> = decoys.iter().map(|d| d["email"].as_str().unwrap()).collect();
    assert!(server.outbox().iter().all(|m| m.to.iter().all(|to| !decoy_addresses.contains(&to.as_str()))));

    // Every alert is in the audit log, whose chain is intact.
    let audit = server.admin(&["audit", "verify"]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
    server.stop().await;
}
