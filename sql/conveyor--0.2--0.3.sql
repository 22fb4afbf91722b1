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
-- (with list_jobs and the listing indexes of job_history's partitions)

-- Added without a default, then filled, so that no "missing value" stays in the catalog (a fresh
-- install has none).
ALTER TABLE conveyor.queues ADD COLUMN status_notify boolean;
UPDATE conveyor.queues SET status_notify = false;
ALTER TABLE conveyor.queues ALTER COLUMN status_notify SET DEFAULT false, ALTER COLUMN status_notify SET NOT NULL;
ALTER TABLE conveyor.jobs ADD COLUMN percent numeric;
ALTER TABLE conveyor.jobs ADD COLUMN step text;
ALTER TABLE conveyor.job_history ADD COLUMN percent numeric;
ALTER TABLE conveyor.job_history ADD COLUMN step text;

-- The indexes list_jobs reads, on every existing partition of job_history (new partitions get them
-- from src/queue/partitions.cpp; a partition the 0.3 library made before this update has them).
DO $do$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'conveyor.job_history'::pg_catalog.regclass ORDER BY 1
    LOOP
        EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (queue_id, job_id)',
                                  part || '_queue_listing', part);
        EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (status, job_id) WHERE status <> ''completed''',
                                  part || '_status_listing', part);
        EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (group_key, job_id) WHERE group_key IS NOT NULL',
                                  part || '_group_listing', part);
        EXECUTE pg_catalog.format('CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (job_type, job_id) WHERE job_type IS NOT NULL',
                                  part || '_type_listing', part);
    END LOOP;
END
$do$;

CREATE FUNCTION conveyor.progress(job_id uuid, worker_id text, percent numeric DEFAULT NULL, step text DEFAULT NULL,
                                  details jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_progress';
COMMENT ON FUNCTION conveyor.progress(uuid,text,numeric,text,jsonb) IS 'Records the percent and step of a running job held by worker_id; a new step joins the trail; false if the lease is lost.';
CREATE FUNCTION conveyor.job_log(job_id uuid, worker_id text, event text, details jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_job_log';
COMMENT ON FUNCTION conveyor.job_log(uuid,text,text,jsonb) IS 'Appends a custom event, stored as log:<event>, to the trail of a job held by worker_id; false if the lease is lost.';
CREATE FUNCTION conveyor.list_jobs(queue text DEFAULT NULL, status text[] DEFAULT NULL, group_key text DEFAULT NULL,
                                   job_type text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                   until timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, queue text, status text, state text, job_type text, group_key text, dedup_key text,
                  payload jsonb, priority int, attempt int, max_attempts int, run_at timestamptz, worker_id text,
                  started_at timestamptz, lease_until timestamptz, last_error text, created_at timestamptz,
                  finished_at timestamptz, percent numeric, step text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_list_jobs';
COMMENT ON FUNCTION conveyor.list_jobs(text,text[],text,text,timestamp with time zone,timestamp with time zone,integer,uuid) IS 'Lists pending, running and finished jobs, newest first, by queue, status, group, type and creation time; pages by id.';

REVOKE ALL ON FUNCTION conveyor.progress(uuid, text, numeric, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.job_log(uuid, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.progress(uuid, text, numeric, text, jsonb), conveyor.job_log(uuid, text, text, jsonb)
    TO conveyor_worker;

-- ===================================================================================================
-- Upserts: on_duplicate, returning, mode, on_error
-- ===================================================================================================

-- ===================================================================================================
-- Snapshots: snapshot_top
-- ===================================================================================================
