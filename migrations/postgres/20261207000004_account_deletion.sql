-- People delete their own accounts (issue 22 §1): a request sets when the account is erased; until
-- then a sign-in or the mailed link cancels it.
ALTER TABLE users ADD COLUMN deletion_due_at BIGINT;
CREATE INDEX users_deletion_due_idx ON users (deletion_due_at);
