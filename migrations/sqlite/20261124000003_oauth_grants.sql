-- OAuth grants (issue 6). A session started by an OAuth client remembers the client (its channel
-- too), the scope the user granted and when the user last authenticated.
ALTER TABLE sessions ADD COLUMN client_id TEXT;
ALTER TABLE sessions ADD COLUMN scope TEXT;
ALTER TABLE sessions ADD COLUMN auth_time INTEGER;

-- The algorithm of the client's ID tokens: ES256 or EdDSA.
ALTER TABLE oauth_clients ADD COLUMN id_token_alg TEXT NOT NULL DEFAULT 'ES256';

-- Authorization codes, stored as keyed digests like every token. `grant_json` is the request as the
-- user approved it (redirect URI, scope, nonce, PKCE challenge, DPoP key); `session_id` is the
-- session its exchange started, ended again if the code is presented a second time.
CREATE TABLE oauth_codes (
    digest        BLOB PRIMARY KEY,
    digest_key_id TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    grant_json    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    session_id    TEXT
);
CREATE INDEX oauth_codes_expiry_idx ON oauth_codes (expires_at);

-- What a user allowed a third-party client, so the consent screen is shown once per scope.
CREATE TABLE oauth_consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
