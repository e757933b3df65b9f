-- The invalidation log: what each node's validation cache may no longer believe. Triggers write it
-- for every writer (a node, the admin CLI, an operator with psql), so no code path can forget to,
-- and wake every node through the revocation channel; nodes read it by sequence number (re-reading
-- the last seconds, since rows may commit out of sequence order) and drop what it names.
CREATE TABLE cache_invalidations (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,    -- 'session' or 'user'
    id   TEXT NOT NULL,
    at   BIGINT NOT NULL   -- the database's clock, Unix ms
);
CREATE INDEX cache_invalidations_at_idx ON cache_invalidations (at);

CREATE FUNCTION keywarden_invalidate(what TEXT, id TEXT) RETURNS void AS $$
BEGIN
    INSERT INTO cache_invalidations (kind, id, at)
    VALUES (what, id, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT);
    -- The same payload in one transaction is delivered once.
    PERFORM pg_notify('keywarden_revocations', 'invalidation');
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION keywarden_session_changed() RETURNS trigger AS $$
BEGIN
    PERFORM keywarden_invalidate('session', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION keywarden_user_changed() RETURNS trigger AS $$
BEGIN
    PERFORM keywarden_invalidate('user', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION keywarden_factor_changed() RETURNS trigger AS $$
BEGIN
    PERFORM keywarden_invalidate('user', COALESCE(NEW.user_id, OLD.user_id));
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
    EXECUTE FUNCTION keywarden_session_changed();
CREATE TRIGGER sessions_deleted_invalidate AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION keywarden_session_changed();

-- Anything about an account: its profile, role, password, or the account itself.
CREATE TRIGGER users_invalidate AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION keywarden_user_changed();

-- Whether an account has a second factor (plex.tv's user element says so).
CREATE TRIGGER totp_invalidate AFTER INSERT OR DELETE ON totp_factors
    FOR EACH ROW EXECUTE FUNCTION keywarden_factor_changed();
CREATE TRIGGER totp_confirmed_invalidate AFTER UPDATE OF confirmed_at ON totp_factors
    FOR EACH ROW WHEN (OLD.confirmed_at IS DISTINCT FROM NEW.confirmed_at)
    EXECUTE FUNCTION keywarden_factor_changed();
CREATE TRIGGER passkeys_invalidate AFTER INSERT OR DELETE ON passkeys
    FOR EACH ROW EXECUTE FUNCTION keywarden_factor_changed();

-- A token's life changed (an operator shortening it, a plex.tv token kept alive by use).
CREATE FUNCTION keywarden_token_changed() RETURNS trigger AS $$
BEGIN
    PERFORM keywarden_invalidate('session', NEW.session_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tokens_invalidate AFTER UPDATE OF expires_at ON tokens
    FOR EACH ROW WHEN (OLD.expires_at IS DISTINCT FROM NEW.expires_at)
    EXECUTE FUNCTION keywarden_token_changed();
