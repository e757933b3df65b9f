//! Token authentication: who presented an access token, a browser cookie, a plex.tv-style token
//! or a client's token, checked against its session, the revocation rules and its key binding.

use subtle::ConstantTimeEq;

use super::Sessions;
use crate::domain::caller::{Authenticated, Presentation};
use crate::domain::error::{Error, Result};
use crate::domain::honeytokens;
use crate::domain::revocation::TokenFacts;
use crate::domain::tokens::TokenKind;
use crate::store::TokenRecord;

/// Three base64url parts: a compact JWS rather than a `kw_` token.
fn looks_like_jwt(token: &str) -> bool {
    token.len() <= 4096
        && token.split('.').count() == 3
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether a stored token may still be used.
pub(super) enum Liveness {
    Alive,
    /// Killed by a rule that allows a key holder to recover.
    Recoverable,
    Dead(Error),
}

impl Sessions {
    /// Validates an access token as presented and says whose it is. A token bound to a key is only
    /// accepted with the DPoP scheme and a proof from that key (RFC 9449 §7). A session that may
    /// only enrol a second factor is refused with `mfa_enrolment_required`.
    /// An OAuth client's token is for that client's own use (`/oauth/userinfo`), never for the
    /// account API.
    pub async fn authenticate(&self, access_token: &str, presented: &Presentation) -> Result<Authenticated> {
        let who = self.authenticate_for_enrolment(access_token, presented).await?;
        if who.enrolment_only {
            return Err(Error::MfaEnrolmentRequired);
        }
        Ok(who)
    }

    /// An access token issued to an OAuth client, as presented to an endpoint for such clients.
    pub async fn authenticate_client_token(
        &self,
        access_token: &str,
        presented: &Presentation,
    ) -> Result<Authenticated> {
        let who = self.authenticate_as(access_token, TokenKind::Access, presented).await?;
        if who.client_id.is_none() {
            return Err(Error::InsufficientScope);
        }
        Ok(who)
    }

    /// Like [`Self::authenticate`], but also accepts a session that may only enrol a second factor,
    /// for the calls that do that (and for reading one's profile and signing out).
    pub async fn authenticate_for_enrolment(
        &self,
        access_token: &str,
        presented: &Presentation,
    ) -> Result<Authenticated> {
        let who = self.authenticate_as(access_token, TokenKind::Access, presented).await?;
        if who.client_id.is_some() {
            return Err(Error::InsufficientScope);
        }
        Ok(who)
    }

    /// Validates a page session cookie (a `kw_ws_` token); `enrolment_only` tells the pages what it
    /// may do.
    pub async fn authenticate_browser(&self, cookie: &str) -> Result<Authenticated> {
        self.authenticate_as(cookie, TokenKind::WebSession, &Presentation::default()).await
    }

    /// Validates an `X-Plex-Token`: a `kw_pt_` token, or a device-key JWT issued by
    /// `DeviceKeys::exchange` (kept, like every token, as a keyed digest).
    pub async fn authenticate_plex(&self, token: &str) -> Result<Authenticated> {
        let record = self.plex_token_record(token).await?;
        self.check_presentation(&record, TokenKind::PlexToken, &Presentation::default())?;
        if !looks_like_jwt(token) {
            self.slide_plex_expiry(&record).await;
        }
        Ok(Authenticated::from(record))
    }

    /// A used `kw_pt_` token lives `tokens.plex_idle_ttl_secs` from now, up to
    /// `tokens.plex_max_ttl_secs` from its issue: media servers and the tools beside them keep one
    /// token for months and ping to keep it. The expiry is written at most once per
    /// `tokens.plex_extend_every_secs`, not on every request. Revocation is unaffected: it is
    /// judged before, by the session's start.
    async fn slide_plex_expiry(&self, record: &TokenRecord) {
        let now = self.clock.now_ms();
        let Some(target) = self.policy.slid_plex_expiry(now, record.issued_at, record.expires_at) else { return };
        let ticket = self.validations.ticket();
        match self.store.extend_token(&record.digest, target, now).await {
            Ok(_) => self.validations.remember_token(ticket, &TokenRecord { expires_at: target, ..record.clone() }),
            // The token is valid as it stands; a later use tries again.
            Err(err) => tracing::warn!(error = %err, session_id = %record.session_id, "could not extend a plex token"),
        }
    }

    pub(super) async fn authenticate_as(
        &self,
        token: &str,
        kind: TokenKind,
        presented: &Presentation,
    ) -> Result<Authenticated> {
        let record = self.find(token, kind).await?;
        self.check_presentation(&record, kind, presented)?;
        Ok(Authenticated::from(record))
    }

    /// Looks a token up by its keyed digest under every token-hash key, whatever its shape: from
    /// this node's cache when it was read before (refresh tokens, whose every use changes them,
    /// always from the database).
    pub(super) async fn find_stored(&self, token: &str, kind: TokenKind) -> Result<TokenRecord> {
        let candidates = self.keyring.token_digests(token);
        let cached = kind != TokenKind::Refresh;
        if cached {
            let hit = candidates.iter().find_map(|c| self.validations.token(&c.digest));
            // An expired plex token's copy may be stale: another node may have extended it since.
            // (Other kinds never move their expiry: their expired copies are answered from here.)
            let stale = |r: &TokenRecord| kind == TokenKind::PlexToken && r.expires_at <= self.clock.now_ms();
            if let Some(record) = hit.filter(|r| r.kind == kind.as_str() && !stale(r)) {
                return Ok(record);
            }
        }
        let ticket = self.validations.ticket();
        for candidate in candidates {
            let Some(record) = self.store.token_by_digest(&candidate.digest).await? else { continue };
            // The look-up already matched on the digest; the constant-time re-check guards against
            // an engine that compares loosely (for example a collation or a truncated index).
            let same: bool = record.digest.ct_eq(&candidate.digest).into();
            if same && record.kind == kind.as_str() {
                if cached {
                    self.validations.remember_token(ticket, &record);
                }
                return Ok(record);
            }
        }
        Err(Error::InvalidToken)
    }

    /// Looks a token up by its keyed digest and checks that it is of the expected kind.
    pub(crate) async fn find(&self, token: &str, kind: TokenKind) -> Result<TokenRecord> {
        if honeytokens::is_decoy_token(&self.keyring, token) {
            honeytokens::touched(&self.alerts, "a decoy token was presented", None, None);
            return Err(Error::InvalidToken);
        }
        if TokenKind::of(token) != Some(kind) {
            return Err(Error::InvalidToken);
        }
        self.find_stored(token, kind).await
    }

    /// The stored record of an `X-Plex-Token`, in either shape.
    pub(crate) async fn plex_token_record(&self, token: &str) -> Result<TokenRecord> {
        if looks_like_jwt(token) {
            self.find_stored(token, TokenKind::PlexToken).await
        } else {
            self.find(token, TokenKind::PlexToken).await
        }
    }

    /// Stores `token` (a device-key JWT) as a new `X-Plex-Token` of the session `anchor` belongs to;
    /// returns its digest.
    pub(crate) async fn add_plex_token(&self, anchor: &TokenRecord, token: &str, ttl_secs: i64) -> Result<Vec<u8>> {
        let row = self.token_row(
            token,
            TokenKind::PlexToken,
            &anchor.session_id,
            &anchor.user_id,
            self.clock.now_ms(),
            ttl_secs,
        );
        let digest = row.digest.clone();
        self.store.add_tokens(&[row]).await?;
        Ok(digest)
    }

    /// Whether a stored token is alive and presented as its binding demands.
    pub(crate) fn check_presentation(
        &self,
        record: &TokenRecord,
        kind: TokenKind,
        presented: &Presentation,
    ) -> Result<()> {
        match self.liveness(record) {
            Liveness::Alive => {}
            Liveness::Recoverable => return Err(Error::TokenRevoked),
            Liveness::Dead(err) => return Err(err),
        }
        // A page cookie cannot carry a proof on every navigation (it is HttpOnly and SameSite
        // instead); its key binding only decides who may recover it after a leak.
        let proof_needed = kind != TokenKind::WebSession;
        match (&record.dpop_jkt, presented.dpop_scheme, &presented.proof) {
            (Some(jkt), true, Some(proof)) if proof.jkt == *jkt => {}
            (Some(_), true, Some(_)) => return Err(Error::InvalidDpopProof("the proof was signed by another key")),
            (Some(_), _, _) if proof_needed => return Err(Error::DpopProofRequired),
            (None, true, _) => return Err(Error::InvalidToken),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn liveness(&self, record: &TokenRecord) -> Liveness {
        if record.session_revoked_at.is_some() {
            return Liveness::Dead(Error::TokenRevoked);
        }
        if record.expires_at <= self.clock.now_ms() {
            return Liveness::Dead(Error::TokenExpired);
        }
        if let Err(stale) = self.revocations.ensure_current() {
            return Liveness::Dead(stale);
        }
        // A token is judged by its session's start, not its own issue: a node that had not loaded
        // a new rule yet may have rotated or minted tokens of a revoked session after the cut-off.
        let facts = TokenFacts {
            issued_at: record.session_started_at.min(record.issued_at),
            user_id: &record.user_id,
            device_id: &record.device_id,
            channel: &record.channel,
            session_id: &record.session_id,
        };
        match self.revocations.check(&facts) {
            None => Liveness::Alive,
            Some(revoked) if revoked.recoverable => Liveness::Recoverable,
            Some(_) => Liveness::Dead(Error::TokenRevoked),
        }
    }

    /// Whether a stored token may still be used, whatever the reason it may not.
    pub(crate) fn is_alive(&self, record: &TokenRecord) -> bool {
        matches!(self.liveness(record), Liveness::Alive)
    }
}
