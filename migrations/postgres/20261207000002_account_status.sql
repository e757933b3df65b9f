-- Operators disable and enable accounts (issue 22 §3): a disabled account's tokens die with one
-- revocation rule, and no new session starts for it until it is enabled again.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
