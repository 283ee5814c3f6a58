-- Self-service accounts: a session gets an id its user can name it by (the token is never
-- shown back, and the id cannot be used as one) and the time st-peter last saw its token;
-- a TOTP enrollment waits here, unconfirmed, until the user proves the authenticator works.

ALTER TABLE sessions ADD COLUMN id TEXT;                  -- UUID, lowercase
ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER;     -- NULL until seen after the login
-- Sessions from before this migration get a random (version 4) UUID.
UPDATE sessions SET id = lower(
    hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
    || '-' || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2)
    || '-' || hex(randomblob(6)));
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);

CREATE TABLE totp_enrollments (
    id_hash       BLOB    PRIMARY KEY NOT NULL,           -- SHA-256 of the enrollment id
    user_id       TEXT    NOT NULL UNIQUE                 -- one pending enrollment per user
                  REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret BLOB    NOT NULL,                       -- the new secret, sealed as in users
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0              -- wrong codes sent so far
);
CREATE INDEX totp_enrollments_by_expiry ON totp_enrollments (expires_at);
