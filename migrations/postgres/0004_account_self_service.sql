-- Self-service accounts: a session gets an id its user can name it by (the token is never
-- shown back, and the id cannot be used as one) and the time st-peter last saw its token;
-- a TOTP enrollment waits here, unconfirmed, until the user proves the authenticator works.

ALTER TABLE sessions ADD COLUMN id TEXT;                  -- UUID, lowercase
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;      -- NULL until seen after the login
-- Sessions from before this migration get a random UUID (gen_random_uuid: PostgreSQL 13+).
UPDATE sessions SET id = gen_random_uuid()::text;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);

CREATE TABLE totp_enrollments (
    id_hash       BYTEA   PRIMARY KEY NOT NULL,           -- SHA-256 of the enrollment id
    user_id       TEXT    NOT NULL UNIQUE                 -- one pending enrollment per user
                  REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret BYTEA   NOT NULL,                       -- the new secret, sealed as in users
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0              -- wrong codes sent so far
);
CREATE INDEX totp_enrollments_by_expiry ON totp_enrollments (expires_at);
