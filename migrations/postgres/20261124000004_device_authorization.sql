-- Device authorization (RFC 8628, issue 6): a device shows a short user code, the person approves
-- it at /link, the device polls with its device code. Both codes are stored as keyed digests only.
CREATE TABLE oauth_device_codes (
    digest            BYTEA PRIMARY KEY,
    digest_key_id     TEXT NOT NULL,
    user_code_digest  BYTEA NOT NULL,
    client_id         TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,
    -- what the device calls itself, shown on the confirmation page and on /security
    device_name       TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    interval_secs     BIGINT NOT NULL,
    last_polled_at    BIGINT,
    -- pending, approved, denied or used
    status            TEXT NOT NULL,
    user_id           TEXT REFERENCES users (id) ON DELETE CASCADE,
    auth_time         BIGINT,
    session_id        TEXT
);
CREATE UNIQUE INDEX oauth_device_codes_user_code_uq ON oauth_device_codes (user_code_digest);
CREATE INDEX oauth_device_codes_expiry_idx ON oauth_device_codes (expires_at);
