-- OpenID Connect Back-Channel Logout (issue 6): one row per ended OAuth session whose client has a
-- back-channel logout URI, written in the same transaction as the revocation rule that ended it and
-- delivered (with retries) by whichever node claims it first. Delivered rows are purged with expired tokens.
CREATE TABLE backchannel_logouts (
    session_id      TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    last_error      TEXT,
    -- kept once delivered (or given up), so a later rule does not announce the same end twice
    delivered_at    INTEGER
);
CREATE INDEX backchannel_logouts_due_idx ON backchannel_logouts (next_attempt_at);
CREATE INDEX sessions_client_idx ON sessions (client_id);
