-- Two-step verification policy and email change (issue 5).

-- `user` or `admin`; `mfa.require = "admins"` makes admins enrol a second factor.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
-- A new address waiting for its confirmation link, sealed like the current one.
ALTER TABLE users ADD COLUMN pending_email_sealed BLOB;
ALTER TABLE users ADD COLUMN pending_email_key_id TEXT;

-- 1 while a session may only enrol a second factor (the policy requires one and it has none yet).
ALTER TABLE sessions ADD COLUMN enrolment_only INTEGER NOT NULL DEFAULT 0;
