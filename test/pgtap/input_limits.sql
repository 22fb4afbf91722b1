-- Input limits (README, "Limits"), as behaviour: bad values are refused and write nothing, and the
-- readers every worker depends on (queue_metrics, dequeue, quota_status, ledger_verify, maintain,
-- reap, account_status, cost_report, snapshot_series) keep working, even over rows stored before the
-- checks existed; a key of exactly 1024 bytes works and one byte more is refused; a long multibyte
-- value quoted in an error comes out clipped at a character boundary, as valid text.
BEGIN;
SELECT plan(61);

-- The error message, detail and SQLSTATE a statement raises (NULLs when it raises nothing).
CREATE FUNCTION pg_temp.error_of(sql text, OUT code text, OUT message text, OUT detail text)
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
END $$;

SELECT conveyor.create_queue('tap_lim');
SELECT conveyor.create_queue('tap_lim_other');
SELECT conveyor.account_create('tap_lim_acct', 100);
SELECT conveyor.quota_define('tap_lim_quota', 1000);
SELECT conveyor.enqueue('tap_lim_other', '{"n": 1}');

-- ---- times -------------------------------------------------------------------------------------
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_lim', run_at => 'infinity') $$, '22023', NULL,
    'enqueue refuses run_at infinity');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_lim', run_at => '-infinity') $$, '22023', NULL,
    'enqueue refuses run_at -infinity');
SELECT throws_ok($$ SELECT conveyor.enqueue_batch('tap_lim', '[{}, {"run_at": "infinity"}]') $$, '22023', NULL,
    'enqueue_batch refuses an element with run_at infinity');
SELECT throws_ok($$ SELECT conveyor.snapshot('tap_lim', 'e', '{}', '-infinity') $$, '22023', NULL,
    'snapshot refuses captured_at -infinity');
SELECT is((SELECT count(*)::int FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'tap_lim'),
    0, 'the refused jobs wrote nothing');
SELECT lives_ok($$ SELECT * FROM conveyor.queue_metrics() $$, 'queue_metrics works after the refusals');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lim_other', 'w1')), 1, 'dequeue works after the refusals');
SELECT ok((SELECT sum(1) FROM conveyor.enqueue('tap_lim', run_at => '9999-12-31 23:59:59+00')) = 1,
    'the last accepted second of 9999 is accepted');
SELECT ok((SELECT sum(1) FROM conveyor.enqueue('tap_lim', run_at => '1900-01-01 00:00:00+00')) = 1,
    'the first accepted instant, 1900-01-01 UTC, is accepted');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lim', 'w1', 10)), 1,
    'a job of 1900 is due at once; one of 9999 is not');
SELECT lives_ok($$ SELECT * FROM conveyor.queue_metrics() $$, 'queue_metrics works with jobs at both ends of the range');

-- Rows stored before the checks existed (as conveyor 0.1 accepted them): the readers must not fail.
INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, group_key, payload, max_attempts, created_at)
SELECT conveyor.uuid_v7(), q.queue_id, v.state, 5, v.run_at, v.grp, '{}', 5, now()
FROM conveyor.queues q,
     (VALUES ('ready', '-infinity'::timestamptz, NULL), ('ready', 'infinity'::timestamptz, NULL),
             ('scheduled', 'infinity'::timestamptz, NULL), ('scheduled', '-infinity'::timestamptz, NULL),
             ('ready', '-infinity'::timestamptz, 'g1'), ('waiting', 'infinity'::timestamptz, 'g1')) v(state, run_at, grp)
WHERE q.name = 'tap_lim';
SELECT lives_ok($$ SELECT * FROM conveyor.queue_metrics() $$, 'queue_metrics of every queue works over stored infinite run_at');
SELECT lives_ok($$ SELECT * FROM conveyor.queue_metrics('tap_lim') $$, 'queue_metrics of the poisoned queue works');
SELECT ok((SELECT oldest_pending_seconds > 0 FROM conveyor.queue_metrics('tap_lim')),
    'a pending job at -infinity counts as pending since 1900, not as an error');
SELECT lives_ok($$ SELECT conveyor.maintain() $$, 'maintain works over stored infinite run_at');
SELECT lives_ok($$ SELECT conveyor.reap() $$, 'reap works over stored infinite run_at');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lim', 'w2', 10)), 4,
    'dequeue claims the three ready jobs, -infinity and infinity alike, and the scheduled one at -infinity that maintain found due');
SELECT lives_ok($$ SELECT * FROM conveyor.queue_metrics() $$, 'queue_metrics works after they were claimed');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lim_other', 'w2')), 0, 'dequeue of another queue still works');

-- Filter bounds: infinity leaves a side open.
SELECT lives_ok($$ SELECT conveyor.charge('tap_lim_acct', 'svc', 1) $$, 'a charge');
SELECT is((SELECT count(*)::int FROM conveyor.cost_report('tap_lim_acct', '-infinity', 'infinity')), 1,
    'cost_report from -infinity to infinity reports every charge');
SELECT is((SELECT count(*)::int FROM conveyor.cost_report('tap_lim_acct', 'infinity')), 0,
    'cost_report since infinity reports nothing, without an error');
SELECT lives_ok($$ SELECT conveyor.snapshot('tap_lim_s', 'e', '{"n": 1}') $$, 'a snapshot');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_series('tap_lim_s', 'e', '-infinity', 'infinity')), 1,
    'snapshot_series from -infinity to infinity returns every period');

-- ---- amounts, units, limits ---------------------------------------------------------------------
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_lim_big', 9223372036854775807) $$, '22023', NULL,
    'quota_define refuses the largest bigint as a limit');
SELECT throws_ok($$ SELECT conveyor.charge('tap_lim_acct', 'svc', 'NaN') $$, '22023', NULL, 'charge refuses NaN');
SELECT throws_ok($$ SELECT conveyor.charge('tap_lim_acct', 'svc', 1e18) $$, '22023', NULL,
    'charge refuses an amount beyond numeric(24,6)');
SELECT throws_ok($$ SELECT conveyor.rate_limit('tap_lim_rl', 1, 1, 2147483647) $$, '22023', NULL,
    'rate_limit refuses a burst whose tolerance would overflow');
SELECT lives_ok($$ SELECT * FROM conveyor.quota_status() $$, 'quota_status works after the refusals');
SELECT lives_ok($$ SELECT * FROM conveyor.ledger_verify() $$, 'ledger_verify works after the refusals');
SELECT ok((SELECT bool_and(ok) FROM conveyor.ledger_verify()), 'and every account verifies');

-- A quota stored before limits were checked, at the edge of bigint.
INSERT INTO conveyor.quotas (name, quota_limit, period, reset_tz, used, window_start, window_end, created_at)
SELECT 'tap_lim_huge', 9223372036854775807, 'day', 'UTC', 9223372036854775000, w.window_start, w.window_end, now()
FROM conveyor.quota_window('day', 'UTC') w;
SELECT lives_ok($$ SELECT * FROM conveyor.quota_status() $$, 'quota_status works over a quota of the largest bigint');
SELECT is((SELECT projected_daily_usage FROM conveyor.quota_status('tap_lim_huge')), 9223372036854775807::bigint,
    'its projection is clamped to the largest bigint');
SELECT is((SELECT risk_level FROM conveyor.quota_status('tap_lim_huge')), 'high', 'and its risk is high');
SELECT is((SELECT allowed FROM conveyor.quota_consume('tap_lim_huge', 2147483647)), false,
    'a consume that would pass bigint is refused, not an overflow');
SELECT is((SELECT used FROM conveyor.quota_consume('tap_lim_huge', 800)), 9223372036854775800::bigint,
    'a consume that fits is taken');
SELECT is((SELECT risk_level FROM conveyor.quota_projection(9000000000000000000, 9223372036854775807,
    '2026-06-01 00:00+00', '2026-06-02 00:00+00', '2026-06-01 00:00:01+00')), 'high',
    'quota_projection computes in numeric: no overflow near bigint''s end');

-- ---- keys: exactly 1024 bytes works, 1025 is refused -------------------------------------------
SELECT ok((SELECT count(*) FROM conveyor.enqueue('tap_lim', dedup_key => repeat('d', 1024), group_key => repeat('g', 1024),
    job_type => repeat('t', 1024))) = 1, 'enqueue takes dedup, group and type keys of 1024 bytes');
SELECT ok((SELECT count(*) FROM conveyor.enqueue('tap_lim', dedup_key => repeat('é', 512))) = 1,
    'a dedup key of 512 two-byte characters (1024 bytes) works');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_lim', dedup_key => repeat('d', 1025)) $$, '22023',
    'dedup_key must be at most 1024 bytes, not 1025', 'a dedup key of 1025 bytes is refused');
SELECT throws_ok($$ SELECT conveyor.enqueue_batch('tap_lim', jsonb_build_array('{}'::jsonb, jsonb_build_object('group_key', repeat('g', 1025)))) $$,
    '22023', 'jobs[1]: group_key must be at most 1024 bytes, not 1025', 'enqueue_batch names the element');
SELECT ok((SELECT count(*) FROM conveyor.dequeue('tap_lim', repeat('w', 1024))) >= 0, 'a worker id of 1024 bytes works');
SELECT lives_ok($$ SELECT conveyor.idempotency_begin(repeat('k', 1024)) $$, 'an idempotency key of 1024 bytes works');
SELECT throws_ok($$ SELECT conveyor.idempotency_begin(repeat('k', 1025)) $$, '22023',
    'key must be at most 1024 bytes, not 1025', 'an idempotency key of 1025 bytes is refused');
SELECT lives_ok($$ SELECT conveyor.account_create(repeat('a', 1024)) $$, 'an account name of 1024 bytes works');
SELECT lives_ok($$ SELECT conveyor.charge(repeat('a', 1024), repeat('s', 1024), 1, idempotency_key => repeat('k', 1024)) $$,
    'a charge with account, service and idempotency key of 1024 bytes each works');
SELECT throws_ok($$ SELECT conveyor.account_create(repeat('a', 1025)) $$, '22023',
    'account must be at most 1024 bytes, not 1025', 'an account name of 1025 bytes is refused');
SELECT lives_ok($$ SELECT conveyor.quota_define(repeat('q', 1024), 10, costs => jsonb_build_object(repeat('o', 1024), 1)) $$,
    'a quota name and an operation of 1024 bytes work');
SELECT is((SELECT allowed FROM conveyor.quota_consume(repeat('q', 1024), 1, repeat('o', 1024), repeat('k', 1024))), true,
    'and consume with them and an idempotency key of 1024 bytes');
SELECT throws_ok($$ SELECT conveyor.quota_define(repeat('q', 1025), 10) $$, '22023',
    'name must be at most 1024 bytes, not 1025', 'a quota name of 1025 bytes is refused');
SELECT is((SELECT allowed FROM conveyor.rate_limit(repeat('r', 1024), 10)), true, 'a rate-limit key of 1024 bytes works');
SELECT throws_ok($$ SELECT conveyor.rate_limit(repeat('r', 1025), 10) $$, '22023',
    'key must be at most 1024 bytes, not 1025', 'a rate-limit key of 1025 bytes is refused');
SELECT lives_ok($$ SELECT conveyor.snapshot(repeat('s', 1024), repeat('e', 1024), '{"n": 1}') $$,
    'a snapshot series and entity id of 1024 bytes each work');
SELECT throws_ok($$ SELECT conveyor.snapshot_batch('tap_lim_s', jsonb_build_array(jsonb_build_object('entity_id', repeat('e', 1025), 'metrics', '{}'::jsonb))) $$,
    '22023', 'captures[0].entity_id must be at most 1024 bytes, not 1025', 'snapshot_batch names the element');
SELECT lives_ok($$ SELECT conveyor.lock_acquire(repeat('k', 1024), repeat('o', 1024)) $$, 'a lock key and owner of 1024 bytes work');

-- ---- long multibyte values in messages -----------------------------------------------------------
SELECT is((SELECT code FROM pg_temp.error_of($$ SELECT * FROM conveyor.queue_metrics(repeat('é', 700)) $$)), '42704',
    'an unknown queue of 700 two-byte characters raises 42704');
SELECT ok((SELECT octet_length(message) < 300 AND message LIKE 'queue "éé%é..." does not exist'
           FROM pg_temp.error_of($$ SELECT * FROM conveyor.queue_metrics(repeat('é', 700)) $$)),
    'its message quotes the name clipped to 200 bytes with "..."');
-- 'queue "x' is 8 bytes: unclipped, the 2047th byte of this message would be the first half of an é.
SELECT lives_ok($q$ SELECT convert_to(message, 'LATIN1') FROM pg_temp.error_of($$ SELECT * FROM conveyor.queue_metrics('x' || repeat('é', 1100)) $$) $q$,
    'a clipped message converts to LATIN1 (no character was cut)');
SELECT ok((SELECT message LIKE 'idempotency key "%..." does not exist' AND octet_length(message) < 300
           FROM pg_temp.error_of($$ SELECT conveyor.idempotency_finish(repeat('ü', 500), '{}') $$)),
    'idempotency_finish clips the key it quotes');
-- A detail longer than the boundary's 2048-byte buffer (a queue's allowed job types) is cut at a
-- character boundary: 19 bytes of "Allowed job types: ", a type of 341 three-byte characters, ", ",
-- then the second type: byte 2047 falls inside a character.
SELECT conveyor.create_queue('tap_lim_types', jsonb_build_object('job_types', jsonb_build_array(repeat('日', 341), repeat('本', 341))));
SELECT ok((SELECT octet_length(detail) BETWEEN 2040 AND 2047 FROM pg_temp.error_of($$ SELECT conveyor.enqueue('tap_lim_types', job_type => 'nope') $$)),
    'a long detail is cut to the buffer');
SELECT lives_ok($q$ SELECT convert_to(detail, 'UTF8') FROM pg_temp.error_of($$ SELECT conveyor.enqueue('tap_lim_types', job_type => 'nope') $$) $q$,
    'and is still valid UTF-8');

SELECT * FROM finish();
ROLLBACK;
