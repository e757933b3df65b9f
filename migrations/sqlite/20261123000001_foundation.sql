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
    email_sealed       BLOB NOT NULL,
    email_key_id       TEXT NOT NULL,
    email_index        BLOB NOT NULL,
    email_index_key_id TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    password_pepper_id TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
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
    first_seen_at     INTEGER NOT NULL,
    last_seen_at      INTEGER NOT NULL,
    last_address      TEXT
);
CREATE UNIQUE INDEX devices_user_client_uq ON devices (user_id, client_identifier);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_device_idx ON sessions (device_id);

CREATE TABLE tokens (
    digest        BLOB PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    session_id    TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    rotated_at    INTEGER
);
CREATE INDEX tokens_session_idx ON tokens (session_id);
CREATE INDEX tokens_expiry_idx ON tokens (expires_at);
