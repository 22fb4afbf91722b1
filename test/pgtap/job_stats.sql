-- Long-term job statistics: job_stats folded by maintain() from job_history, exact per hour, combined
-- into days, per group, surviving history purge, purged after stats_retention_days; the option and
-- the function's refusals and roles.
BEGIN;
SELECT plan(16);

SELECT conveyor.create_queue('tap_js', '{"stats_retention_days": 60, "max_attempts": 1, "backoff_base_seconds": 0}');
SELECT is((SELECT stats_retention_days FROM conveyor.queues WHERE name = 'tap_js'), 60, 'stats_retention_days is stored');
SELECT conveyor.create_queue('tap_js_default');
SELECT is((SELECT stats_retention_days FROM conveyor.queues WHERE name = 'tap_js_default'), 400, 'stats_retention_days defaults to 400');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_js', '{"stats_retention_days": -1}') $$, '22023', NULL,
                 'stats_retention_days below 0 is refused');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_js', '{"stats_retention_days": "long"}') $$, '22023', NULL,
                 'stats_retention_days must be a number');

-- History rows of two past hours: 20 completed runs of 1..20 s at 10:xx for group UC1, one at 11:xx,
-- and dead jobs after the last completion.
CREATE TEMP TABLE tap_js_rows AS
SELECT conveyor.uuid_v7() AS job_id, q.queue_id, 'completed'::text AS status, 'UC1'::text AS group_key,
       '2026-11-01 10:00+00'::timestamptz + make_interval(mins => n) AS finished_at, n AS run_s, 1 AS attempt
FROM conveyor.queues q, generate_series(1, 20) n WHERE q.name = 'tap_js';
INSERT INTO tap_js_rows SELECT conveyor.uuid_v7(), queue_id, 'dead', 'UC1', '2026-11-01 10:40+00', 5, 1 FROM tap_js_rows LIMIT 1;
INSERT INTO tap_js_rows SELECT conveyor.uuid_v7(), queue_id, 'completed', 'UC2', '2026-11-01 11:10+00', 100, 3 FROM tap_js_rows LIMIT 1;
INSERT INTO tap_js_rows SELECT conveyor.uuid_v7(), queue_id, 'dead', 'UC1', '2026-11-01 11:20+00', 5, 1 FROM tap_js_rows LIMIT 1;
INSERT INTO conveyor.job_history (job_id, queue_id, status, priority, run_at, group_key, payload, attempt, max_attempts,
                                  started_at, created_at, finished_at, purge_at)
SELECT job_id, queue_id, status, 5, finished_at - make_interval(secs => run_s + 2), group_key, '{}', attempt, 3,
       finished_at - make_interval(secs => run_s), finished_at - interval '1 minute', finished_at, now() + interval '1 day'
FROM tap_js_rows;
SELECT conveyor.maintain();

SELECT results_eq(
    $$ SELECT bucket_start, completed, failed, dead, avg_run_seconds, p95_run_seconds, avg_queue_seconds, consecutive_failures
       FROM conveyor.job_stats('tap_js', '2026-11-01', '2026-11-02', 'hour') $$,
    $$ VALUES ('2026-11-01 10:00+00'::timestamptz, 20::bigint, 1::bigint, 1::bigint, 10.500, 19.000, 2.000, 1::bigint),
              ('2026-11-01 11:00+00'::timestamptz, 1, 3, 1, 100.000, 100.000, 2.000, 1) $$,
    'per hour: counts, failed attempts, average run, the exact 95th percentile (percentile_disc), wait, failures since the last success');
SELECT results_eq(
    $$ SELECT bucket_start, completed, dead, p95_run_seconds FROM conveyor.job_stats('tap_js', '2026-11-01 12:00+00', '2026-11-02') $$,
    $$ VALUES ('2026-11-01 00:00+00'::timestamptz, 21::bigint, 2::bigint, 100.000) $$,
    'a day combines its hours (sums; p95 is the largest hourly p95); the bucket holding since is whole');
SELECT results_eq(
    $$ SELECT completed, dead, last_completed_at, consecutive_failures FROM conveyor.job_stats('tap_js', '2026-11-01', '2026-11-02', 'day', 'UC1') $$,
    $$ VALUES (20::bigint, 2::bigint, '2026-11-01 10:20+00'::timestamptz, 2::bigint) $$,
    'per group: the channel''s last success and its consecutive failures across hours');
SELECT is((SELECT count(*)::int FROM conveyor.job_stats('tap_js', '2026-11-01', '2026-11-02', 'day', 'UC3')), 0,
          'a group with no finished jobs has no rows');

-- Stats outlive history, and a fold that finds nothing new changes nothing.
DELETE FROM conveyor.job_history WHERE queue_id = (SELECT queue_id FROM conveyor.queues WHERE name = 'tap_js');
SELECT conveyor.maintain();
SELECT is((SELECT sum(completed)::int FROM conveyor.job_stats('tap_js', '2026-11-01', '2026-11-02', 'hour')), 21,
          'the statistics remain after the history rows are purged');

-- A job finished through the queue is folded in its hour.
SELECT count(*) FROM conveyor.enqueue('tap_js', '{}', group_key => 'UC9');
SELECT conveyor.ack(job_id, true) FROM conveyor.dequeue('tap_js', 'w1', 1);
SELECT conveyor.maintain();
SELECT is((SELECT completed FROM conveyor.job_stats('tap_js', now() - interval '1 hour', now() + interval '1 hour', 'day', 'UC9')), 1::bigint,
          'a job acknowledged now is counted after maintain()');

-- Retention: rows older than stats_retention_days go, younger stay.
INSERT INTO conveyor.job_history (job_id, queue_id, status, priority, run_at, payload, attempt, max_attempts, created_at, finished_at, purge_at)
SELECT conveyor.uuid_v7(), queue_id, 'completed', 5, now() - make_interval(days => d), '{}', 1, 1, now() - make_interval(days => d),
       now() - make_interval(days => d), now() + interval '1 day'
FROM conveyor.queues, (VALUES (80), (40)) v(d) WHERE name = 'tap_js';
SELECT conveyor.maintain();
SELECT is((SELECT count(*)::int FROM conveyor.job_stats('tap_js', now() - interval '90 days', now() - interval '35 days')), 1,
          'maintain() purges the hours older than stats_retention_days and keeps the others');

-- Refusals.
SELECT throws_ok($$ SELECT * FROM conveyor.job_stats('tap_js', now(), now(), 'year') $$, '22023',
                 'bucket must be ''hour'', ''day'', ''week'' or ''month'', not "year"', 'an unknown bucket is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.job_stats('tap_nope', now(), now()) $$, '42704', NULL, 'an unknown queue is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.job_stats('tap_js', NULL, now()) $$, '22004', NULL, 'since is required');

-- Roles: readers may read statistics; nobody else.
CREATE ROLE tap_js_nobody;
SELECT ok(has_function_privilege('conveyor_reader', 'conveyor.job_stats(text, timestamptz, timestamptz, text, text)', 'EXECUTE'),
          'conveyor_reader may call job_stats');
SELECT ok(NOT has_function_privilege('tap_js_nobody', 'conveyor.job_stats(text, timestamptz, timestamptz, text, text)', 'EXECUTE'),
          'a role outside conveyor''s roles may not');

SELECT * FROM finish();
ROLLBACK;
