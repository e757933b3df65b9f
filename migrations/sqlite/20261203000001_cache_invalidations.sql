-- The invalidation log: what each node's validation cache may no longer believe. Triggers write it
-- for every writer (a node, the admin CLI, an operator with a SQL shell), so no code path can forget
-- to; nodes read it by sequence number and drop what it names. Rows older than any cache entry are
-- purged.
CREATE TABLE cache_invalidations (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,    -- 'session' or 'user'
    id   TEXT NOT NULL,
    -- The database's clock, Unix ms.
    at   INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);
CREATE INDEX cache_invalidations_at_idx ON cache_invalidations (at);

-- A session ended, re-proved its person, or was released from enrolment. Its last use is not news.
CREATE TRIGGER sessions_invalidate AFTER UPDATE OF revoked_at, verified_at, verified_second_factor, enrolment_only,
    client_id, scope, dpop_jkt ON sessions
    WHEN OLD.revoked_at IS NOT NEW.revoked_at OR OLD.verified_at IS NOT NEW.verified_at
      OR OLD.verified_second_factor IS NOT NEW.verified_second_factor OR OLD.enrolment_only IS NOT NEW.enrolment_only
      OR OLD.client_id IS NOT NEW.client_id OR OLD.scope IS NOT NEW.scope OR OLD.dpop_jkt IS NOT NEW.dpop_jkt
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('session', NEW.id);
END;
CREATE TRIGGER sessions_deleted_invalidate AFTER DELETE ON sessions
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('session', OLD.id);
END;

-- A token's life changed (an operator shortening it, a plex.tv token kept alive by use).
CREATE TRIGGER tokens_invalidate AFTER UPDATE OF expires_at ON tokens
    WHEN OLD.expires_at IS NOT NEW.expires_at
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('session', NEW.session_id);
END;

-- Anything about an account: its profile, role, password, or the account itself.
CREATE TRIGGER users_invalidate AFTER UPDATE ON users
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', NEW.id);
END;
CREATE TRIGGER users_deleted_invalidate AFTER DELETE ON users
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', OLD.id);
END;

-- Whether an account has a second factor (plex.tv's user element says so).
CREATE TRIGGER totp_added_invalidate AFTER INSERT ON totp_factors
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', NEW.user_id);
END;
CREATE TRIGGER totp_confirmed_invalidate AFTER UPDATE OF confirmed_at ON totp_factors
    WHEN OLD.confirmed_at IS NOT NEW.confirmed_at
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', NEW.user_id);
END;
CREATE TRIGGER totp_removed_invalidate AFTER DELETE ON totp_factors
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', OLD.user_id);
END;
CREATE TRIGGER passkey_added_invalidate AFTER INSERT ON passkeys
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', NEW.user_id);
END;
CREATE TRIGGER passkey_removed_invalidate AFTER DELETE ON passkeys
BEGIN
    INSERT INTO cache_invalidations (kind, id) VALUES ('user', OLD.user_id);
END;
