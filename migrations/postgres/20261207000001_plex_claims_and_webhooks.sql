-- Claim tokens (issue 21): the owner asks for a short-lived, single-use `claim-…` code, and a new
-- media server trades it (POST /api/claim/exchange) for a device session of its own. The code is
-- kept only as a keyed digest, like every token.
CREATE TABLE plex_claims (
    code_digest   BYTEA PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX plex_claims_expiry_idx ON plex_claims (expires_at);
CREATE INDEX plex_claims_user_idx ON plex_claims (user_id);

-- The account's webhook URLs (GET/POST /api/v2/user/webhooks), as a JSON array in the order given.
CREATE TABLE plex_webhooks (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    urls       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
