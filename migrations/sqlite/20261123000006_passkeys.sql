-- Passkeys (issue 5). Only public keys and counters are stored: a stolen database signs nothing.

CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The authenticator's credential id; one credential belongs to one account.
    credential_id BLOB NOT NULL UNIQUE,
    -- The random WebAuthn user handle the authenticator keeps (never the account id or email).
    user_handle   TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- webauthn-rs's credential as JSON: public key, algorithm, signature counter.
    passkey       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_user_idx ON passkeys (user_id);

-- A WebAuthn challenge handed to a browser, kept until its answer arrives (once) or it expires.
CREATE TABLE webauthn_ceremonies (
    id         TEXT PRIMARY KEY,
    -- NULL for a passwordless sign-in, where the account is only known from the answer.
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    state      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry_idx ON webauthn_ceremonies (expires_at);
