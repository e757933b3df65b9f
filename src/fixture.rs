//! A large database in minutes: accounts, devices, sessions and tokens stored as real ones are, for benchmarks and capacity tests.
//!
//! Every account has its address sealed under the data key and blind-indexed, and a real argon2id
//! hash of one shared password (hashing a million distinct passwords at the configured cost would
//! take hours and tell nothing more); every session has an access and a refresh token kept as
//! keyed digests. Rows go in by the thousand per statement, one transaction per batch.

use std::time::Instant;

use zeroize::Zeroizing;

use crate::domain::identity::{Email, Username};
use crate::domain::tokens::TokenKind;
use crate::domain::Result;
use crate::server::RunningServer;
use crate::store::{BulkDevice, BulkRows, BulkSession, NewToken};

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct FixtureSpec {
    pub accounts: usize,
    pub devices_per_account: usize,
    pub sessions_per_account: usize,
    /// Keep the plaintext access token of one session in this many, for the benchmark to present.
    pub sample_every: usize,
}

/// The password every fixture account has.
pub const FIXTURE_PASSWORD: &str = "fixture passphrase";

/// A session the caller can use: its account's login and its tokens.
#[derive(Debug, Clone)]
pub struct SampledSession {
    pub username: String,
    pub access_token: Zeroizing<String>,
    pub refresh_token: Zeroizing<String>,
}

/// Accounts written per transaction.
const BATCH: usize = 5_000;

/// Writes `spec` into the node's database; returns the sampled sessions. `progress` hears the
/// number of accounts written after each batch.
pub async fn populate(
    node: &RunningServer,
    spec: FixtureSpec,
    mut progress: impl FnMut(usize, std::time::Duration),
) -> Result<Vec<SampledSession>> {
    let (state, store) = (&node.state, &node.store);
    let started = Instant::now();
    let hash = state.hasher.hash(FIXTURE_PASSWORD).await?;
    let policy = state.token_policy;
    let mut samples = Vec::new();
    let mut written = 0;
    while written < spec.accounts {
        let now = crate::clock::now_ms();
        let end = (written + BATCH).min(spec.accounts);
        let mut rows = BulkRows::default();
        for n in written..end {
            let username = Username::parse(&format!("fixture{n:08}"))?;
            let email = Email::parse(&format!("fixture{n:08}@fixture.example"))?;
            let user = state.accounts.new_user(&username, &email, Some(hash.clone()), Some(now));
            let devices: Vec<String> = (0..spec.devices_per_account.max(1))
                .map(|d| {
                    let id = uuid::Uuid::now_v7().to_string();
                    rows.devices.push(BulkDevice {
                        id: id.clone(),
                        user_id: user.id.clone(),
                        client_identifier: format!("fixture-device-{d}"),
                        product: "Fixture".into(),
                        platform: "Linux".into(),
                        name: format!("Fixture device {d}"),
                        seen_at: now,
                    });
                    id
                })
                .collect();
            for s in 0..spec.sessions_per_account {
                let session_id = uuid::Uuid::now_v7().to_string();
                rows.sessions.push(BulkSession {
                    id: session_id.clone(),
                    user_id: user.id.clone(),
                    device_id: devices[s % devices.len()].clone(),
                    channel: "api".into(),
                    created_at: now,
                });
                let access = TokenKind::Access.mint();
                let refresh = TokenKind::Refresh.mint();
                for (token, kind, ttl) in [
                    (&access, TokenKind::Access, policy.access_ttl_secs),
                    (&refresh, TokenKind::Refresh, policy.refresh_ttl_secs),
                ] {
                    let digest = state.keyring.token_digest(token);
                    rows.tokens.push(NewToken {
                        digest: digest.digest,
                        digest_key_id: digest.key_id,
                        kind: kind.as_str(),
                        session_id: session_id.clone(),
                        user_id: user.id.clone(),
                        issued_at: now,
                        expires_at: now + ttl * 1000,
                    });
                }
                let index = n * spec.sessions_per_account + s;
                if spec.sample_every > 0 && index % spec.sample_every == 0 {
                    let username = user.username.clone();
                    samples.push(SampledSession { username, access_token: access, refresh_token: refresh });
                }
            }
            rows.users.push(user);
        }
        store.bulk_load(&rows).await?;
        written = end;
        progress(written, started.elapsed());
    }
    Ok(samples)
}
