-- The RFC 7638 thumbprint of the key a session's tokens are bound to (DPoP, RFC 9449).
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;
