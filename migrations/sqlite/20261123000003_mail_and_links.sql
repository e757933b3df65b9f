-- Single-use links (email verification, password reset): stored as keyed digests only.
CREATE TABLE one_time_tokens (
    digest        BLOB PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id, purpose);

ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
ALTER TABLE users ADD COLUMN must_reset_password INTEGER NOT NULL DEFAULT 0;

-- Outgoing mail, durable until delivered. Recipient and message are sealed under the data key:
-- a reset link waiting in the queue is a credential (P1).
CREATE TABLE mail_queue (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    user_id         TEXT,
    sealed          BLOB NOT NULL,
    key_id          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    last_error      TEXT
);
CREATE INDEX mail_queue_due_idx ON mail_queue (next_attempt_at);
