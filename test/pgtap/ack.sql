-- Acknowledging jobs: ack, ack_many, backoff, dead jobs, zombie acks and the event trail.
BEGIN;
SELECT plan(90);

-- tap_ack: backoff 10 s .. 3600 s (the defaults)
SELECT conveyor.create_queue('tap_ack') \gset
SELECT conveyor.create_queue('tap_ack_cap', '{"backoff_base_seconds": 100, "backoff_max_seconds": 150}') \gset
SELECT conveyor.create_queue('tap_ack_jitter', '{"backoff_base_seconds": 40}') \gset
SELECT conveyor.create_queue('tap_ack_zombie', '{"backoff_base_seconds": 0}') \gset
SELECT conveyor.create_queue('tap_ack_many') \gset
SELECT conveyor.create_queue('tap_ack_quiet', '{"event_trail": "failures"}') \gset
SELECT conveyor.create_queue('tap_ack_relet', '{"backoff_base_seconds": 0}') \gset

-- Seconds from now() to a job's run_at.
CREATE FUNCTION pg_temp.delay(id uuid) RETURNS numeric LANGUAGE sql AS
    $$ SELECT extract(epoch FROM (conveyor.get_job(id)->>'run_at')::timestamptz - now()) $$;

-- ---- success -------------------------------------------------------------------------------------

SELECT job_id AS a FROM conveyor.enqueue('tap_ack', '{"n": "a"}') \gset
SELECT job_id AS a_dq FROM conveyor.dequeue('tap_ack', 'w1') \gset
SELECT is(conveyor.ack(:'a', true, NULL, '{"rows": 3}', 'w1'), true, 'ack(success) of a running job returns true');
SELECT is(conveyor.get_job(:'a')->>'status', 'completed', 'the job is completed');
SELECT is((conveyor.get_job(:'a')->>'finished_at')::timestamptz, now(), 'finished_at is set');
SELECT is((conveyor.get_job(:'a')->>'attempt')::int, 1, 'the completed job keeps its attempt');
SELECT is(conveyor.get_job(:'a')->>'worker_id', 'w1', 'and the worker that ran it');
SELECT is(conveyor.get_job(:'a')->'lease_until', 'null'::jsonb, 'a completed job has no lease');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE job_id = :'a'), 0, 'the completed job left the hot table');

-- ---- failure and backoff: base * 2^(attempt-1), capped, times a jitter in [0.75, 1.0] -----------------

SELECT job_id AS b FROM conveyor.enqueue('tap_ack', '{"n": "b"}') \gset
SELECT job_id AS b_dq FROM conveyor.dequeue('tap_ack', 'w1') \gset
SELECT is(conveyor.ack(:'b', false, 'timeout'), true, 'ack(failure) of a running job returns true');
SELECT is(conveyor.get_job(:'b')->>'status', 'pending', 'a failed job with attempts left is pending again');
SELECT is((conveyor.get_job(:'b')->>'attempt')::int, 1, 'the attempt is kept');
SELECT is(conveyor.get_job(:'b')->>'last_error', 'timeout', 'last_error is set');
SELECT is(conveyor.get_job(:'b')->'worker_id', 'null'::jsonb, 'the failed job is no longer leased to a worker');
SELECT is(conveyor.get_job(:'b')->'lease_until', 'null'::jsonb, 'and has no lease');
SELECT ok(pg_temp.delay(:'b') BETWEEN 7.5 AND 10,
    format('attempt 1: run_at moves by 10 s times [0.75, 1.0] (got %s s)', pg_temp.delay(:'b')));
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_ack', 'w1')), 0, 'the job is not dequeued during its backoff');

UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'b';
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_ack', 'w1')), 2, 'once due it is dequeued on attempt 2');
SELECT is(conveyor.ack(:'b', false, 'timeout again'), true, 'fail attempt 2');
SELECT ok(pg_temp.delay(:'b') BETWEEN 15 AND 20,
    format('attempt 2: run_at moves by 20 s times [0.75, 1.0] (got %s s)', pg_temp.delay(:'b')));
SELECT is(conveyor.get_job(:'b')->>'last_error', 'timeout again', 'last_error holds the latest error');

UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'b';
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_ack', 'w1')), 3, 'attempt 3');
SELECT is(conveyor.ack(:'b', false, 'and again'), true, 'fail attempt 3');
SELECT ok(pg_temp.delay(:'b') BETWEEN 30 AND 40,
    format('attempt 3: run_at moves by 40 s times [0.75, 1.0] (got %s s)', pg_temp.delay(:'b')));

-- The cap: base 100, max 150.
SELECT job_id AS c FROM conveyor.enqueue('tap_ack_cap', '{}') \gset
SELECT job_id AS c_dq FROM conveyor.dequeue('tap_ack_cap', 'w1') \gset
SELECT is(conveyor.ack(:'c', false, 'x'), true, 'fail attempt 1 on the capped queue');
SELECT ok(pg_temp.delay(:'c') BETWEEN 75 AND 100,
    format('capped queue, attempt 1: 100 s times [0.75, 1.0] (got %s s)', pg_temp.delay(:'c')));
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'c';
SELECT job_id AS c_dq FROM conveyor.dequeue('tap_ack_cap', 'w1') \gset
SELECT is(conveyor.ack(:'c', false, 'x'), true, 'fail attempt 2 on the capped queue');
SELECT ok(pg_temp.delay(:'c') BETWEEN 112.5 AND 150,
    format('capped queue, attempt 2: min(200, 150) s times [0.75, 1.0] (got %s s)', pg_temp.delay(:'c')));

-- Twenty failures at once: every delay in the band, and not all equal (there is jitter).
SELECT count(*) AS n FROM conveyor.enqueue_batch('tap_ack_jitter',
    (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('i', i))) FROM generate_series(1, 20) i)) \gset
CREATE TEMP TABLE jit AS SELECT job_id FROM conveyor.dequeue('tap_ack_jitter', 'w1', 20);
SELECT is(conveyor.ack_many((SELECT array_agg(job_id) FROM jit), false, 'bulk'), 20, 'ack_many fails 20 jobs');
SELECT ok((SELECT min(pg_temp.delay(job_id)) >= 30 AND max(pg_temp.delay(job_id)) <= 40 FROM jit),
    (SELECT format('all 20 delays lie in [30, 40] s (min %s, max %s)', min(pg_temp.delay(job_id)), max(pg_temp.delay(job_id))) FROM jit));
SELECT cmp_ok((SELECT count(DISTINCT pg_temp.delay(job_id))::int FROM jit), '>', 1, 'the delays are jittered');

-- ---- max_attempts: the last failure makes the job dead --------------------------------------------

SELECT job_id AS d FROM conveyor.enqueue('tap_ack', '{"n": "d"}', max_attempts => 2) \gset
SELECT job_id AS d_dq FROM conveyor.dequeue('tap_ack', 'w1') \gset
SELECT is(conveyor.ack(:'d', false, 'first'), true, 'fail attempt 1 of 2');
SELECT is(conveyor.get_job(:'d')->>'status', 'pending', 'one attempt left: pending');
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'d';
SELECT job_id AS d_dq FROM conveyor.dequeue('tap_ack', 'w1') \gset
SELECT is(conveyor.ack(:'d', false, 'second'), true, 'fail attempt 2 of 2');
SELECT is(conveyor.get_job(:'d')->>'status', 'dead', 'at max_attempts the failure makes the job dead');
SELECT is((conveyor.get_job(:'d')->>'attempt')::int, 2, 'the dead job records 2 attempts');
SELECT is(conveyor.get_job(:'d')->>'last_error', 'second', 'the dead job keeps the last error');
SELECT is((conveyor.get_job(:'d')->>'finished_at')::timestamptz, now(), 'the dead job has finished_at');

-- ---- zombie acks: worker_id given, lease lost -----------------------------------------------------

SELECT job_id AS z FROM conveyor.enqueue('tap_ack_zombie', '{"n": "z"}') \gset
SELECT job_id AS z_dq FROM conveyor.dequeue('tap_ack_zombie', 'w1') \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'z';
SELECT is((SELECT row(job_id, attempt)::text FROM conveyor.dequeue('tap_ack_zombie', 'w2')), row(:'z'::uuid, 2)::text,
    'after w1''s lease ran out, w2 dequeues the job (attempt 2)');
SELECT is(conveyor.ack(:'z', true, NULL, NULL, 'w1'), false, 'w1''s late ack(success) returns false');
SELECT is(conveyor.ack(:'z', false, 'late', NULL, 'w1'), false, 'w1''s late ack(failure) returns false');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'worker_id', j->'attempt', j->'last_error') FROM conveyor.get_job(:'z') j),
    '["running", "w2", 2, "lease expired"]'::jsonb,
    'the zombie acks changed nothing: still running for w2 on attempt 2');
SELECT is(conveyor.ack(:'z', true, worker_id => 'w2'), true, 'w2''s ack succeeds');
SELECT is(conveyor.ack(:'z', true, worker_id => 'w2'), false, 'a repeated ack with worker_id of a finished job returns false');
SELECT is(conveyor.get_job(:'z')->>'status', 'completed', 'and the job stays completed');

SELECT job_id AS z2 FROM conveyor.enqueue('tap_ack_zombie', '{"n": "z2"}') \gset
SELECT is(conveyor.ack(:'z2', true, worker_id => 'w1'), false, 'ack with worker_id of a pending job returns false');
SELECT is(conveyor.get_job(:'z2')->>'status', 'pending', 'and leaves it pending');

-- ---- the same worker leased the job again: the attempt tells its leases apart --------------------

SELECT job_id AS r FROM conveyor.enqueue('tap_ack_relet', '{"n": "r"}') \gset
SELECT job_id AS r_dq FROM conveyor.dequeue('tap_ack_relet', 'w1') \gset
SELECT is(conveyor.requeue(:'r'), true, 'an operator requeues w1''s job');
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_ack_relet', 'w1')), 2, 'w1 dequeues it again: attempt 2');
SELECT is(conveyor.heartbeat(:'r', 'w1', 30, attempt => 1), NULL, 'a heartbeat naming the first lease (attempt 1) returns NULL');
SELECT isnt(conveyor.heartbeat(:'r', 'w1', 30, attempt => 2), NULL, 'one naming the second lease extends it');
SELECT is(conveyor.progress(:'r', 'w1', 50, 'late', attempt => 1), false, 'progress naming the first lease returns false');
SELECT is(conveyor.job_log(:'r', 'w1', 'late', attempt => 1), false, 'job_log naming the first lease returns false');
SELECT is(conveyor.release(:'r', 'w1', attempt => 1), false, 'release naming the first lease returns false');
SELECT is(conveyor.ack(:'r', false, 'late', NULL, 'w1', attempt => 1), false, 'a failed ack naming the first lease returns false');
SELECT is(conveyor.ack(:'r', true, NULL, '{"run": 1}', 'w1', attempt => 1), false, 'an ack naming the first lease returns false');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'worker_id', j->'attempt', j->'percent', j->'step') FROM conveyor.get_job(:'r') j),
    '["running", "w1", 2, null, null]'::jsonb, 'the first lease''s calls changed nothing');
SELECT is((SELECT count(*) FROM conveyor.job_events(:'r') WHERE event IN ('log:late', 'progress', 'failed', 'released')),
    0::bigint, 'and left nothing in the trail');
SELECT is(conveyor.progress(:'r', 'w1', 50, attempt => 2), true, 'progress naming the second lease is recorded');
SELECT is(conveyor.ack(:'r', true, NULL, '{"run": 2}', 'w1', attempt => 2), true, 'an ack naming the second lease completes the job');
SELECT is((SELECT details FROM conveyor.job_events(:'r') WHERE event = 'succeeded') - 'duration_ms',
    '{"attempt": 2, "stats": {"run": 2}}'::jsonb, 'with the second run''s stats');
SELECT throws_ok(format('SELECT conveyor.ack(%L, true, attempt => 1)', :'r'),
    '22004', 'worker_id must not be NULL when attempt is given', 'attempt without worker_id raises 22004');
SELECT throws_ok(format('SELECT conveyor.heartbeat(%L, %L, attempt => 0)', :'r', 'w1'),
    '22023', NULL, 'an attempt below 1 raises 22023');

-- ---- without worker_id: errors --------------------------------------------------------------------

SELECT throws_ok(format('SELECT conveyor.ack(%L, true)', :'a'),
    '55000', format('job %s is already finished (completed)', :'a'), 'ack of a completed job raises 55000');
SELECT throws_ok(format('SELECT conveyor.ack(%L, false, %L)', :'d', 'x'),
    '55000', NULL, 'ack of a dead job raises 55000');
SELECT throws_ok(format('SELECT conveyor.ack(%L, true)', :'z2'),
    '55000', NULL, 'ack of a pending job raises 55000');
SELECT throws_ok($$ SELECT conveyor.ack('00000000-0000-7000-8000-000000000000', true) $$,
    '42704', 'job 00000000-0000-7000-8000-000000000000 does not exist', 'ack of an unknown job raises 42704');
SELECT throws_ok($$ SELECT conveyor.ack('00000000-0000-7000-8000-000000000000', true, worker_id => 'w1') $$,
    '42704', NULL, 'ack of an unknown job raises 42704 with worker_id too');
SELECT throws_ok(format('SELECT conveyor.ack(%L, NULL)', :'z2'),
    '22004', NULL, 'ack with a NULL success raises 22004');

-- ---- ack_many ------------------------------------------------------------------------------------

SELECT count(*) AS n FROM conveyor.enqueue_batch('tap_ack_many', '[{"payload": {"i": 1}}, {"payload": {"i": 2}},
    {"payload": {"i": 3}}, {"payload": {"i": 4}}, {"payload": {"i": 5}}, {"payload": {"i": 6}}]') \gset
CREATE TEMP TABLE m1 AS SELECT job_id, (payload->>'i')::int AS i FROM conveyor.dequeue('tap_ack_many', 'w1', 3);
CREATE TEMP TABLE m2 AS SELECT job_id, (payload->>'i')::int AS i FROM conveyor.dequeue('tap_ack_many', 'w2', 3);
SELECT is(conveyor.ack_many((SELECT array_agg(job_id) FROM m1), true), 3, 'ack_many returns the number acknowledged');
SELECT is((SELECT count(*)::int FROM m1 WHERE conveyor.get_job(job_id)->>'status' = 'completed'), 3,
    'all three are completed');
SELECT is(conveyor.ack_many((SELECT array_agg(job_id) FROM m1), true, worker_id => 'w1'), 0,
    'ack_many with worker_id of finished jobs acknowledges none');
SELECT throws_ok(format('SELECT conveyor.ack_many(%L::uuid[], true)', (SELECT array_agg(job_id) FROM (SELECT job_id FROM m2 UNION ALL SELECT job_id FROM m1) s)),
    '55000', NULL, 'ack_many without worker_id raises 55000 when one job is finished');
SELECT is((SELECT count(*)::int FROM m2 WHERE conveyor.get_job(job_id)->>'status' = 'running'), 3,
    'and acknowledges none of the others');
SELECT is(
    conveyor.ack_many((SELECT array_agg(job_id) FROM (SELECT job_id FROM m2 WHERE i = 4 UNION ALL SELECT job_id FROM m2 WHERE i = 4
                                                     UNION ALL SELECT job_id FROM m2 WHERE i = 5) s), false, 'bulk', 'w2'),
    2, 'ack_many counts a repeated id once');
SELECT is((SELECT array_agg(conveyor.get_job(job_id)->>'status' ORDER BY i) FROM m2), ARRAY['pending', 'pending', 'running'],
    'ack_many(failure) made exactly those two pending');
SELECT is(conveyor.ack_many((SELECT array_agg(job_id) FROM m2), true, worker_id => 'w1'), 0,
    'ack_many with another worker''s id acknowledges none');
SELECT is(conveyor.ack_many('{}'::uuid[], true), 0, 'ack_many of an empty array returns 0');

-- ---- the event trail -----------------------------------------------------------------------------

SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'a')), ARRAY['enqueued', 'started', 'succeeded'],
    'a completed job''s events: enqueued, started, succeeded');
SELECT is((SELECT worker_id FROM conveyor.job_events(:'a') WHERE event = 'started'), 'w1', 'started names the worker');
SELECT is((SELECT details->>'attempt' FROM conveyor.job_events(:'a') WHERE event = 'started'), '1', 'started records the attempt');
SELECT is((SELECT details - 'duration_ms' FROM conveyor.job_events(:'a') WHERE event = 'succeeded'),
    '{"attempt": 1, "stats": {"rows": 3}}'::jsonb, 'succeeded records the attempt and the stats');
SELECT is((SELECT jsonb_typeof(details->'duration_ms') FROM conveyor.job_events(:'a') WHERE event = 'succeeded'), 'number',
    'succeeded records duration_ms');
SELECT is((SELECT worker_id FROM conveyor.job_events(:'a') WHERE event = 'succeeded'), 'w1', 'succeeded names the worker');
SELECT is((SELECT details->>'priority' FROM conveyor.job_events(:'a') WHERE event = 'enqueued'), '5', 'enqueued records the priority');

SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'d')),
    ARRAY['enqueued', 'started', 'failed', 'started', 'failed', 'dead'],
    'a job failing twice of two: enqueued, started, failed, started, failed, dead');
SELECT is((SELECT array_agg(details->>'error' ORDER BY at) FROM conveyor.job_events(:'d') WHERE event = 'failed'),
    ARRAY['first', 'second'], 'failed records the error');
SELECT is((SELECT worker_id FROM conveyor.job_events(:'d') WHERE event = 'failed' ORDER BY at LIMIT 1), 'w1',
    'failed names the worker');
SELECT ok((SELECT (details->>'retry_at')::timestamptz > now() FROM conveyor.job_events(:'d') WHERE event = 'failed' ORDER BY at LIMIT 1),
    'a retried failure records retry_at');
SELECT is((SELECT details->>'reason' FROM conveyor.job_events(:'d') WHERE event = 'dead'), 'max_attempts reached',
    'dead records the reason');

-- event_trail 'failures': successes leave no events, failures do.
SELECT job_id AS qa FROM conveyor.enqueue('tap_ack_quiet', '{}') \gset
SELECT job_id AS qa_dq FROM conveyor.dequeue('tap_ack_quiet', 'w1') \gset
SELECT is(conveyor.ack(:'qa', false, 'oops'), true, 'fail a job of a failures-only queue');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'qa')), ARRAY['failed'],
    'with event_trail failures only the failure is recorded');

SELECT * FROM finish();
ROLLBACK;
