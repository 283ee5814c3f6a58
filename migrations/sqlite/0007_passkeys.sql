-- Passkeys (WebAuthn): a user's registered credentials, and the ceremonies between their
-- Begin and Finish calls, kept here (not in one server's memory) so any replica can finish
-- what another began, and so a Finish can consume its ceremony exactly once.

CREATE TABLE passkeys (
    id            TEXT    PRIMARY KEY NOT NULL,           -- UUID, lowercase: its passkey_id
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BLOB    NOT NULL UNIQUE,                -- the authenticator's id for it
    name          TEXT    NOT NULL,
    credential    TEXT    NOT NULL,                       -- webauthn-rs Passkey (public key, counter) as JSON
    sign_count    INTEGER NOT NULL,                       -- its signature counter, for compare-and-set
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER                                 -- NULL until it signs the user in
);
CREATE INDEX passkeys_by_user ON passkeys (user_id, created_at);

CREATE TABLE passkey_ceremonies (
    id_hash       BLOB    PRIMARY KEY NOT NULL,           -- SHA-256 of the registration or challenge id
    purpose       TEXT    NOT NULL CHECK (purpose IN ('registration', 'login', 'two_factor')),
    user_id       TEXT    REFERENCES users (id) ON DELETE CASCADE, -- NULL: a discoverable sign-in
    challenge_hash BLOB,                                  -- the two-factor challenge it completes
    state         TEXT    NOT NULL,                       -- webauthn-rs ceremony state as JSON
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
