-- conveyor upgrade script, 0.2 to 0.3 (ALTER EXTENSION conveyor UPDATE TO '0.3').
-- Hand-written: the Makefile does not build it and does not expand the @DEFINER@-style tokens of the
-- module sources, so every attribute is written out here as the 0.3 install script has it. An
-- upgraded database ends with exactly the catalog of a fresh 0.3 install (test/shell/upgrade.sh
-- compares them).
--
-- What 0.3 adds: what the example applications need from the core. The queue: job listing, long-term
-- job statistics, operator actions (requeue, requeue_stuck, reschedule, a retry that keeps the
-- attempt count), dead letters with their details and their own retention, payload schemas and queue
-- metadata, progress, custom trail events, status notifications, and wait_for and stop_waiting for a
-- listening session apart from the pooled ones that dequeue. Upserts: on_duplicate, returning,
-- mode and on_error. Snapshots: snapshot_top. Recurring jobs on pg_cron: schedule_enqueue,
-- unschedule_enqueue, list_schedules and run_schedule. As for a fresh install: REVOKE ALL ... FROM PUBLIC for
-- each new function, then its GRANTs; new tables passed to pg_extension_config_dump and readable by
-- conveyor_admin.
\echo Use "ALTER EXTENSION conveyor UPDATE TO '0.3'" to load this file. \quit

-- ===================================================================================================
-- Queue: listing jobs and long-term job statistics
-- ===================================================================================================

-- Added without a default and then filled, so the catalog holds no "missing value" a fresh install lacks.
ALTER TABLE conveyor.queues ADD COLUMN stats_retention_days integer;
UPDATE conveyor.queues SET stats_retention_days = 400;
ALTER TABLE conveyor.queues ALTER COLUMN stats_retention_days SET DEFAULT 400,
    ALTER COLUMN stats_retention_days SET NOT NULL;
-- The finishing transaction of each history row: job_stats' fold finds new rows by it. Existing rows
-- take this update's id (the volatile default rewrites the table once), so the first fold after the
-- update computes the statistics of the whole history kept so far.
ALTER TABLE conveyor.job_history ADD COLUMN xid xid8 DEFAULT pg_catalog.pg_current_xact_id();
DO $upgrade$
DECLARE part record;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'conveyor.job_history'::pg_catalog.regclass
    LOOP
        EXECUTE pg_catalog.format('CREATE INDEX %I ON conveyor.%I (xid)', part.relname || '_xid', part.relname);
    END LOOP;
END
$upgrade$;

CREATE TABLE conveyor.job_stats (
    queue_id          integer NOT NULL,
    grouped           boolean NOT NULL,
    group_key         text NOT NULL,
    bucket_start      timestamptz NOT NULL,
    completed         bigint NOT NULL,
    failed            bigint NOT NULL,
    dead              bigint NOT NULL,
    cancelled         bigint NOT NULL,
    run_count         bigint NOT NULL,
    run_seconds       double precision NOT NULL,
    p95_run_seconds   double precision,
    queued_count      bigint NOT NULL,
    queue_seconds     double precision NOT NULL,
    last_completed_at timestamptz,
    trailing_dead     bigint NOT NULL,
    PRIMARY KEY (queue_id, grouped, group_key, bucket_start)
);
CREATE INDEX job_stats_bucket ON conveyor.job_stats (bucket_start);
CREATE TABLE conveyor.job_stats_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_xmin xid8 NOT NULL,
    folded_at timestamptz NOT NULL
);
CREATE TABLE conveyor.job_stats_marks (
    taken_at      timestamptz PRIMARY KEY,
    snapshot_xmax xid8 NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats_state', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats_marks', '');
GRANT SELECT ON conveyor.job_stats, conveyor.job_stats_state, conveyor.job_stats_marks TO conveyor_admin;

CREATE FUNCTION conveyor.job_stats(queue text, since timestamptz, until timestamptz, bucket text DEFAULT 'day',
                                   group_key text DEFAULT NULL)
    RETURNS TABLE(bucket_start timestamptz, completed bigint, failed bigint, dead bigint, cancelled bigint,
                  avg_run_seconds numeric, p95_run_seconds numeric, avg_queue_seconds numeric,
                  last_completed_at timestamptz, consecutive_failures bigint)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp
    SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_job_stats';
COMMENT ON FUNCTION conveyor.job_stats(text,timestamp with time zone,timestamp with time zone,text,text) IS 'Counts the finished, failed and dead jobs of a queue or group per hour, day, week or month, with run and wait times.';
REVOKE ALL ON FUNCTION conveyor.job_stats(text, timestamptz, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_stats(text, timestamptz, timestamptz, text, text) TO conveyor_reader;

-- ===================================================================================================
-- Queue: operator actions and dead letters
-- ===================================================================================================

-- Dead jobs keep their own retention, and their reason, details and resolution.
-- Added without a default and then filled, so the catalog holds no "missing value" a fresh install lacks.
ALTER TABLE conveyor.queues ADD COLUMN dead_retention_days integer;
UPDATE conveyor.queues SET dead_retention_days = 30;
ALTER TABLE conveyor.queues ALTER COLUMN dead_retention_days SET DEFAULT 30,
    ALTER COLUMN dead_retention_days SET NOT NULL;
ALTER TABLE conveyor.job_history ADD COLUMN reason text, ADD COLUMN details jsonb, ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolution text, ADD COLUMN resolved_by text;
-- dead_jobs' index on every existing history partition (src/queue/partitions.cpp makes it on new ones,
-- including those this conveyor.so made before the update: hence IF NOT EXISTS).
DO $dead_index$
DECLARE
    part name;
BEGIN
    FOR part IN SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'conveyor.job_history'::regclass LOOP
        EXECUTE pg_catalog.format(
            'CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (queue_id, finished_at DESC, job_id DESC) WHERE status = ''dead''',
            part || '_dead', part);
    END LOOP;
END
$dead_index$;

-- dead_letter keeps details; retry keeps the attempt count unless reset_attempts.
DROP FUNCTION conveyor.dead_letter(uuid, text);
CREATE FUNCTION conveyor.dead_letter(job_id uuid, reason text, details jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_dead_letter';
COMMENT ON FUNCTION conveyor.dead_letter(uuid,text,jsonb) IS 'Moves a pending or running job to history as dead, with a reason and optional details.';
REVOKE ALL ON FUNCTION conveyor.dead_letter(uuid, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.dead_letter(uuid, text, jsonb) TO conveyor_admin;

-- ack's retry => false ends a failure the worker knows is final: the job dies at once. A worker's
-- calls on a lease (ack, heartbeat, release, progress, job_log) may name the attempt dequeue
-- reported: they then act on that lease only, not on a later lease of the job to the same worker.
DROP FUNCTION conveyor.ack(uuid, boolean, text, jsonb, text);
CREATE FUNCTION conveyor.ack(job_id uuid, success boolean, error_message text DEFAULT NULL,
                             stats jsonb DEFAULT NULL, worker_id text DEFAULT NULL, retry boolean DEFAULT true,
                             attempt int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_ack';
COMMENT ON FUNCTION conveyor.ack(uuid,boolean,text,jsonb,text,boolean,integer) IS 'Acknowledges a running job: success completes it; failure retries it later, or makes it dead (at once with retry false).';
REVOKE ALL ON FUNCTION conveyor.ack(uuid, boolean, text, jsonb, text, boolean, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.ack(uuid, boolean, text, jsonb, text, boolean, int) TO conveyor_worker;
DROP FUNCTION conveyor.heartbeat(uuid, text, int);
CREATE FUNCTION conveyor.heartbeat(job_id uuid, worker_id text, extend_seconds int DEFAULT NULL,
                                   attempt int DEFAULT NULL) RETURNS timestamptz
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_heartbeat';
COMMENT ON FUNCTION conveyor.heartbeat(uuid,text,integer,integer) IS 'Extends the lease of a running job held by worker_id; NULL when the worker no longer holds it.';
REVOKE ALL ON FUNCTION conveyor.heartbeat(uuid, text, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.heartbeat(uuid, text, int, int) TO conveyor_worker;
DROP FUNCTION conveyor.release(uuid, text, int);
CREATE FUNCTION conveyor.release(job_id uuid, worker_id text, delay_seconds int DEFAULT 0,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_release';
COMMENT ON FUNCTION conveyor.release(uuid,text,integer,integer) IS 'Gives a running job back to the queue without counting the attempt, due after delay_seconds.';
REVOKE ALL ON FUNCTION conveyor.release(uuid, text, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.release(uuid, text, int, int) TO conveyor_worker;

DROP FUNCTION conveyor.retry(uuid, int);
CREATE FUNCTION conveyor.requeue(job_id uuid, delay_seconds int DEFAULT 0) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_requeue';
COMMENT ON FUNCTION conveyor.requeue(uuid,integer) IS 'Gives a running job back to the queue without its worker, due after delay_seconds; false when the job is not running.';
CREATE FUNCTION conveyor.requeue_stuck(queue text, older_than interval) RETURNS SETOF uuid
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_requeue_stuck';
COMMENT ON FUNCTION conveyor.requeue_stuck(text,interval) IS 'Requeues every job of a queue that has been running longer than older_than; returns their ids.';
CREATE FUNCTION conveyor.reschedule(job_id uuid, run_at timestamptz) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_reschedule';
COMMENT ON FUNCTION conveyor.reschedule(uuid,timestamp with time zone) IS 'Moves a pending or scheduled job to run at run_at; false when the job is running or finished.';
CREATE FUNCTION conveyor.retry(job_id uuid, delay_seconds int DEFAULT NULL, reset_attempts boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_retry';
COMMENT ON FUNCTION conveyor.retry(uuid,integer,boolean) IS 'Runs a dead or cancelled job again, or a job in backoff now; keeps its attempt count unless reset_attempts.';
CREATE FUNCTION conveyor.dead_jobs(queue text, since timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, attempt int, max_attempts int,
                  last_error text, reason text, details jsonb, worker_id text, created_at timestamptz,
                  finished_at timestamptz, resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_dead_jobs';
COMMENT ON FUNCTION conveyor.dead_jobs(text,timestamp with time zone,integer,uuid) IS 'Lists the dead jobs of a queue newest first, a page at a time, with their last error, reason, details and resolution.';
CREATE FUNCTION conveyor.resolve_dead(job_id uuid, resolution text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_resolve_dead';
COMMENT ON FUNCTION conveyor.resolve_dead(uuid,text) IS 'Marks a dead job handled with a resolution, when and by whom; false when it is not dead or already resolved.';
REVOKE ALL ON FUNCTION conveyor.requeue(uuid, int), conveyor.requeue_stuck(text, interval),
    conveyor.reschedule(uuid, timestamptz), conveyor.retry(uuid, int, boolean),
    conveyor.dead_jobs(text, timestamptz, int, uuid), conveyor.resolve_dead(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.dead_jobs(text, timestamptz, int, uuid) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.requeue(uuid, int), conveyor.requeue_stuck(text, interval), conveyor.reschedule(uuid, timestamptz),
    conveyor.retry(uuid, int, boolean), conveyor.resolve_dead(uuid, text)
    TO conveyor_admin;

-- ===================================================================================================
-- Queue: waiting for jobs on a session of its own (behind a transaction-mode pooler)
-- ===================================================================================================

CREATE FUNCTION conveyor.wait_for(queues text[]) RETURNS text[]
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp
    SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_wait_for';
COMMENT ON FUNCTION conveyor.wait_for(text[]) IS 'Makes this session LISTEN and wait on these queues; returns those with due jobs already, to dequeue at once.';
CREATE FUNCTION conveyor.stop_waiting(queues text[] DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp
    AS 'MODULE_PATHNAME', 'conveyor_stop_waiting';
COMMENT ON FUNCTION conveyor.stop_waiting(text[]) IS 'Ends this session''s waits on these queues (all when NULL), so producers stop notifying it; returns how many it ended.';
REVOKE ALL ON FUNCTION conveyor.wait_for(text[]), conveyor.stop_waiting(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.wait_for(text[]), conveyor.stop_waiting(text[]) TO conveyor_worker;

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
                                  details jsonb DEFAULT NULL, attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_progress';
COMMENT ON FUNCTION conveyor.progress(uuid,text,numeric,text,jsonb,integer) IS 'Records the percent and step of a running job held by worker_id; a new step joins the trail; false if the lease is lost.';
CREATE FUNCTION conveyor.job_log(job_id uuid, worker_id text, event text, details jsonb DEFAULT NULL,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_job_log';
COMMENT ON FUNCTION conveyor.job_log(uuid,text,text,jsonb,integer) IS 'Appends a custom event, stored as log:<event>, to the trail of a job held by worker_id; false if the lease is lost.';
CREATE FUNCTION conveyor.list_jobs(queue text DEFAULT NULL, status text[] DEFAULT NULL, group_key text DEFAULT NULL,
                                   job_type text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                   until timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, queue text, status text, state text, job_type text, group_key text, dedup_key text,
                  payload jsonb, priority int, attempt int, max_attempts int, run_at timestamptz, worker_id text,
                  started_at timestamptz, lease_until timestamptz, last_error text, created_at timestamptz,
                  finished_at timestamptz, percent numeric, step text, reason text, details jsonb,
                  resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_list_jobs';
COMMENT ON FUNCTION conveyor.list_jobs(text,text[],text,text,timestamp with time zone,timestamp with time zone,integer,uuid) IS 'Lists pending, running and finished jobs, newest first, by queue, status, group, type and creation time; pages by id.';

REVOKE ALL ON FUNCTION conveyor.progress(uuid, text, numeric, text, jsonb, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.job_log(uuid, text, text, jsonb, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.progress(uuid, text, numeric, text, jsonb, int), conveyor.job_log(uuid, text, text, jsonb, int)
    TO conveyor_worker;

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

CREATE TABLE conveyor.snapshot_metrics (
    series       text NOT NULL,
    period_start timestamptz NOT NULL,
    metric       text NOT NULL,
    entity_id    text NOT NULL,
    value        numeric NOT NULL,
    delta        numeric,
    delta_day    numeric,
    PRIMARY KEY (series, period_start, metric, entity_id)
);
CREATE INDEX snapshot_metrics_delta ON conveyor.snapshot_metrics (series, period_start, metric, delta DESC NULLS LAST);
CREATE INDEX snapshot_metrics_delta_day ON conveyor.snapshot_metrics (series, period_start, metric, delta_day DESC NULLS LAST);
CREATE INDEX snapshot_metrics_value ON conveyor.snapshot_metrics (series, period_start, metric, value DESC);
SELECT pg_catalog.pg_extension_config_dump('conveyor.snapshot_metrics', '');
GRANT SELECT ON conveyor.snapshot_metrics TO conveyor_admin;
-- The numeric metrics of the snapshots taken before the update.
INSERT INTO conveyor.snapshot_metrics (series, period_start, metric, entity_id, value, delta, delta_day)
SELECT s.series, s.period_start, m.key, s.entity_id, m.value::pg_catalog.numeric,
       (s.delta OPERATOR(pg_catalog.->>) m.key)::pg_catalog.numeric, (s.delta_day OPERATOR(pg_catalog.->>) m.key)::pg_catalog.numeric
FROM conveyor.snapshots s CROSS JOIN LATERAL pg_catalog.jsonb_each(s.metrics) AS m
WHERE pg_catalog.jsonb_typeof(m.value) OPERATOR(pg_catalog.=) 'number';

CREATE FUNCTION conveyor.snapshot_top(series text, period_start timestamptz, metric text, lim int DEFAULT 10,
                                      by text DEFAULT 'delta')
    RETURNS TABLE(entity_id text, value numeric, delta numeric, delta_day numeric)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp
    SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
    AS 'MODULE_PATHNAME', 'conveyor_snapshot_top';
COMMENT ON FUNCTION conveyor.snapshot_top(text,timestamp with time zone,text,integer,text) IS 'Returns the entities of a series with the largest delta, delta_day or value of one metric in one period, largest first.';
REVOKE ALL ON FUNCTION conveyor.snapshot_top(text, timestamptz, text, int, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.snapshot_top(text, timestamptz, text, int, text) TO conveyor_reader;

-- ===================================================================================================
-- Recurring jobs on pg_cron
-- ===================================================================================================

CREATE TABLE conveyor.schedules (
    name         text PRIMARY KEY,
    queue        text NOT NULL,
    payload      jsonb NOT NULL,
    job_type     text,
    group_key    text,
    priority     int NOT NULL,
    max_attempts int,
    last_tick    timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.schedules', '');
GRANT SELECT ON conveyor.schedules TO conveyor_admin;

CREATE FUNCTION conveyor.schedule_enqueue(name text, schedule text, queue text, payload jsonb DEFAULT '{}',
                                          job_type text DEFAULT NULL, group_key text DEFAULT NULL,
                                          priority int DEFAULT 5, max_attempts int DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_schedule_enqueue';
COMMENT ON FUNCTION conveyor.schedule_enqueue(text,text,text,jsonb,text,text,integer,integer) IS 'Schedules a job to be enqueued with pg_cron at most once per tick, or changes that schedule; returns the pg_cron job id.';
CREATE FUNCTION conveyor.unschedule_enqueue(name text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_unschedule_enqueue';
COMMENT ON FUNCTION conveyor.unschedule_enqueue(text) IS 'Removes a recurring job''s schedule and its pg_cron job; false if there was none.';
CREATE FUNCTION conveyor.list_schedules()
    RETURNS TABLE(name text, schedule text, active boolean, queue text, payload jsonb, job_type text,
                  group_key text, priority int, max_attempts int, last_tick timestamptz, last_job_id uuid,
                  cron_job_id bigint, created_at timestamptz, updated_at timestamptz)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_list_schedules';
COMMENT ON FUNCTION conveyor.list_schedules() IS 'Lists the recurring jobs with their pg_cron schedule, what they enqueue and the last tick that enqueued.';
CREATE FUNCTION conveyor.run_schedule(name text) RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_run_schedule';
COMMENT ON FUNCTION conveyor.run_schedule(text) IS 'Enqueues a schedule''s job for the current tick unless that tick already enqueued; pg_cron calls it.';
REVOKE ALL ON FUNCTION conveyor.schedule_enqueue(text, text, text, jsonb, text, text, int, int),
    conveyor.unschedule_enqueue(text), conveyor.list_schedules(), conveyor.run_schedule(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.list_schedules() TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.schedule_enqueue(text, text, text, jsonb, text, text, int, int),
    conveyor.unschedule_enqueue(text) TO conveyor_admin;

-- ===================================================================================================
-- Audit: applications' own rows
-- ===================================================================================================

CREATE FUNCTION conveyor.audit_record(function_name text, arguments jsonb, result jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_audit_record';
COMMENT ON FUNCTION conveyor.audit_record(text,jsonb,jsonb) IS 'Records a call of an application''s own function in the audit log, with the caller context conveyor computes.';
REVOKE ALL ON FUNCTION conveyor.audit_record(text, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.audit_record(text, jsonb, jsonb) TO conveyor_worker;

-- ===================================================================================================
-- Snapshots: skip_unchanged
-- ===================================================================================================

-- A new last parameter: drop the 0.2 signatures and create the new ones.
DROP FUNCTION conveyor.snapshot(text, text, jsonb, timestamptz, text, text);
DROP FUNCTION conveyor.snapshot_batch(text, jsonb, text, text);
CREATE FUNCTION conveyor.snapshot(series text, entity_id text, metrics jsonb, captured_at timestamptz DEFAULT now(),
                                  period text DEFAULT 'day', tz text DEFAULT 'UTC', skip_unchanged boolean DEFAULT false)
    RETURNS TABLE(snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_snapshot';
COMMENT ON FUNCTION conveyor.snapshot(text,text,jsonb,timestamp with time zone,text,text,boolean) IS 'Records a capture of an entity''s metrics in its period''s row and returns the deltas to earlier periods.';
CREATE FUNCTION conveyor.snapshot_batch(series text, captures jsonb, period text DEFAULT 'day', tz text DEFAULT 'UTC',
                                        skip_unchanged boolean DEFAULT false)
    RETURNS TABLE(ord int, entity_id text, snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_snapshot_batch';
COMMENT ON FUNCTION conveyor.snapshot_batch(text,jsonb,text,text,boolean) IS 'Records captures of many entities of one series in one call, all or none.';
REVOKE ALL ON FUNCTION conveyor.snapshot(text, text, jsonb, timestamptz, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION conveyor.snapshot_batch(text, jsonb, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.snapshot(text, text, jsonb, timestamptz, text, text, boolean),
    conveyor.snapshot_batch(text, jsonb, text, text, boolean) TO conveyor_worker;

-- ===================================================================================================
-- Entity states written directly
-- ===================================================================================================

CREATE FUNCTION conveyor.entity_set(entity_type text, entity_id text, state text, error text DEFAULT NULL,
                                    metadata jsonb DEFAULT NULL)
    RETURNS text
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_set';
COMMENT ON FUNCTION conveyor.entity_set(text,text,text,text,jsonb) IS 'Puts an entity in any state, creating it when missing; returns the state it replaced, NULL for a new entity.';
REVOKE ALL ON FUNCTION conveyor.entity_set(text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.entity_set(text, text, text, text, jsonb) TO conveyor_admin;

-- ===================================================================================================
-- Retention: applications' own tables purged by conveyor.maintain()
-- ===================================================================================================

CREATE TABLE conveyor.retention_rules (
    target       regclass PRIMARY KEY,
    time_column  text NOT NULL,
    keep         interval NOT NULL,
    batch        integer NOT NULL CHECK (batch > 0),
    table_owner  text NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    last_run_at  timestamptz,
    last_deleted bigint,
    last_error   text
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.retention_rules', '');
GRANT SELECT ON conveyor.retention_rules TO conveyor_admin;

CREATE FUNCTION conveyor.retention_define(target regclass, time_column text, keep interval, batch integer DEFAULT 10000)
    RETURNS boolean
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_retention_define';
COMMENT ON FUNCTION conveyor.retention_define(regclass,text,interval,integer) IS 'Has maintain() delete a table''s rows older than keep, batch rows per run; true if new, false if replaced.';
CREATE FUNCTION conveyor.retention_drop(target regclass) RETURNS boolean
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_retention_drop';
COMMENT ON FUNCTION conveyor.retention_drop(regclass) IS 'Removes a table''s retention rule; false if it had none.';
CREATE FUNCTION conveyor.retention_rules()
    RETURNS TABLE(target regclass, time_column text, keep interval, batch integer, table_owner text,
                  current_owner text, created_at timestamptz, created_by text, last_run_at timestamptz,
                  last_deleted bigint, last_error text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_retention_rules';
COMMENT ON FUNCTION conveyor.retention_rules() IS 'Lists the retention rules with their table''s owner, the last run and the rows it deleted.';
REVOKE ALL ON FUNCTION conveyor.retention_define(regclass, text, interval, integer), conveyor.retention_drop(regclass),
    conveyor.retention_rules() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.retention_rules() TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.retention_define(regclass, text, interval, integer),
    conveyor.retention_drop(regclass) TO conveyor_admin;

-- ===================================================================================================
-- Queue: the 'enqueued' event read from the job
-- ===================================================================================================

-- Enqueueing no longer writes an 'enqueued' row to job_events: job_events() derives the event from
-- the job, by the run_at it was enqueued with (NULL when its queue's trail was 'failures'). Jobs
-- enqueued before the update keep their stored event and have NULL here, so each shows once.
ALTER TABLE conveyor.jobs ADD COLUMN enqueued_run_at timestamptz;
ALTER TABLE conveyor.job_history ADD COLUMN enqueued_run_at timestamptz;

-- ===================================================================================================
-- Health: the xmin horizon (what holds back cleanup of conveyor's tables) is a section of health()
-- ===================================================================================================

-- The function is unchanged but for what its C body reports; its new thresholds are settings defined
-- in the library (health.horizon_*), so no row is needed here.
COMMENT ON FUNCTION conveyor.health() IS 'One document: the health of queues, locks, entities, workers, costs and the xmin horizon, and the worst of them.';

-- ===================================================================================================
-- Queue: one index fewer on every history partition
-- ===================================================================================================

-- (queue_id, status) WHERE status <> 'completed' served no reader (dead_jobs, list_jobs and
-- maintain() read the partitions' other indexes) and cost every finishing job its upkeep. New
-- partitions are made without it (src/queue/partitions.cpp); existing ones lose it here.
DO $drop_index$
DECLARE
    idx name;
BEGIN
    FOR idx IN SELECT x.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                 JOIN pg_catalog.pg_index ix ON ix.indrelid = c.oid JOIN pg_catalog.pg_class x ON x.oid = ix.indexrelid
               WHERE i.inhparent = 'conveyor.job_history'::pg_catalog.regclass
                 AND x.relname OPERATOR(pg_catalog.=) (c.relname || '_unfinished')::name ORDER BY 1 LOOP
        EXECUTE pg_catalog.format('DROP INDEX conveyor.%I', idx);
    END LOOP;
END
$drop_index$;

-- ===================================================================================================
-- Shards: every new id carries the server's shard number (setting shard.number), read by uuid_shard
-- ===================================================================================================

-- The setting itself is defined in the library (shard.number, 0 by default), so no row is needed here.
CREATE FUNCTION conveyor.uuid_shard(id uuid) RETURNS int
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_shard';
COMMENT ON FUNCTION conveyor.uuid_shard(uuid) IS 'Returns the shard number carried in bytes 9-10 of a version 7 UUID made on a shard (shard.number).';
REVOKE ALL ON FUNCTION conveyor.uuid_shard(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.uuid_shard(uuid) TO conveyor_reader;
