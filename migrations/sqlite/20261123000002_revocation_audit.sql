-- Revocation rules: one row kills every token of a scope issued up to `not_before`.
CREATE TABLE revocation_rules (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    scope_kind     TEXT NOT NULL,
    scope_value    TEXT NOT NULL,
    except_session TEXT,
    not_before     INTEGER NOT NULL,
    recoverable    INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- The audit log: each event's MAC covers the previous one's, so an edited, inserted or deleted
-- row breaks the chain. The single `audit_head` row serialises appends on every engine.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, x'');

CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    user_id   TEXT,
    address   TEXT,
    details   TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, seq);

-- A device signed out from the security page stays listed only if it signs in again later.
ALTER TABLE devices ADD COLUMN signed_out_at INTEGER;
