-- OAuth 2.0 / OpenID Connect clients (issue 6). A client secret is stored only as a keyed digest.
CREATE TABLE oauth_clients (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    -- `confidential` (authenticates with its secret) or `public` (an app that cannot keep one: PKCE)
    kind                   TEXT NOT NULL,
    secret_digest          BYTEA,
    secret_key_id          TEXT,
    -- JSON array of exact redirect URIs
    redirect_uris          TEXT NOT NULL,
    backchannel_logout_uri TEXT,
    -- first-party clients (the site, the forum) skip the consent screen
    first_party            BIGINT NOT NULL DEFAULT 0,
    created_at             BIGINT NOT NULL,
    secret_rotated_at      BIGINT
);
