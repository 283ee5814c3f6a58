-- The revocation log: every change that can make a verified answer wrong is appended here
-- in the transaction that makes it, so replicas (and through them, client caches) can drop
-- what they cached.
--
-- Readers follow the log by "sequence greater than the last one I applied", which is only
-- sound if sequences become visible in commit order. A plain sequence default does not
-- give that (a transaction can take 5, another 6 and commit first), so the trigger takes a
-- transaction-scoped advisory lock before it draws the number: appenders queue, each one
-- commits (and releases the lock) before the next draws. Every append is the last
-- statement of its transaction, so the lock is held only until commit. The trigger also
-- sends the NOTIFY that replicas LISTEN for; PostgreSQL delivers it at commit.

CREATE SEQUENCE revocations_sequence;

CREATE TABLE revocations (
    sequence   BIGINT  PRIMARY KEY NOT NULL,              -- set by the trigger below
    token_hash BYTEA,                                     -- SHA-256 of a revoked session token
    user_id    TEXT,                                      -- every answer for this user is stale
    created_at BIGINT  NOT NULL,
    CHECK ((token_hash IS NULL) <> (user_id IS NULL))
);
CREATE INDEX revocations_by_age ON revocations (created_at);

CREATE FUNCTION revocations_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- 0x73747065 is "stpe": one lock key for this log.
    PERFORM pg_advisory_xact_lock(1937010789);
    NEW.sequence := nextval('revocations_sequence');
    PERFORM pg_notify('st_peter_revocations', NEW.sequence::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER revocations_sequence_in_commit_order
    BEFORE INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION revocations_in_commit_order();
