-- PIN linking for plex.tv-style clients (issue 8): a device shows a short code, its person approves
-- it (PUT /api/v2/pins/link, or /link), and the device, polling with the PIN's id, gets its token.
-- The code is kept only as a keyed digest; the token is made when the device collects it.
CREATE TABLE plex_pins (
    id                BIGINT PRIMARY KEY,
    code_digest       BYTEA NOT NULL,
    digest_key_id     TEXT NOT NULL,
    strong            BIGINT NOT NULL,
    client_identifier TEXT NOT NULL,
    product           TEXT NOT NULL,
    platform          TEXT NOT NULL,
    device_name       TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    user_id           TEXT REFERENCES users (id) ON DELETE CASCADE,
    approved_at       BIGINT,
    used_at           BIGINT
);
CREATE UNIQUE INDEX plex_pins_code_uq ON plex_pins (code_digest);
CREATE INDEX plex_pins_expiry_idx ON plex_pins (expires_at);
