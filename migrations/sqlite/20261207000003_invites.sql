-- Invitations (issue 22 §4): with signup.mode = "invite", an account is created only with one.
-- The code is kept only as a keyed digest; an invitation for one address keeps that address
-- sealed (for the operator's list) and blind-indexed (to match it at sign-up).
CREATE TABLE invites (
    id                 TEXT PRIMARY KEY,
    code_digest        BLOB NOT NULL UNIQUE,
    digest_key_id      TEXT NOT NULL,
    email_sealed       BLOB,
    email_key_id       TEXT,
    email_index        BLOB,
    uses               INTEGER NOT NULL,
    uses_left          INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    created_by         TEXT NOT NULL
);
