-- Queue management: create_queue, alter_queue, pause_queue, resume_queue, drop_queue, list_queues.
BEGIN;
SELECT plan(55);

-- ---- create_queue: defaults ---------------------------------------------------------------------

SELECT conveyor.create_queue('tap_qm_defaults') \gset

SELECT is(
    (SELECT options FROM conveyor.list_queues() WHERE queue = 'tap_qm_defaults'),
    '{"lease_seconds": 300, "max_attempts": 5, "backoff_base_seconds": 10, "backoff_max_seconds": 3600,
      "job_types": null, "required_keys": null, "retention_days": 7, "notify": true, "event_trail": "all", "dead_retention_days": 30, "payload_schema": null, "display_name": null,
      "description": null, "metadata": null, "status_notify": false, "stats_retention_days": 400}'::jsonb,
    'create_queue without options uses the documented defaults');
SELECT is(
    (SELECT paused FROM conveyor.list_queues() WHERE queue = 'tap_qm_defaults'), false,
    'a new queue is not paused');
SELECT is(
    (SELECT created_at FROM conveyor.list_queues() WHERE queue = 'tap_qm_defaults'), now(),
    'list_queues reports created_at (this transaction''s now())');

-- ---- create_queue: every option ------------------------------------------------------------------

SELECT conveyor.create_queue('tap_qm_full', '{"lease_seconds": 60, "max_attempts": 3, "backoff_base_seconds": 2,
    "backoff_max_seconds": 100, "job_types": ["email", "sms"], "required_keys": ["to"], "retention_days": 30,
    "notify": false, "event_trail": "failures"}') \gset

SELECT is(
    (SELECT options FROM conveyor.list_queues() WHERE queue = 'tap_qm_full'),
    '{"lease_seconds": 60, "max_attempts": 3, "backoff_base_seconds": 2, "backoff_max_seconds": 100,
      "job_types": ["email", "sms"], "required_keys": ["to"], "retention_days": 30, "notify": false,
      "event_trail": "failures", "dead_retention_days": 30, "payload_schema": null, "display_name": null,
      "description": null, "metadata": null, "status_notify": false, "stats_retention_days": 400}'::jsonb,
    'create_queue stores every option given');
SELECT is(
    (SELECT array_agg(queue ORDER BY queue) FROM conveyor.list_queues() WHERE queue LIKE 'tap\_qm\_%'),
    ARRAY['tap_qm_defaults', 'tap_qm_full'],
    'list_queues lists both queues, ordered by name');

-- ---- alter_queue changes only the options given --------------------------------------------------

SELECT conveyor.alter_queue('tap_qm_full', '{"max_attempts": 9}') \gset
SELECT is(
    (SELECT options FROM conveyor.list_queues() WHERE queue = 'tap_qm_full'),
    '{"lease_seconds": 60, "max_attempts": 9, "backoff_base_seconds": 2, "backoff_max_seconds": 100,
      "job_types": ["email", "sms"], "required_keys": ["to"], "retention_days": 30, "notify": false,
      "event_trail": "failures", "dead_retention_days": 30, "payload_schema": null, "display_name": null,
      "description": null, "metadata": null, "status_notify": false, "stats_retention_days": 400}'::jsonb,
    'alter_queue(max_attempts) changes max_attempts and nothing else');

SELECT conveyor.alter_queue('tap_qm_full', '{"job_types": null, "notify": true, "lease_seconds": 45}') \gset
SELECT is(
    (SELECT options FROM conveyor.list_queues() WHERE queue = 'tap_qm_full'),
    '{"lease_seconds": 45, "max_attempts": 9, "backoff_base_seconds": 2, "backoff_max_seconds": 100,
      "job_types": null, "required_keys": ["to"], "retention_days": 30, "notify": true,
      "event_trail": "failures", "dead_retention_days": 30, "payload_schema": null, "display_name": null,
      "description": null, "metadata": null, "status_notify": false, "stats_retention_days": 400}'::jsonb,
    'alter_queue can clear job_types with null and change several options at once');

SELECT conveyor.alter_queue('tap_qm_full', '{}') \gset
SELECT is(
    (SELECT options->>'lease_seconds' FROM conveyor.list_queues() WHERE queue = 'tap_qm_full'), '45',
    'alter_queue with no options changes nothing');

-- ---- bad options: 22023 --------------------------------------------------------------------------

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"bogus": 1}') $$,
    '22023', 'unknown queue option "bogus"', 'create_queue: an unknown option name raises 22023');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qm_defaults', '{"lease_secs": 1}') $$,
    '22023', 'unknown queue option "lease_secs"', 'alter_queue: an unknown option name raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"lease_seconds": 0}') $$,
    '22023', NULL, 'lease_seconds 0 raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"lease_seconds": "60"}') $$,
    '22023', NULL, 'lease_seconds as a string raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"lease_seconds": 1.5}') $$,
    '22023', NULL, 'a non-integral lease_seconds raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"max_attempts": 0}') $$,
    '22023', NULL, 'max_attempts 0 raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"backoff_base_seconds": -1}') $$,
    '22023', NULL, 'a negative backoff_base_seconds raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"backoff_base_seconds": 50, "backoff_max_seconds": 20}') $$,
    '22023', NULL, 'backoff_max_seconds below backoff_base_seconds raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"retention_days": -1}') $$,
    '22023', NULL, 'a negative retention_days raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"job_types": []}') $$,
    '22023', NULL, 'an empty job_types array raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"job_types": "email"}') $$,
    '22023', NULL, 'job_types that is not an array raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"required_keys": [1, 2]}') $$,
    '22023', NULL, 'required_keys with non-string elements raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"notify": "yes"}') $$,
    '22023', NULL, 'notify that is not a boolean raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '{"event_trail": "some"}') $$,
    '22023', NULL, 'event_trail other than all/failures raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_bad', '[1]') $$,
    '22023', NULL, 'options that are not a JSON object raise 22023');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qm_defaults', '{"max_attempts": 1001}') $$,
    '22023', NULL, 'alter_queue: max_attempts above 1000 raises 22023');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qm_defaults', '{"backoff_base_seconds": 7200}') $$,
    '22023', NULL, 'alter_queue: backoff_base_seconds above the stored backoff_max_seconds raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('', '{}') $$,
    '22023', NULL, 'an empty queue name raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue(repeat('q', 129)) $$,
    '22023', NULL, 'a queue name longer than 128 characters raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue(NULL, '{}') $$,
    '22004', NULL, 'a NULL queue name raises 22004');
SELECT is(
    (SELECT count(*)::int FROM conveyor.list_queues() WHERE queue = 'tap_qm_bad'), 0,
    'no rejected create_queue left a queue behind');
SELECT is(
    (SELECT options FROM conveyor.list_queues() WHERE queue = 'tap_qm_defaults'),
    '{"lease_seconds": 300, "max_attempts": 5, "backoff_base_seconds": 10, "backoff_max_seconds": 3600,
      "job_types": null, "required_keys": null, "retention_days": 7, "notify": true, "event_trail": "all", "dead_retention_days": 30, "payload_schema": null, "display_name": null,
      "description": null, "metadata": null, "status_notify": false, "stats_retention_days": 400}'::jsonb,
    'rejected alter_queue calls changed nothing');

-- ---- duplicates and unknown queues ---------------------------------------------------------------

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qm_defaults') $$,
    '42710', 'queue "tap_qm_defaults" already exists', 'creating an existing queue raises 42710');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qm_nope', '{"max_attempts": 2}') $$,
    '42704', 'queue "tap_qm_nope" does not exist', 'alter_queue of an unknown queue raises 42704');
SELECT throws_ok($$ SELECT conveyor.pause_queue('tap_qm_nope') $$,
    '42704', NULL, 'pause_queue of an unknown queue raises 42704');
SELECT throws_ok($$ SELECT conveyor.resume_queue('tap_qm_nope') $$,
    '42704', NULL, 'resume_queue of an unknown queue raises 42704');
SELECT throws_ok($$ SELECT conveyor.drop_queue('tap_qm_nope') $$,
    '42704', NULL, 'drop_queue of an unknown queue raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_qm_nope', '{}') $$,
    '42704', NULL, 'enqueue into an unknown queue raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_qm_nope', 'w1') $$,
    '42704', NULL, 'dequeue from an unknown queue raises 42704');

-- ---- pause and resume ----------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_qm_pause') \gset
SELECT conveyor.pause_queue('tap_qm_pause') \gset
SELECT is(
    (SELECT paused FROM conveyor.list_queues() WHERE queue = 'tap_qm_pause'), true,
    'pause_queue marks the queue paused');
SELECT job_id AS paused_job, was_duplicate AS paused_dup FROM conveyor.enqueue('tap_qm_pause', '{"n": 1}') \gset
SELECT is(:'paused_dup'::boolean, false, 'enqueue into a paused queue still works');
SELECT is(conveyor.get_job(:'paused_job')->>'status', 'pending', 'the job enqueued into a paused queue is pending');
SELECT is(
    (SELECT count(*)::int FROM conveyor.dequeue('tap_qm_pause', 'w1', 10)), 0,
    'dequeue from a paused queue returns nothing');
SELECT is(conveyor.get_job(:'paused_job')->>'status', 'pending', 'the job stays pending while the queue is paused');
SELECT conveyor.alter_queue('tap_qm_pause', '{"lease_seconds": 30}') \gset
SELECT is(
    (SELECT paused FROM conveyor.list_queues() WHERE queue = 'tap_qm_pause'), true,
    'alter_queue keeps a paused queue paused');
SELECT conveyor.resume_queue('tap_qm_pause') \gset
SELECT is(
    (SELECT paused FROM conveyor.list_queues() WHERE queue = 'tap_qm_pause'), false,
    'resume_queue clears paused');
SELECT is(
    (SELECT array_agg(job_id) FROM conveyor.dequeue('tap_qm_pause', 'w1', 10)), ARRAY[:'paused_job'::uuid],
    'after resume_queue, dequeue returns the job');

-- ---- drop_queue ----------------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_qm_drop') \gset
SELECT job_id AS drop_job1 FROM conveyor.enqueue('tap_qm_drop', '{"n": 1}') \gset
SELECT job_id AS drop_job2 FROM conveyor.enqueue('tap_qm_drop', '{"n": 2}') \gset
SELECT job_id AS drop_running FROM conveyor.dequeue('tap_qm_drop', 'w1') \gset
SELECT queue_id AS drop_qid FROM conveyor.queues WHERE name = 'tap_qm_drop' \gset

SELECT throws_ok($$ SELECT conveyor.drop_queue('tap_qm_drop') $$,
    '55000', NULL, 'drop_queue refuses a queue with pending or running jobs');
SELECT throws_ok($$ SELECT conveyor.drop_queue('tap_qm_drop', force => false) $$,
    '55000', NULL, 'drop_queue(force => false) refuses too');
SELECT is(
    (SELECT count(*)::int FROM conveyor.jobs WHERE queue_id = :drop_qid), 2,
    'the refused drop_queue left both jobs in place');
SELECT is(conveyor.drop_queue('tap_qm_drop', force => true), true, 'drop_queue(force => true) drops the queue');
SELECT is(
    (SELECT count(*)::int FROM conveyor.list_queues() WHERE queue = 'tap_qm_drop'), 0,
    'the dropped queue is no longer listed');
SELECT is(
    (SELECT count(*)::int FROM conveyor.jobs WHERE queue_id = :drop_qid), 0,
    'the forced drop removed the queue''s pending and running jobs');
SELECT throws_ok(format('SELECT conveyor.get_job(%L)', :'drop_job2'),
    '42704', NULL, 'a job of the dropped queue no longer exists');

SELECT conveyor.create_queue('tap_qm_empty') \gset
SELECT is(conveyor.drop_queue('tap_qm_empty'), true, 'drop_queue of a queue without jobs needs no force');

-- ---- partitions created inside a rolled-back subtransaction --------------------------------------
-- create_queue creates job_history partitions ahead for the queue's retention. If that happens in a
-- subtransaction that rolls back, the partitions are gone; a later queue with the same retention must
-- still be able to finish jobs.

SAVEPOINT before_wide;
SELECT conveyor.create_queue('tap_qm_wide1', '{"retention_days": 40}') \gset
ROLLBACK TO SAVEPOINT before_wide;
SELECT conveyor.create_queue('tap_qm_wide2', '{"retention_days": 40}') \gset
SELECT job_id AS wide_job FROM conveyor.enqueue('tap_qm_wide2', '{}') \gset
SELECT job_id AS wide_dq FROM conveyor.dequeue('tap_qm_wide2', 'w1') \gset
SELECT lives_ok(format('SELECT conveyor.ack(%L, true)', :'wide_job'),
    'ack succeeds on a queue created after a rolled-back create_queue with the same retention');
SELECT is(conveyor.get_job(:'wide_job')->>'status', 'completed',
    'and the job is completed');

SELECT * FROM finish();
ROLLBACK;
