-- Producing jobs: enqueue and enqueue_batch.
BEGIN;
SELECT plan(71);

SELECT conveyor.create_queue('tap_enq') \gset
SELECT conveyor.create_queue('tap_enq_typed', '{"job_types": ["email", "sms"], "required_keys": ["to"]}') \gset
SELECT conveyor.create_queue('tap_enq_sched') \gset
SELECT conveyor.create_queue('tap_enq_batch') \gset
SELECT conveyor.create_queue('tap_enq_dedup') \gset
SELECT queue_id AS dedup_qid FROM conveyor.queues WHERE name = 'tap_enq_dedup' \gset
SELECT queue_id AS batch_qid FROM conveyor.queues WHERE name = 'tap_enq_batch' \gset

-- ---- the returned row ----------------------------------------------------------------------------

SELECT job_id AS j1, was_duplicate AS j1_dup FROM conveyor.enqueue('tap_enq', '{"n": 1}') \gset
SELECT job_id AS j2 FROM conveyor.enqueue('tap_enq', '{"n": 2}') \gset

SELECT is((SELECT count(*)::int FROM conveyor.enqueue('tap_enq', '{"n": 0}')), 1, 'enqueue returns exactly one row');
SELECT is(:'j1_dup'::boolean, false, 'a fresh job is not a duplicate');
SELECT is(substr(:'j1', 15, 1), '7', 'job_id is a version 7 UUID');
SELECT ok(substr(:'j1', 20, 1) IN ('8', '9', 'a', 'b'), 'job_id has the RFC 9562 variant bits');
SELECT ok(conveyor.uuid_v7_time(:'j1') BETWEEN now() - interval '1 minute' AND clock_timestamp(),
    'the job_id timestamp is the enqueue time');
SELECT ok(:'j2'::uuid > :'j1'::uuid, 'job ids increase in enqueue order');

SELECT is(conveyor.get_job(:'j1')->'payload', '{"n": 1}'::jsonb, 'the payload is stored');
SELECT is(conveyor.get_job(:'j1')->>'status', 'pending', 'a new due job is pending');
SELECT is((conveyor.get_job(:'j1')->>'priority')::int, 5, 'priority defaults to 5');
SELECT is((conveyor.get_job(:'j1')->>'attempt')::int, 0, 'attempt starts at 0');
SELECT is((conveyor.get_job(:'j1')->>'max_attempts')::int, 5, 'max_attempts defaults to the queue''s');
SELECT is((conveyor.get_job(:'j1')->>'run_at')::timestamptz, now(), 'run_at defaults to now()');
SELECT is(conveyor.get_job(:'j1')->>'queue', 'tap_enq', 'get_job names the queue');

-- ---- named parameters ----------------------------------------------------------------------------

SELECT job_id AS jn FROM conveyor.enqueue(queue => 'tap_enq', payload => '{}', priority => 7) \gset
SELECT is((conveyor.get_job(:'jn')->>'priority')::int, 7, 'enqueue(queue =>, payload =>, priority =>) sets priority');
SELECT is(conveyor.get_job(:'jn')->'payload', '{}'::jsonb, 'and the empty payload');

SELECT job_id AS jn2 FROM conveyor.enqueue(queue => 'tap_enq', job_type => 'report', group_key => 'acct-1',
    max_attempts => 2, run_at => now() - interval '5 minutes') \gset
SELECT is(
    conveyor.get_job(:'jn2') - 'job_id' - 'created_at' - 'run_at' - 'state',
    jsonb_build_object('queue', 'tap_enq', 'status', 'pending', 'job_type', 'report', 'group_key', 'acct-1',
        'dedup_key', NULL, 'payload', '{}'::jsonb, 'priority', 5, 'attempt', 0, 'max_attempts', 2,
        'worker_id', NULL, 'started_at', NULL, 'lease_until', NULL, 'last_error', NULL, 'finished_at', NULL,
        'percent', NULL, 'step', NULL, 'reason', NULL, 'details', NULL, 'resolved_at', NULL,
        'resolution', NULL, 'resolved_by', NULL),
    'job_type, group_key, max_attempts and the default payload are stored');
SELECT is((conveyor.get_job(:'jn2')->>'run_at')::timestamptz, now() - interval '5 minutes',
    'an explicit run_at in the past is kept');

-- ---- dedup_key -----------------------------------------------------------------------------------

SELECT job_id AS da, was_duplicate AS da_dup
    FROM conveyor.enqueue('tap_enq_dedup', '{"v": 1}', dedup_key => 'order-42') \gset
SELECT job_id AS db, was_duplicate AS db_dup
    FROM conveyor.enqueue('tap_enq_dedup', '{"v": 2}', priority => 9, dedup_key => 'order-42') \gset
SELECT is(:'da_dup'::boolean, false, 'the first job with a dedup_key is not a duplicate');
SELECT is(:'db'::uuid, :'da'::uuid, 'a second enqueue with the dedup_key of a pending job returns its id');
SELECT is(:'db_dup'::boolean, true, 'and says it was a duplicate');
SELECT is(conveyor.get_job(:'da')->'payload', '{"v": 1}'::jsonb, 'the duplicate did not change the payload');
SELECT is((conveyor.get_job(:'da')->>'priority')::int, 5, 'the duplicate did not change the priority');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE queue_id = :dedup_qid AND dedup_key = 'order-42'), 1,
    'only one job holds the dedup_key');

-- Running: still a duplicate.
SELECT job_id AS dq_da FROM conveyor.dequeue('tap_enq_dedup', 'w1') \gset
SELECT is(conveyor.get_job(:'da')->>'status', 'running', 'the dedup job is now running');
SELECT is(
    (SELECT row(job_id, was_duplicate)::text FROM conveyor.enqueue('tap_enq_dedup', '{"v": 3}', dedup_key => 'order-42')),
    row(:'da'::uuid, true)::text,
    'enqueue with the dedup_key of a running job returns the running job, as a duplicate');
SELECT is(conveyor.get_job(:'da')->>'status', 'running', 'the running job is untouched by the duplicate');
SELECT is((conveyor.get_job(:'da')->>'attempt')::int, 1, 'its attempt is untouched');
SELECT is(conveyor.get_job(:'da')->'payload', '{"v": 1}'::jsonb, 'its payload is untouched');

-- Completed: the key is free again.
SELECT is(conveyor.ack(:'da', true), true, 'ack of the dedup job succeeds');
SELECT job_id AS dc, was_duplicate AS dc_dup
    FROM conveyor.enqueue('tap_enq_dedup', '{"v": 4}', dedup_key => 'order-42') \gset
SELECT isnt(:'dc'::uuid, :'da'::uuid, 'after the job completed, the dedup_key enqueues a new job');
SELECT is(:'dc_dup'::boolean, false, 'which is not a duplicate');
SELECT is(conveyor.get_job(:'dc')->'payload', '{"v": 4}'::jsonb, 'with the new payload');
SELECT is(conveyor.get_job(:'da')->>'status', 'completed', 'the old job stays completed');

-- A dedup_key is per queue.
SELECT job_id AS dq_other FROM conveyor.enqueue('tap_enq', '{"v": 5}', dedup_key => 'order-42') \gset
SELECT isnt(:'dq_other'::uuid, :'dc'::uuid, 'the same dedup_key in another queue enqueues a separate job');

-- ---- validation ----------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '{}', priority => 0) $$,
    '22023', 'priority must be between 1 and 10, not 0', 'priority 0 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '{}', priority => 11) $$,
    '22023', NULL, 'priority 11 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '{}', priority => NULL) $$,
    '22004', NULL, 'a NULL priority raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '[1, 2]') $$,
    '22023', 'payload must be a JSON object, not an array', 'an array payload raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '"text"') $$,
    '22023', 'payload must be a JSON object, not a scalar', 'a string payload raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '42') $$,
    '22023', NULL, 'a number payload raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', NULL) $$,
    '22004', 'payload must not be NULL', 'a NULL payload raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq', '{}', max_attempts => 0) $$,
    '22023', NULL, 'max_attempts 0 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq_typed', '{"to": "a@b"}', job_type => 'fax') $$,
    '22023', 'unknown job_type "fax" for queue "tap_enq_typed"', 'a job_type outside the queue''s job_types raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq_typed', '{"to": "a@b"}') $$,
    '22023', NULL, 'a missing job_type on a queue with job_types raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_enq_typed', '{"subject": "hi"}', job_type => 'email') $$,
    '22023', 'payload is missing required key "to"', 'a payload without a required key raises 22023');
SELECT is(
    (SELECT was_duplicate FROM conveyor.enqueue('tap_enq_typed', '{"to": "a@b", "x": 1}', job_type => 'sms')), false,
    'a job of an allowed type with the required keys is accepted');
SELECT is((SELECT count(*)::int FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'tap_enq_typed'), 1,
    'the rejected enqueues left no jobs behind');

-- ---- scheduled jobs ------------------------------------------------------------------------------

SELECT job_id AS js FROM conveyor.enqueue('tap_enq_sched', '{}', run_at => now() + interval '1 hour') \gset
SELECT is(conveyor.get_job(:'js')->>'status', 'pending', 'a job scheduled for later is pending');
SELECT is(conveyor.get_job(:'js')->>'state', 'scheduled', 'in the internal state scheduled');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_enq_sched', 'w1', 10)), 0,
    'a job whose run_at is in the future is not dequeued');
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'js';
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_enq_sched', 'w1', 10)), ARRAY[:'js'::uuid],
    'once due, the scheduled job is dequeued');

-- ---- enqueue_batch -------------------------------------------------------------------------------

SELECT job_id AS bx FROM conveyor.enqueue('tap_enq_batch', '{"old": true}', dedup_key => 'bx') \gset
CREATE TEMP TABLE batch1 AS SELECT * FROM conveyor.enqueue_batch('tap_enq_batch', $$[
    {"payload": {"a": 1}},
    {"payload": {"a": 2}, "dedup_key": "bx"},
    {"payload": {"a": 3}, "dedup_key": "by"},
    {"payload": {"a": 4}, "dedup_key": "by"},
    {"priority": 8, "job_type": "t", "group_key": "g", "max_attempts": 3}
]$$);

SELECT is((SELECT array_agg(ord ORDER BY ord) FROM batch1), ARRAY[0, 1, 2, 3, 4],
    'enqueue_batch returns one row per element, ord 0..n-1');
SELECT is((SELECT array_agg(was_duplicate ORDER BY ord) FROM batch1), ARRAY[false, true, false, true, false],
    'was_duplicate marks the elements whose dedup_key was taken');
SELECT is((SELECT job_id FROM batch1 WHERE ord = 1), :'bx'::uuid,
    'an element with the dedup_key of an active job gets that job''s id');
SELECT is((SELECT job_id FROM batch1 WHERE ord = 3), (SELECT job_id FROM batch1 WHERE ord = 2),
    'an element repeating an earlier element''s dedup_key gets the earlier element''s id');
SELECT is((SELECT count(DISTINCT job_id)::int FROM batch1 WHERE NOT was_duplicate), 3,
    'the three new elements got distinct ids');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE queue_id = :batch_qid), 4,
    'the batch inserted exactly three jobs next to the existing one');
SELECT is(conveyor.get_job(:'bx')->'payload', '{"old": true}'::jsonb, 'the active dedup job kept its payload');
SELECT is(conveyor.get_job((SELECT job_id FROM batch1 WHERE ord = 2))->'payload', '{"a": 3}'::jsonb,
    'the first element with a new dedup_key wins');
SELECT is(
    (SELECT jsonb_build_array(j->'priority', j->'job_type', j->'group_key', j->'max_attempts', j->'payload')
     FROM (SELECT conveyor.get_job(job_id) AS j FROM batch1 WHERE ord = 4) s),
    '[8, "t", "g", 3, {}]'::jsonb,
    'batch fields priority, job_type, group_key, max_attempts are stored; payload defaults to {}');

SELECT throws_ok($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch',
        '[{"payload": {"b": 1}}, {"payload": {"b": 2}}, {"payload": {"b": 3}, "priority": 11}]') $$,
    '22023', 'jobs[2]: priority must be an integer between 1 and 10, not 11',
    'a bad third element fails the whole batch with 22023, naming jobs[2]');
SELECT throws_like($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch',
        '[{"payload": {"b": 1}}, {"payload": {"b": 2}}, {"payload": [3]}]') $$,
    '%jobs[2]%', 'a non-object payload in the third element is reported as jobs[2]');
SELECT throws_like($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_typed',
        '[{"job_type": "email", "payload": {"to": "x"}}, {"job_type": "email", "payload": {}}]') $$,
    '%jobs[1]%"to"%', 'a missing required key in the second element is reported as jobs[1]');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch', '[{"payload": {}}, {"colour": "red"}]') $$,
    '22023', NULL, 'an unknown field in an element raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch', '[{"payload": {}}, 7]') $$,
    '22023', NULL, 'an element that is not an object raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch', '{"payload": {}}') $$,
    '22023', NULL, 'jobs that is not an array raises 22023');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE queue_id = :batch_qid), 4,
    'the failed batches inserted nothing');
SELECT is((SELECT count(*)::int FROM conveyor.enqueue_batch('tap_enq_batch', '[]')), 0,
    'an empty batch returns no rows');
SELECT job_id AS bs FROM conveyor.enqueue_batch('tap_enq_batch',
    jsonb_build_array(jsonb_build_object('run_at', now() + interval '1 hour'))) \gset
SELECT is((conveyor.get_job(:'bs')->>'run_at')::timestamptz, now() + interval '1 hour', 'a batch element''s run_at is kept');
SELECT is(conveyor.get_job(:'bs')->>'state', 'scheduled', 'and a future run_at schedules the job');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue_batch('tap_enq_batch', '[{"run_at": "tomorrow-ish"}]') $$,
    '22023', NULL, 'a run_at that is not a timestamp raises 22023');

SELECT * FROM finish();
ROLLBACK;
