-- Bad input gets a clear error with a precise SQLSTATE and changes nothing.
\set SHOW_CONTEXT never
SELECT conveyor.create_queue('errs', '{"job_types": ["FETCH", "PARSE"], "required_keys": ["channel_id"]}');

-- Queue options
SELECT conveyor.create_queue('errs');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"lease_secs": 10}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"lease_seconds": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"max_attempts": 2.5}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"max_attempts": "3"}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"job_types": "FETCH"}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"notify": "yes"}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"backoff_base_seconds": 100, "backoff_max_seconds": 10}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS queues_named_bad FROM conveyor.list_queues() WHERE queue = 'bad';

-- Unknown queue
SELECT * FROM conveyor.enqueue('nope', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.dequeue('nope', 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.pause_queue('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.queue_metrics('nope');
\echo :LAST_ERROR_SQLSTATE

-- enqueue
SELECT * FROM conveyor.enqueue('errs', '{"channel_id": "c1"}', 'FETCH', priority => 11);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '{"channel_id": "c1"}', 'FETCH', priority => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '{"channel_id": "c1"}', 'DELETE');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '{"channel_id": "c1"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '{"video_id": "v1"}', 'FETCH');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '[1, 2]', 'FETCH');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '"text"', 'FETCH');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', NULL, 'FETCH');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue('errs', '{"channel_id": "c1"}', 'FETCH', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE

-- enqueue_batch: the failing element's index, and nothing written
SELECT * FROM conveyor.enqueue_batch('errs', '{"payload": {}}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": "FETCH", "payload": {"channel_id": "c1"}}, 42]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": "FETCH", "payload": {"channel_id": "c1"}}, {"job_type": "FETCH", "payload": {"channel_id": "c2"}, "prio": 3}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": "FETCH", "payload": {"channel_id": "c1"}}, {"job_type": "FETCH", "payload": {"channel_id": "c2"}}, {"job_type": "FETCH", "payload": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": "FETCH", "payload": {"channel_id": "c1"}, "run_at": "tomorrow-ish"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": "FETCH", "payload": {"channel_id": "c1"}, "priority": 99}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.enqueue_batch('errs', '[{"job_type": 7, "payload": {"channel_id": "c1"}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS jobs_written FROM conveyor.jobs;

-- dequeue
SELECT * FROM conveyor.dequeue('errs', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.dequeue('errs', 'w1', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.dequeue('errs', 'w1', 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.dequeue('errs', 'w1', 1, 0);
\echo :LAST_ERROR_SQLSTATE

-- A paused queue accepts jobs and hands out none.
SELECT conveyor.pause_queue('errs');
SELECT was_duplicate FROM conveyor.enqueue('errs', '{"channel_id": "c1"}', 'FETCH');
SELECT count(*) AS dequeued_while_paused FROM conveyor.dequeue('errs', 'w1', 10);
SELECT conveyor.resume_queue('errs');

-- ack, heartbeat, release, retry, cancel on unknown or finished jobs
SELECT conveyor.ack('00000000-0000-7000-8000-000000000000', true);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.ack('00000000-0000-7000-8000-000000000000', true, worker_id => 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.ack(NULL, true);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.heartbeat('00000000-0000-7000-8000-000000000000', 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.retry('00000000-0000-7000-8000-000000000000');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.cancel('00000000-0000-7000-8000-000000000000', 'no reason');
\echo :LAST_ERROR_SQLSTATE

-- The messages name the job; ids differ per run, so they are masked here.
CREATE FUNCTION show_error(sql text, id uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || replace(SQLERRM, id::text, '<job>');
END
$$;
SELECT job_id AS pending_id FROM conveyor.jobs LIMIT 1 \gset
SELECT show_error(format('SELECT conveyor.ack(%L, true)', :'pending_id'), :'pending_id');
SELECT show_error(format('SELECT conveyor.release(%L, %L, -5)', :'pending_id', 'w1'), :'pending_id');
SELECT show_error(format('SELECT conveyor.retry(%L, -1)', :'pending_id'), :'pending_id');
SELECT show_error(format('SELECT conveyor.retry(%L)', :'pending_id'), :'pending_id');
SELECT job_id AS running_id FROM conveyor.dequeue('errs', 'w1') \gset
SELECT conveyor.ack(:'running_id', true, worker_id => 'w1') AS acked;
SELECT show_error(format('SELECT conveyor.ack(%L, true)', :'running_id'), :'running_id');
SELECT conveyor.ack(:'running_id', true, worker_id => 'w1') AS acked_again_with_worker;
SELECT show_error(format('SELECT conveyor.cancel(%L)', :'running_id'), :'running_id');
SELECT show_error(format('SELECT conveyor.retry(%L)', :'running_id'), :'running_id');
SELECT show_error(format('SELECT conveyor.ack_many(ARRAY[%L]::uuid[], true)', :'running_id'), :'running_id');
SELECT conveyor.ack_many(ARRAY[:'running_id']::uuid[], true, worker_id => 'w1') AS acked_many_with_worker;

-- drop_queue refuses a queue with jobs unless forced
SELECT was_duplicate FROM conveyor.enqueue('errs', '{"channel_id": "c9"}', 'PARSE');
SELECT conveyor.drop_queue('errs');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.drop_queue('errs', force => true);
DROP FUNCTION show_error(text, uuid);
