-- ack(..., retry => false): a failure the worker knows is final ends the job at once as dead.
BEGIN;
SELECT plan(32);

SELECT conveyor.create_queue('tap_nr', '{"max_attempts": 5}') \gset
SELECT conveyor.create_queue('tap_nr_other', '{"max_attempts": 5, "backoff_base_seconds": 0}') \gset

-- The queue's counters: pending, running, dead (queue_metrics) and failed (queue_totals).
CREATE FUNCTION pg_temp.counters() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_array(m.pending, m.running, m.dead, t.failed)
    FROM conveyor.queue_metrics('tap_nr') m, conveyor.queue_totals('tap_nr') t $$;

-- ---- a final failure on attempt 1 of 5 --------------------------------------------------------------

SELECT job_id AS a FROM conveyor.enqueue('tap_nr', '{"channel": "UCgone"}', group_key => 'g') \gset
SELECT job_id AS a_next FROM conveyor.enqueue('tap_nr', '{"channel": "UCnext"}', group_key => 'g') \gset
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_nr', 'w1')), :'a'::uuid, 'the group''s head runs');
SELECT is(pg_temp.counters(), '[1, 1, 0, 0]'::jsonb, 'counters: one pending, one running');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_nr', 'w2')), 0, 'its group''s next job waits');

SELECT is(conveyor.ack(:'a', false, 'HTTP 404: channel gone', '{"requests": 1}', 'w1', false), true,
    'ack(failure, retry => false) returns true');
SELECT is((SELECT jsonb_build_array(j->'status', j->'attempt', j->'max_attempts', j->'last_error', j->'reason')
           FROM conveyor.get_job(:'a') j),
    '["dead", 1, 5, "HTTP 404: channel gone", "not retryable"]'::jsonb,
    'the job is dead on attempt 1 of 5, with its error and the reason not retryable');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE job_id = :'a'), 0, 'it left the hot table');
SELECT is((SELECT status::text FROM conveyor.job_history WHERE job_id = :'a'), 'dead', 'job_history holds it as dead');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'a')), ARRAY['enqueued', 'started', 'failed', 'dead'],
    'its events: enqueued, started, failed, dead');
SELECT is((SELECT details - 'duration_ms' FROM conveyor.job_events(:'a') WHERE event = 'failed'),
    '{"attempt": 1, "error": "HTTP 404: channel gone", "stats": {"requests": 1}}'::jsonb,
    'failed records the attempt, the error and the stats, and no retry_at');
SELECT is((SELECT details FROM conveyor.job_events(:'a') WHERE event = 'dead'),
    '{"attempt": 1, "reason": "not retryable", "error": "HTTP 404: channel gone"}'::jsonb,
    'dead records the reason not retryable');
SELECT is((SELECT worker_id FROM conveyor.job_events(:'a') WHERE event = 'dead'), 'w1', 'and names the worker');
SELECT is(pg_temp.counters(), '[1, 0, 1, 1]'::jsonb, 'counters: one pending, none running, one dead, one failed');
SELECT is((SELECT jsonb_build_array(job_id, attempt, max_attempts, last_error, reason) FROM conveyor.dead_jobs('tap_nr')),
    jsonb_build_array(:'a'::uuid, 1, 5, 'HTTP 404: channel gone', 'not retryable'),
    'dead_jobs lists it with its error and reason');
SELECT is((SELECT details FROM conveyor.events(event_type => 'job_dead_lettered') WHERE subject = :'a'),
    jsonb_build_object('queue_id', (SELECT queue_id FROM conveyor.queues WHERE name = 'tap_nr'),
                       'why', 'not retryable', 'error', 'HTTP 404: channel gone'),
    'the death is a monitoring event, why: not retryable');
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_nr', 'w2')), :'a_next'::uuid, 'the group''s next job is dequeued');
SELECT is(conveyor.ack(:'a_next', true, worker_id => 'w2'), true, 'and acknowledged');

-- ---- retry => false on a queue's last attempt: still 'not retryable' --------------------------------

SELECT job_id AS l FROM conveyor.enqueue('tap_nr', '{}', max_attempts => 1) \gset
SELECT job_id AS l_dq FROM conveyor.dequeue('tap_nr', 'w1') \gset
SELECT is(conveyor.ack(:'l', false, 'rejected', retry => false), true, 'retry => false on the last attempt');
SELECT is((SELECT reason FROM conveyor.dead_jobs('tap_nr') WHERE job_id = :'l'), 'not retryable',
    'the worker''s word is the reason, not max_attempts');

-- ---- retry => true is today's ack ---------------------------------------------------------------------

SELECT job_id AS r FROM conveyor.enqueue('tap_nr', '{}') \gset
SELECT job_id AS r_dq FROM conveyor.dequeue('tap_nr', 'w1') \gset
SELECT is(conveyor.ack(:'r', false, 'HTTP 503', worker_id => 'w1', retry => true), true, 'retry => true');
SELECT is(conveyor.get_job(:'r')->>'state', 'scheduled', 'the job waits out its backoff');

-- ---- success ignores retry --------------------------------------------------------------------------

SELECT job_id AS s FROM conveyor.enqueue('tap_nr_other', '{}') \gset
SELECT job_id AS s_dq FROM conveyor.dequeue('tap_nr_other', 'w1') \gset
SELECT is(conveyor.ack(:'s', true, worker_id => 'w1', retry => false), true, 'ack(success, retry => false)');
SELECT is(conveyor.get_job(:'s')->>'status', 'completed', 'completes the job: retry is ignored on success');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'s')), ARRAY['enqueued', 'started', 'succeeded'],
    'its events: enqueued, started, succeeded');

-- ---- NULL retry ---------------------------------------------------------------------------------------

SELECT job_id AS n FROM conveyor.enqueue('tap_nr_other', '{}') \gset
SELECT job_id AS n_dq FROM conveyor.dequeue('tap_nr_other', 'w1') \gset
SELECT throws_ok(format('SELECT conveyor.ack(%L, false, %L, retry => NULL)', :'n', 'x'), '22004', 'retry must not be NULL',
    'a NULL retry raises 22004');
SELECT is(conveyor.get_job(:'n')->>'status', 'running', 'and changes nothing');

-- ---- a lost lease -------------------------------------------------------------------------------------

UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'n';
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_nr_other', 'w2')), :'n'::uuid, 'after w1''s lease ran out, w2 runs the job');
SELECT is(conveyor.ack(:'n', false, 'late', worker_id => 'w1', retry => false), false,
    'w1''s late ack(failure, retry => false) returns false');
SELECT is((SELECT jsonb_build_array(j->'status', j->'worker_id', j->'attempt') FROM conveyor.get_job(:'n') j),
    '["running", "w2", 2]'::jsonb, 'and changes nothing: still running for w2');
SELECT is(conveyor.ack(:'s', false, 'late', worker_id => 'w1', retry => false), false,
    'retry => false with worker_id of a finished job returns false');

-- ---- not running: errors as before --------------------------------------------------------------------

SELECT job_id AS p FROM conveyor.enqueue('tap_nr_other', '{}') \gset
SELECT throws_ok(format('SELECT conveyor.ack(%L, false, %L, retry => false)', :'p', 'x'), '55000',
    format('job %s is not running (it is pending)', :'p'), 'retry => false of a pending job raises 55000');
SELECT throws_ok(format('SELECT conveyor.ack(%L, false, %L, retry => false)', :'a', 'x'), '55000',
    format('job %s is already finished (dead)', :'a'), 'retry => false of a dead job raises 55000');
SELECT throws_ok($$ SELECT conveyor.ack('00000000-0000-7000-8000-000000000000', false, 'x', retry => false) $$, '42704',
    NULL, 'retry => false of an unknown job raises 42704');

SELECT * FROM finish();
ROLLBACK;
