//! Posts security alerts to the operator's webhook (`alerts.webhook_url`) as JSON.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::clock::{now_ms, rfc3339};
use crate::domain::alerts::{Alert, AlertHook};

pub struct Webhook {
    http: reqwest::Client,
    url: String,
    product: String,
}

impl Webhook {
    pub fn new(url: &str, product: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid alerts.webhook_url: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            anyhow::bail!("invalid alerts.webhook_url: use an https:// (or http://) URL");
        }
        let http = crate::outbound::client("keywarden alerts", Duration::from_secs(10))?;
        Ok(Self { http, url: url.to_owned(), product: product.to_owned() })
    }
}

#[async_trait]
impl AlertHook for Webhook {
    async fn alerted(&self, alert: &Alert) {
        let body = json!({
            "kind": alert.kind,
            "severity": alert.severity,
            "summary": alert.summary,
            "details": alert.details,
            "at": rfc3339(now_ms()),
            // Chat tools (Slack, Mattermost, Discord via /slack) show this field as the message.
            "text": format!("[{} {}] {}", self.product, alert.severity.as_str(), alert.summary),
        });
        // Delivery never holds up the request that raised the alert; a failed one is tried again
        // twice (after 2 and 10 seconds), then given up with an error in the log.
        let (http, url, body) = (self.http.clone(), self.url.clone(), body.to_string());
        tokio::spawn(async move {
            for (attempt, pause) in [0u64, 2, 10].into_iter().enumerate() {
                tokio::time::sleep(Duration::from_secs(pause)).await;
                let request = http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
                match request.body(body.clone()).send().await {
                    Ok(answer) if answer.status().is_success() => return,
                    Ok(answer) => {
                        tracing::warn!(status = answer.status().as_u16(), attempt, "the alert webhook refused an alert")
                    }
                    Err(err) => tracing::warn!(timeout = err.is_timeout(), attempt, "the alert webhook is unreachable"),
                }
            }
            tracing::error!(
                "an alert could not be delivered to the webhook; it is in the audit log and was mailed to admins"
            );
        });
    }
}
