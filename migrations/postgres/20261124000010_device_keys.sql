-- Device-key tokens (plex.tv's 2025 JWT scheme, issue 8): a device registers an Ed25519 public key
-- while signed in, then trades JWTs signed with it for short-lived tokens. Each key is anchored to
-- the newest token it was used with: once that token's sign-in is revoked, the key mints nothing.
CREATE TABLE device_keys (
    kid           TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    jwk           TEXT NOT NULL,
    anchor_digest BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX device_keys_user_idx ON device_keys (user_id);
