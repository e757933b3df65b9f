//! What keywarden asks of a provider over the network. `crate::outbound::upstream` answers it with HTTP;
//! the domain decides what to send and what to believe.

use async_trait::async_trait;

/// A provider's answer: its status and JSON body (`Null` when the body was not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The OAuth error a refusal carries (`error` and `error_description`), for the person to read.
    pub fn oauth_error(&self) -> String {
        let code = self.body.get("error").and_then(|v| v.as_str()).unwrap_or("unexpected answer");
        let words = self.body.get("error_description").and_then(|v| v.as_str()).unwrap_or("");
        let words: String = words.chars().filter(|c| !c.is_control()).take(200).collect();
        if words.is_empty() {
            format!("{code} (HTTP {})", self.status)
        } else {
            format!("{code}: {words}")
        }
    }
}

/// The provider could not be reached, or did not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("provider unreachable: {0}")]
pub struct Unreachable(pub String);

#[async_trait]
pub trait Upstream: Send + Sync {
    /// GETs a JSON document, with a bearer token if given.
    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Reply, Unreachable>;
    /// POSTs a form, with HTTP Basic client credentials if given.
    async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, Unreachable>;
}
