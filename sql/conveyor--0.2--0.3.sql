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

ALTER TABLE conveyor.queues ADD COLUMN stats_retention_days integer NOT NULL DEFAULT 400;
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
COMMENT ON FUNCTION conveyor.job_stats(text,timestamp with time zone,timestamp with time zone,text,text) IS 'Returns per hour, day, week or month the finished, failed and dead jobs of a queue or of one group, with run and wait times, kept beyond history.';
REVOKE ALL ON FUNCTION conveyor.job_stats(text, timestamptz, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION conveyor.job_stats(text, timestamptz, timestamptz, text, text) TO conveyor_reader;

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
