-- ===================================================================================================
-- Locks: leases with fencing tokens, entity processing states, text-keyed advisory locks
-- ===================================================================================================

-- Fencing tokens. One sequence for every key: a sequence never hands out a value twice, not after a
-- rollback, a restart or a crash, so it is the high-water mark of every key at once, and a lease row
-- can be deleted on release without forgetting which tokens were issued. lock_acquire draws a token
-- only while it holds the key's transaction-scoped lock, so for each key tokens grow in the order
-- the leases were granted. bigint, NO CYCLE: it never wraps.
CREATE SEQUENCE conveyor.lock_token_seq AS bigint NO CYCLE;

-- One row per held lease. A lease is live while heartbeat_at + ttl_seconds is in the future (server
-- clock); after that anyone may take it over. Released leases are deleted.
CREATE TABLE conveyor.locks (
    key              text PRIMARY KEY,
    owner            text NOT NULL,
    token            bigint NOT NULL,
    ttl_seconds      integer NOT NULL,
    acquired_at      timestamptz NOT NULL,
    heartbeat_at     timestamptz NOT NULL,
    correlation_id   text,
    metadata         jsonb,
    taken_from_owner text,      -- when this lease began by taking over a stale one: its holder
    taken_from_token bigint     -- and its token
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- Takeovers, force releases and cleanups, with the old and the new holder. conveyor.maintain()
-- deletes events older than 7 days.
CREATE TABLE conveyor.lock_events (
    at        timestamptz NOT NULL,
    key       text NOT NULL,
    event     text NOT NULL CHECK (event IN ('takeover', 'force_release', 'cleanup')),
    old_owner text,
    old_token bigint,
    new_owner text,
    new_token bigint,
    details   jsonb
);
CREATE INDEX lock_events_at ON conveyor.lock_events (at);
CREATE INDEX lock_events_key ON conveyor.lock_events (key, at);

-- Processing states of entities (an artist, a channel, a campaign), the seeds' processing_status.
--   PENDING -> IN_PROGRESS (entity_acquire) -> COMPLETED (entity_complete)
--                                           -> FAILED (entity_fail) -> IN_PROGRESS (entity_acquire, a retry)
--                                           -> DEAD (entity_fail with dead, or attempts used up)
--   IN_PROGRESS older than its timeout -> IN_PROGRESS again (entity_acquire, a recovery)
--   IN_PROGRESS older than stuck_seconds -> PENDING (entity_reset)
--   any -> any (entity_set: states written directly by a pipeline or an operator)
CREATE TABLE conveyor.entities (
    entity_type       text NOT NULL,
    entity_id         text NOT NULL,
    state             text NOT NULL CHECK (state IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'DEAD')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer,
    timeout_seconds   integer NOT NULL,
    last_processed_at timestamptz NOT NULL,   -- when it last became IN_PROGRESS
    last_error        text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
) WITH (fillfactor = 80);
CREATE INDEX entities_in_progress ON conveyor.entities (entity_type, last_processed_at) WHERE state = 'IN_PROGRESS';
-- What health() counts (FAILED and DEAD, capped): only those rows, so the count never walks the table.
CREATE INDEX entities_failed_dead ON conveyor.entities (state) WHERE state IN ('FAILED', 'DEAD');

-- pg_dump keeps users' leases, states, events and the token high-water mark.
SELECT pg_catalog.pg_extension_config_dump('conveyor.lock_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.locks', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.lock_events', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.entities', '');

-- Every lease with its age and whether it is stale, on the server's clock.
CREATE VIEW conveyor.locks_view AS
SELECT l.key, l.owner, l.token, l.correlation_id, l.metadata, l.ttl_seconds, l.acquired_at,
       l.heartbeat_at AS last_heartbeat,
       pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.acquired_at), 3)
           AS age_seconds,
       pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.heartbeat_at), 3)
           AS heartbeat_age_seconds,
       l.heartbeat_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => l.ttl_seconds) AS expires_at,
       l.heartbeat_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => l.ttl_seconds)
           OPERATOR(pg_catalog.<) pg_catalog.clock_timestamp() AS is_stale,
       l.taken_from_owner, l.taken_from_token
FROM conveyor.locks l;

-- ---- leases ------------------------------------------------------------------------------------------
-- Same settings as the queue's functions: kept generic plans stay on their indexes.

CREATE FUNCTION conveyor.lock_acquire(key text, owner text, ttl_seconds int DEFAULT 1800,
                                      correlation_id text DEFAULT NULL, metadata jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_lock_acquire';
COMMENT ON FUNCTION conveyor.lock_acquire(text,text,integer,text,jsonb) IS 'Takes, refreshes or takes over a lease on a key; returns its fencing token, or NULL while another owner holds it.';
CREATE FUNCTION conveyor.lock_heartbeat(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_lock_heartbeat';
COMMENT ON FUNCTION conveyor.lock_heartbeat(text,text,bigint) IS 'Restarts the clock of a lease held by owner (and token); false, changing nothing, when it is not theirs.';
CREATE FUNCTION conveyor.lock_release(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_lock_release';
COMMENT ON FUNCTION conveyor.lock_release(text,text,bigint) IS 'Releases a lease held by owner (and token); false, changing nothing, when it is not theirs.';
CREATE FUNCTION conveyor.lock_force_release(key text) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_lock_force_release';
COMMENT ON FUNCTION conveyor.lock_force_release(text) IS 'Deletes a lease whoever holds it and records a force_release event; for operators.';
-- Locks the lease row (FOR SHARE) until the caller's transaction ends: a takeover, release or
-- heartbeat of that lease waits for the caller's write to commit.
CREATE FUNCTION conveyor.lock_check(key text, token bigint) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_lock_check';
COMMENT ON FUNCTION conveyor.lock_check(text,bigint) IS 'True while token is the live holder''s, and then locks the lease row until the caller''s transaction ends.';
-- Scans all leases: no index settings.
CREATE FUNCTION conveyor.locks_cleanup(stale_seconds int DEFAULT NULL)
    RETURNS TABLE(key text, owner text, token bigint, held_seconds numeric)
    LANGUAGE C VOLATILE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_locks_cleanup';
COMMENT ON FUNCTION conveyor.locks_cleanup(integer) IS 'Deletes leases without a heartbeat for stale_seconds (default: each lease''s own ttl) and returns them.';

-- ---- entity processing states ------------------------------------------------------------------------

CREATE FUNCTION conveyor.entity_acquire(entity_type text, entity_id text, timeout_seconds int DEFAULT 1800,
                                        correlation_id text DEFAULT NULL, max_attempts int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_acquire';
COMMENT ON FUNCTION conveyor.entity_acquire(text,text,integer,text,integer) IS 'Moves an entity to IN_PROGRESS for the caller if it is new, pending, failed or timed out; false otherwise.';
CREATE FUNCTION conveyor.entity_complete(entity_type text, entity_id text, metadata jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_complete';
COMMENT ON FUNCTION conveyor.entity_complete(text,text,jsonb) IS 'Marks an IN_PROGRESS entity COMPLETED, merging metadata into its own.';
CREATE FUNCTION conveyor.entity_fail(entity_type text, entity_id text, error text, dead boolean DEFAULT false)
    RETURNS text
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_fail';
COMMENT ON FUNCTION conveyor.entity_fail(text,text,text,boolean) IS 'Marks an IN_PROGRESS entity FAILED, or DEAD when asked or when its attempts are used up; returns the state.';
CREATE FUNCTION conveyor.entity_reset(entity_type text DEFAULT NULL, stuck_seconds int DEFAULT 3600)
    RETURNS TABLE(entity_type text, entity_id text, previous_state text)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_reset';
COMMENT ON FUNCTION conveyor.entity_reset(text,integer) IS 'Returns entities stuck IN_PROGRESS longer than stuck_seconds to PENDING, and lists them.';
CREATE FUNCTION conveyor.entity_set(entity_type text, entity_id text, state text, error text DEFAULT NULL,
                                    metadata jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_set';
COMMENT ON FUNCTION conveyor.entity_set(text,text,text,text,jsonb) IS 'Puts an entity in any state, creating it when missing; returns the state it replaced, NULL for a new entity.';
CREATE FUNCTION conveyor.entity_state(entity_type text, entity_id text) RETURNS jsonb
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_entity_state';
COMMENT ON FUNCTION conveyor.entity_state(text,text) IS 'Returns an entity''s state, attempts, timeout, last error and metadata as JSON; NULL when unknown.';
-- These two read every entity: no index settings.
CREATE FUNCTION conveyor.entity_stats()
    RETURNS TABLE(entity_type text, state text, count bigint, oldest_seconds numeric)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_entity_stats';
COMMENT ON FUNCTION conveyor.entity_stats() IS 'Counts entities by type and state, with the age of the oldest change in each.';
CREATE FUNCTION conveyor.entity_inconsistencies()
    RETURNS TABLE(entity_type text, entity_id text, state text, lock_key text, issue text, details jsonb)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_entity_inconsistencies';
COMMENT ON FUNCTION conveyor.entity_inconsistencies() IS 'Lists entities whose state disagrees with their timeout or with their lease ''<entity_type>:<entity_id>''.';

-- ---- text-keyed advisory locks -----------------------------------------------------------------------
-- conveyor.try_advisory_lock(k) takes the same lock as pg_try_advisory_lock(conveyor.advisory_key(k)).
-- They touch no table, so they run as the caller and without SET clauses.

CREATE FUNCTION conveyor.advisory_key(key text) RETURNS bigint
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_key';
COMMENT ON FUNCTION conveyor.advisory_key(text) IS 'Returns the stable 64-bit key of a text: XXH3-64 (seed 0) of its UTF-8 bytes, as a signed bigint.';
CREATE FUNCTION conveyor.try_advisory_lock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_try_advisory_lock';
COMMENT ON FUNCTION conveyor.try_advisory_lock(text) IS 'Takes the session-level advisory lock of a text key if it is free now; does not wait.';
CREATE FUNCTION conveyor.advisory_lock(key text, timeout_ms int) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_lock';
COMMENT ON FUNCTION conveyor.advisory_lock(text,integer) IS 'Waits at most timeout_ms for the session-level advisory lock of a text key; false on timeout.';
CREATE FUNCTION conveyor.advisory_unlock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_unlock';
COMMENT ON FUNCTION conveyor.advisory_unlock(text) IS 'Releases one session-level hold of the advisory lock of a text key.';
-- Releases every session-level hold of this session on the key and returns how many. (A key this
-- transaction holds only at transaction level gets PostgreSQL's "you don't own a lock" warning.)
CREATE FUNCTION conveyor.advisory_unlock_all(key text) RETURNS int
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_unlock_all';
COMMENT ON FUNCTION conveyor.advisory_unlock_all(text) IS 'Releases every session-level hold this session has on the advisory lock of a text key; returns how many.';
CREATE FUNCTION conveyor.advisory_lock_held(key text) RETURNS boolean
    LANGUAGE C VOLATILE @PINNED@ AS 'MODULE_PATHNAME', 'conveyor_advisory_lock_held';
COMMENT ON FUNCTION conveyor.advisory_lock_held(text) IS 'True when any session of this database holds the advisory lock of a text key (read from pg_locks).';
CREATE FUNCTION conveyor.try_advisory_xact_lock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_try_advisory_xact_lock';
COMMENT ON FUNCTION conveyor.try_advisory_xact_lock(text) IS 'Takes the transaction-level advisory lock of a text key if it is free now; released at transaction end.';
CREATE FUNCTION conveyor.advisory_xact_lock(key text, timeout_ms int) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_xact_lock';
COMMENT ON FUNCTION conveyor.advisory_xact_lock(text,integer) IS 'Waits at most timeout_ms for the transaction-level advisory lock of a text key; false on timeout.';

-- ---- roles of locks, leases and entity states ----
GRANT EXECUTE ON FUNCTION conveyor.entity_stats(), conveyor.entity_state(text, text) TO conveyor_reader;
GRANT SELECT ON conveyor.locks_view, conveyor.lock_events TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.lock_acquire(text, text, int, text, jsonb),
    conveyor.lock_heartbeat(text, text, bigint),
    conveyor.lock_release(text, text, bigint),
    conveyor.lock_check(text, bigint),
    conveyor.locks_cleanup(int),
    conveyor.entity_acquire(text, text, int, text, int),
    conveyor.entity_complete(text, text, jsonb),
    conveyor.entity_fail(text, text, text, boolean),
    conveyor.entity_reset(text, int),
    conveyor.entity_inconsistencies(),
    conveyor.advisory_key(text),
    conveyor.try_advisory_lock(text), conveyor.advisory_lock(text, int),
    conveyor.advisory_unlock(text), conveyor.advisory_unlock_all(text), conveyor.advisory_lock_held(text),
    conveyor.try_advisory_xact_lock(text), conveyor.advisory_xact_lock(text, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_force_release(text), conveyor.entity_set(text, text, text, text, jsonb) TO conveyor_admin;
