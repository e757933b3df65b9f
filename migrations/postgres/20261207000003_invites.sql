-- Invitations (issue 22 §4): with signup.mode = "invite", an account is created only with one.
-- The code is kept only as a keyed digest; an invitation for one address keeps that address
-- sealed (for the operator's list) and blind-indexed (to match it at sign-up).
CREATE TABLE invites (
    id                 TEXT PRIMARY KEY,
    code_digest        BYTEA NOT NULL UNIQUE,
    digest_key_id      TEXT NOT NULL,
    email_sealed       BYTEA,
    email_key_id       TEXT,
    email_index        BYTEA,
    uses               BIGINT NOT NULL,
    uses_left          BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    revoked_at         BIGINT,
    created_by         TEXT NOT NULL
);
