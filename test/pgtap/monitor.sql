-- The monitor: settings, the event log, worker issues, metrics and their rollups, health().
BEGIN;
SELECT plan(93);

-- ---- settings ------------------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM conveyor.settings() WHERE value = default_value AND description <> ''), (SELECT count(*)::int FROM conveyor.settings()),
    'every setting starts at its default and has a description');
SELECT ok((SELECT count(*) FROM conveyor.settings() WHERE key LIKE 'health.%') >= 10, 'health thresholds are settings');
SELECT ok((SELECT count(*) FROM conveyor.settings() WHERE key LIKE 'retention.%') >= 5, 'retentions are settings');
SELECT is(conveyor.get_setting('health.stale_locks_warning'), '1', 'get_setting returns the default');
SELECT lives_ok($$SELECT conveyor.set_setting('health.stale_locks_warning', '4')$$, 'set_setting takes a valid value');
SELECT is(conveyor.get_setting('health.stale_locks_warning'), '4', 'get_setting sees the change at once (cache invalidated)');
SELECT is((SELECT value || '/' || default_value FROM conveyor.settings() WHERE key = 'health.stale_locks_warning'), '4/1',
    'settings() shows the value beside its default');
SELECT is((SELECT updated_by FROM conveyor.settings WHERE key = 'health.stale_locks_warning'), session_user::text,
    'the change records who made it');
SELECT lives_ok($$SELECT conveyor.set_setting('audit.worker_calls', 'true')$$, 'a boolean takes true');
SELECT is(conveyor.get_setting('audit.worker_calls'), 'on', 'booleans are kept as on/off');
SELECT lives_ok($$SELECT conveyor.set_setting('health.budget_ratio_warning', '0.5')$$, 'a ratio takes a fraction');
SELECT lives_ok($$SELECT conveyor.set_setting('health.stale_locks_warning', NULL)$$, 'NULL restores the default');
SELECT is(conveyor.get_setting('health.stale_locks_warning'), '1', 'back at the default');
SELECT is((SELECT count(*)::int FROM conveyor.settings WHERE key = 'health.stale_locks_warning'), 0, 'a default is not stored');
SELECT throws_ok($$SELECT conveyor.set_setting('no.such', '1')$$, '42704', 'unknown setting "no.such"', 'unknown key: 42704');
SELECT throws_ok($$SELECT conveyor.get_setting('no.such')$$, '42704', NULL, 'get_setting of an unknown key: 42704');
SELECT throws_ok($$SELECT conveyor.set_setting('retention.events_days', 'ten')$$, '22023', NULL, 'not a number: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('retention.events_days', '0')$$, '22023', NULL, 'below the bound: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('retention.events_days', '1.5')$$, '22023', NULL, 'a fraction for a whole number: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('health.budget_ratio_warning', '1.5')$$, '22023', NULL, 'a ratio above 1: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('audit.worker_calls', 'maybe')$$, '22023', NULL, 'not a boolean: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting(NULL, '1')$$, '22004', NULL, 'a NULL key: 22004');

-- ---- the event log -------------------------------------------------------------------------------
SELECT is((SELECT array_agg(event || ':' || subject || ':' || (details->>'value') ORDER BY event_id) FROM conveyor.events(event_type => 'setting_changed')),
    ARRAY['setting_changed:health.stale_locks_warning:4', 'setting_changed:audit.worker_calls:on',
          'setting_changed:health.budget_ratio_warning:0.5', 'setting_changed:health.stale_locks_warning:1'],
    'each setting change is an event, in order; refused changes are not');
SELECT is((SELECT count(*)::int FROM conveyor.events(now() + interval '1 hour')), 0, 'events() since a later time: none');
SELECT is((SELECT count(*)::int FROM conveyor.events(lim => 2)), 2, 'lim caps the rows');
SELECT throws_ok($$SELECT * FROM conveyor.events(lim => 0)$$, '22023', NULL, 'lim below 1: 22023');
SELECT is((SELECT count(*)::int FROM conveyor.events('-infinity')), (SELECT count(*)::int FROM conveyor.events), 'since is a filter: -infinity reads every event');

-- Capabilities write their events in the transaction of the change.
SELECT conveyor.lock_acquire('tap_mon_lock', 'holder', 60) IS NOT NULL AS got \gset
SELECT is(conveyor.lock_force_release('tap_mon_lock'), true, 'force release');
SELECT is((SELECT details->>'owner' FROM conveyor.events(event_type => 'lock_force_released') WHERE subject = 'tap_mon_lock'), 'holder',
    'a force release is an event naming the holder');
SELECT conveyor.lock_acquire('tap_mon_stale', 'old', 1) AS old_token \gset
UPDATE conveyor.locks SET heartbeat_at = clock_timestamp() - interval '1 minute' WHERE key = 'tap_mon_stale';
SELECT conveyor.lock_acquire('tap_mon_stale', 'new', 60) AS new_token \gset
SELECT is((SELECT details FROM conveyor.events(event_type => 'lock_takeover') WHERE subject = 'tap_mon_stale'),
    jsonb_build_object('old_owner', 'old', 'old_token', :old_token, 'new_owner', 'new', 'new_token', :new_token),
    'a takeover of a stale lease is an event with both holders');
SELECT conveyor.create_queue('tap_mon_q', '{"max_attempts": 1}');
SELECT job_id AS dj FROM conveyor.enqueue('tap_mon_q', '{}') \gset
SELECT is(conveyor.dead_letter(:'dj', 'poison'), true, 'dead_letter a job');
SELECT is((SELECT details->>'why' FROM conveyor.events(event_type => 'job_dead_lettered') WHERE subject = :'dj'), 'dead_letter',
    'a dead-lettered job is an event');
SELECT job_id AS fj FROM conveyor.enqueue('tap_mon_q', '{}') \gset
SELECT count(*) FROM conveyor.dequeue('tap_mon_q', 'w1');
SELECT conveyor.ack(:'fj', false, 'HTTP 500');
SELECT is((SELECT details->>'error' FROM conveyor.events(event_type => 'job_dead_lettered') WHERE subject = :'fj'), 'HTTP 500',
    'a job failing its last attempt is an event with its error');
SELECT job_id AS m1 FROM conveyor.enqueue('tap_mon_q', '{"m": 1}') \gset
SELECT job_id AS m2 FROM conveyor.enqueue('tap_mon_q', '{"m": 2}') \gset
SELECT count(*) FROM conveyor.dequeue('tap_mon_q', 'w1', 2);
SELECT conveyor.ack_many(ARRAY[:'m1', :'m2']::uuid[], false, 'HTTP 503');
SELECT is((SELECT array_agg(subject ORDER BY subject) FROM conveyor.events(event_type => 'job_dead_lettered') WHERE details->>'error' = 'HTTP 503'),
    (SELECT array_agg(j ORDER BY j) FROM unnest(ARRAY[:'m1', :'m2']) j), 'a batch of jobs dying is one event each');
SELECT job_id AS ej FROM conveyor.enqueue('tap_mon_q', '{}') \gset
SELECT count(*) FROM conveyor.dequeue('tap_mon_q', 'w1');
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'ej';
SELECT is(conveyor.reap('tap_mon_q'), 1, 'reap an expired lease');
SELECT is((SELECT details->>'jobs' FROM conveyor.events(event_type => 'leases_expired') WHERE subject = 'tap_mon_q'), '1',
    'reaped leases are an event with their count');
SELECT conveyor.quota_define('tap_mon_quota', 3);
SELECT allowed FROM conveyor.quota_consume('tap_mon_quota', 2);
SELECT is((SELECT count(*)::int FROM conveyor.events(event_type => 'quota_exhausted') WHERE subject = 'tap_mon_quota'), 0,
    'a quota with units left: no event');
SELECT allowed FROM conveyor.quota_consume('tap_mon_quota', 1);
SELECT allowed FROM conveyor.quota_consume('tap_mon_quota', 1);
SELECT is((SELECT count(*)::int FROM conveyor.events(event_type => 'quota_exhausted') WHERE subject = 'tap_mon_quota'), 1,
    'the call that uses a quota up is one event; a refused call adds none');
SAVEPOINT refused;
SELECT conveyor.account_create('tap_mon_acct', 1);
SELECT throws_ok($$SELECT conveyor.charge('tap_mon_acct', 'api', 5)$$, 'CV001', NULL, 'a charge over budget raises');
ROLLBACK TO SAVEPOINT refused;
SELECT is((SELECT count(*)::int FROM conveyor.events() WHERE subject = 'tap_mon_acct'), 0, 'a refusal that raises leaves no event');

-- ---- worker issues -------------------------------------------------------------------------------
SELECT conveyor.report_issue('tap_w1', 'http', 'warning', 'HTTP 429', '{"code": 429}') AS i1 \gset
SELECT is(conveyor.report_issue('tap_w1', 'http', 'error', 'HTTP 429'), :i1::bigint, 'a repeat of an open issue returns its id');
SELECT is((SELECT occurrences || ':' || severity || ':' || (details->>'code') FROM conveyor.worker_issues() WHERE issue_id = :i1),
    '2:error:429', 'the repeat counts, takes the new severity and keeps the details');
SELECT isnt(conveyor.report_issue('tap_w2', 'http', 'warning', 'HTTP 429'), :i1::bigint, 'another worker: another issue');
SELECT isnt(conveyor.report_issue('tap_w1', 'http', 'warning', 'HTTP 503'), :i1::bigint, 'another message: another issue');
SELECT conveyor.report_issue('tap_w1', 'disk', 'critical', 'disk full') AS i3 \gset
SELECT is(conveyor.resolve_issue(:i3, 'freed space'), true, 'resolve an open issue');
SELECT is(conveyor.resolve_issue(:i3, 'again'), false, 'resolving it again: false');
SELECT throws_ok($$SELECT conveyor.resolve_issue(-1, 'x')$$, '42704', NULL, 'an unknown issue: 42704');
SELECT isnt(conveyor.report_issue('tap_w1', 'disk', 'critical', 'disk full'), :i3::bigint, 'after resolution the same issue opens a new row');
SELECT is((SELECT count(*)::int FROM conveyor.worker_issues() WHERE worker_name LIKE 'tap_%'), 4, 'worker_issues(): the open ones');
SELECT is((SELECT count(*)::int FROM conveyor.worker_issues(true) WHERE worker_name LIKE 'tap_%'), 1, 'worker_issues(true): the resolved one');
SELECT is((SELECT resolution FROM conveyor.worker_issues(NULL) WHERE issue_id = :i3), 'freed space', 'worker_issues(NULL): all, with resolutions');
SELECT is((SELECT open_issues || '/' || resolved_issues || '/' || occurrences FROM conveyor.worker_issue_stats()
           WHERE worker_name = 'tap_w1' AND issue_type = 'disk'), '1/1/2', 'worker_issue_stats counts open, resolved and occurrences');
SELECT throws_ok($$SELECT conveyor.report_issue('w', 't', 'fatal', 'm')$$, '22023', NULL, 'an unknown severity: 22023');
SELECT throws_ok($$SELECT conveyor.report_issue('w', 't', 'info', NULL)$$, '22004', NULL, 'a NULL message: 22004');
SELECT is((SELECT count(*)::int FROM conveyor.events(event_type => 'issue_reported') WHERE subject LIKE 'tap_%'), 5,
    'each new issue is an event (repeats are not)');
SELECT is((SELECT count(*)::int FROM conveyor.events(event_type => 'issue_resolved') WHERE subject = 'tap_w1'), 1, 'a resolution is an event');

-- ---- metrics -------------------------------------------------------------------------------------
SELECT lives_ok($$SELECT conveyor.record_metric('tap.api_ms', 10, '{"api": "yt"}')$$, 'record one point');
SELECT is(conveyor.record_metrics('[{"name": "tap.api_ms", "value": 20, "tags": {"api": "yt"}},
    {"name": "tap.api_ms", "value": 30, "tags": {"api": "yt"}}, {"name": "tap.api_ms", "value": 40, "tags": {"api": "yt"}},
    {"name": "tap.api_ms", "value": 5}]'), 4, 'record a batch');
SELECT throws_ok($$SELECT conveyor.record_metrics('[{"name": "x", "value": 1}, {"name": "x", "value": "1"}]')$$, '22023',
    'points[1].value must be a number, not string', 'a bad element names its index; nothing is written');
SELECT throws_ok($$SELECT conveyor.record_metrics('[{"name": "x", "value": 1, "unit": "ms"}]')$$, '22023', NULL, 'an unknown field: 22023');
SELECT throws_ok($$SELECT conveyor.record_metric('x', 'NaN')$$, '22023', NULL, 'NaN: 22023');
SELECT throws_ok($$SELECT conveyor.record_metric('x', 1, '[1]')$$, '22023', NULL, 'tags must be an object');
-- A tag set with the longest name must fit the rollups' key: refused at input, before any rollup.
SELECT throws_ok($$SELECT conveyor.record_metric(repeat('m', 1024), 1, jsonb_build_object('t', repeat('x', 2000)))$$, '22023',
                 NULL, 'tags over 1024 bytes: 22023 at input');
SELECT throws_ok($$SELECT conveyor.record_metrics(jsonb_build_array(jsonb_build_object('name', 'x', 'value', 1,
                   'tags', jsonb_build_object('t', repeat('x', 2000)))))$$, '22023', NULL, '... in a batch too');
SELECT is((SELECT count(*)::int FROM conveyor.metric_points WHERE metric = 'x'), 0, 'refused points are not written');
SELECT is((conveyor.aggregate_metrics('hour')->>'written')::int >= 2, true, 'aggregate_metrics writes the hourly buckets');
SELECT is((SELECT jsonb_build_array(min, max, avg, sum, count, p50, p95, round(p99::numeric, 6)) FROM conveyor.metrics('tap.api_ms', now(), now() + interval '1 hour',
           tags => '{"api": "yt"}')), '[10, 40, 25, 100, 4, 25, 38.5, 39.7]'::jsonb, 'the hourly rollup: min, max, avg, sum, count and percentiles');
SELECT is((conveyor.aggregate_metrics('hour')->>'written')::int, 0, 'a second run changes nothing');
SELECT conveyor.record_metric('tap.api_ms', 50, '{"api": "yt"}');
SELECT is((conveyor.aggregate_metrics('hour')->>'written')::int, 1, 'a later point rewrites only its bucket');
SELECT is((SELECT count || ':' || max FROM conveyor.metrics('tap.api_ms', now(), now() + interval '1 hour', 'hour', '{"api": "yt"}')), '5:50',
    'the later point is folded in');
SELECT is((SELECT count(*)::int FROM conveyor.metrics('tap.api_ms', now(), now() + interval '1 hour')), 2, 'without a tag filter: every tag set');
SELECT is((SELECT count FROM conveyor.metrics('tap.api_ms', now(), now() + interval '1 day', 'day', '{"api": "yt"}')), NULL::bigint,
    'daily buckets appear only when the day is rolled up');
SELECT is((conveyor.aggregate_metrics('day')->>'written')::int, 2, 'rolling up days');
SELECT is((SELECT count FROM conveyor.metrics('tap.api_ms', now(), now() + interval '1 day', 'day', '{"api": "yt"}')), 5::bigint,
    'the daily bucket counts every point of the day');
SELECT throws_ok($$SELECT conveyor.aggregate_metrics('week')$$, '22023', NULL, 'an unknown period: 22023');
SELECT lives_ok($$SELECT conveyor.record_metric(repeat('m', 1024), 1, jsonb_build_object('t', repeat('x', 1000)))$$,
                'the longest name with tags of 1 KB is recorded');
SELECT is((conveyor.aggregate_metrics('hour')->>'written')::int, 1, '... and fits the rollups'' key');

-- ---- health --------------------------------------------------------------------------------------
-- Only this test's objects matter here; open issues above (tap_w1 has a critical one) decide workers.
SELECT is(conveyor.health()->'workers'->>'status', 'critical', 'an open critical issue makes worker health critical');
SELECT is(conveyor.health()->>'overall_status', 'critical', 'overall is the worst section');
UPDATE conveyor.worker_issues SET resolved_at = now() WHERE resolved_at IS NULL;
SELECT is(conveyor.health()->'workers'->>'status', 'healthy', 'no open issues: healthy');
SELECT is(conveyor.health()->'costs'->>'quotas_exhausted', '1', 'the exhausted quota shows in cost health');
SELECT is(conveyor.health()->'costs'->>'status', 'critical', 'an exhausted quota is critical');

-- The horizon: its thresholds are settings that take 0 (any holder counts) but nothing negative,
-- fractional or past their bound.
SELECT is((SELECT array_agg(key || '=' || default_value ORDER BY key) FROM conveyor.settings() WHERE key LIKE 'health.horizon%'),
    ARRAY['health.horizon_transaction_critical_seconds=1800', 'health.horizon_transaction_warning_seconds=300',
          'health.horizon_xmin_age_critical=100000', 'health.horizon_xmin_age_warning=20000'],
    'the horizon thresholds and their defaults');
SELECT lives_ok($$SELECT conveyor.set_setting('health.horizon_transaction_warning_seconds', '0'),
                         conveyor.set_setting('health.horizon_xmin_age_warning', '0')$$, 'horizon thresholds take 0');
SELECT throws_ok($$SELECT conveyor.set_setting('health.horizon_transaction_critical_seconds', '-1')$$, '22023', NULL,
                 'a negative horizon age: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('health.horizon_transaction_critical_seconds', '31536001')$$, '22023', NULL,
                 'a horizon age past a year: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('health.horizon_xmin_age_critical', '2000000001')$$, '22023', NULL,
                 'an xmin age past 2e9 transactions: 22023');
SELECT throws_ok($$SELECT conveyor.set_setting('health.horizon_xmin_age_warning', '0.5')$$, '22023', NULL,
                 'a fractional xmin age: 22023');
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(conveyor.health()) k),
    ARRAY['at', 'costs', 'entities', 'horizon', 'locks', 'overall_status', 'queues', 'workers'], 'health() has the horizon section');
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(conveyor.health()->'horizon') k),
    ARRAY['holders', 'longest_transaction', 'longest_transaction_seconds', 'oldest_xmin', 'oldest_xmin_age', 'status'],
    'the horizon section''s keys');
-- This session holds a snapshot and an xid, but health() leaves its own caller out; no other session
-- of this database holds one (pgTAP files run one at a time), so even at thresholds 0 it is healthy.
SELECT ok(pg_current_xact_id() IS NOT NULL AND (SELECT backend_xmin FROM pg_stat_activity WHERE pid = pg_backend_pid()) IS NOT NULL,
    'this session holds an xid and a snapshot');
SELECT is(conveyor.health()->'horizon',
    '{"status": "healthy", "holders": 0, "oldest_xmin": null, "oldest_xmin_age": null, "longest_transaction": null,
      "longest_transaction_seconds": null}'::jsonb,
    'no holder but the caller: healthy at thresholds 0, with null figures');
SELECT is(conveyor.health()->>'overall_status', 'critical', 'overall is still the worst section (costs)');
SELECT * FROM finish();
ROLLBACK;
