-- rate_limit: a GCRA limiter, one row per key and no refill job. Intervals here are long (an hour
-- per request) so that the milliseconds a test takes cannot change what it sees.
BEGIN;
SELECT plan(16);

SELECT results_eq(
    $$ SELECT allowed, retry_after_ms FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) $$,
    $$ VALUES (true, 0) $$, 'the first request passes');
SELECT results_eq(
    $$ SELECT allowed FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) UNION ALL
       SELECT allowed FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) $$,
    $$ VALUES (true), (true) $$, 'a burst of 3 passes at once');
SELECT results_eq(
    $$ SELECT allowed, retry_after_ms BETWEEN 3590000 AND 3600000 FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) $$,
    $$ VALUES (false, true) $$, 'the fourth is refused, with the wait until one more passes (about an hour)');
SELECT is((SELECT count(*)::int FROM conveyor.rate_limits WHERE key = 'tap_rl'), 1, 'one row per key');
SELECT ok((SELECT tat - (extract(epoch FROM clock_timestamp() - '2000-01-01 00:00+00') * 1e6)::bigint
           BETWEEN 3 * 3600e6 - 60e6 AND 3 * 3600e6 FROM conveyor.rate_limits WHERE key = 'tap_rl'),
    'its theoretical arrival time is three intervals ahead; the refusal did not move it');

-- The state moved back an interval, as if an hour had passed: exactly one more passes.
UPDATE conveyor.rate_limits SET tat = tat - 3600000000 WHERE key = 'tap_rl';
SELECT results_eq(
    $$ SELECT allowed FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) UNION ALL
       SELECT allowed FROM conveyor.rate_limit('tap_rl', 1, 3600, burst => 3) $$,
    $$ VALUES (true), (false) $$, 'an hour later one more request passes, not two');

SELECT results_eq(
    $$ SELECT allowed FROM conveyor.rate_limit('tap_rl2', 2, 3600) UNION ALL
       SELECT allowed FROM conveyor.rate_limit('tap_rl2', 2, 3600) UNION ALL
       SELECT allowed FROM conveyor.rate_limit('tap_rl2', 2, 3600) $$,
    $$ VALUES (true), (true), (false) $$, 'burst defaults to rate');
SELECT results_eq(
    $$ SELECT allowed, retry_after_ms BETWEEN 1790000 AND 1800000 FROM conveyor.rate_limit('tap_rl2', 2, 3600) $$,
    $$ VALUES (false, true) $$, 'rate 2 per hour: the next in half an hour');
SELECT results_eq(
    $$ SELECT allowed FROM conveyor.rate_limit('tap_rl3', 1, 3600) $$,
    $$ VALUES (true) $$, 'keys are independent');

-- Rows whose arrival time has passed hold nothing: maintain() deletes them.
UPDATE conveyor.rate_limits SET tat = 0 WHERE key = 'tap_rl3';
SELECT ok((conveyor.maintain() ->> 'rate_limits_purged')::int >= 1, 'maintain() purges rows that hold no state');
SELECT is((SELECT count(*)::int FROM conveyor.rate_limits WHERE key LIKE 'tap_rl%'), 2, 'and keeps the others');

SELECT throws_ok($$ SELECT * FROM conveyor.rate_limit('tap_rl', 0) $$, '22023', 'rate must be positive, not 0',
    'rate must be positive');
SELECT throws_ok($$ SELECT * FROM conveyor.rate_limit('tap_rl', 1, 0) $$, '22023',
    'per_seconds must be between 1 and 31622400, not 0', 'per_seconds must be positive');
SELECT throws_ok($$ SELECT * FROM conveyor.rate_limit('tap_rl', 1, burst => 0) $$, '22023', 'burst must be positive, not 0',
    'burst must be positive');
SELECT throws_ok($$ SELECT * FROM conveyor.rate_limit(NULL, 1) $$, '22004', 'key must not be NULL', 'a NULL key raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.rate_limit('', 1) $$, '22023', 'key must not be empty', 'an empty key is refused');

SELECT * FROM finish();
ROLLBACK;
