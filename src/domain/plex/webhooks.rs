//! The account's webhook URLs (plex.tv's `/api/v2/user/webhooks`): where the owner's media servers
//! post their events. keywarden keeps the list; the servers read it and do the posting.

use serde_json::json;

use crate::clock::Clock;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::core::Core;
use crate::domain::error::{Error, Result};
use crate::store::DynStore;

/// At most this many webhooks per account.
pub const MAX_WEBHOOKS: usize = 25;
/// And each URL at most this long.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Clone)]
pub struct Webhooks {
    clock: Clock,
    store: DynStore,
    audit: AuditLog,
}

/// The URLs as given, checked: `http(s)` with a host, bounded, without repeats (first kept).
fn checked(urls: Vec<String>) -> Result<Vec<String>> {
    let mut kept: Vec<String> = Vec::with_capacity(urls.len());
    for url in urls.into_iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) {
        if url.len() > MAX_URL_LEN {
            return Err(Error::InvalidWebhook("a URL is longer than 2048 characters"));
        }
        let parsed = url::Url::parse(&url).map_err(|_| Error::InvalidWebhook("a URL is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidWebhook("only http and https URLs with a host can be webhooks"));
        }
        if !kept.contains(&url) {
            kept.push(url);
        }
    }
    if kept.len() > MAX_WEBHOOKS {
        return Err(Error::InvalidWebhook("an account can have at most 25 webhooks"));
    }
    Ok(kept)
}

impl Webhooks {
    pub fn new(core: &Core) -> Self {
        Self { clock: core.clock.clone(), store: core.store.clone(), audit: core.audit.clone() }
    }

    pub async fn list(&self, who: &Authenticated) -> Result<Vec<String>> {
        let Some(stored) = self.store.plex_webhooks(&who.user_id).await? else { return Ok(Vec::new()) };
        serde_json::from_str(&stored).map_err(|e| Error::Internal(format!("stored webhooks: {e}")))
    }

    /// Replaces the account's list (plex.tv's clients send the whole list every time); audited with
    /// how many were added and removed, and the new list.
    pub async fn replace(&self, who: &Authenticated, urls: Vec<String>, address: Option<&str>) -> Result<Vec<String>> {
        let urls = checked(urls)?;
        let before = self.list(who).await?;
        let json = serde_json::to_string(&urls).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.set_plex_webhooks(&who.user_id, &json, self.clock.now_ms()).await?;
        let added = urls.iter().filter(|u| !before.contains(u)).count();
        let removed = before.iter().filter(|u| !urls.contains(u)).count();
        let details = json!({ "added": added, "removed": removed, "count": urls.len() });
        let actor = Actor::User(who.user_id.clone());
        self.audit
            .record(AuditLog::event(kind::WEBHOOKS_CHANGED, &actor, Some(&who.user_id), address, details))
            .await?;
        Ok(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_http_urls_are_kept_once() {
        let kept = checked(vec![" https://a.example/hook ".into(), "".into(), "https://a.example/hook".into()]);
        assert_eq!(kept.unwrap(), vec!["https://a.example/hook".to_owned()]);
        for bad in ["javascript:alert(1)", "ftp://a.example/", "not a url", "http://"] {
            assert!(matches!(checked(vec![bad.into()]), Err(Error::InvalidWebhook(_))), "{bad}");
        }
        assert!(checked(vec![format!("https://a.example/{}", "x".repeat(MAX_URL_LEN))]).is_err());
        let many = (0..=MAX_WEBHOOKS).map(|i| format!("https://a.example/{i}")).collect();
        assert!(checked(many).is_err());
    }
}
