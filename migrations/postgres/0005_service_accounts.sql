-- Service accounts and their API keys. A service account is a user row of kind 'service':
-- it has platform roles and sessions like a person, but no password (password_hash is '',
-- which no password verifies) and no TOTP. It authenticates by exchanging an API key for
-- a short-lived session; only a SHA-256 of each key is kept (a key is 32 random bytes, so
-- no slow hash is needed).

ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'human'
    CHECK (kind IN ('human', 'service'));

CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY NOT NULL,            -- UUID, lowercase: names the key
    key_hash     BYTEA   NOT NULL UNIQUE,                 -- SHA-256 of the key
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT,                                  -- NULL: until revoked
    last_used_at BIGINT,                                  -- the last exchange
    revoked_at   BIGINT
);
-- A name picks one live key of an account; a revoked key's name may be used again.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (user_id, name) WHERE revoked_at IS NULL;

-- The key a session was exchanged from: revoking the key ends its sessions too.
ALTER TABLE sessions ADD COLUMN api_key_id TEXT REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX sessions_by_api_key ON sessions (api_key_id) WHERE api_key_id IS NOT NULL;
