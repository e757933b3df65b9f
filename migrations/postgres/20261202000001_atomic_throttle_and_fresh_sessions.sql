-- Issue 17: the throttle counts an attempt before its secret is checked (holding the key while it
-- is), and fresh authentication knows whether a second factor was part of the last proof.

-- When the counter last settled an attempt as a failure (0: none yet). `last_failure_at` moves with
-- every attempt counted, also those still being checked; the credential-stuffing detector counts
-- only settled failures, so a busy minute of good sign-ins is not a surge.
ALTER TABLE throttles ADD COLUMN failed_at BIGINT NOT NULL DEFAULT 0;
UPDATE throttles SET failed_at = last_failure_at;

-- Whether the session's last proof (`verified_at`) included a second factor or a passkey: an account
-- with a second factor is only freshly authenticated by one.
ALTER TABLE sessions ADD COLUMN verified_second_factor BIGINT NOT NULL DEFAULT 0;
