//! The portable SQL both engines run, written once and instantiated for each engine's concrete
//! types: the `Store` methods about the database as a whole, and the statements aggregates share.
//!
//! sqlx code that is generic over the database needs higher-ranked bounds on every type it binds,
//! which make async trait methods fail their `Send` checks; a macro gives each engine the same
//! queries with concrete types instead. Everything here must be valid on SQLite and PostgreSQL
//! alike: `$n` placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`, integers, text and bytes only.

/// Every short-lived row past its life, one statement per table, each counted in the purge's total.
/// What erasing an account deletes, in an order its foreign keys accept: everything that names it
/// but the audit log (kept: it names the account by id only) and back-channel logout notices still
/// owed to relying parties (account id only; purged once delivered). The `users` row goes last.
pub(super) const ERASE_ACCOUNT: &[&str] = &[
    "DELETE FROM tokens WHERE user_id = $1",
    "DELETE FROM device_keys WHERE user_id = $1",
    "DELETE FROM sessions WHERE user_id = $1",
    "DELETE FROM devices WHERE user_id = $1",
    "DELETE FROM mfa_challenges WHERE user_id = $1",
    "DELETE FROM recovery_codes WHERE user_id = $1",
    "DELETE FROM totp_factors WHERE user_id = $1",
    "DELETE FROM webauthn_ceremonies WHERE user_id = $1",
    "DELETE FROM passkeys WHERE user_id = $1",
    "DELETE FROM oauth_codes WHERE user_id = $1",
    "DELETE FROM oauth_consents WHERE user_id = $1",
    "DELETE FROM oauth_device_codes WHERE user_id = $1",
    "DELETE FROM sso_flows WHERE user_id = $1",
    "DELETE FROM sso_identities WHERE user_id = $1",
    "DELETE FROM one_time_tokens WHERE user_id = $1",
    "DELETE FROM plex_claims WHERE user_id = $1",
    "DELETE FROM plex_pins WHERE user_id = $1",
    "DELETE FROM plex_webhooks WHERE user_id = $1",
    "DELETE FROM mail_queue WHERE user_id = $1",
    "DELETE FROM throttles WHERE key LIKE '%:acct:' || $1",
    "DELETE FROM numeric_user_ids WHERE user_id = $1",
    "DELETE FROM users WHERE id = $1",
];

pub(super) const EXPIRED_ROWS: &[&str] = &[
    "DELETE FROM tokens WHERE expires_at < $1",
    "DELETE FROM mfa_challenges WHERE expires_at < $1",
    "DELETE FROM webauthn_ceremonies WHERE expires_at < $1",
    "DELETE FROM oauth_codes WHERE expires_at < $1",
    "DELETE FROM plex_pins WHERE expires_at < $1",
    "DELETE FROM plex_claims WHERE expires_at < $1",
    "DELETE FROM sso_flows WHERE expires_at < $1",
    "DELETE FROM sso_pending WHERE expires_at < $1",
    "DELETE FROM client_assertions WHERE expires_at < $1",
    "DELETE FROM backchannel_logouts WHERE delivered_at < $1",
    "DELETE FROM oauth_device_codes WHERE expires_at < $1",
];

/// Implements `Store` for `$store`, which must have `reader`, `writer` and `maintenance` pools of
/// database `$db` and an inherent `run_migrations` method. Extra items are engine-specific `Store`
/// methods. (Each aggregate's trait is implemented by its own module's macro: `impl_aggregates!`.)
macro_rules! impl_store_with_portable_sql {
    ($store:ty, $db:ty, $engine:literal $(, $extra:item)*) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn engine(&self) -> &'static str {
                $engine
            }

            $($extra)*

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.reader).await?;
                Ok(())
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                self.run_migrations().await
            }

            async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
                let value: Option<(String,)> =
                    sqlx::query_as::<$db, (String,)>("SELECT value FROM meta WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.reader)
                        .await?;
                Ok(value.map(|(v,)| v))
            }

            async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn bulk_load(&self, rows: &BulkRows) -> Result<(), StoreError> {
                // Several rows per statement, within both engines' limit on bound parameters.
                const PARAMETERS: usize = 30_000;
                let mut tx = self.maintenance.begin().await?;
                for chunk in rows.users.chunks(PARAMETERS / 12) {
                    sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO users (id, username, username_key, email_sealed, email_key_id, email_index, \
                         email_index_key_id, password_hash, password_pepper_id, created_at, updated_at, email_verified_at) ",
                    )
                    .push_values(chunk, |mut row, user| {
                        row.push_bind(&user.id)
                            .push_bind(&user.username)
                            .push_bind(&user.username_key)
                            .push_bind(&user.email_sealed)
                            .push_bind(&user.email_key_id)
                            .push_bind(&user.email_index)
                            .push_bind(&user.email_index_key_id)
                            .push_bind(&user.password_hash)
                            .push_bind(&user.password_pepper_id)
                            .push_bind(user.created_at)
                            .push_bind(user.created_at)
                            .push_bind(user.email_verified_at);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await?;
                }
                for chunk in rows.devices.chunks(PARAMETERS / 9) {
                    sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO devices (id, user_id, client_identifier, product, platform, name, \
                         first_seen_at, last_seen_at, last_address) ",
                    )
                    .push_values(chunk, |mut row, device| {
                        row.push_bind(&device.id)
                            .push_bind(&device.user_id)
                            .push_bind(&device.client_identifier)
                            .push_bind(&device.product)
                            .push_bind(&device.platform)
                            .push_bind(&device.name)
                            .push_bind(device.seen_at)
                            .push_bind(device.seen_at)
                            .push_bind(None::<String>);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await?;
                }
                for chunk in rows.sessions.chunks(PARAMETERS / 6) {
                    sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at) ",
                    )
                    .push_values(chunk, |mut row, session| {
                        row.push_bind(&session.id)
                            .push_bind(&session.user_id)
                            .push_bind(&session.device_id)
                            .push_bind(&session.channel)
                            .push_bind(session.created_at)
                            .push_bind(session.created_at);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await?;
                }
                for chunk in rows.tokens.chunks(PARAMETERS / 7) {
                    sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) ",
                    )
                    .push_values(chunk, |mut row, token| {
                        row.push_bind(&token.digest)
                            .push_bind(&token.digest_key_id)
                            .push_bind(token.kind)
                            .push_bind(&token.session_id)
                            .push_bind(&token.user_id)
                            .push_bind(token.issued_at)
                            .push_bind(token.expires_at);
                    })
                    .build()
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn purge_expired_tokens(&self, before: i64) -> Result<u64, StoreError> {
                let mut purged = 0;
                for statement in super::sql::EXPIRED_ROWS {
                    purged += sqlx::query::<$db>(statement).bind(before).execute(&self.maintenance).await?.rows_affected();
                }
                Ok(purged)
            }
        }

    };
}

macro_rules! insert_user {
    ($db:ty, $conn:expr, $user:expr) => {{
        let user: &NewUser = $user;
        sqlx::query::<$db>(
            "INSERT INTO users (id, username, username_key, email_sealed, email_key_id, email_index, \
             email_index_key_id, password_hash, password_pepper_id, created_at, updated_at, email_verified_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.username_key)
        .bind(&user.email_sealed)
        .bind(&user.email_key_id)
        .bind(&user.email_index)
        .bind(&user.email_index_key_id)
        .bind(&user.password_hash)
        .bind(&user.password_pepper_id)
        .bind(user.created_at)
        .bind(user.email_verified_at)
        .execute($conn)
        .await
    }};
}

macro_rules! insert_sso_identity {
    ($db:ty, $conn:expr, $identity:expr) => {{
        let identity: &SsoIdentityRecord = $identity;
        sqlx::query::<$db>(
            "INSERT INTO sso_identities (id, user_id, provider, subject_index, subject_index_key_id, label_sealed, \
             label_key_id, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&identity.id)
        .bind(&identity.user_id)
        .bind(&identity.provider)
        .bind(&identity.subject_index)
        .bind(&identity.subject_index_key_id)
        .bind(&identity.label_sealed)
        .bind(&identity.label_key_id)
        .bind(identity.created_at)
        .bind(identity.last_used_at)
        .execute($conn)
        .await
    }};
}

macro_rules! plex_pin_select {
    () => {
        "SELECT id, code_digest, digest_key_id, strong, client_identifier, product, platform, device_name, created_at, \
         expires_at, user_id, approved_at, used_at FROM plex_pins"
    };
}

macro_rules! sso_identity_select {
    () => {
        "SELECT id, user_id, provider, subject_index, subject_index_key_id, label_sealed, label_key_id, created_at, \
         last_used_at FROM sso_identities"
    };
}

macro_rules! passkey_select {
    () => {
        "SELECT id, user_id, credential_id, user_handle, name, passkey, created_at, last_used_at FROM passkeys"
    };
}

macro_rules! insert_token {
    ($db:ty, $conn:expr, $token:expr) => {{
        let token: &NewToken = $token;
        sqlx::query::<$db>(
            "INSERT INTO tokens (digest, digest_key_id, kind, session_id, user_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.digest)
        .bind(&token.digest_key_id)
        .bind(token.kind)
        .bind(&token.session_id)
        .bind(&token.user_id)
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute($conn)
        .await?;
    }};
}

/// Records a sign-in's device (new or seen before), its session and first tokens inside a
/// transaction; evaluates to the device id.
macro_rules! insert_session_start {
    ($db:ty, $tx:expr, $start:expr) => {{
        let start: &SessionStart = $start;
        let device = &start.device;
        let (device_id,): (String,) = sqlx::query_as::<$db, (String,)>(
            "INSERT INTO devices (id, user_id, client_identifier, product, platform, name, \
             first_seen_at, last_seen_at, last_address) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
             ON CONFLICT (user_id, client_identifier) DO UPDATE SET product = excluded.product, \
             platform = excluded.platform, name = excluded.name, last_seen_at = excluded.last_seen_at, \
             last_address = excluded.last_address \
             RETURNING id",
        )
        .bind(&start.new_device_id)
        .bind(&device.user_id)
        .bind(&device.client_identifier)
        .bind(&device.product)
        .bind(&device.platform)
        .bind(&device.name)
        .bind(device.seen_at)
        .bind(&device.address)
        .fetch_one(&mut **$tx)
        .await?;
        let grant = start.grant.as_ref();
        sqlx::query::<$db>(
            "INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at, dpop_jkt, \
             enrolment_only, client_id, scope, auth_time, verified_at, verified_second_factor) \
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&start.session_id)
        .bind(&device.user_id)
        .bind(&device_id)
        .bind(&start.channel)
        .bind(device.seen_at)
        .bind(&start.dpop_jkt)
        .bind(i64::from(start.enrolment_only))
        .bind(grant.map(|g| g.client_id.as_str()))
        .bind(grant.map(|g| g.scope.as_str()))
        .bind(grant.map(|g| g.auth_time))
        .bind(start.verified.at)
        .bind(i64::from(start.verified.second_factor))
        .execute(&mut **$tx)
        .await?;
        for token in &start.tokens {
            insert_token!($db, &mut **$tx, token);
        }
        device_id
    }};
}

macro_rules! insert_rule {
    ($db:ty, $conn:expr, $rule:expr) => {{
        let rule: &NewRule = $rule;
        let (seq,): (i64,) = sqlx::query_as::<$db, (i64,)>(
            "INSERT INTO revocation_rules (scope_kind, scope_value, except_session, not_before, recoverable, reason, \
             actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        )
        .bind(&rule.scope_kind)
        .bind(&rule.scope_value)
        .bind(&rule.except_session)
        .bind(rule.not_before)
        .bind(i64::from(rule.recoverable))
        .bind(&rule.reason)
        .bind(&rule.actor)
        .bind(rule.created_at)
        .fetch_one(&mut *$conn)
        .await?;
        // Every OAuth session the rule ends, of a client that wants to hear of it, is queued for a
        // back-channel logout in the same transaction, whichever process wrote the rule.
        sqlx::query::<$db>(
            "INSERT INTO backchannel_logouts (session_id, client_id, user_id, created_at, next_attempt_at) \
             SELECT s.id, s.client_id, s.user_id, $1, $1 FROM sessions s JOIN oauth_clients c ON c.id = s.client_id \
             WHERE c.backchannel_logout_uri IS NOT NULL AND s.revoked_at IS NULL AND s.last_used_at <= $2 \
             AND s.id <> COALESCE($3, '') \
             AND ($4 = 'global' OR ($4 = 'user' AND s.user_id = $5) OR ($4 = 'channel' AND s.channel = $5) \
                  OR ($4 = 'device' AND s.device_id = $5)) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(rule.created_at)
        .bind(rule.not_before)
        .bind(&rule.except_session)
        .bind(&rule.scope_kind)
        .bind(&rule.scope_value)
        .execute(&mut *$conn)
        .await?;
        seq
    }};
}

/// Appends an audit event inside a transaction. Bumping the single head row first takes its row
/// lock, so concurrent appenders (on any node) queue here and each sees the previous MAC.
macro_rules! append_audit {
    ($db:ty, $conn:expr, $event:expr, $sealer:expr) => {{
        let event: &NewAuditEvent = $event;
        let sealer: &dyn AuditSealer = $sealer;
        let (seq, prev_hash): (i64, Vec<u8>) = sqlx::query_as::<$db, (i64, Vec<u8>)>(
            "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash",
        )
        .fetch_one(&mut *$conn)
        .await?;
        let key_id = sealer.key_id();
        let hash = sealer.seal(&key_id, &prev_hash, seq, event);
        sqlx::query::<$db>("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *$conn).await?;
        sqlx::query::<$db>(
            "INSERT INTO audit_events (seq, at, kind, actor, user_id, address, details, key_id, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(event.at)
        .bind(&event.kind)
        .bind(&event.actor)
        .bind(&event.user_id)
        .bind(&event.address)
        .bind(&event.details)
        .bind(&key_id)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *$conn)
        .await?;
        seq
    }};
}

macro_rules! audit_select {
    () => {
        "SELECT seq, at, kind, actor, user_id, address, details, key_id, prev_hash, hash FROM audit_events"
    };
}

/// Inserts a client row, followed by `$on_conflict` (empty, or what an existing id updates).
macro_rules! insert_client {
    ($db:ty, $conn:expr, $client:expr, $on_conflict:literal) => {{
        let client: &ClientRecord = $client;
        sqlx::query::<$db>(concat!(
            "INSERT INTO oauth_clients (id, name, kind, secret_digest, secret_key_id, redirect_uris, \
             backchannel_logout_uri, first_party, created_at, id_token_alg, jwks, security_event_uri) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            $on_conflict
        ))
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.kind)
        .bind(&client.secret_digest)
        .bind(&client.secret_key_id)
        .bind(&client.redirect_uris)
        .bind(&client.backchannel_logout_uri)
        .bind(client.first_party)
        .bind(client.created_at)
        .bind(&client.id_token_alg)
        .bind(&client.jwks)
        .bind(&client.security_event_uri)
        .execute($conn)
        .await
    }};
}

macro_rules! client_select {
    () => {
        "SELECT id, name, kind, secret_digest, secret_key_id, redirect_uris, backchannel_logout_uri, first_party, \
         created_at, secret_rotated_at, id_token_alg, jwks, security_event_uri FROM oauth_clients"
    };
}

macro_rules! device_code_select {
    () => {
        "SELECT digest, digest_key_id, user_code_digest, client_id, scope, device_name, created_at, expires_at, \
         interval_secs, last_polled_at, status, user_id, auth_time, session_id FROM oauth_device_codes"
    };
}

macro_rules! invite_select {
    () => {
        "SELECT id, code_digest, digest_key_id, email_sealed, email_key_id, email_index, uses, uses_left, \
         created_at, expires_at, revoked_at, created_by FROM invites"
    };
}

macro_rules! user_select {
    () => {
        "SELECT id, username, email_sealed, email_key_id, password_hash, password_pepper_id, created_at, \
         email_verified_at, must_reset_password, role, pending_email_sealed, pending_email_key_id, disabled_at, deletion_due_at FROM users"
    };
}

/// Replaces a user's recovery codes inside a transaction.
macro_rules! replace_recovery_codes {
    ($db:ty, $conn:expr, $change:expr) => {{
        let change: &FactorChange = $change;
        sqlx::query::<$db>("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(&change.user_id)
            .execute(&mut *$conn)
            .await?;
        for code in &change.recovery_codes {
            sqlx::query::<$db>(
                "INSERT INTO recovery_codes (user_id, digest, digest_key_id, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&change.user_id)
            .bind(&code.digest)
            .bind(&code.key_id)
            .bind(change.at)
            .execute(&mut *$conn)
            .await?;
        }
    }};
}

pub(crate) use {
    append_audit, audit_select, client_select, device_code_select, impl_store_with_portable_sql, insert_client,
    insert_rule, insert_session_start, insert_sso_identity, insert_token, insert_user, invite_select, passkey_select,
    plex_pin_select, replace_recovery_codes, sso_identity_select, user_select,
};
