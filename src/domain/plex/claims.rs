//! Claiming a media server: its owner asks for a short-lived, single-use `claim-…` token, and the
//! new server trades it for a device session of its own (how the official media server container
//! gets its token on first start).

use std::sync::Arc;

use rand::distributions::{Alphanumeric, DistString};
use serde_json::json;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::core::Core;
use crate::domain::device_info::DeviceInfo;
use crate::domain::error::{Error, Result};
use crate::domain::freshness::Freshness;
use crate::domain::sessions::{IssuedTokens, Sessions};
use crate::domain::throttle::{Purpose, Subject, Throttle};
use crate::keys::Keyring;
use crate::store::{DynStore, PlexClaimRecord};

/// How long a claim token waits for its server (plex.tv's are good for four minutes).
pub const CLAIM_TTL_SECS: i64 = 300;
const PREFIX: &str = "claim-";
/// Random characters after the prefix: 20 alphanumerics, about 119 bits.
const RANDOM_LEN: usize = 20;
/// What a server provides when it does not say.
const SERVER: &str = "server";

/// A new claim token, shown once.
#[derive(Debug)]
pub struct NewClaim {
    pub token: Zeroizing<String>,
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct Claims {
    clock: Clock,
    store: DynStore,
    keyring: Arc<Keyring>,
    audit: AuditLog,
    sessions: Sessions,
    throttle: Throttle,
    freshness: Freshness,
}

impl Claims {
    pub fn new(core: &Core, sessions: Sessions) -> Self {
        Self {
            clock: core.clock.clone(),
            store: core.store.clone(),
            keyring: core.keyring.clone(),
            audit: core.audit.clone(),
            sessions,
            throttle: core.throttle.clone(),
            freshness: core.freshness.clone(),
        }
    }

    /// A claim token for the signed-in owner. It becomes a lasting credential (the server's
    /// session), so it needs a recent sign-in on an account with a proven address, as linking a
    /// device does; and each is a row, so making them is counted per account.
    pub async fn create(&self, who: &Authenticated, address: Option<&str>) -> Result<NewClaim> {
        self.freshness.require_for_new_credential(who).await?;
        self.throttle.count_attempt(Purpose::ClaimCreation, &[Subject::Account(&who.user_id)]).await?;
        let now = self.clock.now_ms();
        let token =
            Zeroizing::new(format!("{PREFIX}{}", Alphanumeric.sample_string(&mut rand::rngs::OsRng, RANDOM_LEN)));
        let digest = self.keyring.token_digest(&token);
        let record = PlexClaimRecord {
            code_digest: digest.digest,
            digest_key_id: digest.key_id,
            user_id: who.user_id.clone(),
            created_at: now,
            expires_at: now + CLAIM_TTL_SECS * 1000,
        };
        self.store.create_plex_claim(&record).await?;
        let actor = Actor::User(who.user_id.clone());
        let details = json!({ "expires_at": record.expires_at });
        self.audit
            .record(AuditLog::event(kind::CLAIM_TOKEN_ISSUED, &actor, Some(&who.user_id), address, details))
            .await?;
        Ok(NewClaim { token, expires_at: record.expires_at })
    }

    /// Trades a claim token for a session of the device presenting it: a media server (it
    /// provides `server` unless it says otherwise), listed in resources, audited and mailed to its
    /// owner as a new device. A wrong token is a guess, counted per address and per client.
    pub async fn exchange(
        &self,
        token: &str,
        device: DeviceInfo,
        provides: Option<&str>,
        address: Option<String>,
    ) -> Result<(IssuedTokens, String)> {
        let now = self.clock.now_ms();
        let subjects: Vec<Subject<'_>> = address
            .as_deref()
            .map(Subject::Address)
            .into_iter()
            .chain(Some(Subject::Client(&device.client_id)).filter(|_| !device.client_id.is_empty()))
            .collect();
        let look_up = async {
            if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + RANDOM_LEN {
                return Err(Error::InvalidClaimToken);
            }
            let store = &self.store;
            let take = |digest: Vec<u8>| async move { store.take_plex_claim(&digest, now).await };
            self.keyring.find_by_token_digest(token, take).await?.ok_or(Error::InvalidClaimToken)
        };
        let user_id = self.throttle.guard(Purpose::ClaimExchange, &subjects, None, address.as_deref(), look_up).await?;
        let provides = provides.filter(|p| !p.trim().is_empty()).unwrap_or(SERVER).to_owned();
        let issued = self.sessions.start_linked_device(&user_id, device, address.clone()).await?;
        self.store.set_device_provides(&issued.device_id, &provides).await?;
        let details = json!({ "device_id": issued.device_id, "session_id": issued.session_id, "provides": provides });
        let event = AuditLog::event(
            kind::SERVER_CLAIMED,
            &Actor::User(user_id.clone()),
            Some(&user_id),
            address.as_deref(),
            details,
        );
        self.audit.record(event).await?;
        Ok((issued, user_id))
    }
}
