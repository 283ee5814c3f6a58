-- The local roles table of a Telepact server: st-peter user_id (by value, no foreign key
-- into st-peter) -> the identity headers the adapter sets for that user.
CREATE TABLE identities (
    user_id    TEXT PRIMARY KEY NOT NULL,
    -- JSON object, header key -> string value, e.g. {"@employeeId":"baker-001"}.
    headers    TEXT NOT NULL,
    -- The handle the user had when granted: for people reading `list`, never for auth.
    handle     TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at INTEGER NOT NULL
);

-- Every header key the adapter owns. Grants add to it; revokes never remove from it, so a
-- key stays owned (always set by the adapter, never taken from a client) once introduced.
CREATE TABLE owned_headers (
    key TEXT PRIMARY KEY NOT NULL
);
