-- maintain(): every step reported with its count and time, and the repairs and purges it does for
-- locks, entities and the monitor's partitions, rollups and resolved issues.
BEGIN;
SELECT plan(16);

SELECT conveyor.maintain() AS first \gset
SELECT is((SELECT array_agg(s->>'step' ORDER BY o) FROM jsonb_array_elements(:'first'::jsonb -> 'steps') WITH ORDINALITY AS e(s, o)),
    ARRAY['metric_buckets_rolled_up', 'own_metrics_recorded', 'monitor_rows_purged', 'counter_rows_folded', 'job_stats_folded', 'job_stats_purged', 'lock_events_purged',
          'idempotency_keys_purged', 'rate_limits_purged', 'retention_rows_deleted', 'leases_expired', 'groups_repaired', 'stale_locks_cleaned',
          'stuck_entities_reset', 'reservations_expired', 'partitions_dropped'],
    'maintain() reports its steps in the order they ran: bookkeeping, repairs, then partitions');
SELECT is((SELECT count(*)::int FROM jsonb_array_elements(:'first'::jsonb -> 'steps') s
           WHERE jsonb_typeof(s->'count') = 'number' AND (s->>'ms')::numeric >= 0), 16, 'each step has a count and its milliseconds');
SELECT is((SELECT count(*)::int FROM jsonb_array_elements(:'first'::jsonb -> 'steps') s WHERE (:'first'::jsonb ->> (s->>'step'))::int = (s->>'count')::int),
    16, 'each count is also at the top level, as 0.1 reported it');
SELECT is((SELECT count(*)::int FROM conveyor.events(event_type => 'maintenance_run')), 1, 'each run is an event');

-- Stale leases are cleaned; live ones stay.
SELECT conveyor.lock_acquire('tap_mt_stale', 'w', 60) IS NOT NULL AS a \gset
SELECT conveyor.lock_acquire('tap_mt_live', 'w', 60) IS NOT NULL AS b \gset
UPDATE conveyor.locks SET heartbeat_at = clock_timestamp() - interval '2 minutes' WHERE key = 'tap_mt_stale';
SELECT is((conveyor.maintain()->>'stale_locks_cleaned')::int, 1, 'maintain() cleans the stale lease');
SELECT is((SELECT array_agg(key ORDER BY key) FROM conveyor.locks WHERE key LIKE 'tap_mt_%'), ARRAY['tap_mt_live'], 'the live lease stays');

-- Entities stuck IN_PROGRESS longer than maintain.entity_stuck_seconds go back to PENDING.
SELECT conveyor.set_setting('maintain.entity_stuck_seconds', '600');
SELECT count(*) FROM conveyor.entity_acquire('tap_mt', 'stuck');
SELECT count(*) FROM conveyor.entity_acquire('tap_mt', 'busy');
UPDATE conveyor.entities SET last_processed_at = clock_timestamp() - interval '11 minutes' WHERE entity_id = 'stuck';
SELECT is((conveyor.maintain()->>'stuck_entities_reset')::int, 1, 'maintain() resets the stuck entity');
SELECT is((SELECT array_agg(entity_id || '=' || state ORDER BY entity_id) FROM conveyor.entities WHERE entity_type = 'tap_mt'),
    ARRAY['busy=IN_PROGRESS', 'stuck=PENDING'], 'only the one stuck past the setting');

-- The monitor's partitions past retention are dropped; today's stay.
CREATE TABLE conveyor.events_p20200101 PARTITION OF conveyor.events FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
CREATE TABLE conveyor.metric_points_p20200101 PARTITION OF conveyor.metric_points
    FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
INSERT INTO conveyor.events VALUES (nextval('conveyor.event_id_seq'), '2020-01-01 12:00+00', 'old', 'test', NULL, NULL);
SELECT cmp_ok((conveyor.maintain()->>'partitions_dropped')::int, '>=', 2, 'maintain() drops the old partitions');
SELECT is(to_regclass('conveyor.events_p20200101'), NULL, 'the old event partition is gone');
SELECT is(to_regclass('conveyor.metric_points_p20200101'), NULL, 'the old metric partition is gone');
SELECT isnt(to_regclass('conveyor.events_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')), NULL, 'today''s event partition stays');
SELECT isnt(to_regclass('conveyor.events_p' || to_char((now() + interval '1 day') AT TIME ZONE 'UTC', 'YYYYMMDD')), NULL,
    'tomorrow''s exists ahead');

-- Rollups and resolved issues past their retention are purged.
INSERT INTO conveyor.metric_rollups VALUES
    ('tap_mt.old', 'hour', now() - interval '91 days', '{}', 1, 1, 1, 1, 1, 1, 1, 1, now()),
    ('tap_mt.old', 'hour', now() - interval '89 days', '{}', 1, 1, 1, 1, 1, 1, 1, 1, now()),
    ('tap_mt.old', 'day', now() - interval '91 days', '{}', 1, 1, 1, 1, 1, 1, 1, 1, now());
SELECT conveyor.report_issue('tap_mt_w', 'x', 'info', 'old') AS old_issue \gset
SELECT conveyor.resolve_issue(:old_issue, 'done');
UPDATE conveyor.worker_issues SET resolved_at = now() - interval '31 days' WHERE issue_id = :old_issue;
SELECT is((conveyor.maintain()->>'monitor_rows_purged')::int, 2, 'maintain() purges the old hourly rollup and the old resolved issue');
SELECT is((SELECT array_agg(period || ':' || (now() - bucket_start > interval '90 days') ORDER BY period) FROM conveyor.metric_rollups
           WHERE metric = 'tap_mt.old'), ARRAY['day:true', 'hour:false'], 'daily rollups keep their longer retention');

-- Its own figures: spend per account and use per quota are sampled into metric points.
SELECT conveyor.account_create('tap_mt_acct');
SELECT conveyor.charge('tap_mt_acct', 'api', 2.5);
SELECT conveyor.maintain() IS NOT NULL AS ran \gset
SELECT is((SELECT value FROM conveyor.metric_points WHERE metric = 'conveyor.account.spent' AND tags = '{"account": "tap_mt_acct"}'
           ORDER BY at DESC LIMIT 1), 2.5::float8, 'maintain() records each account''s spend as a metric');

SELECT * FROM finish();
ROLLBACK;
