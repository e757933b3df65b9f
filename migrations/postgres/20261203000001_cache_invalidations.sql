-- The invalidation log: what each node's validation cache may no longer believe. Triggers write it
-- for every writer (a node, the admin CLI, an operator with psql), so no code path can forget to,
-- and wake every node through the revocation channel; nodes read it by sequence number (re-reading
-- the last seconds, since rows may commit out of sequence order) and drop what it names.
CREATE TABLE cache_invalidations (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,    -- 'session' or 'user'
    id   TEXT NOT NULL,
    -- The database's clock, Unix ms.
    at   BIGINT NOT NULL DEFAULT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
);
CREATE INDEX cache_invalidations_at_idx ON cache_invalidations (at);

-- One trigger function for every table: `keywarden_row_changed(KIND, COLUMN)` logs the changed
-- row's COLUMN (the new row's, or the deleted one's) as an invalidation of KIND.
CREATE FUNCTION keywarden_row_changed() RETURNS trigger AS $$
BEGIN
    INSERT INTO cache_invalidations (kind, id)
    VALUES (TG_ARGV[0], COALESCE(to_jsonb(NEW), to_jsonb(OLD)) ->> TG_ARGV[1]);
    -- The same payload in one transaction is delivered once.
    PERFORM pg_notify('keywarden_revocations', 'invalidation');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- A session ended, re-proved its person, or was released from enrolment. Its last use is not news.
CREATE TRIGGER sessions_invalidate AFTER UPDATE OF revoked_at, verified_at, verified_second_factor, enrolment_only,
    client_id, scope, dpop_jkt ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.verified_at IS DISTINCT FROM NEW.verified_at
      OR OLD.verified_second_factor IS DISTINCT FROM NEW.verified_second_factor
      OR OLD.enrolment_only IS DISTINCT FROM NEW.enrolment_only OR OLD.client_id IS DISTINCT FROM NEW.client_id
      OR OLD.scope IS DISTINCT FROM NEW.scope OR OLD.dpop_jkt IS DISTINCT FROM NEW.dpop_jkt)
    EXECUTE FUNCTION keywarden_row_changed('session', 'id');
CREATE TRIGGER sessions_deleted_invalidate AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION keywarden_row_changed('session', 'id');

-- A token's life changed (an operator shortening it, a plex.tv token kept alive by use).
CREATE TRIGGER tokens_invalidate AFTER UPDATE OF expires_at ON tokens
    FOR EACH ROW WHEN (OLD.expires_at IS DISTINCT FROM NEW.expires_at)
    EXECUTE FUNCTION keywarden_row_changed('session', 'session_id');

-- Anything about an account: its profile, role, password, or the account itself.
CREATE TRIGGER users_invalidate AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION keywarden_row_changed('user', 'id');

-- Whether an account has a second factor (plex.tv's user element says so).
CREATE TRIGGER totp_invalidate AFTER INSERT OR DELETE ON totp_factors
    FOR EACH ROW EXECUTE FUNCTION keywarden_row_changed('user', 'user_id');
CREATE TRIGGER totp_confirmed_invalidate AFTER UPDATE OF confirmed_at ON totp_factors
    FOR EACH ROW WHEN (OLD.confirmed_at IS DISTINCT FROM NEW.confirmed_at)
    EXECUTE FUNCTION keywarden_row_changed('user', 'user_id');
CREATE TRIGGER passkeys_invalidate AFTER INSERT OR DELETE ON passkeys
    FOR EACH ROW EXECUTE FUNCTION keywarden_row_changed('user', 'user_id');
