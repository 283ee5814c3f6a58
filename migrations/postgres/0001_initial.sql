-- Users, their platform roles, sessions and two-factor challenges.
-- Times are Unix milliseconds (BIGINT); secrets are stored only as SHA-256 hashes.
-- Same columns as migrations/sqlite/0001 so one set of row types serves both backends.

CREATE TABLE users (
    id             TEXT    PRIMARY KEY NOT NULL,          -- UUID, lowercase
    handle         TEXT    NOT NULL UNIQUE,               -- normalized lowercase
    email          TEXT    UNIQUE,                        -- normalized lowercase, NULL if none
    phone          TEXT    UNIQUE,                        -- E.164, NULL if none
    display_name   TEXT    NOT NULL DEFAULT '',
    password_hash  TEXT    NOT NULL,                      -- argon2id PHC string
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    totp_secret    BYTEA,                                 -- NULL when TOTP is not enrolled
    totp_last_step BIGINT,                                -- last accepted TOTP step (replay guard)
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);

CREATE TABLE user_roles (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT    NOT NULL,
    granted_at BIGINT  NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE sessions (
    token_hash BYTEA   PRIMARY KEY NOT NULL,              -- SHA-256 of the token
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE two_factor_challenges (
    id_hash    BYTEA   PRIMARY KEY NOT NULL,              -- SHA-256 of the challenge id
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    attempts   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX two_factor_challenges_by_expiry ON two_factor_challenges (expires_at);
