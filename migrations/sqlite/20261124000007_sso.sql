-- Sign-in with upstream OpenID Connect providers (issue 7). An account without a password keeps
-- empty `users.password_hash` and `password_pepper_id`: it signs in through a provider or a passkey.

-- An upstream account linked to a keywarden account. The provider's subject is kept only as a keyed
-- blind index, and the label shown on /security (the provider's email for it) only sealed.
CREATE TABLE sso_identities (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider             TEXT NOT NULL,
    subject_index        BLOB NOT NULL,
    subject_index_key_id TEXT NOT NULL,
    label_sealed         BLOB,
    label_key_id         TEXT,
    created_at           INTEGER NOT NULL,
    last_used_at         INTEGER
);
CREATE UNIQUE INDEX sso_identities_subject_uq ON sso_identities (provider, subject_index);
CREATE INDEX sso_identities_user_idx ON sso_identities (user_id);

-- A trip to a provider and back: the `state` sent along (keyed digest only), the PKCE verifier
-- (sealed), the nonce (keyed digest), and what the trip is for. Used once, for ten minutes.
CREATE TABLE sso_flows (
    digest          BLOB PRIMARY KEY,
    digest_key_id   TEXT NOT NULL,
    provider        TEXT NOT NULL,
    -- signin, link or reauth
    purpose         TEXT NOT NULL,
    -- for link and reauth: the session that started the trip
    user_id         TEXT REFERENCES users (id) ON DELETE CASCADE,
    session_id      TEXT,
    next            TEXT NOT NULL,
    verifier_sealed BLOB NOT NULL,
    verifier_key_id TEXT NOT NULL,
    nonce_digest    BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
);
CREATE INDEX sso_flows_expiry_idx ON sso_flows (expires_at);

-- A provider's account that is not linked yet, waiting for its person to create an account or to
-- sign in to the one it belongs to. The provider's claims are sealed.
CREATE TABLE sso_pending (
    digest         BLOB PRIMARY KEY,
    digest_key_id  TEXT NOT NULL,
    provider       TEXT NOT NULL,
    claims_sealed  BLOB NOT NULL,
    claims_key_id  TEXT NOT NULL,
    next           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE INDEX sso_pending_expiry_idx ON sso_pending (expires_at);
