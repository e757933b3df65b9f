-- Relying parties that register a Security Event Token endpoint hear that an account they know was
-- erased (RFC 8417; the OpenID RISC `account-purged` event), through the queue back-channel logout
-- notices already use: each row says which event it carries.
ALTER TABLE oauth_clients ADD COLUMN security_event_uri TEXT;
ALTER TABLE backchannel_logouts ADD COLUMN event TEXT NOT NULL DEFAULT 'logout';
