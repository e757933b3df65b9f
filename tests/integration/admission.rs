//! A flood of sign-ins degrades to quick 503s with Retry-After, never to 500s or collapse.

use futures::future::join_all;
use keywarden::config::HashProfile;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Engine, TestServer};

crate::on_both_engines!(a_full_hash_queue_answers_503_with_retry_after);

async fn a_full_hash_queue_answers_503_with_retry_after(engine: Engine) {
    let server = TestServer::start_with(engine, |c| {
        // Real argon2id cost, so hashes overlap; one running and one waiting at most.
        c.password_hashing.profile = HashProfile::Standard;
        c.password_hashing.max_concurrent = 1;
        c.password_hashing.max_waiting = 1;
        c.password_hashing.retry_after_secs = 2;
        // The queue bound is what stands when the throttle does not (guesses spread over many
        // accounts and addresses); with it on, one account's flood would stop at the throttle.
        c.throttle.enabled = false;
    })
    .await;
    server.sign_up("frank", "frank@example.com", "frank's passphrase").await;

    let attempts = (0..24).map(|i| {
        let password = if i % 2 == 0 { "frank's passphrase" } else { "wrong passphrase" };
        server.post("/api/v1/sessions", json!({ "login": "frank", "password": password }))
    });
    let replies = join_all(attempts).await;

    let mut overloaded = 0;
    let mut served = 0;
    for reply in &replies {
        match reply.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
                assert_eq!(reply.headers["retry-after"], "2");
                overloaded += 1;
            }
            StatusCode::CREATED | StatusCode::UNAUTHORIZED => served += 1,
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(overloaded > 0, "no request was refused: the queue bound is not enforced");
    assert!(served >= 2, "admission control refused everything");
    // Once the flood is over, the owner signs in normally.
    server.sign_in("frank", "frank's passphrase", None).await;
    server.stop().await;
}
