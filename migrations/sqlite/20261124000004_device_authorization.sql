-- Device authorization (RFC 8628, issue 6): a device shows a short user code, the person approves
-- it at /link, the device polls with its device code. Both codes are stored as keyed digests only.
CREATE TABLE oauth_device_codes (
    digest            BLOB PRIMARY KEY,
    digest_key_id     TEXT NOT NULL,
    user_code_digest  BLOB NOT NULL,
    client_id         TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,
    -- what the device calls itself, shown on the confirmation page and on /security
    device_name       TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    interval_secs     INTEGER NOT NULL,
    last_polled_at    INTEGER,
    -- pending, approved, denied or used
    status            TEXT NOT NULL,
    user_id           TEXT REFERENCES users (id) ON DELETE CASCADE,
    auth_time         INTEGER,
    session_id        TEXT
);
CREATE UNIQUE INDEX oauth_device_codes_user_code_uq ON oauth_device_codes (user_code_digest);
CREATE INDEX oauth_device_codes_expiry_idx ON oauth_device_codes (expires_at);
