-- Progress, custom trail events, the status_notify option and list_jobs.
BEGIN;
SELECT plan(52);

SELECT conveyor.create_queue('tap_pg', '{"backoff_base_seconds": 0}');
SELECT conveyor.create_queue('tap_pg_other');

-- ---- progress ------------------------------------------------------------------------------------

SELECT job_id AS j1 FROM conveyor.enqueue('tap_pg', '{"n": 1}', 'fetch', 'g1') \gset
SELECT job_id AS d1 FROM conveyor.dequeue('tap_pg', 'w1') \gset
SELECT is(:'d1'::uuid, :'j1'::uuid, 'the job is dequeued by w1');

SELECT is(conveyor.progress(:'j1', 'w1', 10, 'download', '{"url": "u1"}'), true, 'progress of the holder returns true');
SELECT is(conveyor.get_job(:'j1') -> 'percent', '10'::jsonb, 'get_job shows the percent');
SELECT is(conveyor.get_job(:'j1') ->> 'step', 'download', 'get_job shows the step');
SELECT is(
    (SELECT details FROM conveyor.job_events(:'j1') WHERE event = 'progress'),
    '{"step": "download", "previous_step": null, "percent": 10, "attempt": 1, "details": {"url": "u1"}}'::jsonb,
    'a new step is a progress event with the details');

SELECT is(conveyor.progress(:'j1', 'w1', 55.5), true, 'progress with a percent only');
SELECT is(conveyor.get_job(:'j1') ->> 'step', 'download', 'a NULL step keeps the stored step');
SELECT is(conveyor.get_job(:'j1') -> 'percent', '55.5'::jsonb, 'the percent is replaced');
SELECT is(conveyor.progress(:'j1', 'w1', 60, 'download'), true, 'the same step again');
SELECT is((SELECT count(*)::int FROM conveyor.job_events(:'j1') WHERE event = 'progress'), 1,
    'only a change of step is an event');
SELECT is(conveyor.progress(:'j1', 'w1', step => 'parse'), true, 'a step without percent');
SELECT is(
    (SELECT array_agg(details ->> 'previous_step' ORDER BY at) FROM conveyor.job_events(:'j1') WHERE event = 'progress'),
    ARRAY[NULL, 'download'], 'the second step event names the previous step');

SELECT is(conveyor.progress(:'j1', 'w2', 99, 'stolen'), false, 'another worker''s progress returns false');
SELECT is(conveyor.get_job(:'j1') -> 'percent', '60'::jsonb, 'and changes nothing');
SELECT throws_ok(format($$ SELECT conveyor.progress(%L, 'w1', 101) $$, :'j1'), '22023',
    'percent must be between 0 and 100, not 101', 'percent above 100 raises 22023');
SELECT throws_ok(format($$ SELECT conveyor.progress(%L, 'w1', -0.5) $$, :'j1'), '22023', NULL, 'a negative percent raises 22023');
SELECT throws_ok(format($$ SELECT conveyor.progress(%L, 'w1', 'NaN') $$, :'j1'), '22023', NULL, 'NaN raises 22023');
SELECT throws_ok($$ SELECT conveyor.progress('00000000-0000-7000-8000-000000000000', 'w1', 1) $$, '42704', NULL,
    'progress of an unknown job raises 42704');
SELECT throws_ok(format($$ SELECT conveyor.progress(%L, 'w1', 1, '') $$, :'j1'), '22023', NULL, 'an empty step raises 22023');

-- ---- job_log -------------------------------------------------------------------------------------

SELECT is(conveyor.job_log(:'j1', 'w1', 'fetch.done', '{"rows": 3}'), true, 'job_log of the holder returns true');
SELECT is(
    (SELECT row(worker_id, details)::text FROM conveyor.job_events(:'j1') WHERE event = 'log:fetch.done'),
    row('w1', '{"rows": 3}'::jsonb)::text, 'the event is stored as log:<event> with worker and details');
SELECT is(conveyor.job_log(:'j1', 'w1', 'started'), true, 'a name of conveyor''s own events is accepted');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'j1') WHERE event LIKE '%started'),
    ARRAY['started', 'log:started'], 'but it cannot pass for conveyor''s own event');
SELECT is(conveyor.job_log(:'j1', 'w2', 'x'), false, 'another worker''s job_log returns false');
SELECT is((SELECT count(*)::int FROM conveyor.job_events(:'j1') WHERE event = 'log:x'), 0, 'and writes nothing');
SELECT throws_ok(format($$ SELECT conveyor.job_log(%L, 'w1', 'log:x') $$, :'j1'), '22023',
    'event name "log:x" is not allowed', 'a colon in an event name raises 22023');
SELECT throws_ok(format($$ SELECT conveyor.job_log(%L, 'w1', '') $$, :'j1'), '22023', NULL, 'an empty event name raises 22023');
SELECT throws_ok(format($$ SELECT conveyor.job_log(%L, 'w1', repeat('e', 65)) $$, :'j1'), '22023', NULL,
    'an event name over 64 characters raises 22023');
SELECT throws_ok($$ SELECT conveyor.job_log('00000000-0000-7000-8000-000000000000', 'w1', 'x') $$, '42704', NULL,
    'job_log of an unknown job raises 42704');

-- ---- finished jobs keep their progress; a finished job is not the worker's any more ---------------

SELECT conveyor.ack(:'j1', true);
SELECT is(conveyor.get_job(:'j1') ->> 'step', 'parse', 'a finished job keeps its step in history');
SELECT is(conveyor.progress(:'j1', 'w1', 100), false, 'progress of a finished job returns false');
SELECT is(conveyor.job_log(:'j1', 'w1', 'late'), false, 'job_log of a finished job returns false');

-- ---- status_notify option --------------------------------------------------------------------------

SELECT is((SELECT options -> 'status_notify' FROM conveyor.list_queues() WHERE queue = 'tap_pg'), 'false'::jsonb,
    'status_notify is off by default');
SELECT conveyor.alter_queue('tap_pg', '{"status_notify": true}');
SELECT is((SELECT options -> 'status_notify' FROM conveyor.list_queues() WHERE queue = 'tap_pg'), 'true'::jsonb,
    'alter_queue turns status_notify on');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_pg', '{"status_notify": "yes"}') $$, '22023', NULL,
    'status_notify that is not a boolean raises 22023');

-- ---- list_jobs -----------------------------------------------------------------------------------

SELECT job_id AS j2 FROM conveyor.enqueue('tap_pg', '{"n": 2}', 'parse', 'g2') \gset
SELECT job_id AS j3 FROM conveyor.enqueue('tap_pg', '{"n": 3}', 'fetch', 'g1') \gset
SELECT job_id AS j4 FROM conveyor.enqueue('tap_pg_other', '{"n": 4}', 'fetch', 'g1') \gset
SELECT conveyor.cancel(:'j2', 'not needed');
SELECT job_id AS d3 FROM conveyor.dequeue('tap_pg', 'w3') \gset

SELECT is(
    (SELECT array_agg(l.job_id ORDER BY l.ordinality) FROM conveyor.list_jobs() WITH ORDINALITY AS l
     WHERE l.job_id::text = ANY(ARRAY[:'j1', :'j2', :'j3', :'j4'])),
    ARRAY[:'j4', :'j3', :'j2', :'j1']::uuid[], 'list_jobs lists pending, running and finished jobs, newest first');
SELECT is(
    (SELECT count(*)::int FROM conveyor.list_jobs() l WHERE to_jsonb(l) <> conveyor.get_job(l.job_id)),
    0, 'every row has exactly get_job''s keys and values');
SELECT is((SELECT array_agg(job_id ORDER BY job_id DESC) FROM conveyor.list_jobs('tap_pg')),
    ARRAY[:'j3', :'j2', :'j1']::uuid[], 'filter by queue');
SELECT is((SELECT array_agg(status ORDER BY job_id DESC) FROM conveyor.list_jobs('tap_pg', ARRAY['running', 'cancelled'])),
    ARRAY['running', 'cancelled'], 'filter by status, active and finished');
SELECT is((SELECT array_agg(job_id ORDER BY job_id DESC) FROM conveyor.list_jobs(group_key => 'g1', job_type => 'fetch')),
    ARRAY[:'j4', :'j3', :'j1']::uuid[], 'filter by group and job type');
SELECT is((SELECT array_agg(job_id ORDER BY job_id DESC) FROM conveyor.list_jobs('tap_pg', lim => 2, after => :'j3')),
    ARRAY[:'j2', :'j1']::uuid[], 'after pages past the last id seen');
SELECT is((SELECT count(*)::int FROM conveyor.list_jobs('tap_pg', since => now() + interval '1 hour')), 0,
    'since after every creation lists nothing');
SELECT is((SELECT count(*)::int FROM conveyor.list_jobs('tap_pg', since => now() - interval '1 hour', until => clock_timestamp() + interval '1 second')), 3,
    'since and until around the creations list them all');
SELECT throws_ok($$ SELECT * FROM conveyor.list_jobs('tap_pg_none') $$, '42704', NULL, 'an unknown queue raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.list_jobs(status => ARRAY['done']) $$, '22023',
    'unknown job status "done"', 'an unknown status raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.list_jobs(lim => 0) $$, '22023', NULL, 'lim 0 raises 22023');

-- ---- roles ---------------------------------------------------------------------------------------

CREATE ROLE tap_pg_reader IN ROLE conveyor_reader;
CREATE ROLE tap_pg_worker IN ROLE conveyor_worker;
SET ROLE tap_pg_reader;
SELECT is((SELECT count(*)::int FROM conveyor.list_jobs('tap_pg')), 3, 'a reader can list jobs');
SELECT throws_ok(format($$ SELECT conveyor.progress(%L, 'w3', 10) $$, :'j3'), '42501', NULL, 'a reader cannot report progress');
SELECT throws_ok(format($$ SELECT conveyor.job_log(%L, 'w3', 'x') $$, :'j3'), '42501', NULL, 'a reader cannot log events');
RESET ROLE;
SET ROLE tap_pg_worker;
SELECT is(conveyor.progress(:'j3', 'w3', 10, 'fetch'), true, 'a worker reports progress');
SELECT is(conveyor.job_log(:'j3', 'w3', 'fetch.started'), true, 'a worker logs an event');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_pg', '{"status_notify": false}') $$, '42501', NULL,
    'a worker cannot change status_notify');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
