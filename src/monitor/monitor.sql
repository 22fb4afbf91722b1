-- ===================================================================================================
-- Monitor: settings, the monitoring event log, worker issues, metrics with rollups, health
-- ===================================================================================================

-- ---- settings -------------------------------------------------------------------------------------
-- What an operator changed; every other key has its default (settings() lists keys, defaults and
-- descriptions, which live with their validation in src/monitor/settings.cpp).
CREATE TABLE conveyor.settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.settings', '');

-- Backends cache the settings; a change invalidates the table's relcache entry, which empties them.
CREATE FUNCTION conveyor.settings_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'conveyor_settings_changed';
COMMENT ON FUNCTION conveyor.settings_changed() IS 'Trigger function on conveyor.settings that makes every backend drop its cached settings; not for calling.';
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON conveyor.settings
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor.settings_changed();

-- ---- the monitoring event log ---------------------------------------------------------------------
-- One log every capability writes to, in the transaction of the change; partitioned by day
-- (events_pYYYYMMDD, each with its own indexes), dropped after retention.events_days.
CREATE SEQUENCE conveyor.event_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.events (
    event_id bigint NOT NULL,
    at       timestamptz NOT NULL,
    event    text NOT NULL,
    source   text NOT NULL,
    subject  text,
    details  jsonb
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.events', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.event_id_seq', '');

-- ---- worker issues --------------------------------------------------------------------------------
-- What workers report about themselves. One open row per (worker, type, message): a repeat bumps
-- occurrences and last_seen. Resolved rows are purged after retention.resolved_issues_days.
CREATE SEQUENCE conveyor.issue_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.worker_issues (
    issue_id    bigint PRIMARY KEY DEFAULT pg_catalog.nextval('conveyor.issue_id_seq'),
    worker_name text NOT NULL,
    issue_type  text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message     text NOT NULL,
    details     jsonb,
    occurrences integer NOT NULL DEFAULT 1,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text
);
CREATE UNIQUE INDEX worker_issues_open ON conveyor.worker_issues (worker_name, issue_type, pg_catalog.md5(message))
    WHERE resolved_at IS NULL;
CREATE INDEX worker_issues_resolved ON conveyor.worker_issues (resolved_at) WHERE resolved_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('conveyor.worker_issues', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.issue_id_seq', '');

-- ---- metrics --------------------------------------------------------------------------------------
-- Raw points, partitioned by day (metric_points_pYYYYMMDD), dropped after retention.metric_points_days.
-- xid is the writing transaction: aggregate_metrics re-rolls exactly the buckets that received points
-- its previous run could not see (those of transactions at or after that run's snapshot xmin).
CREATE TABLE conveyor.metric_points (
    metric text NOT NULL,
    value  double precision NOT NULL,
    tags   jsonb NOT NULL,
    at     timestamptz NOT NULL,
    xid    xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_points', '');

-- Hourly and daily rollups per metric and tag set, recomputed from the raw points of a bucket.
CREATE TABLE conveyor.metric_rollups (
    metric       text NOT NULL,
    period       text NOT NULL CHECK (period IN ('hour', 'day')),
    bucket_start timestamptz NOT NULL,
    tag_set      jsonb NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    avg          double precision NOT NULL,
    sum          double precision NOT NULL,
    count        bigint NOT NULL,
    p50          double precision NOT NULL,
    p95          double precision NOT NULL,
    p99          double precision NOT NULL,
    rolled_at    timestamptz NOT NULL,
    PRIMARY KEY (metric, period, bucket_start, tag_set)
);
CREATE INDEX metric_rollups_age ON conveyor.metric_rollups (period, bucket_start);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_rollups', '');

-- Per period: the snapshot xmin of the last rollup (points of transactions before it were all seen).
CREATE TABLE conveyor.metric_rollup_state (
    period    text PRIMARY KEY,
    next_xmin xid8 NOT NULL,
    rolled_at timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_rollup_state', '');

-- ---- settings functions ---------------------------------------------------------------------------
CREATE FUNCTION conveyor.settings()
    RETURNS TABLE(key text, value text, default_value text, description text)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_settings';
COMMENT ON FUNCTION conveyor.settings() IS 'Every setting with its value, default and description.';
CREATE FUNCTION conveyor.get_setting(key text) RETURNS text
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_get_setting';
COMMENT ON FUNCTION conveyor.get_setting(text) IS 'The value of one setting (its default unless changed).';
CREATE FUNCTION conveyor.set_setting(key text, value text) RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_set_setting';
COMMENT ON FUNCTION conveyor.set_setting(text,text) IS 'Changes a setting after validating it; NULL restores the default.';

-- ---- events ---------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.events(since timestamptz DEFAULT pg_catalog.now() - interval '1 hour',
                                event_type text DEFAULT NULL, lim int DEFAULT 1000)
    RETURNS TABLE(event_id bigint, at timestamptz, event text, source text, subject text, details jsonb)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_events';
COMMENT ON FUNCTION conveyor.events(timestamp with time zone,text,integer) IS 'Monitoring events since a time, oldest first, optionally of one type, at most lim.';

-- ---- worker issues --------------------------------------------------------------------------------
CREATE FUNCTION conveyor.report_issue(worker_name text, issue_type text, severity text, message text,
                                      details jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_report_issue';
COMMENT ON FUNCTION conveyor.report_issue(text,text,text,text,jsonb) IS 'Records a worker issue (or counts a repeat of the same open one) and returns its id.';
CREATE FUNCTION conveyor.resolve_issue(issue_id bigint, resolution text) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_resolve_issue';
COMMENT ON FUNCTION conveyor.resolve_issue(bigint,text) IS 'Marks an open worker issue resolved; false if it was already resolved.';
CREATE FUNCTION conveyor.worker_issues(resolved boolean DEFAULT false)
    RETURNS TABLE(issue_id bigint, worker_name text, issue_type text, severity text, message text, details jsonb,
                  occurrences int, first_seen timestamptz, last_seen timestamptz, resolved_at timestamptz,
                  resolution text)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_worker_issues';
COMMENT ON FUNCTION conveyor.worker_issues(boolean) IS 'Worker issues, most recent first: open ones (false), resolved ones (true) or all (NULL).';
CREATE FUNCTION conveyor.worker_issue_stats()
    RETURNS TABLE(worker_name text, issue_type text, severity text, open_issues bigint, resolved_issues bigint,
                  occurrences bigint, last_seen timestamptz)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_worker_issue_stats';
COMMENT ON FUNCTION conveyor.worker_issue_stats() IS 'Worker issues counted per worker, type and severity.';

-- ---- metrics --------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.record_metric(name text, value double precision, tags jsonb DEFAULT '{}') RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_record_metric';
COMMENT ON FUNCTION conveyor.record_metric(text,double precision,jsonb) IS 'Records one metric point, now, with its tags.';
CREATE FUNCTION conveyor.record_metrics(points jsonb) RETURNS int
    LANGUAGE C VOLATILE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_record_metrics';
COMMENT ON FUNCTION conveyor.record_metrics(jsonb) IS 'Records an array of {"name", "value", "tags"} points in one statement; returns how many.';
CREATE FUNCTION conveyor.aggregate_metrics(period text DEFAULT 'hour') RETURNS jsonb
    LANGUAGE C VOLATILE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_aggregate_metrics';
COMMENT ON FUNCTION conveyor.aggregate_metrics(text) IS 'Rolls raw points into hourly or daily rollups (only buckets with new points); idempotent.';
CREATE FUNCTION conveyor.metrics(name text, since timestamptz, until timestamptz, period text DEFAULT 'hour',
                                 tags jsonb DEFAULT NULL)
    RETURNS TABLE(bucket_start timestamptz, metric text, tag_set jsonb, min double precision, max double precision,
                  avg double precision, sum double precision, count bigint, p50 double precision,
                  p95 double precision, p99 double precision)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_metrics';
COMMENT ON FUNCTION conveyor.metrics(text,timestamp with time zone,timestamp with time zone,text,jsonb) IS 'Rollups of a metric in [since, until), per bucket and tag set; tags filters by containment.';

-- ---- health ---------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.health() RETURNS jsonb
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_health';
COMMENT ON FUNCTION conveyor.health() IS 'One document: the health of queues, locks, entities, workers, costs and the xmin horizon, and the worst of them.';

-- ===================================================================================================
-- Audit: who called which admin action (and, when audit.worker_calls is on, which worker call), with
-- what arguments and result; written by the call itself, in its transaction (src/monitor/audit.cpp)
-- ===================================================================================================

-- Partitioned by day (audit_log_pYYYYMMDD, each with its own indexes), dropped after
-- retention.audit_days. current_user_name is the role that called (not conveyor's owner, which
-- SECURITY DEFINER functions run as).
CREATE SEQUENCE conveyor.audit_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.audit_log (
    audit_id          bigint NOT NULL,
    at                timestamptz NOT NULL,
    session_user_name text NOT NULL,
    current_user_name text NOT NULL,
    client_addr       inet,
    application_name  text,
    function_name     text NOT NULL,
    arguments         jsonb NOT NULL,
    result            jsonb
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.audit_id_seq', '');

CREATE FUNCTION conveyor.audit(since timestamptz DEFAULT pg_catalog.now() - interval '1 day', actor text DEFAULT NULL,
                               function text DEFAULT NULL)
    RETURNS TABLE(audit_id bigint, at timestamptz, session_user_name text, current_user_name text, client_addr inet,
                  application_name text, function_name text, arguments jsonb, result jsonb)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_audit';
COMMENT ON FUNCTION conveyor.audit(timestamp with time zone,text,text) IS 'Audited calls since a time, oldest first, optionally of one session user and of one function.';
CREATE FUNCTION conveyor.audit_record(function_name text, arguments jsonb, result jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_audit_record';
COMMENT ON FUNCTION conveyor.audit_record(text,jsonb,jsonb) IS 'Records a call of an application''s own function in the audit log, with the caller context conveyor computes.';

-- ---- roles of the monitor ----
GRANT EXECUTE ON FUNCTION conveyor.settings(), conveyor.get_setting(text), conveyor.events(timestamptz, text, int),
    conveyor.worker_issues(boolean), conveyor.worker_issue_stats(),
    conveyor.metrics(text, timestamptz, timestamptz, text, jsonb), conveyor.health()
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.report_issue(text, text, text, text, jsonb), conveyor.resolve_issue(bigint, text),
    conveyor.record_metric(text, double precision, jsonb), conveyor.record_metrics(jsonb),
    conveyor.audit_record(text, jsonb, jsonb)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.set_setting(text, text), conveyor.aggregate_metrics(text),
    conveyor.audit(timestamptz, text, text) TO conveyor_admin;
