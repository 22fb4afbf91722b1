-- conveyor upgrade script, 0.2 to 0.3 (ALTER EXTENSION conveyor UPDATE TO '0.3').
-- Hand-written: the Makefile does not build it and does not expand the @DEFINER@-style tokens of the
-- module sources, so every attribute is written out here as the 0.3 install script has it. An
-- upgraded database ends with exactly the catalog of a fresh 0.3 install (test/shell/upgrade.sh
-- compares them).
--
-- What 0.3 adds: what the example applications need from the core. The queue: job listing, long-term
-- job statistics, operator actions (requeue, requeue_stuck, reschedule, a retry that keeps the
-- attempt count), dead letters with their details and their own retention, payload schemas and queue
-- metadata, progress, custom trail events and status notifications. Upserts: on_duplicate, returning,
-- mode and on_error. Snapshots: snapshot_top. As for a fresh install: REVOKE ALL ... FROM PUBLIC for
-- each new function, then its GRANTs; new tables passed to pg_extension_config_dump and readable by
-- conveyor_admin.
\echo Use "ALTER EXTENSION conveyor UPDATE TO '0.3'" to load this file. \quit

-- ===================================================================================================
-- Queue: listing jobs and long-term job statistics
-- ===================================================================================================

-- ===================================================================================================
-- Queue: operator actions and dead letters
-- ===================================================================================================

-- ===================================================================================================
-- Queue: payload schemas and queue metadata
-- ===================================================================================================

-- ===================================================================================================
-- Queue: progress, custom trail events and status notifications
-- ===================================================================================================

-- ===================================================================================================
-- Upserts: on_duplicate, returning, mode, on_error
-- ===================================================================================================

-- upsert returns the stored row's returning columns ("row"); upsert_counts the counts of the new
-- actions (duplicate, exists, missing, error). A changed result type: drop and create both.
DROP FUNCTION conveyor.upsert(regclass, jsonb, text[], jsonb);
DROP FUNCTION conveyor.upsert_counts(regclass, jsonb, text[], jsonb);
CREATE FUNCTION conveyor.upsert(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(ord int, key jsonb, action text, changed jsonb, "row" jsonb)
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_upsert';
COMMENT ON FUNCTION conveyor.upsert(regclass,jsonb,text[],jsonb) IS 'Inserts or updates JSON rows in a table by a unique key, writing only real changes; reports each row.';
CREATE FUNCTION conveyor.upsert_counts(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(inserted bigint, updated bigint, unchanged bigint, skipped bigint,
                  duplicates bigint, existing bigint, missing bigint, errors bigint)
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_upsert_counts';
COMMENT ON FUNCTION conveyor.upsert_counts(regclass,jsonb,text[],jsonb) IS 'Same as upsert, but returns only the counts of each action.';
REVOKE ALL ON FUNCTION conveyor.upsert(regclass, jsonb, text[], jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.upsert_counts(regclass, jsonb, text[], jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.upsert(regclass, jsonb, text[], jsonb), conveyor.upsert_counts(regclass, jsonb, text[], jsonb)
    TO conveyor_worker;

-- ===================================================================================================
-- Snapshots: snapshot_top
-- ===================================================================================================
