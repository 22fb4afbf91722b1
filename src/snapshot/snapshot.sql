-- ===================================================================================================
-- Period snapshots with deltas
-- ===================================================================================================

-- One row per series, entity and period. period_start is the start of the period in the capture's
-- time zone ('hour', 'day'), or the capture time itself ('none'). The primary key is the only index:
-- the period's row, the previous period's, the day-ago snapshot and every read of a series are
-- ranges of it.
CREATE TABLE conveyor.snapshots (
    series            text NOT NULL,
    entity_id         text NOT NULL,
    period_start      timestamptz NOT NULL,
    snapshot_id       uuid NOT NULL,           -- UUIDv7 of the period's first capture
    period            text NOT NULL CHECK (period IN ('hour', 'day', 'none')),
    tz                text NOT NULL,
    first_captured_at timestamptz NOT NULL,
    captured_at       timestamptz NOT NULL,    -- the period's latest capture, whose metrics these are
    captures          integer NOT NULL,        -- captures that changed the row (the first included)
    metrics           jsonb NOT NULL,
    delta             jsonb,                   -- numeric metrics minus the previous period's last values
    delta_day         jsonb,                   -- ... minus the latest snapshot at least 24 hours older
    PRIMARY KEY (series, entity_id, period_start)
) WITH (fillfactor = 90);
SELECT pg_catalog.pg_extension_config_dump('conveyor.snapshots', '');

-- The numeric metrics of every snapshot, one row each, written with it by snapshot() and
-- snapshot_batch(): snapshot_top reads the largest delta, delta_day or value of one metric in one
-- period from an index instead of scanning the series (metric names are free-form, so no expression
-- index on snapshots could serve every metric).
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

-- {"metric": new - old} for every metric that is a number in both; NULL when there is no old.
CREATE FUNCTION conveyor.metrics_delta(new jsonb, old jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN old IS NULL THEN NULL ELSE COALESCE(
        (SELECT pg_catalog.jsonb_object_agg(n.key, n.value::pg_catalog.numeric OPERATOR(pg_catalog.-) o.value::pg_catalog.numeric)
         FROM pg_catalog.jsonb_each(new) AS n JOIN pg_catalog.jsonb_each(old) AS o ON o.key OPERATOR(pg_catalog.=) n.key
         WHERE pg_catalog.jsonb_typeof(n.value) OPERATOR(pg_catalog.=) 'number'
           AND pg_catalog.jsonb_typeof(o.value) OPERATOR(pg_catalog.=) 'number'),
        '{}'::pg_catalog.jsonb) END;
COMMENT ON FUNCTION conveyor.metrics_delta(jsonb,jsonb) IS 'Returns new minus old for every metric that is a number in both JSON objects; NULL when old is NULL.';

CREATE FUNCTION conveyor.snapshot(series text, entity_id text, metrics jsonb, captured_at timestamptz DEFAULT now(),
                                  period text DEFAULT 'day', tz text DEFAULT 'UTC', skip_unchanged boolean DEFAULT false)
    RETURNS TABLE(snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_snapshot';
COMMENT ON FUNCTION conveyor.snapshot(text,text,jsonb,timestamp with time zone,text,text,boolean) IS 'Records a capture of an entity''s metrics in its period''s row and returns the deltas to earlier periods.';
CREATE FUNCTION conveyor.snapshot_batch(series text, captures jsonb, period text DEFAULT 'day', tz text DEFAULT 'UTC',
                                        skip_unchanged boolean DEFAULT false)
    RETURNS TABLE(ord int, entity_id text, snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_snapshot_batch';
COMMENT ON FUNCTION conveyor.snapshot_batch(text,jsonb,text,text,boolean) IS 'Records captures of many entities of one series in one call, all or none.';
CREATE FUNCTION conveyor.snapshot_series(series text, entity_id text, since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL)
    RETURNS TABLE(period_start timestamptz, captured_at timestamptz, metrics jsonb, delta jsonb, delta_day jsonb,
                  captures int, snapshot_id uuid)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_snapshot_series';
COMMENT ON FUNCTION conveyor.snapshot_series(text,text,timestamp with time zone,timestamp with time zone) IS 'Returns the snapshots of one entity of a series whose period starts in [since, until), oldest first.';

CREATE FUNCTION conveyor.snapshot_top(series text, period_start timestamptz, metric text, lim int DEFAULT 10,
                                      by text DEFAULT 'delta')
    RETURNS TABLE(entity_id text, value numeric, delta numeric, delta_day numeric)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_snapshot_top';
COMMENT ON FUNCTION conveyor.snapshot_top(text,timestamp with time zone,text,integer,text) IS 'Returns the entities of a series with the largest delta, delta_day or value of one metric in one period, largest first.';

-- ---- roles of snapshots ----
GRANT EXECUTE ON FUNCTION conveyor.snapshot_series(text, text, timestamptz, timestamptz), conveyor.metrics_delta(jsonb, jsonb)
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.snapshot_top(text, timestamptz, text, int, text) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.snapshot(text, text, jsonb, timestamptz, text, text, boolean),
    conveyor.snapshot_batch(text, jsonb, text, text, boolean) TO conveyor_worker;
