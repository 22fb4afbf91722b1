-- Quotas: quota_define, quota_consume (units and operations, refusals, the next window, idempotency
-- keys), quota_status with its projection and risk levels, and the calendar windows across the
-- Pacific daylight-saving changes of 2026 (computed for given instants; the server clock is real).
BEGIN;
SELECT plan(52);

-- ---- windows across daylight-saving changes -----------------------------------------------------

-- 2026-03-08: Los Angeles springs forward at 02:00 PST -> 03:00 PDT; the day has 23 hours.
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', '2026-03-08 12:00+00') $$,
    $$ VALUES ('2026-03-08 08:00+00'::timestamptz, '2026-03-09 07:00+00'::timestamptz) $$,
    '2026-03-08 (spring forward): the window runs from midnight PST to midnight PDT, 23 hours');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', '2026-03-08 07:59:59.999999+00') $$,
    $$ VALUES ('2026-03-07 08:00+00'::timestamptz, '2026-03-08 08:00+00'::timestamptz) $$,
    'a microsecond before midnight PST belongs to the day before');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', '2026-03-09 07:00+00') $$,
    $$ VALUES ('2026-03-09 07:00+00'::timestamptz, '2026-03-10 07:00+00'::timestamptz) $$,
    'the next window starts exactly at midnight PDT (07:00 UTC)');
-- 2026-11-01: Los Angeles falls back at 02:00 PDT -> 01:00 PST; the day has 25 hours.
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', '2026-11-01 09:30+00') $$,
    $$ VALUES ('2026-11-01 07:00+00'::timestamptz, '2026-11-02 08:00+00'::timestamptz) $$,
    '2026-11-01 (fall back): the window runs from midnight PDT to midnight PST, 25 hours');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', '2026-11-02 07:59:59+00') $$,
    $$ VALUES ('2026-11-01 07:00+00'::timestamptz, '2026-11-02 08:00+00'::timestamptz) $$,
    '23:59:59 PST on the long day is still in it');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('hour', 'America/Los_Angeles', '2026-11-01 09:30+00') $$,
    $$ VALUES ('2026-11-01 09:00+00'::timestamptz, '2026-11-01 10:00+00'::timestamptz) $$,
    'hourly windows in the repeated hour (01:30 PST) last one hour');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('hour', 'America/Los_Angeles', '2026-03-08 10:15+00') $$,
    $$ VALUES ('2026-03-08 10:00+00'::timestamptz, '2026-03-08 11:00+00'::timestamptz) $$,
    'the hour after the skipped one (03:15 PDT) runs 03:00 to 04:00 PDT');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('month', 'America/Los_Angeles', '2026-03-15 00:00+00') $$,
    $$ VALUES ('2026-03-01 08:00+00'::timestamptz, '2026-04-01 07:00+00'::timestamptz) $$,
    'monthly windows start at local midnight on the first, whatever the offset');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'UTC', '2026-03-08 12:00+00') $$,
    $$ VALUES ('2026-03-08 00:00+00'::timestamptz, '2026-03-09 00:00+00'::timestamptz) $$,
    'UTC days');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_window('day', 'Asia/Kolkata', '2026-03-08 12:00+00') $$,
    $$ VALUES ('2026-03-07 18:30+00'::timestamptz, '2026-03-08 18:30+00'::timestamptz) $$,
    'zones with half-hour offsets');
-- Every day of 2026 in Los Angeles: windows tile the year without gaps or overlaps, each starting at
-- local midnight, and exactly two of them are not 24 hours long.
SELECT results_eq(
    $$ WITH w AS (SELECT w.* FROM generate_series(timestamptz '2026-01-01 20:00+00', '2026-12-31 20:00+00', '1 day') t,
                  conveyor.quota_window('day', 'America/Los_Angeles', t) w)
       SELECT count(*), count(*) FILTER (WHERE window_end - window_start <> interval '24 hours'),
              bool_and((window_start AT TIME ZONE 'America/Los_Angeles')::time = '00:00'),
              bool_and(window_end = (SELECT min(w2.window_start) FROM w w2 WHERE w2.window_start > w.window_start)
                       OR window_start = (SELECT max(window_start) FROM w))
       FROM w $$,
    $$ VALUES (365::bigint, 2::bigint, true, true) $$,
    '2026 in Los Angeles: 365 windows at local midnight, contiguous, two of them 23 and 25 hours');

-- ---- quota_define ------------------------------------------------------------------------------

SELECT lives_ok(
    $$ SELECT conveyor.quota_define('tap_youtube', 10000, 'day', 'America/Los_Angeles',
                                    '{"search.list": 100, "videos.list": 1, "free.op": 0}') $$,
    'quota_define: YouTube, 10,000 units a day, midnight Pacific');
SELECT results_eq(
    $$ SELECT quota_limit, period, reset_tz, used, (window_start, window_end) = (SELECT * FROM
           conveyor.quota_window('day', 'America/Los_Angeles', now())) FROM conveyor.quotas WHERE name = 'tap_youtube' $$,
    $$ VALUES (10000::bigint, 'day', 'America/Los_Angeles', 0::bigint, true) $$,
    'the quota starts in the current window with nothing used');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 10, 'week') $$, '22023',
    'period "week" is not one of hour, day, month', 'an unknown period is refused');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 10, 'day', 'America/Springfield') $$, '22023',
    'time zone "America/Springfield" is not recognized', 'an unknown time zone is refused');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 0) $$, '22023', 'quota_limit must be positive, not 0',
    'a limit must be positive');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', NULL) $$, '22004', 'quota_limit must not be NULL',
    'a NULL limit raises 22004');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 10, costs => '{"a": -1}') $$, '22023', NULL,
    'a negative cost is refused');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 10, costs => '{"a": 1.5}') $$, '22023', NULL,
    'a fractional cost is refused');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_bad', 10, costs => '[1]') $$, '22023', NULL,
    'costs must be an object');
SELECT is((SELECT count(*)::int FROM conveyor.quotas WHERE name = 'tap_bad'), 0, 'refused definitions wrote nothing');

-- ---- quota_consume -----------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', operation => 'search.list') $$,
    $$ VALUES (true, 100::bigint, 9900::bigint) $$,
    'an operation costs its units');
SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', 3, 'search.list') $$,
    $$ VALUES (true, 400::bigint, 9600::bigint) $$,
    'units with an operation count operations');
SELECT results_eq(
    $$ SELECT allowed, used, remaining, reset_at FROM conveyor.quota_consume('tap_youtube', 50) $$,
    $$ SELECT true, 450::bigint, 9550::bigint, window_end FROM conveyor.quotas WHERE name = 'tap_youtube' $$,
    'plain units, and reset_at is the end of the window');
SELECT results_eq(
    $$ SELECT allowed, used FROM conveyor.quota_consume('tap_youtube') $$,
    $$ VALUES (true, 451::bigint) $$,
    'no units and no operation: one unit');
SELECT results_eq(
    $$ SELECT allowed, used FROM conveyor.quota_consume('tap_youtube', operation => 'free.op') $$,
    $$ VALUES (true, 451::bigint) $$,
    'an operation of cost 0 passes and consumes nothing');
SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', 9550) $$,
    $$ VALUES (false, 451::bigint, 9549::bigint) $$,
    'a call that would pass the limit is refused');
SELECT is((SELECT used FROM conveyor.quotas WHERE name = 'tap_youtube'), 451::bigint, 'and consumed nothing');
SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', 9549) $$,
    $$ VALUES (true, 10000::bigint, 0::bigint) $$,
    'a call that reaches the limit exactly passes');
SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', operation => 'videos.list') $$,
    $$ VALUES (false, 10000::bigint, 0::bigint) $$,
    'then even one unit is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume('tap_youtube', operation => 'channels.list') $$, '22023',
    'operation "channels.list" has no cost in quota "tap_youtube"', 'an operation missing from costs is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume('tap_youtube', -1) $$, '22023', 'units must not be negative, not -1',
    'negative units are refused');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume('tap_nothing') $$, '42704', 'quota "tap_nothing" does not exist',
    'an unknown quota raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume(NULL) $$, '22004', 'name must not be NULL',
    'a NULL name raises 22004');

-- The window ends (moved back here, as if the day had passed): the next consume starts a new one.
UPDATE conveyor.quotas SET window_start = window_start - interval '2 days', window_end = now() - interval '1 second'
 WHERE name = 'tap_youtube';
SELECT results_eq(
    $$ SELECT allowed, used, remaining FROM conveyor.quota_consume('tap_youtube', operation => 'search.list') $$,
    $$ VALUES (true, 100::bigint, 9900::bigint) $$,
    'after the window ends the count starts again');
SELECT results_eq(
    $$ SELECT (window_start, window_end) = (SELECT * FROM conveyor.quota_window('day', 'America/Los_Angeles', now()))
       FROM conveyor.quotas WHERE name = 'tap_youtube' $$,
    $$ VALUES (true) $$,
    'in the window that contains now');

-- Redefinition keeps what was used in the same window.
SELECT conveyor.quota_define('tap_youtube', 20000, 'day', 'America/Los_Angeles', '{"search.list": 100}');
SELECT results_eq(
    $$ SELECT quota_limit, used FROM conveyor.quotas WHERE name = 'tap_youtube' $$,
    $$ VALUES (20000::bigint, 100::bigint) $$,
    'a new limit for the same window keeps the usage');

-- ---- idempotency key ---------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT allowed, used FROM conveyor.quota_consume('tap_youtube', 2, 'search.list', idempotency_key => 'req-1') $$,
    $$ VALUES (true, 300::bigint) $$, 'a consume with a key');
SELECT results_eq(
    $$ SELECT allowed, used FROM conveyor.quota_consume('tap_youtube', 2, 'search.list', idempotency_key => 'req-1') $$,
    $$ VALUES (true, 300::bigint) $$, 'repeated: the first result, nothing consumed');
SELECT is((SELECT used FROM conveyor.quotas WHERE name = 'tap_youtube'), 300::bigint, 'the quota counted it once');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume('tap_youtube', 3, 'search.list', idempotency_key => 'req-1') $$,
    'CV004', NULL, 'the same key with other units raises CV004');
SELECT results_eq(
    $$ SELECT allowed FROM conveyor.quota_consume('tap_youtube', 999999, idempotency_key => 'req-2') $$,
    $$ VALUES (false) $$, 'a refused consume with a key ...');
SELECT is((SELECT count(*)::int FROM conveyor.idempotency_keys WHERE scope = 'quota:tap_youtube' AND key = 'req-2'), 0,
    '... keeps no key, so a retry may pass later');

-- ---- quota_status, projection and risk --------------------------------------------------------

SELECT results_eq(
    $$ SELECT name, current_quota_used, quota_limit, quota_remaining, reset_time = (SELECT window_end FROM conveyor.quotas
              WHERE name = 'tap_youtube') FROM conveyor.quota_status('tap_youtube') $$,
    $$ VALUES ('tap_youtube', 300::bigint, 20000::bigint, 19700::bigint, true) $$,
    'quota_status: used, limit, remaining, reset time');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_status('tap_nothing') $$, '42704', NULL,
    'quota_status of an unknown quota raises 42704');
-- Projections at given instants of a 24-hour window starting at midnight.
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(2000, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-01 19:00+00') $$,
    $$ VALUES (4000::bigint, 'low') $$,
    'half the day gone, 2,000 used: 4,000 projected, low');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(4000, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-01 19:00+00') $$,
    $$ VALUES (8000::bigint, 'medium') $$,
    'half the day gone, 4,000 used: 8,000 projected (>= 75%), medium');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(5000, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-01 19:00+00') $$,
    $$ VALUES (10000::bigint, 'high') $$,
    'half the day gone, 5,000 used: the limit is projected, high');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(9000, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-02 06:00+00') $$,
    $$ VALUES (9392::bigint, 'high') $$,
    '90% used is high even when the projection stays below the limit');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(10000, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-01 19:00+00') $$,
    $$ VALUES (20000::bigint, 'exhausted') $$,
    'everything used: exhausted');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(100, 10000, '2026-06-01 07:00+00', '2026-06-02 07:00+00', '2026-06-01 07:00:05+00') $$,
    $$ VALUES (2400::bigint, 'low') $$,
    'five seconds in: the rate is taken over at least the first hour of the day');
SELECT results_eq(
    $$ SELECT * FROM conveyor.quota_projection(0, 10000, '2026-11-01 07:00+00', '2026-11-02 08:00+00', '2026-11-01 19:30+00') $$,
    $$ VALUES (0::bigint, 'low') $$,
    'nothing used: nothing projected');

SELECT * FROM finish();
ROLLBACK;
