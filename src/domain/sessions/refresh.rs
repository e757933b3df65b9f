//! Keeping a session alive: refresh-token rotation with reuse detection, and the silent recovery
//! of a session a leak response revoked, for a client that proves it holds the session's key.

use serde_json::json;

use super::authenticate::Liveness;
use super::{token_type, Issue, IssuedTokens, Sessions};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::dpop::Proof;
use crate::domain::error::{Error, Result};
use crate::domain::known_devices;
use crate::domain::tokens::TokenKind;
use crate::store::{SessionRecovery, TokenRecord};

impl Sessions {
    /// Exchanges a refresh token for a new pair. Each refresh token works once (plus a short grace for
    /// a retried request); presenting it again later means it was copied, and the session dies.
    /// A session bound to a key needs a proof from it; if a leak response revoked the session, that
    /// proof alone earns a fresh session, without the password.
    /// A refresh token issued to an OAuth client works only at the token endpoint, for that client.
    pub async fn refresh(&self, refresh_token: &str, proof: Option<&Proof>) -> Result<IssuedTokens> {
        let record = self.find(refresh_token, TokenKind::Refresh).await?;
        if record.client_id.is_some() {
            return Err(Error::InvalidToken);
        }
        self.refresh_found(record, proof).await
    }

    /// [`Self::refresh`] for a token already looked up and checked to belong to its presenter.
    pub(crate) async fn refresh_found(&self, record: TokenRecord, proof: Option<&Proof>) -> Result<IssuedTokens> {
        if let Some(jkt) = &record.dpop_jkt {
            match proof {
                Some(p) if p.jkt == *jkt => {}
                Some(_) => return Err(Error::InvalidDpopProof("the proof was signed by another key")),
                None => return Err(Error::DpopProofRequired),
            }
        }
        match self.liveness(&record) {
            Liveness::Alive => self.rotate(record).await,
            Liveness::Recoverable if record.dpop_jkt.is_some() && record.rotated_at.is_none() => {
                self.recover(record, Issue::TokenPair).await
            }
            Liveness::Recoverable => Err(Error::TokenRevoked),
            Liveness::Dead(err) => Err(err),
        }
    }

    pub(super) async fn rotate(&self, record: TokenRecord) -> Result<IssuedTokens> {
        let now = self.clock.now_ms();
        let (access, refresh, successors) = self.mint_pair(&record.session_id, &record.user_id, now);
        let issued = IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            token_type: token_type(record.dpop_jkt.is_some()),
            expires_in: self.policy.access_ttl_secs,
            user_id: record.user_id.clone(),
            session_id: record.session_id.clone(),
            device_token: known_devices::mint(&self.keyring, &record.user_id, &record.device_id),
            device_id: record.device_id.clone(),
            channel: record.channel.clone(),
            recovered: false,
            mfa_enrolment_required: record.enrolment_only != 0,
        };
        if record.rotated_at.is_none() && self.store.rotate_refresh_token(&record.digest, now, &successors).await? {
            return Ok(issued);
        }
        // Rotated before: by an earlier request of this client, or by whoever else holds a copy.
        let rotated_at = match record.rotated_at {
            Some(at) => at,
            None => self.store.token_by_digest(&record.digest).await?.and_then(|r| r.rotated_at).unwrap_or(now),
        };
        if now - rotated_at <= self.policy.refresh_reuse_grace_secs * 1000 {
            self.store.add_tokens(&successors).await?;
            return Ok(issued);
        }
        // An OAuth client whose session this was hears of it by back-channel logout.
        self.store.end_session_and_tell(&record.session_id, now).await?;
        self.validations.forget_session(&record.session_id);
        tracing::warn!(user_id = %record.user_id, session_id = %record.session_id, "refresh token reused: session revoked");
        let details = json!({ "session_id": record.session_id, "device_id": record.device_id });
        let event = AuditLog::event(kind::REFRESH_TOKEN_REUSED, &Actor::System, Some(&record.user_id), None, details);
        self.audit.record(event).await?;
        Err(Error::RefreshTokenReused)
    }

    /// Replaces a session that a leak response revoked with a new one bound to the same key. The
    /// key never travelled, so whoever proves possession of it is the session's own client.
    pub(super) async fn recover(&self, record: TokenRecord, issue: Issue) -> Result<IssuedTokens> {
        let now = self.clock.now_ms();
        let session_id = uuid::Uuid::now_v7().to_string();
        let (access, refresh, tokens) = self.mint(issue, &session_id, &record.user_id, now);
        let recovery = SessionRecovery {
            old_session_id: record.session_id.clone(),
            session_id: session_id.clone(),
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            channel: record.channel.clone(),
            dpop_jkt: record.dpop_jkt.clone().unwrap_or_default(),
            at: now,
            enrolment_only: record.enrolment_only != 0,
            tokens,
        };
        if !self.store.recover_session(&recovery).await? {
            return Err(Error::TokenRevoked);
        }
        self.validations.forget_session(&record.session_id);
        tracing::info!(user_id = %record.user_id, old_session_id = %record.session_id, %session_id, "session recovered by its DPoP key");
        let details = json!({ "old_session_id": record.session_id, "session_id": session_id, "device_id": record.device_id, "channel": record.channel });
        let event = AuditLog::event(
            kind::SESSION_RECOVERED,
            &Actor::User(record.user_id.clone()),
            Some(&record.user_id),
            None,
            details,
        );
        self.audit.record(event).await?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            token_type: "DPoP",
            expires_in: self.policy.access_ttl_secs,
            user_id: record.user_id.clone(),
            session_id,
            device_token: known_devices::mint(&self.keyring, &record.user_id, &record.device_id),
            device_id: record.device_id,
            channel: record.channel,
            recovered: true,
            mfa_enrolment_required: record.enrolment_only != 0,
        })
    }

    /// A page session cookie whose session a leak response revoked, presented with a proof from the
    /// key the browser bound it to at sign-in: a new cookie, without the password. A copied cookie
    /// without the key gets nothing.
    pub async fn recover_browser(&self, cookie: &str, proof: &Proof) -> Result<IssuedTokens> {
        let record = self.find(cookie, TokenKind::WebSession).await?;
        match (&record.dpop_jkt, self.liveness(&record)) {
            (Some(jkt), Liveness::Recoverable) if *jkt == proof.jkt => self.recover(record, Issue::BrowserCookie).await,
            (Some(_), Liveness::Recoverable) => Err(Error::InvalidDpopProof("the proof was signed by another key")),
            (_, Liveness::Dead(err)) => Err(err),
            _ => Err(Error::TokenRevoked),
        }
    }
}
