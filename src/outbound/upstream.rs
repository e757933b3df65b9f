//! The outbound HTTP side of sign-in with upstream providers: discovery, keys, code exchange and
//! userinfo requests, answered as `domain::sso::upstream::Reply`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::domain::sso::upstream::{Reply, Unreachable, Upstream};
use crate::outbound;

/// Larger provider answers are refused: discovery documents and key sets are a few kilobytes.
const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct HttpUpstream {
    http: reqwest::Client,
}

impl HttpUpstream {
    pub fn new() -> anyhow::Result<Self> {
        let http = outbound::client("keywarden sign-in", Duration::from_secs(10))?;
        Ok(Self { http })
    }

    async fn reply(response: reqwest::Result<reqwest::Response>) -> Result<Reply, Unreachable> {
        let response = response.map_err(|e| Unreachable(without_url(&e)))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| Unreachable(without_url(&e)))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(Unreachable(format!("answer of {} bytes is too large", bytes.len())));
        }
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Reply { status, body })
    }
}

/// reqwest errors quote the URL, which may carry a code or token in its query.
fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[async_trait]
impl Upstream for HttpUpstream {
    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Reply, Unreachable> {
        let mut request = self.http.get(url).header(ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Self::reply(outbound::send_with_retry(request).await).await
    }

    async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, Unreachable> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        Self::reply(outbound::send_with_retry(request).await).await
    }
}
