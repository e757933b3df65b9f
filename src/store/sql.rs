//! The portable SQL both engines run, written once and instantiated for each engine's concrete types.
//!
//! sqlx code that is generic over the database needs higher-ranked bounds on every type it binds,
//! which make async trait methods fail their `Send` checks; a macro gives each engine the same
//! queries with concrete types instead. Everything here must be valid on SQLite and PostgreSQL
//! alike: `$n` placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`, integers, text and bytes only.

/// Every short-lived row past its life, one statement per table, each counted in the purge's total.
pub(super) const EXPIRED_ROWS: &[&str] = &[
    "DELETE FROM tokens WHERE expires_at < $1",
    "DELETE FROM mfa_challenges WHERE expires_at < $1",
    "DELETE FROM webauthn_ceremonies WHERE expires_at < $1",
    "DELETE FROM oauth_codes WHERE expires_at < $1",
    "DELETE FROM plex_pins WHERE expires_at < $1",
    "DELETE FROM sso_flows WHERE expires_at < $1",
    "DELETE FROM sso_pending WHERE expires_at < $1",
    "DELETE FROM client_assertions WHERE expires_at < $1",
    "DELETE FROM backchannel_logouts WHERE delivered_at < $1",
    "DELETE FROM oauth_device_codes WHERE expires_at < $1",
];

/// Implements `Store` for `$store`, which must have `reader` and `writer` pools of database `$db`
/// and an inherent `run_migrations` method. Extra items are engine-specific trait methods.
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

            async fn create_user(&self, user: &NewUser) -> Result<(), StoreError> {
                insert_user!($db, &self.writer, user).map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn user_by_username_key(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE username_key = $1"))
                    .bind(username_key)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn user_by_email_index(&self, index: &[u8]) -> Result<Option<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE email_index = $1"))
                    .bind(index)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn count_users(&self) -> Result<i64, StoreError> {
                let (n,): (i64,) =
                    sqlx::query_as::<$db, (i64,)>("SELECT COUNT(*) FROM users").fetch_one(&self.reader).await?;
                Ok(n)
            }

            async fn replace_password_hash(
                &self,
                user_id: &str,
                expected: &str,
                hash: &str,
                pepper_id: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE users SET password_hash = $1, password_pepper_id = $2, updated_at = $3 \
                     WHERE id = $4 AND password_hash = $5",
                )
                .bind(hash)
                .bind(pepper_id)
                .bind(now)
                .bind(user_id)
                .bind(expected)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn start_session(&self, start: &SessionStart) -> Result<String, StoreError> {
                let mut tx = self.writer.begin().await?;
                let device_id = insert_session_start!($db, &mut tx, start);
                tx.commit().await?;
                Ok(device_id)
            }

            async fn redeem_oauth_code(
                &self,
                digest: &[u8],
                at: i64,
                start: &SessionStart,
            ) -> Result<Option<String>, StoreError> {
                let mut tx = self.writer.begin().await?;
                let spent = sqlx::query::<$db>(
                    "UPDATE oauth_codes SET used_at = $1, session_id = $2 WHERE digest = $3 AND used_at IS NULL",
                )
                .bind(at)
                .bind(&start.session_id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
                if spent.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let device_id = insert_session_start!($db, &mut tx, start);
                tx.commit().await?;
                Ok(Some(device_id))
            }

            async fn create_oauth_code(&self, code: &OAuthCodeRecord) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO oauth_codes (digest, digest_key_id, client_id, user_id, grant_json, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&code.digest)
                .bind(&code.digest_key_id)
                .bind(&code.client_id)
                .bind(&code.user_id)
                .bind(&code.grant_json)
                .bind(code.created_at)
                .bind(code.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn oauth_code(&self, digest: &[u8]) -> Result<Option<OAuthCodeRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, OAuthCodeRecord>(
                    "SELECT digest, digest_key_id, client_id, user_id, grant_json, created_at, expires_at, used_at, \
                     session_id FROM oauth_codes WHERE digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.writer)
                .await?)
            }

            async fn create_device_code(&self, code: &DeviceCodeRecord) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO oauth_device_codes (digest, digest_key_id, user_code_digest, client_id, scope, \
                     device_name, created_at, expires_at, interval_secs, status) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')",
                )
                .bind(&code.digest)
                .bind(&code.digest_key_id)
                .bind(&code.user_code_digest)
                .bind(&code.client_id)
                .bind(&code.scope)
                .bind(&code.device_name)
                .bind(code.created_at)
                .bind(code.expires_at)
                .bind(code.interval_secs)
                .execute(&self.writer)
                .await
                .map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn device_code(&self, digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, DeviceCodeRecord>(concat!(device_code_select!(), " WHERE digest = $1"))
                    .bind(digest)
                    .fetch_optional(&self.writer)
                    .await?)
            }

            async fn device_code_by_user_code(&self, user_code_digest: &[u8]) -> Result<Option<DeviceCodeRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, DeviceCodeRecord>(concat!(device_code_select!(), " WHERE user_code_digest = $1"))
                    .bind(user_code_digest)
                    .fetch_optional(&self.writer)
                    .await?)
            }

            async fn decide_device_code(
                &self,
                digest: &[u8],
                approval: Option<(&str, i64)>,
                at: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE oauth_device_codes SET status = $1, user_id = $2, auth_time = $3 \
                     WHERE digest = $4 AND status = 'pending' AND expires_at > $5",
                )
                .bind(if approval.is_some() { "approved" } else { "denied" })
                .bind(approval.map(|(user_id, _)| user_id))
                .bind(approval.map(|(_, auth_time)| auth_time))
                .bind(digest)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn device_code_polled(&self, digest: &[u8], at: i64, interval_secs: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE oauth_device_codes SET last_polled_at = $1, interval_secs = $2 WHERE digest = $3")
                    .bind(at)
                    .bind(interval_secs)
                    .bind(digest)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn redeem_device_code(&self, digest: &[u8], start: &SessionStart) -> Result<Option<String>, StoreError> {
                let mut tx = self.writer.begin().await?;
                let spent = sqlx::query::<$db>(
                    "UPDATE oauth_device_codes SET status = 'used', session_id = $1 WHERE digest = $2 AND status = 'approved'",
                )
                .bind(&start.session_id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
                if spent.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let device_id = insert_session_start!($db, &mut tx, start);
                tx.commit().await?;
                Ok(Some(device_id))
            }

            async fn consents_of(&self, user_id: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
                Ok(sqlx::query_as::<$db, (String, String, i64)>(
                    "SELECT client_id, scope, granted_at FROM oauth_consents WHERE user_id = $1 ORDER BY granted_at DESC",
                )
                .bind(user_id)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn remove_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user_id)
                    .bind(client_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_due_logouts(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<LogoutJob>, StoreError> {
                Ok(sqlx::query_as::<$db, LogoutJob>(
                    "UPDATE backchannel_logouts SET locked_until = $1 \
                     WHERE session_id IN (SELECT session_id FROM backchannel_logouts WHERE delivered_at IS NULL \
                                  AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
                                  ORDER BY next_attempt_at LIMIT $3) \
                     AND (locked_until IS NULL OR locked_until < $2) \
                     RETURNING session_id, client_id, user_id, created_at, attempts",
                )
                .bind(lock_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.writer)
                .await?)
            }

            async fn logout_delivered(&self, session_id: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE backchannel_logouts SET delivered_at = $1, locked_until = NULL WHERE session_id = $2")
                    .bind(at)
                    .bind(session_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn logout_failed(&self, session_id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE backchannel_logouts SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                     locked_until = NULL WHERE session_id = $3",
                )
                .bind(next_attempt_at)
                .bind(error)
                .bind(session_id)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn end_session_and_tell(&self, session_id: &str, at: i64) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(at)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>(
                    "INSERT INTO backchannel_logouts (session_id, client_id, user_id, created_at, next_attempt_at) \
                     SELECT s.id, s.client_id, s.user_id, $1, $1 FROM sessions s JOIN oauth_clients c ON c.id = s.client_id \
                     WHERE s.id = $2 AND c.backchannel_logout_uri IS NOT NULL ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(at)
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as::<$db, (String,)>("SELECT scope FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                        .bind(user_id)
                        .bind(client_id)
                        .fetch_optional(&self.reader)
                        .await?;
                Ok(row.map(|(scope,)| scope))
            }

            async fn save_consent(&self, user_id: &str, client_id: &str, scope: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO oauth_consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                )
                .bind(user_id)
                .bind(client_id)
                .bind(scope)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn recover_session(&self, recovery: &SessionRecovery) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let ended = sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(recovery.at)
                    .bind(&recovery.old_session_id)
                    .execute(&mut *tx)
                    .await?;
                if ended.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                // The replacement keeps what the old session was granted: an OAuth client's session stays one.
                sqlx::query::<$db>(
                    "INSERT INTO sessions (id, user_id, device_id, channel, created_at, last_used_at, dpop_jkt, \
                     enrolment_only, client_id, scope, auth_time) \
                     SELECT $1, $2, $3, $4, $5, $5, $6, $7, client_id, scope, auth_time FROM sessions WHERE id = $8",
                )
                .bind(&recovery.session_id)
                .bind(&recovery.user_id)
                .bind(&recovery.device_id)
                .bind(&recovery.channel)
                .bind(recovery.at)
                .bind(&recovery.dpop_jkt)
                .bind(i64::from(recovery.enrolment_only))
                .bind(&recovery.old_session_id)
                .execute(&mut *tx)
                .await?;
                for token in &recovery.tokens {
                    insert_token!($db, &mut *tx, token);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn token_by_digest(&self, digest: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, TokenRecord>(
                    "SELECT t.digest, t.digest_key_id, t.kind, t.session_id, t.user_id, s.device_id, s.channel, \
                     t.issued_at, t.expires_at, t.rotated_at, s.revoked_at AS session_revoked_at, s.dpop_jkt, \
                     s.verified_at, s.verified_second_factor, s.enrolment_only, s.client_id, s.scope, s.auth_time, \
                     s.created_at AS session_started_at \
                     FROM tokens t JOIN sessions s ON s.id = t.session_id WHERE t.digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn rotate_refresh_token(
                &self,
                digest: &[u8],
                now: i64,
                successors: &[NewToken],
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let marked =
                    sqlx::query::<$db>("UPDATE tokens SET rotated_at = $1 WHERE digest = $2 AND rotated_at IS NULL")
                        .bind(now)
                        .bind(digest)
                        .execute(&mut *tx)
                        .await?;
                if marked.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for token in successors {
                    insert_token!($db, &mut *tx, token);
                }
                if let Some(first) = successors.first() {
                    sqlx::query::<$db>("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&first.session_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn add_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                for token in tokens {
                    insert_token!($db, &mut *tx, token);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn revoke_session(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(session_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn devices_of(&self, user_id: &str) -> Result<Vec<DeviceRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, DeviceRecord>(
                    "SELECT id, user_id, client_identifier, product, platform, name, first_seen_at, last_seen_at, \
                     last_address, signed_out_at, provides, connections FROM devices WHERE user_id = $1 \
                     ORDER BY last_seen_at DESC",
                )
                .bind(user_id)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, SessionRecord>(
                    "SELECT id, user_id, device_id, channel, created_at, last_used_at FROM sessions \
                     WHERE user_id = $1 AND revoked_at IS NULL",
                )
                .bind(user_id)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn sign_out_device(
                &self,
                user_id: &str,
                device_id: &str,
                rule: &NewRule,
                event: &NewAuditEvent,
                sealer: &dyn AuditSealer,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let marked = sqlx::query::<$db>("UPDATE devices SET signed_out_at = $1 WHERE id = $2 AND user_id = $3")
                    .bind(rule.created_at)
                    .bind(device_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if marked.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_rule!($db, &mut *tx, rule);
                append_audit!($db, &mut *tx, event, sealer);
                tx.commit().await?;
                Ok(true)
            }

            async fn add_revocation_rule(
                &self,
                rule: &NewRule,
                event: &NewAuditEvent,
                sealer: &dyn AuditSealer,
            ) -> Result<i64, StoreError> {
                let mut tx = self.writer.begin().await?;
                let seq = insert_rule!($db, &mut *tx, rule);
                append_audit!($db, &mut *tx, event, sealer);
                tx.commit().await?;
                Ok(seq)
            }

            async fn revocation_rules_after(&self, seq: i64) -> Result<Vec<RuleRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, RuleRecord>(
                    "SELECT seq, scope_kind, scope_value, except_session, not_before, recoverable, reason, actor, \
                     created_at FROM revocation_rules WHERE seq > $1 ORDER BY seq",
                )
                .bind(seq)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn invalidations_after(&self, seq: i64, at: i64) -> Result<Vec<InvalidationRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, InvalidationRecord>(
                    "SELECT seq, kind, id, at FROM cache_invalidations WHERE seq > $1 OR at >= $2 ORDER BY seq",
                )
                .bind(seq)
                .bind(at)
                .fetch_all(&self.reader)
                .await?)
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

            async fn purge_invalidations(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM cache_invalidations WHERE at < $1")
                    .bind(before)
                    .execute(&self.maintenance)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn append_audit(&self, event: &NewAuditEvent, sealer: &dyn AuditSealer) -> Result<i64, StoreError> {
                let mut tx = self.writer.begin().await?;
                let seq = append_audit!($db, &mut *tx, event, sealer);
                tx.commit().await?;
                Ok(seq)
            }

            async fn audit_events_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, AuditRecord>(concat!(audit_select!(), " WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(seq)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?)
            }

            async fn audit_events_of(&self, user_id: &str, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, AuditRecord>(concat!(
                    audit_select!(),
                    " WHERE user_id = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
                Ok(sqlx::query_as::<$db, (i64, Vec<u8>)>("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_one(&self.reader)
                    .await?)
            }

            async fn users_with_role(&self, role: &str) -> Result<Vec<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " WHERE role = $1 ORDER BY created_at, id"))
                    .bind(role)
                    .fetch_all(&self.reader)
                    .await?)
            }

            async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<UserRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, UserRecord>(concat!(user_select!(), " ORDER BY created_at, id LIMIT $1 OFFSET $2"))
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.reader)
                    .await?)
            }

            async fn issue_one_time_token(&self, token: &NewOneTimeToken, supersede: bool) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                if supersede {
                    sqlx::query::<$db>(
                        "UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
                    )
                    .bind(token.issued_at)
                    .bind(&token.user_id)
                    .bind(token.purpose)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query::<$db>(
                    "INSERT INTO one_time_tokens (digest, digest_key_id, purpose, user_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token.digest)
                .bind(&token.digest_key_id)
                .bind(token.purpose)
                .bind(&token.user_id)
                .bind(token.issued_at)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn one_time_token_owner(&self, digest: &[u8], purpose: &str, now: i64) -> Result<Option<String>, StoreError> {
                let owner: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                    "SELECT user_id FROM one_time_tokens \
                     WHERE digest = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
                )
                .bind(digest)
                .bind(purpose)
                .bind(now)
                .fetch_optional(&self.reader)
                .await?;
                Ok(owner.map(|(user_id,)| user_id))
            }

            async fn consume_one_time_token(&self, digest: &[u8], purpose: &str, now: i64) -> Result<Option<String>, StoreError> {
                let spent: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                    "UPDATE one_time_tokens SET used_at = $1 \
                     WHERE digest = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 RETURNING user_id",
                )
                .bind(now)
                .bind(digest)
                .bind(purpose)
                .fetch_optional(&self.writer)
                .await?;
                Ok(spent.map(|(user_id,)| user_id))
            }

            async fn mark_email_verified(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL")
                    .bind(at)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn secure_first_proof(
                &self,
                proof: &FirstProof,
                sealer: &dyn AuditSealer,
            ) -> Result<Option<RemovedOnFirstProof>, StoreError> {
                let mut tx = self.writer.begin().await?;
                let first = sqlx::query::<$db>(
                    "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
                )
                .bind(proof.at)
                .bind(&proof.user_id)
                .execute(&mut *tx)
                .await?;
                if first.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let (sessions,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                    "SELECT COUNT(*) FROM sessions s WHERE s.user_id = $1 AND s.revoked_at IS NULL \
                     AND s.id <> COALESCE($2, '') AND EXISTS (SELECT 1 FROM tokens t WHERE t.session_id = s.id \
                     AND t.expires_at > $3)",
                )
                .bind(&proof.user_id)
                .bind(&proof.sign_out.except_session)
                .bind(proof.at)
                .fetch_one(&mut *tx)
                .await?;
                let mut removed = RemovedOnFirstProof {
                    sessions: u64::try_from(sessions).unwrap_or_default(),
                    ..Default::default()
                };
                let mut tables: Vec<(&str, Option<&mut u64>)> = vec![
                    ("totp_factors", Some(&mut removed.authenticator_apps)),
                    ("passkeys", Some(&mut removed.passkeys)),
                    ("device_keys", Some(&mut removed.device_keys)),
                    ("recovery_codes", None),
                ];
                if proof.remove_identities {
                    tables.push(("sso_identities", Some(&mut removed.linked_providers)));
                }
                for (table, count) in tables {
                    let sql = format!("DELETE FROM {table} WHERE user_id = $1");
                    let gone = sqlx::query::<$db>(&sql).bind(&proof.user_id).execute(&mut *tx).await?.rows_affected();
                    if let Some(count) = count {
                        *count = gone;
                    }
                }
                insert_rule!($db, &mut *tx, &proof.sign_out);
                let mut event = proof.event.clone();
                event.details = serde_json::json!({ "removed": removed }).to_string();
                append_audit!($db, &mut *tx, &event, sealer);
                tx.commit().await?;
                Ok(Some(removed))
            }

            async fn set_pending_email(&self, user_id: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE users SET pending_email_sealed = $1, pending_email_key_id = $2 WHERE id = $3")
                    .bind(sealed)
                    .bind(key_id)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn change_email(&self, change: &EmailChange) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE users SET email_sealed = $1, email_key_id = $2, email_index = $3, email_index_key_id = $4, \
                     email_verified_at = $5, updated_at = $5, pending_email_sealed = NULL, pending_email_key_id = NULL \
                     WHERE id = $6",
                )
                .bind(&change.email_sealed)
                .bind(&change.email_key_id)
                .bind(&change.email_index)
                .bind(&change.email_index_key_id)
                .bind(change.at)
                .bind(&change.user_id)
                .execute(&self.writer)
                .await
                .map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn create_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
                insert_client!($db, &self.writer, client, "").map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn use_client_assertion(&self, client_id: &str, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (client_id, jti) DO NOTHING",
                )
                .bind(client_id)
                .bind(jti)
                .bind(expires_at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
                insert_client!(
                    $db,
                    &self.writer,
                    client,
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
                     secret_digest = excluded.secret_digest, secret_key_id = excluded.secret_key_id, \
                     redirect_uris = excluded.redirect_uris, backchannel_logout_uri = excluded.backchannel_logout_uri, \
                     first_party = excluded.first_party, id_token_alg = excluded.id_token_alg"
                )?;
                Ok(())
            }

            async fn client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, ClientRecord>(concat!(client_select!(), " WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, ClientRecord>(concat!(client_select!(), " ORDER BY id"))
                    .fetch_all(&self.reader)
                    .await?)
            }

            async fn remove_client(&self, id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM oauth_clients WHERE id = $1").bind(id).execute(&self.writer).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_client_secret(&self, id: &str, digest: &[u8], key_id: &str, at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE oauth_clients SET secret_digest = $1, secret_key_id = $2, secret_rotated_at = $3 \
                     WHERE id = $4 AND kind = 'confidential'",
                )
                .bind(digest)
                .bind(key_id)
                .bind(at)
                .bind(id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_role(&self, user_id: &str, role: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>("UPDATE users SET role = $1 WHERE id = $2")
                    .bind(role)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn change_password(&self, change: &PasswordChange, sealer: &dyn AuditSealer) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query::<$db>(
                    "UPDATE users SET password_hash = $1, password_pepper_id = $2, updated_at = $3, \
                     must_reset_password = 0 WHERE id = $4",
                )
                .bind(&change.hash)
                .bind(&change.pepper_id)
                .bind(change.at)
                .bind(&change.user_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query::<$db>(
                    "UPDATE one_time_tokens SET used_at = $1 \
                     WHERE user_id = $2 AND purpose = 'password_reset' AND used_at IS NULL",
                )
                .bind(change.at)
                .bind(&change.user_id)
                .execute(&mut *tx)
                .await?;
                if let Some(rule) = &change.sign_out {
                    insert_rule!($db, &mut *tx, rule);
                }
                append_audit!($db, &mut *tx, &change.event, sealer);
                tx.commit().await?;
                Ok(())
            }

            async fn require_password_reset(
                &self,
                user_id: &str,
                event: &NewAuditEvent,
                sealer: &dyn AuditSealer,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query::<$db>("UPDATE users SET must_reset_password = 1 WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                append_audit!($db, &mut *tx, event, sealer);
                tx.commit().await?;
                Ok(())
            }

            async fn enqueue_mail(&self, mail: &QueuedMail) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO mail_queue (id, kind, user_id, sealed, key_id, created_at, next_attempt_at, attempts) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&mail.id)
                .bind(&mail.kind)
                .bind(&mail.user_id)
                .bind(&mail.sealed)
                .bind(&mail.key_id)
                .bind(mail.created_at)
                .bind(mail.next_attempt_at)
                .bind(mail.attempts)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn claim_due_mail(&self, now: i64, lock_until: i64, limit: i64) -> Result<Vec<QueuedMail>, StoreError> {
                // The lock condition is repeated outside the sub-select so that, on PostgreSQL, a node
                // that lost the race re-checks the row and skips it.
                Ok(sqlx::query_as::<$db, QueuedMail>(
                    "UPDATE mail_queue SET locked_until = $1 \
                     WHERE id IN (SELECT id FROM mail_queue WHERE next_attempt_at <= $2 \
                                  AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT $3) \
                     AND (locked_until IS NULL OR locked_until < $2) \
                     RETURNING id, kind, user_id, sealed, key_id, created_at, next_attempt_at, attempts",
                )
                .bind(lock_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.writer)
                .await?)
            }

            async fn mail_delivered(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("DELETE FROM mail_queue WHERE id = $1").bind(id).execute(&self.writer).await?;
                Ok(())
            }

            async fn mail_failed(&self, id: &str, next_attempt_at: i64, error: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE mail_queue SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                     locked_until = NULL WHERE id = $3",
                )
                .bind(next_attempt_at)
                .bind(error)
                .bind(id)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn mail_queue_depth(&self) -> Result<i64, StoreError> {
                let (n,): (i64,) =
                    sqlx::query_as::<$db, (i64,)>("SELECT COUNT(*) FROM mail_queue").fetch_one(&self.reader).await?;
                Ok(n)
            }

            async fn purge_expired_tokens(&self, before: i64) -> Result<u64, StoreError> {
                let mut purged = 0;
                for statement in super::sql::EXPIRED_ROWS {
                    purged += sqlx::query::<$db>(statement).bind(before).execute(&self.maintenance).await?.rows_affected();
                }
                Ok(purged)
            }

            async fn mark_session_verified(&self, session_id: &str, verified: Verified) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE sessions SET verified_at = $1, verified_second_factor = $2 WHERE id = $3")
                    .bind(verified.at)
                    .bind(i64::from(verified.second_factor))
                    .bind(session_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn totp_of(&self, user_id: &str) -> Result<Option<TotpRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, TotpRecord>(
                    "SELECT user_id, secret_sealed, secret_key_id, created_at, confirmed_at, last_used_step \
                     FROM totp_factors WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn begin_totp_enrolment(&self, factor: &NewTotp) -> Result<bool, StoreError> {
                // A pending enrolment is replaced; a confirmed factor is never overwritten.
                let done = sqlx::query::<$db>(
                    "INSERT INTO totp_factors (user_id, secret_sealed, secret_key_id, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET \
                     secret_sealed = excluded.secret_sealed, secret_key_id = excluded.secret_key_id, \
                     created_at = excluded.created_at, last_used_step = 0 \
                     WHERE totp_factors.confirmed_at IS NULL",
                )
                .bind(&factor.user_id)
                .bind(&factor.secret_sealed)
                .bind(&factor.secret_key_id)
                .bind(factor.created_at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn confirm_totp(&self, confirmation: &FactorChange) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query::<$db>(
                    "UPDATE totp_factors SET confirmed_at = $1, last_used_step = $2 \
                     WHERE user_id = $3 AND confirmed_at IS NULL",
                )
                .bind(confirmation.at)
                .bind(confirmation.step)
                .bind(&confirmation.user_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                replace_recovery_codes!($db, &mut *tx, confirmation);
                tx.commit().await?;
                Ok(true)
            }

            async fn replace_recovery_codes(&self, change: &FactorChange) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                replace_recovery_codes!($db, &mut *tx, change);
                tx.commit().await?;
                Ok(())
            }

            async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
                // Atomic across nodes: of two requests with the same code, one wins.
                let done = sqlx::query::<$db>(
                    "UPDATE totp_factors SET last_used_step = $1 \
                     WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_used_step < $1",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query::<$db>("DELETE FROM totp_factors WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                // Passkeys left still need the recovery codes as their fallback.
                sqlx::query::<$db>(
                    "DELETE FROM recovery_codes WHERE user_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn clear_second_factors(&self, user_id: &str) -> Result<u64, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut removed = 0;
                for table in ["totp_factors", "passkeys", "recovery_codes"] {
                    let sql = format!("DELETE FROM {table} WHERE user_id = $1");
                    removed += sqlx::query::<$db>(&sql).bind(user_id).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(removed)
            }

            async fn end_enrolment_restriction(&self, user_id: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE sessions SET enrolment_only = 0 WHERE user_id = $1 AND enrolment_only <> 0")
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn use_recovery_code(&self, user_id: &str, digest: &[u8], at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND digest = $3 AND used_at IS NULL",
                )
                .bind(at)
                .bind(user_id)
                .bind(digest)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn unused_recovery_codes(&self, user_id: &str) -> Result<i64, StoreError> {
                let (n,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )
                .bind(user_id)
                .fetch_one(&self.reader)
                .await?;
                Ok(n)
            }

            async fn create_mfa_challenge(&self, challenge: &NewMfaChallenge) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO mfa_challenges (digest, digest_key_id, user_id, sign_in, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&challenge.digest)
                .bind(&challenge.digest_key_id)
                .bind(&challenge.user_id)
                .bind(&challenge.sign_in)
                .bind(challenge.created_at)
                .bind(challenge.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn mfa_challenge(&self, digest: &[u8]) -> Result<Option<MfaChallengeRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, MfaChallengeRecord>(
                    "SELECT digest, user_id, sign_in, expires_at, failures, used_at FROM mfa_challenges \
                     WHERE digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn reserve_mfa_attempt(&self, digest: &[u8], limit: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE mfa_challenges SET failures = failures + 1 \
                     WHERE digest = $1 AND failures < $2 AND used_at IS NULL",
                )
                .bind(digest)
                .bind(limit)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn consume_mfa_challenge(&self, digest: &[u8], at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE mfa_challenges SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1",
                )
                .bind(at)
                .bind(digest)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, PasskeyRecord>(concat!(passkey_select!(), " WHERE user_id = $1 ORDER BY created_at, id"))
                    .bind(user_id)
                    .fetch_all(&self.reader)
                    .await?)
            }

            async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<PasskeyRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, PasskeyRecord>(concat!(passkey_select!(), " WHERE credential_id = $1"))
                    .bind(credential_id)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn add_passkey(&self, passkey: &PasskeyRecord, first_codes: &FactorChange) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query::<$db>(
                    "INSERT INTO passkeys (id, user_id, credential_id, user_handle, name, passkey, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&passkey.id)
                .bind(&passkey.user_id)
                .bind(&passkey.credential_id)
                .bind(&passkey.user_handle)
                .bind(&passkey.name)
                .bind(&passkey.passkey)
                .bind(passkey.created_at)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::conflict_or_database)?;
                let (unused,): (i64,) = sqlx::query_as::<$db, (i64,)>(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )
                .bind(&passkey.user_id)
                .fetch_one(&mut *tx)
                .await?;
                let codes_set = unused == 0;
                if codes_set {
                    replace_recovery_codes!($db, &mut *tx, first_codes);
                }
                tx.commit().await?;
                Ok(codes_set)
            }

            async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
                    .bind(name)
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn remove_passkey(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query::<$db>(
                    "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 \
                     AND (EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash <> '') \
                          OR EXISTS (SELECT 1 FROM sso_identities WHERE user_id = $2) \
                          OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $2 AND id <> $1))",
                )
                    .bind(id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>(
                    "DELETE FROM recovery_codes WHERE user_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1) \
                     AND NOT EXISTS (SELECT 1 FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn passkey_used(&self, id: &str, passkey: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3")
                    .bind(passkey)
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn create_ceremony(&self, ceremony: &NewCeremony) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO webauthn_ceremonies (id, user_id, purpose, state, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&ceremony.id)
                .bind(&ceremony.user_id)
                .bind(ceremony.purpose)
                .bind(&ceremony.state)
                .bind(ceremony.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn take_ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, CeremonyRecord>(
                    "DELETE FROM webauthn_ceremonies WHERE id = $1 RETURNING user_id, purpose, state, expires_at",
                )
                .bind(id)
                .fetch_optional(&self.writer)
                .await?)
            }

            async fn create_sso_flow(&self, flow: &SsoFlowRecord) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO sso_flows (digest, digest_key_id, provider, purpose, user_id, session_id, next, \
                     verifier_sealed, verifier_key_id, nonce_digest, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&flow.digest)
                .bind(&flow.digest_key_id)
                .bind(&flow.provider)
                .bind(&flow.purpose)
                .bind(&flow.user_id)
                .bind(&flow.session_id)
                .bind(&flow.next)
                .bind(&flow.verifier_sealed)
                .bind(&flow.verifier_key_id)
                .bind(&flow.nonce_digest)
                .bind(flow.created_at)
                .bind(flow.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn take_sso_flow(&self, digest: &[u8], now: i64) -> Result<Option<SsoFlowRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, SsoFlowRecord>(
                    "UPDATE sso_flows SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1 \
                     RETURNING digest, digest_key_id, provider, purpose, user_id, session_id, next, verifier_sealed, \
                     verifier_key_id, nonce_digest, created_at, expires_at",
                )
                .bind(now)
                .bind(digest)
                .fetch_optional(&self.writer)
                .await?)
            }

            async fn create_sso_pending(&self, pending: &SsoPendingRecord) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO sso_pending (digest, digest_key_id, provider, claims_sealed, claims_key_id, next, \
                     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&pending.digest)
                .bind(&pending.digest_key_id)
                .bind(&pending.provider)
                .bind(&pending.claims_sealed)
                .bind(&pending.claims_key_id)
                .bind(&pending.next)
                .bind(pending.created_at)
                .bind(pending.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn sso_pending(&self, digest: &[u8], now: i64) -> Result<Option<SsoPendingRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, SsoPendingRecord>(
                    "SELECT digest, digest_key_id, provider, claims_sealed, claims_key_id, next, created_at, expires_at \
                     FROM sso_pending WHERE digest = $1 AND used_at IS NULL AND expires_at > $2",
                )
                .bind(digest)
                .bind(now)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn consume_sso_pending(&self, digest: &[u8], now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE sso_pending SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .bind(digest)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn sso_identity(
                &self,
                provider: &str,
                subject_index: &[u8],
            ) -> Result<Option<SsoIdentityRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, SsoIdentityRecord>(concat!(
                    sso_identity_select!(),
                    " WHERE provider = $1 AND subject_index = $2"
                ))
                .bind(provider)
                .bind(subject_index)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn sso_identities_of(&self, user_id: &str) -> Result<Vec<SsoIdentityRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, SsoIdentityRecord>(concat!(
                    sso_identity_select!(),
                    " WHERE user_id = $1 ORDER BY created_at, id"
                ))
                .bind(user_id)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn link_sso_identity(&self, identity: &SsoIdentityRecord) -> Result<(), StoreError> {
                insert_sso_identity!($db, &self.writer, identity).map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn create_user_with_identity(
                &self,
                user: &NewUser,
                identity: &SsoIdentityRecord,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                insert_user!($db, &mut *tx, user).map_err($crate::store::conflict_or_database)?;
                insert_sso_identity!($db, &mut *tx, identity).map_err($crate::store::conflict_or_database)?;
                tx.commit().await?;
                Ok(())
            }

            async fn unlink_sso_identity(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "DELETE FROM sso_identities WHERE id = $1 AND user_id = $2 \
                     AND (EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash <> '') \
                          OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $2) \
                          OR EXISTS (SELECT 1 FROM sso_identities WHERE user_id = $2 AND id <> $1))",
                )
                .bind(id)
                .bind(user_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_device_provides(&self, device_id: &str, provides: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE devices SET provides = $1 WHERE id = $2")
                    .bind(provides)
                    .bind(device_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn set_device_connections(&self, device_id: &str, connections: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE devices SET connections = $1 WHERE id = $2")
                    .bind(connections)
                    .bind(device_id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn numeric_user_id(&self, user_id: &str) -> Result<i64, StoreError> {
                sqlx::query::<$db>("INSERT INTO numeric_user_ids (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>("SELECT id FROM numeric_user_ids WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&self.writer)
                    .await?;
                Ok(id)
            }

            async fn register_device_key(&self, key: &DeviceKeyRecord) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "INSERT INTO device_keys (kid, user_id, device_id, jwk, anchor_digest, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (kid) DO UPDATE SET device_id = excluded.device_id, jwk = excluded.jwk, \
                     anchor_digest = excluded.anchor_digest, created_at = excluded.created_at \
                     WHERE device_keys.user_id = excluded.user_id",
                )
                .bind(&key.kid)
                .bind(&key.user_id)
                .bind(&key.device_id)
                .bind(&key.jwk)
                .bind(&key.anchor_digest)
                .bind(key.created_at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn device_keys_of(&self, user_id: &str) -> Result<Vec<DeviceKeyRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, DeviceKeyRecord>(
                    "SELECT kid, user_id, device_id, jwk, anchor_digest, created_at, last_used_at FROM device_keys \
                     WHERE user_id = $1 ORDER BY created_at DESC",
                )
                .bind(user_id)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn remove_device_key(&self, user_id: &str, kid: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM device_keys WHERE user_id = $1 AND kid = $2")
                    .bind(user_id)
                    .bind(kid)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn device_key(&self, kid: &str) -> Result<Option<DeviceKeyRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, DeviceKeyRecord>(
                    "SELECT kid, user_id, device_id, jwk, anchor_digest, created_at, last_used_at FROM device_keys \
                     WHERE kid = $1",
                )
                .bind(kid)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn move_device_key_anchor(&self, kid: &str, from: &[u8], to: &[u8], at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE device_keys SET anchor_digest = $1, last_used_at = $2 WHERE kid = $3 AND anchor_digest = $4",
                )
                .bind(to)
                .bind(at)
                .bind(kid)
                .bind(from)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_plex_pin(&self, pin: &PlexPinRecord) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO plex_pins (id, code_digest, digest_key_id, strong, client_identifier, product, \
                     platform, device_name, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(pin.id)
                .bind(&pin.code_digest)
                .bind(&pin.digest_key_id)
                .bind(pin.strong)
                .bind(&pin.client_identifier)
                .bind(&pin.product)
                .bind(&pin.platform)
                .bind(&pin.device_name)
                .bind(pin.created_at)
                .bind(pin.expires_at)
                .execute(&self.writer)
                .await
                .map_err($crate::store::conflict_or_database)?;
                Ok(())
            }

            async fn plex_pin(&self, id: i64) -> Result<Option<PlexPinRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, PlexPinRecord>(concat!(plex_pin_select!(), " WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn plex_pin_by_code(&self, digest: &[u8], now: i64) -> Result<Option<PlexPinRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, PlexPinRecord>(concat!(
                    plex_pin_select!(),
                    " WHERE code_digest = $1 AND expires_at > $2 AND approved_at IS NULL"
                ))
                .bind(digest)
                .bind(now)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn approve_plex_pin(&self, id: i64, user_id: &str, at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE plex_pins SET user_id = $1, approved_at = $2 \
                     WHERE id = $3 AND approved_at IS NULL AND expires_at > $2",
                )
                .bind(user_id)
                .bind(at)
                .bind(id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn use_plex_pin(&self, id: i64, at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE plex_pins SET used_at = $1 WHERE id = $2 AND approved_at IS NOT NULL AND used_at IS NULL",
                )
                .bind(at)
                .bind(id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn rows_per_key(&self, column: &KeyColumn, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
                let sql = format!(
                    "SELECT {col}, COUNT(*) FROM {table} WHERE {col} IS NOT NULL AND ({live}) AND $1 = $1 GROUP BY {col}",
                    col = column.column,
                    table = column.table,
                    live = column.live,
                );
                Ok(sqlx::query_as::<$db, (String, i64)>(&sql).bind(now).fetch_all(&self.reader).await?)
            }

            async fn sealed_under_other_keys(
                &self,
                column: SealedColumn,
                active: &str,
                limit: i64,
            ) -> Result<Vec<SealedRow>, StoreError> {
                let (table, id, value, key) = column.sql_names();
                let sql = format!(
                    "SELECT {id} AS id, {key} AS key_id, {value} AS bytes FROM {table} \
                     WHERE {value} IS NOT NULL AND {key} IS NOT NULL AND {key} <> $1 ORDER BY {id} LIMIT $2"
                );
                Ok(sqlx::query_as::<$db, SealedRow>(&sql).bind(active).bind(limit).fetch_all(&self.reader).await?)
            }

            async fn reseal(
                &self,
                column: SealedColumn,
                row: &SealedRow,
                bytes: &[u8],
                key_id: &str,
            ) -> Result<bool, StoreError> {
                let (table, id, value, key) = column.sql_names();
                let sql = format!("UPDATE {table} SET {value} = $1, {key} = $2 WHERE {id} = $3 AND {key} = $4");
                let done = sqlx::query::<$db>(&sql)
                    .bind(bytes)
                    .bind(key_id)
                    .bind(&row.id)
                    .bind(&row.key_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn emails_indexed_under_other_keys(
                &self,
                active: &str,
                limit: i64,
            ) -> Result<Vec<SealedRow>, StoreError> {
                Ok(sqlx::query_as::<$db, SealedRow>(
                    "SELECT id, email_key_id AS key_id, email_sealed AS bytes FROM users \
                     WHERE email_index_key_id <> $1 ORDER BY id LIMIT $2",
                )
                .bind(active)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn reindex_email(&self, user_id: &str, index: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query::<$db>(
                    "UPDATE users SET email_index = $1, email_index_key_id = $2 WHERE id = $3 AND email_index_key_id <> $2",
                )
                .bind(index)
                .bind(key_id)
                .bind(user_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
                Ok(sqlx::query_as::<$db, ThrottleRecord>(
                    "SELECT key, failures, last_failure_at, blocked_until FROM throttles WHERE key = $1",
                )
                .bind(key)
                .fetch_optional(&self.reader)
                .await?)
            }

            async fn throttle_reserve(&self, key: &str, step: &ThrottleStep) -> Result<Option<i64>, StoreError> {
                // One statement counts, tests and holds, so concurrent attempts queue on the row and
                // none passes a hold another has just set. SET expressions all read the row as it
                // was, hence the count spelled out twice; the casts type the parameters for PostgreSQL.
                let counted: Option<(i64,)> = sqlx::query_as::<$db, (i64,)>(
                    "INSERT INTO throttles (key, failures, last_failure_at, blocked_until) \
                     VALUES ($1, 1, $2, CASE WHEN 1 >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) ELSE 0 END) \
                     ON CONFLICT (key) DO UPDATE SET \
                     failures = CASE WHEN throttles.last_failure_at < $3 THEN 1 ELSE throttles.failures + 1 END, \
                     blocked_until = CASE \
                         WHEN (CASE WHEN throttles.last_failure_at < $3 THEN 1 ELSE throttles.failures + 1 END) \
                              >= CAST($4 AS BIGINT) THEN CAST($5 AS BIGINT) \
                         ELSE 0 END, \
                     last_failure_at = $2 \
                     WHERE throttles.blocked_until <= $2 \
                     RETURNING failures",
                )
                .bind(key)
                .bind(step.now)
                .bind(step.forget_before)
                .bind(step.free)
                .bind(step.hold_until)
                .fetch_optional(&self.writer)
                .await?;
                Ok(counted.map(|(n,)| n))
            }

            async fn throttle_failed(&self, key: &str, at: i64, blocked_until: Option<i64>) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE throttles SET failed_at = $1, \
                     blocked_until = COALESCE(CAST($2 AS BIGINT), blocked_until) WHERE key = $3",
                )
                .bind(at)
                .bind(blocked_until)
                .bind(key)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn throttle_refund(&self, key: &str, held: bool) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE throttles SET failures = failures - 1, \
                     blocked_until = CASE WHEN CAST($1 AS BIGINT) = 1 THEN 0 ELSE blocked_until END \
                     WHERE key = $2 AND failures > 0",
                )
                .bind(i64::from(held))
                .bind(key)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn throttle_clear(&self, key: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("DELETE FROM throttles WHERE key = $1").bind(key).execute(&self.writer).await?;
                Ok(())
            }

            async fn throttles_failing(&self, prefix: &str, since: i64) -> Result<(i64, i64), StoreError> {
                let counted: (i64, Option<i64>) = sqlx::query_as::<$db, (i64, Option<i64>)>(
                    "SELECT COUNT(*), CAST(SUM(failures) AS BIGINT) FROM throttles \
                     WHERE key LIKE $1 AND failed_at >= $2",
                )
                .bind(format!("{prefix}%"))
                .bind(since)
                .fetch_one(&self.reader)
                .await?;
                Ok((counted.0, counted.1.unwrap_or(0)))
            }

            async fn purge_throttles(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM throttles WHERE last_failure_at < $1 AND blocked_until < $1")
                    .bind(before)
                    .execute(&self.maintenance)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn purge_revocation_rules(&self, now: i64, settled_before: i64) -> Result<u64, StoreError> {
                let mut tx = self.maintenance.begin().await?;
                let superseded = sqlx::query::<$db>(
                    "DELETE FROM revocation_rules WHERE EXISTS (SELECT 1 FROM revocation_rules later \
                     WHERE later.scope_kind = revocation_rules.scope_kind \
                     AND later.scope_value = revocation_rules.scope_value \
                     AND (later.except_session IS NULL OR later.except_session = revocation_rules.except_session) \
                     AND later.recoverable <= revocation_rules.recoverable \
                     AND (later.not_before > revocation_rules.not_before \
                          OR (later.not_before = revocation_rules.not_before AND later.seq > revocation_rules.seq)))",
                )
                .execute(&mut *tx)
                .await?;
                let idle = sqlx::query::<$db>(
                    "DELETE FROM revocation_rules WHERE not_before < $1 AND NOT EXISTS (\
                     SELECT 1 FROM tokens t JOIN sessions s ON s.id = t.session_id \
                     WHERE t.expires_at > $2 AND t.issued_at <= revocation_rules.not_before AND (\
                       revocation_rules.scope_kind = 'global' \
                       OR (revocation_rules.scope_kind = 'user' AND t.user_id = revocation_rules.scope_value) \
                       OR (revocation_rules.scope_kind = 'device' AND s.device_id = revocation_rules.scope_value) \
                       OR (revocation_rules.scope_kind = 'channel' AND s.channel = revocation_rules.scope_value) \
                       OR (revocation_rules.scope_kind = 'user_channel' \
                           AND t.user_id || '/' || s.channel = revocation_rules.scope_value)))",
                )
                .bind(settled_before)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(superseded.rows_affected() + idle.rows_affected())
            }

            async fn purge_alert_states(&self, before: i64) -> Result<u64, StoreError> {
                let done = sqlx::query::<$db>("DELETE FROM alert_states WHERE until < $1")
                    .bind(before)
                    .execute(&self.maintenance)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn raise_alert_state(&self, kind: &str, now: i64, until: i64) -> Result<bool, StoreError> {
                let raised: Option<(String,)> = sqlx::query_as::<$db, (String,)>(
                    "INSERT INTO alert_states (kind, raised_at, until) VALUES ($1, $2, $3) \
                     ON CONFLICT (kind) DO UPDATE SET raised_at = excluded.raised_at, until = excluded.until \
                     WHERE alert_states.until < excluded.raised_at \
                     RETURNING kind",
                )
                .bind(kind)
                .bind(now)
                .bind(until)
                .fetch_optional(&self.writer)
                .await?;
                Ok(raised.is_some())
            }

            async fn extend_alert_state(&self, kind: &str, until: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE alert_states SET until = $2 WHERE kind = $1 AND until < $2")
                    .bind(kind)
                    .bind(until)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn alert_state_until(&self, kind: &str) -> Result<Option<i64>, StoreError> {
                let until: Option<(i64,)> =
                    sqlx::query_as::<$db, (i64,)>("SELECT until FROM alert_states WHERE kind = $1")
                        .bind(kind)
                        .fetch_optional(&self.reader)
                        .await?;
                Ok(until.map(|(u,)| u))
            }

            async fn sso_identity_used(&self, id: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE sso_identities SET last_used_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(())
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
             backchannel_logout_uri, first_party, created_at, id_token_alg, jwks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        .execute($conn)
        .await
    }};
}

macro_rules! client_select {
    () => {
        "SELECT id, name, kind, secret_digest, secret_key_id, redirect_uris, backchannel_logout_uri, first_party, \
         created_at, secret_rotated_at, id_token_alg, jwks FROM oauth_clients"
    };
}

macro_rules! device_code_select {
    () => {
        "SELECT digest, digest_key_id, user_code_digest, client_id, scope, device_name, created_at, expires_at, \
         interval_secs, last_polled_at, status, user_id, auth_time, session_id FROM oauth_device_codes"
    };
}

macro_rules! user_select {
    () => {
        "SELECT id, username, email_sealed, email_key_id, password_hash, password_pepper_id, created_at, \
         email_verified_at, must_reset_password, role, pending_email_sealed, pending_email_key_id FROM users"
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
    insert_rule, insert_session_start, insert_sso_identity, insert_token, insert_user, passkey_select, plex_pin_select,
    replace_recovery_codes, sso_identity_select, user_select,
};
