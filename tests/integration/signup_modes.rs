//! Sign-up that fits the deployment (issue 22 §4), on both engines: by invitation (single- and
//! N-use, for one address, expiring, revocable, given back when the sign-up fails), closed, and
//! counted per source address when open.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{count_rows, Engine, TestServer};
use crate::pages::{browser, csrf, get};

crate::on_both_engines!(
    sign_up_by_invitation_spends_one_use_per_account,
    a_closed_sign_up_refuses_everyone,
    open_sign_ups_are_counted_per_address,
    an_unproven_address_gets_no_plex_token_when_the_policy_says_so
);

fn out(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `admin invites create …`: the code from the link it prints.
fn invite(server: &TestServer, args: &[&str]) -> String {
    let mut all = vec!["invites", "create"];
    all.extend_from_slice(args);
    let made = server.admin(&all);
    assert!(made.status.success(), "{}", out(&made));
    let link = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert!(link.contains("/signup?invite=kw_iv_"), "{link}");
    link.rsplit_once("invite=").unwrap().1.to_owned()
}

async fn sign_up(server: &TestServer, name: &str, invite: Option<&str>) -> crate::harness::Reply {
    let mut body = json!({ "email": format!("{name}@example.com"), "username": name, "password": format!("{name}'s long passphrase") });
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    server.post("/api/v1/accounts", body).await
}

fn listed(server: &TestServer) -> Vec<Value> {
    let list = server.admin(&["invites", "list", "--json"]);
    assert!(list.status.success(), "{}", out(&list));
    serde_json::from_slice(&list.stdout).unwrap()
}

async fn sign_up_by_invitation_spends_one_use_per_account(engine: Engine) {
    let server =
        TestServer::start_with(engine.clone(), |c| c.signup.mode = keywarden::domain::policy::SignupMode::Invite).await;
    sign_up(&server, "nemo", None).await.assert_error(StatusCode::FORBIDDEN, "invite_required");
    sign_up(&server, "nemo", Some("kw_iv_not-a-real-invitation-code-at-all-0000000"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "invalid_invite");

    // Two uses: two accounts, then no more; a failed sign-up (a taken name) spends nothing.
    let two = invite(&server, &["--uses", "2", "--expires", "2d"]);
    assert_eq!(sign_up(&server, "ann", Some(&two)).await.status, StatusCode::CREATED);
    sign_up(&server, "ann", Some(&two)).await.assert_error(StatusCode::CONFLICT, "username_taken");
    assert_eq!(sign_up(&server, "ben", Some(&two)).await.status, StatusCode::CREATED);
    sign_up(&server, "cat", Some(&two)).await.assert_error(StatusCode::FORBIDDEN, "invalid_invite");

    // For one address: another address is refused and the use given back.
    let for_dee = invite(&server, &["--email", "dee@example.com"]);
    sign_up(&server, "eve", Some(&for_dee)).await.assert_error(StatusCode::FORBIDDEN, "invalid_invite");
    assert_eq!(sign_up(&server, "dee", Some(&for_dee)).await.status, StatusCode::CREATED);

    // Racing sign-ups on a one-use invitation: one account.
    let once = invite(&server, &[]);
    let racers = ["fay", "gus", "hal", "ivy"].map(|name| sign_up(&server, name, Some(&once)));
    let statuses: Vec<StatusCode> = futures::future::join_all(racers).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");

    // Expired and revoked invitations admit nobody.
    let short = invite(&server, &["--expires", "10m"]);
    let revoked = invite(&server, &[]);
    let id = listed(&server).iter().find(|i| i["live"] == true && i["uses_left"] == 1 && i["email"].is_null()).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(server.admin(&["invites", "revoke", &id]).status.success());
    assert!(!server.admin(&["invites", "revoke", &id]).status.success(), "revoked once");
    server.advance(std::time::Duration::from_secs(11 * 60));
    let outcomes = [sign_up(&server, "jon", Some(&short)).await, sign_up(&server, "kai", Some(&revoked)).await];
    let refused = outcomes.iter().filter(|r| r.status == StatusCode::FORBIDDEN).count();
    assert_eq!(refused, 2, "expired and revoked: {:?}", outcomes.iter().map(|r| r.status).collect::<Vec<_>>());

    // The list shows uses and whom an invitation is for, never a code.
    let list = listed(&server);
    assert!(list.iter().any(|i| i["email"] == "dee@example.com" && i["uses_left"] == 0));
    assert!(list.iter().any(|i| i["uses"] == 2 && i["uses_left"] == 0));
    assert!(!serde_json::to_string(&list).unwrap().contains("kw_iv_"), "no codes listed");

    // The page: a link's code rides along in the form; without one, the page asks for it.
    let page = browser();
    let fresh = invite(&server, &[]);
    let (status, html, _) = get(&page, &server, &format!("/signup?invite={fresh}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("by invitation") && html.contains(&format!("name=\"invite\" value=\"{fresh}\"")), "{html}");
    let (_, bare, _) = get(&page, &server, "/signup").await;
    assert!(bare.contains("id=\"invite\""), "a field for the code");
    let form = [
        ("csrf", csrf(&html)),
        ("email", "lea@example.com".to_owned()),
        ("username", "lea".to_owned()),
        ("password", "lea's long passphrase".to_owned()),
        ("invite", fresh),
    ];
    let created = page.post(server.url("/signup")).form(&form).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER, "{}", created.text().await.unwrap());
    let audited = count_rows(
        &engine,
        &server.database_url,
        "SELECT COUNT(*) FROM audit_events WHERE kind IN ('invite.created', 'invite.revoked')",
    )
    .await;
    assert_eq!(audited, 7, "six made, one revoked");
    server.stop().await;
}

async fn a_closed_sign_up_refuses_everyone(engine: Engine) {
    let server =
        TestServer::start_with(engine, |c| c.signup.mode = keywarden::domain::policy::SignupMode::Closed).await;
    let code = invite(&server, &[]);
    sign_up(&server, "olga", None).await.assert_error(StatusCode::FORBIDDEN, "signup_closed");
    sign_up(&server, "olga", Some(&code)).await.assert_error(StatusCode::FORBIDDEN, "signup_closed");
    let (status, html, _) = get(&browser(), &server, "/signup").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Sign-up is closed") && !html.contains("action=\"/signup\""), "{html}");
    server.stop().await;
}

async fn open_sign_ups_are_counted_per_address(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.throttle.address_free_creations = 3).await;
    let mut statuses = Vec::new();
    for name in ["pam", "quin", "rex", "sal", "tom"] {
        statuses.push(sign_up(&server, name, None).await.status);
    }
    assert_eq!(&statuses[..3], &[StatusCode::CREATED; 3], "{statuses:?}");
    assert!(statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    server.stop().await;
}

async fn an_unproven_address_gets_no_plex_token_when_the_policy_says_so(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.signup.require_verified_email = true).await;
    server.sign_up_unverified("uma", "uma@example.com", "uma's long passphrase").await;
    let plex = crate::plex::sign_in(&server, "uma", "uma's long passphrase", "tv").await;
    assert_eq!(plex.status(), StatusCode::FORBIDDEN);
    assert!(plex.text().await.unwrap().contains("<error "), "in plex.tv's shape");
    // The account API still lets it in, to ask for the link again (counted).
    let tokens = server.sign_in("uma", "uma's long passphrase", None).await;
    let resent = server.post_with_token("/api/v1/email/verification", &tokens.access, json!({})).await;
    assert!(resent.status.is_success(), "{}", resent.text);
    let link = server.wait_for_outbox(1, |m| m.subject().contains("Confirm your email")).await.token("kw_ev_").unwrap();
    let verified = server.post("/api/v1/email/verify", json!({ "token": link })).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.text);
    let plex = crate::plex::sign_in(&server, "uma", "uma's long passphrase", "tv").await;
    assert_eq!(plex.status(), StatusCode::CREATED, "proven: plex tokens as usual");
    server.stop().await;
}
