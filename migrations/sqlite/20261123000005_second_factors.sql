-- Second factors (issue 5). Secrets are sealed under the data key; codes are stored as keyed digests.

-- One authenticator app per account; `confirmed_at` stays NULL until a first code proves the enrolment.
CREATE TABLE totp_factors (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed  BLOB NOT NULL,
    secret_key_id  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    confirmed_at   INTEGER,
    -- The last 30-second step whose code was accepted: no code of it or earlier works again.
    last_used_step INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE recovery_codes (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest        BLOB NOT NULL,
    digest_key_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    used_at       INTEGER,
    PRIMARY KEY (user_id, digest)
);

-- A password sign-in waiting for its second factor; the token the client holds is stored as a digest.
CREATE TABLE mfa_challenges (
    digest        BLOB PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- How the sign-in described itself (device, address, DPoP key), to finish it exactly as started.
    sign_in       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    used_at       INTEGER
);
CREATE INDEX mfa_challenges_expiry_idx ON mfa_challenges (expires_at);

-- When the session last proved its account's strongest factors (sign-in or step-up), for step-up checks.
ALTER TABLE sessions ADD COLUMN verified_at INTEGER NOT NULL DEFAULT 0;
