-- queue_totals: running totals per queue that only grow, for monitoring counters.
BEGIN;
SELECT plan(5);

SELECT conveyor.create_queue('tap_qt', '{"max_attempts": 1}');
SELECT is((SELECT jsonb_build_array(enqueued, started, completed, failed, expired, cancelled) FROM conveyor.queue_totals('tap_qt')),
    '[0, 0, 0, 0, 0, 0]'::jsonb, 'a new queue: all zero');
SELECT job_id AS j1 FROM conveyor.enqueue('tap_qt', '{"n": 1}') \gset
SELECT job_id AS j2 FROM conveyor.enqueue('tap_qt', '{"n": 2}') \gset
SELECT job_id AS j3 FROM conveyor.enqueue('tap_qt', '{"n": 3}') \gset
SELECT job_id AS j4 FROM conveyor.enqueue('tap_qt', '{"n": 4}') \gset
SELECT count(*) FROM conveyor.dequeue('tap_qt', 'w1', 3);
SELECT conveyor.ack(:'j1', true);
SELECT conveyor.ack(:'j2', false, 'boom');
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'j3';
SELECT conveyor.reap('tap_qt');
SELECT conveyor.cancel(:'j4', 'not needed');
SELECT is((SELECT jsonb_build_array(enqueued, started, completed, failed, expired, cancelled) FROM conveyor.queue_totals('tap_qt')),
    '[4, 3, 1, 2, 1, 1]'::jsonb, 'enqueued, started, completed, failed (an expired lease is a failure too), expired, cancelled');
-- Counter rows of old minutes are folded together by maintain(): the totals stay.
UPDATE conveyor.queue_counts SET bucket = now() - interval '2 days' WHERE queue_id = (SELECT queue_id FROM conveyor.queues WHERE name = 'tap_qt');
SELECT conveyor.maintain() IS NOT NULL AS maintained \gset
SELECT is((SELECT jsonb_build_array(enqueued, started, completed, failed, expired, cancelled) FROM conveyor.queue_totals('tap_qt')),
    '[4, 3, 1, 2, 1, 1]'::jsonb, 'folding counter rows keeps the totals');
SELECT is((SELECT count(*)::int FROM conveyor.queue_totals() WHERE queue = 'tap_qt'), 1, 'without a name: every queue, this one once');
SELECT throws_ok($$SELECT * FROM conveyor.queue_totals('tap_qt_none')$$, '42704', NULL, 'an unknown queue: 42704');

SELECT * FROM finish();
ROLLBACK;
