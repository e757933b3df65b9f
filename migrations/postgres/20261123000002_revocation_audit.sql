-- Revocation rules: one row kills every token of a scope issued up to `not_before`.
CREATE TABLE revocation_rules (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope_kind     TEXT NOT NULL,
    scope_value    TEXT NOT NULL,
    except_session TEXT,
    not_before     BIGINT NOT NULL,
    recoverable    BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- Every node LISTENs on this channel; any writer of a rule (a node, the admin CLI, or an operator
-- with psql) wakes them all within milliseconds. Polling and periodic reloads cover missed ones.
CREATE FUNCTION keywarden_notify_revocation() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('keywarden_revocations', NEW.seq::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER revocation_rules_notify AFTER INSERT ON revocation_rules
    FOR EACH ROW EXECUTE FUNCTION keywarden_notify_revocation();

-- The audit log: each event's MAC covers the previous one's, so an edited, inserted or deleted
-- row breaks the chain. The single `audit_head` row serialises appends on every engine.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x'::bytea);

CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    user_id   TEXT,
    address   TEXT,
    details   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, seq);

ALTER TABLE devices ADD COLUMN signed_out_at BIGINT;
