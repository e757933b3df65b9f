-- Accounts, devices, sessions and tokens. No key and no token is ever stored here: emails are
-- sealed under the data key with a keyed blind index, tokens are kept as keyed digests only.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    username           TEXT NOT NULL,
    username_key       TEXT NOT NULL,
    email_sealed       BYTEA NOT NULL,
    email_key_id       TEXT NOT NULL,
    email_index        BYTEA NOT NULL,
    email_index_key_id TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    password_pepper_id TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_username_key_uq ON users (username_key);
CREATE UNIQUE INDEX users_email_index_uq ON users (email_index);

CREATE TABLE devices (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_identifier TEXT NOT NULL,
    product           TEXT NOT NULL,
    platform          TEXT NOT NULL,
    name              TEXT NOT NULL,
    first_seen_at     BIGINT NOT NULL,
    last_seen_at      BIGINT NOT NULL,
    last_address      TEXT
);
CREATE UNIQUE INDEX devices_user_client_uq ON devices (user_id, client_identifier);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_device_idx ON sessions (device_id);

CREATE TABLE tokens (
    digest        BYTEA PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    session_id    TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    rotated_at    BIGINT
);
CREATE INDEX tokens_session_idx ON tokens (session_id);
CREATE INDEX tokens_expiry_idx ON tokens (expires_at);
