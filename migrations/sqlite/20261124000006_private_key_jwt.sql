-- private_key_jwt client authentication (RFC 7523, issue 6): a client may register public keys
-- (a JWKS) instead of having a secret; each assertion's jti is accepted once, on any node.
ALTER TABLE oauth_clients ADD COLUMN jwks TEXT;
CREATE TABLE client_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_expiry_idx ON client_assertions (expires_at);
