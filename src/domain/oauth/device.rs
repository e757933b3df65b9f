//! Device authorization (RFC 8628): a TV or media server shows a short user code, its person
//! approves it at `/link`, and the device polls the token endpoint until it gets its tokens.

use rand::Rng;
use serde_json::json;
use zeroize::Zeroizing;

use super::grants::{Issue, Redemption, TokenRequest, TokenResponse};
use super::{ClientCredentials, OAuth, Scope};
use crate::domain::audit::{kind, Actor, AuditLog};
use crate::domain::caller::Authenticated;
use crate::domain::error::{Error, Result};
use crate::domain::oauth::clients::Client;
use crate::domain::throttle::{self, Purpose};
use crate::domain::tokens::TokenKind;
use crate::store::{DeviceCodeRecord, StoreError};

/// RFC 8628 §6.1: consonants only, so codes are unambiguous and spell no words. 20^8 ≈ 2^34.6.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;
/// RFC 8628 §3.5: each `slow_down` adds five seconds to the interval.
const SLOW_DOWN_STEP_SECS: i64 = 5;

/// What a device asks for at `POST /oauth/device_authorization`.
#[derive(Debug, Clone)]
pub struct DeviceAuthorizationRequest {
    pub client: ClientCredentials,
    pub scope: Option<String>,
    /// What the device calls itself ("Living-room TV"); shown when its person approves it.
    pub device_name: Option<String>,
    /// Where the request came from: anyone may ask, so asking is counted per address.
    pub address: Option<String>,
}

/// RFC 8628 §3.2.
#[derive(Debug, serde::Serialize)]
pub struct DeviceAuthorization {
    pub device_code: Zeroizing<String>,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A device waiting for its person, as the `/link` confirmation shows it.
#[derive(Debug, Clone)]
pub struct PendingLink {
    pub user_code: String,
    pub client_name: String,
    pub device_name: String,
    pub scope: Scope,
}

/// `WDJB-MJHT` → `WDJBMJHT`; anything that cannot be a code is `None`.
fn normalise_user_code(typed: &str) -> Option<String> {
    let code: String = typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

fn new_user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: String = (0..USER_CODE_LEN)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())]))
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

fn clean_device_name(name: Option<&str>, client: &Client) -> Result<String> {
    let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(&client.name);
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::oauth("invalid_request", "device_name must be at most 64 printable characters"));
    }
    Ok(name.to_owned())
}

impl OAuth {
    /// RFC 8628 §3.1–3.2: a device code to poll with and a user code to show.
    pub async fn device_authorization(&self, request: DeviceAuthorizationRequest) -> Result<DeviceAuthorization> {
        let client = self.authenticate_client(&request.client).await?;
        // Not per client too: a stranger could then stop every device of a public client at once.
        let subjects: Vec<_> = request.address.as_deref().map(throttle::Subject::Address).into_iter().collect();
        self.throttle.count_attempt(Purpose::DeviceAuthorization, &subjects).await?;
        let scope = Scope::parse(request.scope.as_deref().unwrap_or("openid"))?;
        let device_name = clean_device_name(request.device_name.as_deref(), &client)?;
        let device_code = TokenKind::DeviceCode.mint();
        let keyed = self.keyring.token_digest(&device_code);
        let now = self.clock.now_ms();
        let ttl = self.settings.device_code_ttl_secs;
        // A clash with a live code is astronomically rare; a second draw settles it.
        for _ in 0..3 {
            let user_code = new_user_code();
            let normalised = normalise_user_code(&user_code).unwrap_or_default();
            let user_code_key = self.keyring.token_digest(&format!("user_code:{normalised}"));
            let record = DeviceCodeRecord {
                digest: keyed.digest.clone(),
                digest_key_id: keyed.key_id.clone(),
                user_code_digest: user_code_key.digest,
                client_id: client.id.clone(),
                scope: scope.to_string(),
                device_name: device_name.clone(),
                created_at: now,
                expires_at: now + ttl * 1000,
                interval_secs: self.settings.device_poll_interval_secs,
                last_polled_at: None,
                status: "pending".into(),
                user_id: None,
                auth_time: None,
                session_id: None,
            };
            match self.store.create_device_code(&record).await {
                Ok(()) => {
                    let verification_uri = format!("{}/link", self.issuer);
                    return Ok(DeviceAuthorization {
                        device_code,
                        verification_uri_complete: format!("{verification_uri}?code={user_code}"),
                        verification_uri,
                        user_code,
                        expires_in: ttl,
                        interval: self.settings.device_poll_interval_secs,
                    });
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(Error::Internal("could not draw a free user code".into()))
    }

    /// The pending device a typed code names, for the `/link` confirmation. Wrong codes count
    /// against the account and the source address.
    pub async fn find_link(&self, who: &Authenticated, typed: &str, address: Option<&str>) -> Result<PendingLink> {
        Ok(self.pending_link(who, typed, address).await?.1)
    }

    async fn pending_link(
        &self,
        who: &Authenticated,
        typed: &str,
        address: Option<&str>,
    ) -> Result<(DeviceCodeRecord, PendingLink)> {
        let now = self.clock.now_ms();
        let subjects = throttle::against_account(&who.user_id, address);
        let look_up = async {
            let Some(code) = normalise_user_code(typed) else { return Err(Error::InvalidUserCode) };
            let store = &self.store;
            let look_up = |digest: Vec<u8>| async move { store.device_code_by_user_code(&digest).await };
            let found = self.keyring.find_by_token_digest(&format!("user_code:{code}"), look_up).await?;
            found
                .filter(|r| r.status == "pending" && r.expires_at > now)
                .map(|r| (code, r))
                .ok_or(Error::InvalidUserCode)
        };
        let (code, record) =
            self.throttle.guard(Purpose::LinkCode, &subjects, Some(&who.user_id), address, look_up).await?;
        let client = self.clients.get(&record.client_id).await?;
        let link = PendingLink {
            user_code: format!("{}-{}", &code[..4], &code[4..]),
            client_name: client.name,
            device_name: record.device_name.clone(),
            scope: Scope::parse(&record.scope)?,
        };
        Ok((record, link))
    }

    /// The person's answer at `/link`: the device gets its tokens at its next poll, or `access_denied`.
    pub async fn decide_link(
        &self,
        who: &Authenticated,
        typed: &str,
        approve: bool,
        address: Option<&str>,
    ) -> Result<PendingLink> {
        if who.enrolment_only {
            return Err(Error::MfaEnrolmentRequired);
        }
        // An approval mints the device a session that outlives this one; refusing needs nothing.
        if approve {
            self.freshness.require_for_new_credential(who).await?;
        }
        let (record, link) = self.pending_link(who, typed, address).await?;
        let approval = approve.then_some((who.user_id.as_str(), who.verified_at));
        if !self.store.decide_device_code(&record.digest, approval, self.clock.now_ms()).await? {
            return Err(Error::InvalidUserCode);
        }
        let details = json!({ "client_id": record.client_id, "device_name": record.device_name, "approved": approve });
        let event = AuditLog::event(
            kind::DEVICE_LINK_DECIDED,
            &Actor::User(who.user_id.clone()),
            Some(&who.user_id),
            address,
            details,
        );
        self.audit.record(event).await?;
        Ok(link)
    }

    async fn find_device_code(&self, code: &str) -> Result<Option<DeviceCodeRecord>> {
        if TokenKind::of(code) != Some(TokenKind::DeviceCode) {
            return Ok(None);
        }
        let store = &self.store;
        Ok(self.keyring.find_by_token_digest(code, |digest| async move { store.device_code(&digest).await }).await?)
    }

    /// RFC 8628 §3.4–3.5: the device's poll.
    pub(super) async fn exchange_device_code(&self, client: &Client, request: TokenRequest) -> Result<TokenResponse> {
        let code = request.device_code.as_deref().filter(|c| !c.is_empty());
        let code = code.ok_or_else(|| Error::oauth("invalid_request", "device_code is missing"))?;
        let record =
            self.find_device_code(code).await?.ok_or_else(|| Error::oauth("invalid_grant", "unknown device_code"))?;
        if record.client_id != client.id {
            return Err(Error::oauth("invalid_grant", "the device_code was issued to another client"));
        }
        let now = self.clock.now_ms();
        match record.status.as_str() {
            "used" => return Err(Error::oauth("invalid_grant", "the device_code was already used")),
            "denied" => return Err(Error::oauth("access_denied", "the person did not allow this device")),
            _ if record.expires_at <= now => {
                return Err(Error::oauth("expired_token", "the device_code has expired: start again"))
            }
            "pending" => {
                let too_soon = record.last_polled_at.is_some_and(|at| now - at < record.interval_secs * 1000);
                let interval = record.interval_secs + if too_soon { SLOW_DOWN_STEP_SECS } else { 0 };
                self.store.device_code_polled(&record.digest, now, interval).await?;
                return Err(if too_soon {
                    Error::oauth("slow_down", format!("poll at most every {interval} seconds"))
                } else {
                    Error::oauth("authorization_pending", "the person has not answered yet")
                });
            }
            _ => {}
        }
        let (Some(user_id), Some(auth_time)) = (record.user_id.clone(), record.auth_time) else {
            return Err(Error::Internal("an approved device code without its person".into()));
        };
        let scope = Scope::parse(&record.scope)?;
        let issue = Issue {
            client,
            user_id: &user_id,
            // Each linking is its own device on /security, named as the device asked.
            device: (
                format!("oauth-device:{}:{}", client.id, hex::encode(&record.digest[..12])),
                client.name.clone(),
                String::new(),
                record.device_name.clone(),
            ),
            scope: &scope,
            auth_time,
            nonce: None,
            dpop: request.dpop.as_ref(),
            address: request.address.as_deref(),
            grant_type: "device_code",
        };
        self.issue(issue, Redemption::DeviceCode(&record.digest))
            .await?
            .ok_or_else(|| Error::oauth("invalid_grant", "the device_code was already used"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_unambiguous_and_forgiving_to_type() {
        let code = new_user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
        assert_eq!(normalise_user_code(&code.to_lowercase()), Some(code.replace('-', "")));
        assert_eq!(normalise_user_code("wdjb mjht").as_deref(), Some("WDJBMJHT"));
        for bad in ["WDJB-MJH", "WDJB-MJHA", "WDJB-MJH0", "", "WDJB-MJHTX"] {
            assert_eq!(normalise_user_code(bad), None, "{bad}");
        }
    }
}
