//! Delivers back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0) and `account-purged`
//! Security Event Tokens (RFC 8417, pushed as RFC 8935 says) to clients, from the queue every node
//! shares, with retries: the outbound HTTP side of ending a client's session or account.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::domain::OAuth;
use crate::store::{DynStore, LogoutJob};

/// A client that has not answered after this many attempts (about a day of backing off) is given up on.
const MAX_ATTEMPTS: i64 = 12;
const BATCH: i64 = 20;
const LOCK_MS: i64 = 60_000;

/// Seconds to wait before attempt `attempts + 1`: 5 s doubling, at most two hours.
fn backoff_secs(attempts: i64) -> i64 {
    (5_i64 << attempts.clamp(0, 11)).min(7200)
}

/// Starts the delivery loop: every `poll` it claims due notices and POSTs them.
pub fn spawn_delivery(store: DynStore, oauth: OAuth, poll: Duration) -> anyhow::Result<JoinHandle<()>> {
    let http = crate::outbound::client("keywarden back-channel logout", Duration::from_secs(5))?;
    Ok(tokio::spawn(async move {
        let mut every = tokio::time::interval(poll);
        loop {
            every.tick().await;
            if let Err(err) = deliver_due(&store, &oauth, &http).await {
                tracing::warn!(error = %err, "back-channel logout delivery failed");
            }
        }
    }))
}

async fn deliver_due(store: &DynStore, oauth: &OAuth, http: &reqwest::Client) -> anyhow::Result<()> {
    let now = now_ms();
    for job in store.claim_due_logouts(now, now + LOCK_MS, BATCH).await? {
        match deliver(oauth, http, &job).await {
            Ok(()) => store.logout_delivered(&job.session_id, now_ms()).await?,
            Err(reason) if job.attempts + 1 >= MAX_ATTEMPTS => {
                tracing::warn!(client_id = %job.client_id, session_id = %job.session_id, %reason, "back-channel logout given up");
                store.logout_delivered(&job.session_id, now_ms()).await?;
            }
            Err(reason) => {
                let next = now_ms() + backoff_secs(job.attempts) * 1000;
                tracing::info!(client_id = %job.client_id, session_id = %job.session_id, %reason, "back-channel logout will be retried");
                store.logout_failed(&job.session_id, next, &reason).await?;
            }
        }
    }
    Ok(())
}

/// One POST: of `logout_token` as a form (Back-Channel Logout 1.0 §2.5), or of the Security Event
/// Token itself as `application/secevent+jwt` (RFC 8935 §2); only a 2xx answer counts.
async fn deliver(oauth: &OAuth, http: &reqwest::Client, job: &LogoutJob) -> Result<(), String> {
    let purged = job.event == "account_purged";
    let notice = if purged { oauth.account_purged_notice(job).await } else { oauth.logout_notice(job).await };
    let Some(notice) = notice.map_err(|e| e.to_string())? else { return Ok(()) };
    let (content_type, body) = if purged {
        ("application/secevent+jwt", notice.logout_token)
    } else {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", &notice.logout_token)
            .finish();
        ("application/x-www-form-urlencoded", form)
    };
    let response = http
        .post(&notice.uri)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach the client: {e}"))?;
    if response.status().is_success() {
        tracing::info!(client_id = %job.client_id, session_id = %job.session_id, event = %job.event, "delivered to the client");
        Ok(())
    } else {
        Err(format!("the client answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(super::backoff_secs(0), 5);
        assert_eq!(super::backoff_secs(3), 40);
        assert_eq!(super::backoff_secs(20), 7200);
    }
}
