-- A job's life besides ack: heartbeat, release, lease expiry (reap), cancel, dead_letter, retry, get_job.
BEGIN;
SELECT plan(78);

-- tap_lc: lease 300 s, backoff 10 s (the defaults); tap_lc_fast: failures are retried at once.
SELECT conveyor.create_queue('tap_lc') \gset
SELECT conveyor.create_queue('tap_lc_fast', '{"backoff_base_seconds": 0}') \gset
SELECT conveyor.create_queue('tap_lc_ops') \gset

-- ---- heartbeat -----------------------------------------------------------------------------------

SELECT job_id AS h FROM conveyor.enqueue('tap_lc', '{"n": "h"}') \gset
SELECT job_id AS h_dq FROM conveyor.dequeue('tap_lc', 'w1') \gset
SELECT conveyor.heartbeat(:'h', 'w1', 600) AS h_until \gset
SELECT ok(:'h_until'::timestamptz BETWEEN now() + interval '600 seconds' AND clock_timestamp() + interval '600 seconds',
    'heartbeat(extend_seconds => 600) returns the clock + 600 s');
SELECT is((conveyor.get_job(:'h')->>'lease_until')::timestamptz, :'h_until'::timestamptz,
    'and the lease is extended to that');
SELECT conveyor.heartbeat(:'h', 'w1') AS h_until2 \gset
SELECT ok(:'h_until2'::timestamptz BETWEEN now() + interval '300 seconds' AND clock_timestamp() + interval '300 seconds',
    'heartbeat without extend_seconds uses the queue''s lease_seconds');
SELECT is(conveyor.heartbeat(:'h', 'w2', 600), NULL, 'heartbeat by a worker not holding the lease returns NULL');
SELECT is((conveyor.get_job(:'h')->>'lease_until')::timestamptz, :'h_until2'::timestamptz,
    'and does not touch the lease');
SELECT throws_ok(format('SELECT conveyor.heartbeat(%L, %L, 0)', :'h', 'w1'),
    '22023', NULL, 'heartbeat with extend_seconds 0 raises 22023');
SELECT throws_ok($$ SELECT conveyor.heartbeat('00000000-0000-7000-8000-000000000000', 'w1') $$,
    '42704', NULL, 'heartbeat of an unknown job raises 42704');
SELECT is(conveyor.ack(:'h', true), true, 'ack the job');
SELECT is(conveyor.heartbeat(:'h', 'w1', 600), NULL, 'heartbeat of a finished job returns NULL (lease lost)');
SELECT is(conveyor.release(:'h', 'w1'), false, 'release of a finished job returns false');

-- ---- release -------------------------------------------------------------------------------------

SELECT job_id AS r FROM conveyor.enqueue('tap_lc', '{"n": "r"}') \gset
SELECT job_id AS r_dq FROM conveyor.dequeue('tap_lc', 'w1') \gset
SELECT is((conveyor.get_job(:'r')->>'attempt')::int, 1, 'dequeue counted attempt 1');
SELECT is(conveyor.release(:'r', 'w2'), false, 'release by a worker not holding the lease returns false');
SELECT is(conveyor.get_job(:'r')->>'status', 'running', 'and leaves the job running');
SELECT is(conveyor.release(:'r', 'w1'), true, 'release by the lease holder returns true');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'attempt', j->'worker_id', j->'lease_until') FROM conveyor.get_job(:'r') j),
    '["pending", 0, null, null]'::jsonb,
    'the released job is pending, unleased, its attempt back to 0');
SELECT is((conveyor.get_job(:'r')->>'run_at')::timestamptz, now(), 'released without delay, it is due now');
SELECT is((SELECT row(job_id, attempt)::text FROM conveyor.dequeue('tap_lc', 'w2')), row(:'r'::uuid, 1)::text,
    'the released job is dequeued again on attempt 1, not 2');
SELECT is(conveyor.release(:'r', 'w2', 60), true, 'release with a delay');
SELECT is((conveyor.get_job(:'r')->>'run_at')::timestamptz, now() + interval '60 seconds',
    'the job is due after the delay');
SELECT is(conveyor.get_job(:'r')->>'state', 'scheduled', 'and scheduled until then');
SELECT is((conveyor.get_job(:'r')->>'attempt')::int, 0, 'the attempt is not counted');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lc', 'w1')), 0, 'the delayed job is not dequeued early');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'r') WHERE event = 'released'),
    ARRAY['released', 'released'], 'each release is recorded');
SELECT throws_ok(format('SELECT conveyor.release(%L, %L, -1)', :'r', 'w1'),
    '22023', 'delay_seconds must not be negative, not -1', 'a negative delay raises 22023');
SELECT throws_ok($$ SELECT conveyor.release('00000000-0000-7000-8000-000000000000', 'w1') $$,
    '42704', NULL, 'release of an unknown job raises 42704');

-- ---- lease expiry: reap --------------------------------------------------------------------------

SELECT job_id AS e FROM conveyor.enqueue('tap_lc_ops', '{"n": "e"}') \gset
SELECT job_id AS live FROM conveyor.enqueue('tap_lc_ops', '{"n": "live"}') \gset
CREATE TEMP TABLE e_dq AS SELECT job_id FROM conveyor.dequeue('tap_lc_ops', 'w1', 2);
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'e';
SELECT is(conveyor.reap('tap_lc_ops'), 1, 'reap returns 1 for the one expired lease');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'attempt', j->'worker_id', j->'last_error') FROM conveyor.get_job(:'e') j),
    '["pending", 1, null, "lease expired"]'::jsonb,
    'the expired job is pending again, its attempt counted');
SELECT ok(((conveyor.get_job(:'e')->>'run_at')::timestamptz - now()) BETWEEN interval '7.5 seconds' AND interval '10 seconds',
    'the expired job backs off like a failure');
SELECT is(conveyor.get_job(:'live')->>'status', 'running', 'a job with a live lease is not reaped');
SELECT is(conveyor.heartbeat(:'e', 'w1'), NULL, 'heartbeat of a reaped job returns NULL (lease lost)');
SELECT is(conveyor.release(:'e', 'w1'), false, 'release of a reaped job returns false');
SELECT is((conveyor.get_job(:'e')->>'attempt')::int, 1, 'and does not touch its attempt');
SELECT is(conveyor.reap('tap_lc_ops'), 0, 'a second reap finds nothing');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'e')), ARRAY['enqueued', 'started', 'expired'],
    'the trail records the expiry');
SELECT throws_ok($$ SELECT conveyor.reap('tap_lc_nope') $$, '42704', NULL, 'reap of an unknown queue raises 42704');

SELECT job_id AS e1 FROM conveyor.enqueue('tap_lc_ops', '{"n": "e1"}', max_attempts => 1) \gset
SELECT job_id AS e1_dq FROM conveyor.dequeue('tap_lc_ops', 'w1') \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'e1';
SELECT is(conveyor.reap(), 1, 'reap() without a queue reaps every queue');
SELECT is(conveyor.get_job(:'e1')->>'status', 'dead', 'an expired job at max_attempts is dead');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'e1')),
    ARRAY['enqueued', 'started', 'expired', 'dead'], 'its trail ends expired, dead');

-- A grouped job that expires at max_attempts hands its group to the next job.
SELECT conveyor.create_queue('tap_lc_group') \gset
SELECT job_id AS ga FROM conveyor.enqueue('tap_lc_group', '{}', group_key => 'g', max_attempts => 1) \gset
SELECT job_id AS gb FROM conveyor.enqueue('tap_lc_group', '{}', group_key => 'g') \gset
SELECT job_id AS ga_dq FROM conveyor.dequeue('tap_lc_group', 'w1', 10) \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'ga';
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_lc_group', 'w2', 10)), ARRAY[:'gb'::uuid],
    'after the group''s running job expired and died, dequeue hands out the next job of the group');
SELECT is(conveyor.get_job(:'ga')->>'status', 'dead', 'the expired job is dead');

-- dequeue reaps the expired jobs it meets.
SELECT job_id AS f FROM conveyor.enqueue('tap_lc_fast', '{"n": "f"}') \gset
SELECT job_id AS f_dq FROM conveyor.dequeue('tap_lc_fast', 'w1') \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'f';
SELECT is((SELECT row(job_id, attempt)::text FROM conveyor.dequeue('tap_lc_fast', 'w2')), row(:'f'::uuid, 2)::text,
    'dequeue reaps an expired job and (no backoff) hands it out again on attempt 2');
SELECT is(conveyor.get_job(:'f')->>'worker_id', 'w2', 'now leased to the new worker');

SELECT job_id AS g FROM conveyor.enqueue('tap_lc', '{"n": "g"}') \gset
SELECT job_id AS g_dq FROM conveyor.dequeue('tap_lc', 'w1') \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'g';
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_lc', 'w2')), 0,
    'with backoff, the reaped job is not handed out at once');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'state', j->'attempt', j->'last_error') FROM conveyor.get_job(:'g') j),
    '["pending", "scheduled", 1, "lease expired"]'::jsonb,
    'but dequeue did reap it');

-- ---- cancel, dead_letter -------------------------------------------------------------------------

SELECT job_id AS k FROM conveyor.enqueue('tap_lc_ops', '{"n": "k"}') \gset
SELECT is(conveyor.cancel(:'k', 'not needed'), true, 'cancel of a pending job returns true');
SELECT is(conveyor.get_job(:'k')->>'status', 'cancelled', 'the job is cancelled');
SELECT is((conveyor.get_job(:'k')->>'finished_at')::timestamptz, now(), 'a cancelled job has finished_at');
SELECT is((SELECT details->>'reason' FROM conveyor.job_events(:'k') WHERE event = 'cancelled'), 'not needed',
    'the cancel reason is recorded');
SELECT throws_ok(format('SELECT conveyor.cancel(%L)', :'k'), '55000', NULL, 'cancel of a cancelled job raises 55000');
SELECT throws_ok($$ SELECT conveyor.cancel('00000000-0000-7000-8000-000000000000') $$,
    '42704', NULL, 'cancel of an unknown job raises 42704');

SELECT job_id AS kr FROM conveyor.enqueue('tap_lc_ops', '{"n": "kr"}') \gset
CREATE TEMP TABLE kr_dq AS SELECT job_id FROM conveyor.dequeue('tap_lc_ops', 'w1', 10);
SELECT is(conveyor.cancel(:'kr'), true, 'cancel of a running job returns true');
SELECT is(conveyor.get_job(:'kr')->>'status', 'cancelled', 'the running job is cancelled');
SELECT is(conveyor.ack(:'kr', true, worker_id => 'w1'), false, 'the worker''s later ack returns false');

SELECT job_id AS dl FROM conveyor.enqueue('tap_lc_ops', '{"n": "dl"}') \gset
SELECT is(conveyor.dead_letter(:'dl', 'poison'), true, 'dead_letter returns true');
SELECT is(conveyor.get_job(:'dl')->>'status', 'dead', 'the job is dead');
SELECT is(conveyor.get_job(:'dl')->>'last_error', 'poison', 'the dead_letter reason becomes last_error');
SELECT throws_ok(format('SELECT conveyor.dead_letter(%L, NULL)', :'e'), '22004', NULL, 'dead_letter needs a reason');

-- ---- retry ---------------------------------------------------------------------------------------

SELECT is(conveyor.retry(:'dl'), true, 'retry of a dead job returns true');
SELECT is(
    (SELECT jsonb_build_array(j->'status', j->'attempt', j->'finished_at') FROM conveyor.get_job(:'dl') j),
    '["pending", 0, null]'::jsonb,
    'the retried job is pending with attempt 0');
SELECT is((conveyor.get_job(:'dl')->>'run_at')::timestamptz, now(), 'retry without delay makes it due now');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'dl')), ARRAY['enqueued', 'dead', 'retried'],
    'the trail records the retry');

SELECT is(conveyor.retry(:'k', 30), true, 'retry of a cancelled job with a delay');
SELECT is((conveyor.get_job(:'k')->>'run_at')::timestamptz, now() + interval '30 seconds', 'it is due after the delay');
SELECT is(conveyor.get_job(:'k')->>'status', 'pending', 'and pending');

SELECT is(conveyor.retry(:'e1'), true, 'retry of a job that died at max_attempts');
SELECT is((SELECT jsonb_build_array(j->'attempt', j->'max_attempts') FROM conveyor.get_job(:'e1') j), '[1, 2]'::jsonb,
    'keeps its attempt count and gets one more attempt, so it cannot die before it runs');
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_lc_ops', 'w1', 10) WHERE job_id = :'e1'), 2,
    'its next dequeue is attempt 2 (the retry counts as an attempt)');

SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'h'),
    '55000', format('job %s completed; only dead or cancelled jobs can be retried', :'h'),
    'retry of a completed job raises 55000');
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'k'), '55000', NULL, 'retry of a pending job raises 55000');
SELECT throws_ok(format('SELECT conveyor.retry(%L, -5)', :'kr'), '22023', NULL, 'retry with a negative delay raises 22023');
SELECT throws_ok($$ SELECT conveyor.retry('00000000-0000-7000-8000-000000000000') $$,
    '42704', NULL, 'retry of an unknown job raises 42704');

SELECT job_id AS x1 FROM conveyor.enqueue('tap_lc_ops', '{"n": "x1"}', dedup_key => 'dk') \gset
SELECT conveyor.cancel(:'x1') \gset
SELECT job_id AS x2 FROM conveyor.enqueue('tap_lc_ops', '{"n": "x2"}', dedup_key => 'dk') \gset
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'x1'),
    '55000', NULL, 'retry of a job whose dedup_key another active job holds raises 55000');
SELECT is(conveyor.get_job(:'x1')->>'status', 'cancelled', 'and leaves it cancelled');

-- ---- get_job -------------------------------------------------------------------------------------

SELECT ok(conveyor.get_job(:'live') ?& ARRAY['job_id', 'queue', 'status', 'job_type', 'group_key', 'payload', 'priority',
    'attempt', 'max_attempts', 'run_at', 'worker_id', 'lease_until', 'last_error', 'created_at', 'finished_at'],
    'get_job of a running job has every documented key');
SELECT ok(conveyor.get_job(:'h') ?& ARRAY['job_id', 'queue', 'status', 'job_type', 'group_key', 'payload', 'priority',
    'attempt', 'max_attempts', 'run_at', 'worker_id', 'lease_until', 'last_error', 'created_at', 'finished_at'],
    'get_job of a finished job has every documented key');
SELECT is((conveyor.get_job(:'live')->>'job_id')::uuid, :'live'::uuid, 'get_job reports the job_id');
SELECT is((conveyor.get_job(:'h')->>'created_at')::timestamptz, now(), 'created_at survives the move to history');
SELECT throws_ok($$ SELECT conveyor.get_job('00000000-0000-7000-8000-000000000000') $$,
    '42704', NULL, 'get_job of an unknown job raises 42704');

SELECT * FROM finish();
ROLLBACK;
