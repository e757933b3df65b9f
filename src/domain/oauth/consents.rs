//! The third-party apps a person allowed, and taking that back: the consent is forgotten and every
//! session the app holds for the person ends (the app hears of it by back-channel logout).

use serde_json::json;

use super::{OAuth, Scope};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::error::{Error, Result};

/// An app the person allowed, as `/security` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllowedApp {
    pub client_id: String,
    pub name: String,
    pub scope: Vec<&'static str>,
    pub granted_at: i64,
}

impl OAuth {
    pub async fn allowed_apps(&self, user_id: &str) -> Result<Vec<AllowedApp>> {
        let mut apps = Vec::new();
        for (client_id, scope, granted_at) in self.store.consents_of(user_id).await? {
            let Ok(client) = self.clients.get(&client_id).await else { continue };
            let scope = Scope::parse(&scope).unwrap_or_default().iter().collect();
            apps.push(AllowedApp { client_id, name: client.name, scope, granted_at });
        }
        Ok(apps)
    }

    /// Forgets the consent and ends every session of that app for the person.
    pub async fn withdraw(&self, who: &Authenticated, client_id: &str, address: Option<&str>) -> Result<()> {
        if !self.store.remove_consent(&who.user_id, client_id).await? {
            return Err(Error::ClientNotFound);
        }
        let now = self.clock.now_ms();
        let mut ended = 0;
        for session in self.store.sessions_of(&who.user_id).await? {
            if session.channel == client_id {
                self.store.end_session_and_tell(&session.id, now).await?;
                self.revocations.validations().forget_session(&session.id);
                ended += 1;
            }
        }
        let details = json!({ "client_id": client_id, "sessions_ended": ended });
        let actor = Actor::User(who.user_id.clone());
        let event = AuditLog::event(kind::OAUTH_CONSENT_WITHDRAWN, &actor, Some(&who.user_id), address, details);
        self.audit.record(event).await?;
        Ok(())
    }
}
