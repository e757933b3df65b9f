//! The OAuth client registry through `keywarden admin clients` (issue 6, first part): secrets shown
//! once and stored only as keyed digests, exact redirect URIs checked at registration, rotation and
//! removal, reserved ids refused.

use keywarden::domain::audit::Actor;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(clients_are_registered_listed_rotated_and_removed);

fn run(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let mut full = vec!["clients"];
    full.extend_from_slice(args);
    let out = server.admin(&full);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secret_in(stdout: &str) -> String {
    let line = stdout.lines().find_map(|l| l.strip_prefix("client_secret: ")).expect("a secret line");
    assert!(line.starts_with("kw_cs_") && line.len() == 6 + 43, "{line}");
    line.to_owned()
}

async fn clients_are_registered_listed_rotated_and_removed(engine: Engine) {
    let server = TestServer::start(engine).await;
    let state = server.running_state();
    let registry = state.oauth.clients().clone();

    let (ok, out, err) = run(
        &server,
        &[
            "add",
            "forum",
            "--name",
            "Forum",
            "--redirect-uri",
            "https://forum.example.com/auth/callback",
            "--first-party",
            "--backchannel-logout-uri",
            "https://forum.example.com/auth/logout",
        ],
    );
    assert!(ok, "{err}");
    let secret = secret_in(&out);
    let (ok, out, err) =
        run(&server, &["add", "tv-app", "--name", "TV app", "--public", "--redirect-uri", "com.example.tv:/cb"]);
    assert!(ok && !out.contains("client_secret"), "a public client has no secret: {out}{err}");

    // Bad registrations are refused with the reason, and leave nothing behind.
    for (args, reason) in [
        (vec!["add", "forum", "--name", "Again"], "already registered"),
        (vec!["add", "web", "--name", "Web"], "reserved"),
        (vec!["add", "evil", "--name", "Evil", "--redirect-uri", "http://evil.example/cb"], "redirect URI"),
        (vec!["add", "frag", "--name", "Frag", "--redirect-uri", "https://x.example/cb#a"], "redirect URI"),
        (vec!["add", "native", "--name", "Native", "--redirect-uri", "com.example.app:/cb"], "redirect URI"),
    ] {
        let (ok, _, err) = run(&server, &args);
        assert!(!ok && err.contains(reason), "{args:?}: {err}");
    }
    let (_, listed, _) = run(&server, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["forum", "tv-app"]);
    assert_eq!(listed[0]["redirect_uris"], serde_json::json!(["https://forum.example.com/auth/callback"]));
    assert_eq!((listed[0]["kind"].as_str(), listed[0]["first_party"].as_bool()), (Some("confidential"), Some(true)));
    assert!(!listed.to_string().contains("kw_cs_"), "secrets are never listed");

    // The secret works; a wrong one, another client's id, or a public client do not.
    let forum = registry.authenticate("forum", &secret).await.expect("the printed secret authenticates");
    assert!(forum.allows_redirect("https://forum.example.com/auth/callback"));
    assert!(!forum.allows_redirect("https://forum.example.com/auth/callback/../evil"));
    assert!(!forum.allows_redirect("https://forum.example.com/auth/"));
    for (id, given) in [("forum", "kw_cs_wrong"), ("tv-app", secret.as_str()), ("nobody", secret.as_str())] {
        let refused = registry.authenticate(id, given).await.unwrap_err();
        assert_eq!(refused.code(), "invalid_client", "{id}");
    }

    // Rotation: the old secret dies at once. Public clients have nothing to rotate.
    let (ok, out, err) = run(&server, &["rotate-secret", "forum"]);
    assert!(ok, "{err}");
    let rotated = secret_in(&out);
    assert!(registry.authenticate("forum", &secret).await.is_err());
    assert!(registry.authenticate("forum", &rotated).await.is_ok());
    let (ok, _, err) = run(&server, &["rotate-secret", "tv-app"]);
    assert!(!ok && err.contains("public client"), "{err}");

    let (ok, out, _) = run(&server, &["remove", "forum"]);
    assert!(ok && out.contains("revoke --channel forum"), "{out}");
    assert_eq!(registry.get("forum").await.unwrap_err().code(), "client_not_found");
    let (ok, _, err) = run(&server, &["remove", "forum"]);
    assert!(!ok && err.contains("no such client"), "{err}");
    let actor = Actor::Admin("test".into());
    assert!(registry.remove("tv-app", &actor).await.is_ok());
    server.stop().await;
}
