-- The throttles of every replica on this database (see server/src/domain/throttle.rs).
-- Keys are SHA-256 digests of the throttle's name and its key (an identifier, a client
-- address, a user id, a challenge's hash): no identifier or address is stored in clear.
-- UNLOGGED: a decision costs no WAL flush, and a crash that empties these tables forgets
-- failure counts as a restart of an in-memory throttle would.

-- Progressive backoff: failures counted by key, and until when the key must wait.
CREATE UNLOGGED TABLE throttle_backoffs (
    key BYTEA PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    -- When the row no longer decides anything (its failures forgotten, its wait over).
    expires_at BIGINT NOT NULL
);
CREATE INDEX throttle_backoffs_expires_at ON throttle_backoffs (expires_at);

-- Rate limits (GCRA): each key's theoretical arrival time, in microseconds. A row whose
-- time has passed is the same as no row.
CREATE UNLOGGED TABLE throttle_rates (
    key BYTEA PRIMARY KEY,
    tat BIGINT NOT NULL
);
CREATE INDEX throttle_rates_tat ON throttle_rates (tat);
