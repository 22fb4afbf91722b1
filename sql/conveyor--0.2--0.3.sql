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

ALTER TABLE conveyor.queues ADD COLUMN payload_schema jsonb;
ALTER TABLE conveyor.queues ADD COLUMN display_name text;
ALTER TABLE conveyor.queues ADD COLUMN description text;
ALTER TABLE conveyor.queues ADD COLUMN metadata jsonb;

CREATE FUNCTION conveyor.validate_payload(queue text, payload jsonb)
    RETURNS TABLE(valid boolean, errors jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp
    SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_validate_payload';
COMMENT ON FUNCTION conveyor.validate_payload(text,jsonb) IS 'Checks a payload against a queue''s payload_schema and required keys without enqueuing; lists each violation.';
REVOKE ALL ON FUNCTION conveyor.validate_payload(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.validate_payload(text, jsonb) TO conveyor_reader;

-- ===================================================================================================
-- Queue: progress, custom trail events and status notifications
-- ===================================================================================================

-- ===================================================================================================
-- Upserts: on_duplicate, returning, mode, on_error
-- ===================================================================================================

-- ===================================================================================================
-- Snapshots: snapshot_top
-- ===================================================================================================
