-- Recovery codes issued with a TOTP enrollment, and the check values that tell a server
-- at start-up whether it holds the key the TOTP secrets were sealed with.
-- From here on users.totp_secret holds a sealed secret (XChaCha20-Poly1305), not the
-- plain one.

CREATE TABLE recovery_codes (
    user_id   TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash BYTEA   NOT NULL,                           -- SHA-256 of user id and code
    issued_at BIGINT  NOT NULL,
    used_at   BIGINT,                                     -- NULL until accepted once
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE key_checks (
    name   TEXT  PRIMARY KEY NOT NULL,                    -- which key: 'totp'
    sealed BYTEA NOT NULL                                 -- a known value sealed with it
);
