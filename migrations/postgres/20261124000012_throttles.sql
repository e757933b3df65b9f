-- Failure counters behind throttling and back-off (issue 9), shared by every node. A key names a
-- purpose and what it counts: an account, a login name's or source address's keyed digest, a device.
CREATE TABLE throttles (
    key             TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL,
    blocked_until   BIGINT NOT NULL
);
CREATE INDEX throttles_last_failure_at ON throttles (last_failure_at);

-- Alerts that every node must raise once, not once each (a credential-stuffing surge), and how long
-- the state they switch on lasts (the extra step for new devices).
CREATE TABLE alert_states (
    kind      TEXT PRIMARY KEY,
    raised_at BIGINT NOT NULL,
    until     BIGINT NOT NULL
);
