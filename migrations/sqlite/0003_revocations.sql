-- The revocation log: every change that can make a verified answer wrong is appended here
-- in the transaction that makes it, so servers (and through them, client caches) can drop
-- what they cached. AUTOINCREMENT never reuses a sequence, even after old rows are pruned;
-- SQLite has one writer, so sequence order is commit order.

CREATE TABLE revocations (
    sequence   INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB,                                      -- SHA-256 of a revoked session token
    user_id    TEXT,                                      -- every answer for this user is stale
    created_at INTEGER NOT NULL,
    CHECK ((token_hash IS NULL) <> (user_id IS NULL))
);
CREATE INDEX revocations_by_age ON revocations (created_at);
