-- Observing: queue_metrics through a known sequence of operations, and maintain() with retention.
BEGIN;
SELECT plan(57);

SELECT conveyor.create_queue('tap_mx') \gset
SELECT conveyor.create_queue('tap_mx_other') \gset
SELECT conveyor.create_queue('tap_mx_ret', '{"retention_days": 0}') \gset

-- [pending, scheduled, running, completed_1h, failed_24h, dead] of one queue.
CREATE FUNCTION pg_temp.m(q text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_array(pending, scheduled, running, completed_1h, failed_24h, dead)
    FROM conveyor.queue_metrics(q) $$;

SELECT is(pg_temp.m('tap_mx'), '[0, 0, 0, 0, 0, 0]'::jsonb, 'a new queue: all zero');
SELECT is((SELECT count(*)::int FROM conveyor.queue_metrics('tap_mx')), 1, 'queue_metrics(queue) returns one row');
SELECT is((SELECT queue FROM conveyor.queue_metrics('tap_mx')), 'tap_mx', 'named after the queue');
SELECT is((SELECT oldest_pending_seconds FROM conveyor.queue_metrics('tap_mx')), NULL,
    'oldest_pending_seconds: NULL while nothing is pending');

SELECT job_id AS j1 FROM conveyor.enqueue('tap_mx', '{"n": 1}', run_at => now() - interval '1 minute') \gset
SELECT job_id AS j2 FROM conveyor.enqueue('tap_mx', '{"n": 2}') \gset
SELECT job_id AS j3 FROM conveyor.enqueue('tap_mx', '{"n": 3}') \gset
SELECT job_id AS j4 FROM conveyor.enqueue('tap_mx', '{"n": 4}') \gset
SELECT job_id AS j5 FROM conveyor.enqueue('tap_mx', '{"n": 5}') \gset
SELECT job_id AS s1 FROM conveyor.enqueue('tap_mx', '{"n": "s1"}', run_at => now() + interval '1 hour') \gset
SELECT job_id AS s2 FROM conveyor.enqueue('tap_mx', '{"n": "s2"}', run_at => now() + interval '2 hours') \gset
SELECT is(pg_temp.m('tap_mx'), '[5, 2, 0, 0, 0, 0]'::jsonb, 'after 5 due and 2 future enqueues: 5 pending, 2 scheduled');
SELECT is((SELECT oldest_pending_seconds FROM conveyor.queue_metrics('tap_mx')), 60.000,
    'oldest_pending_seconds: the oldest due job has waited 60 s');

CREATE TEMP TABLE got AS SELECT job_id FROM conveyor.dequeue('tap_mx', 'w1', 3);
SELECT is((SELECT array_agg(job_id ORDER BY job_id) FROM got), ARRAY[:'j1', :'j2', :'j3']::uuid[], 'dequeue j1, j2, j3');
SELECT is(pg_temp.m('tap_mx'), '[2, 2, 3, 0, 0, 0]'::jsonb, 'after dequeuing 3: 2 pending, 3 running');
-- Waits run from run_at to the clock at dequeue, so they include this transaction's age so far.
SELECT ok((SELECT avg_queue_seconds FROM conveyor.queue_metrics('tap_mx'))
          BETWEEN 20.000 AND 20.001 + extract(epoch FROM clock_timestamp() - now()),
    'avg_queue_seconds: the three started jobs waited 60, 0 and 0 s');

SELECT is(conveyor.ack(:'j1', true), true, 'ack j1 (success)');
SELECT is(pg_temp.m('tap_mx'), '[2, 2, 2, 1, 0, 0]'::jsonb, 'after one success: 2 running, 1 completed in the last hour');
SELECT is((SELECT jobs_per_hour FROM conveyor.queue_metrics('tap_mx')), 1::numeric, 'jobs_per_hour counts the completed job');

SELECT is(conveyor.ack(:'j2', false, 'boom'), true, 'ack j2 (failure, into backoff)');
SELECT is(pg_temp.m('tap_mx'), '[2, 3, 1, 1, 1, 0]'::jsonb, 'after one failure: 3 scheduled, 1 running, 1 failed');

SELECT is(conveyor.dead_letter(:'j4', 'poison'), true, 'dead_letter j4 (pending)');
SELECT is(pg_temp.m('tap_mx'), '[1, 3, 1, 1, 1, 1]'::jsonb, 'after dead_letter: 1 pending, 1 dead');

SELECT is(conveyor.cancel(:'j5'), true, 'cancel j5 (pending)');
SELECT is(conveyor.cancel(:'j3'), true, 'cancel j3 (running)');
SELECT is(pg_temp.m('tap_mx'), '[0, 3, 0, 1, 1, 1]'::jsonb, 'after cancelling a pending and a running job: 0 pending, 0 running');

UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'s1';
SELECT is(pg_temp.m('tap_mx'), '[1, 2, 0, 1, 1, 1]'::jsonb, 'a scheduled job that came due counts as pending');

SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_mx', 'w1')), ARRAY[:'s1'::uuid], 'dequeue s1');
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'s1';
SELECT is((SELECT expired_leases FROM conveyor.queue_metrics('tap_mx')), 1::bigint, 'expired_leases counts the lapsed lease');
SELECT is(pg_temp.m('tap_mx'), '[0, 2, 1, 1, 1, 1]'::jsonb, 'an expired but unreaped job still counts as running');
SELECT is(conveyor.reap('tap_mx'), 1, 'reap it');
SELECT is(pg_temp.m('tap_mx'), '[0, 3, 0, 1, 2, 1]'::jsonb, 'after the reap: back in backoff, counted as a failure');
SELECT is((SELECT expired_leases FROM conveyor.queue_metrics('tap_mx')), 0::bigint, 'no expired leases left');

SELECT is(conveyor.retry(:'j4'), true, 'retry the dead j4');
SELECT is(pg_temp.m('tap_mx'), '[1, 3, 0, 1, 2, 0]'::jsonb, 'after retrying the dead job: 1 pending, 0 dead');

SELECT job_id AS jd FROM conveyor.enqueue('tap_mx', '{"n": "jd"}', max_attempts => 1, priority => 10) \gset
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_mx', 'w1')), ARRAY[:'jd'::uuid], 'dequeue jd (1 attempt)');
SELECT is(conveyor.ack(:'jd', false, 'fatal'), true, 'fail jd');
SELECT is(pg_temp.m('tap_mx'), '[1, 3, 0, 1, 3, 1]'::jsonb, 'a failure at max_attempts: 1 dead, 3 failed');

-- ---- release, batches with duplicates, retry with a delay, waiting group members ----------------

SELECT conveyor.create_queue('tap_mx_more') \gset
SELECT job_id AS k1 FROM conveyor.enqueue('tap_mx_more', '{}', dedup_key => 'k') \gset
SELECT count(*) AS n FROM conveyor.enqueue_batch('tap_mx_more', jsonb_build_array(
    jsonb_build_object('dedup_key', 'k'), jsonb_build_object('priority', 1),
    jsonb_build_object('run_at', now() + interval '1 hour'))) \gset
SELECT is(pg_temp.m('tap_mx_more'), '[2, 1, 0, 0, 0, 0]'::jsonb, 'a batch counts only the jobs it inserted');
CREATE TEMP TABLE more AS SELECT job_id, priority FROM conveyor.dequeue('tap_mx_more', 'w1', 10);
SELECT is(pg_temp.m('tap_mx_more'), '[0, 1, 2, 0, 0, 0]'::jsonb, 'both due jobs running');
SELECT is(conveyor.release(:'k1', 'w1'), true, 'release one without delay');
SELECT is(conveyor.release((SELECT job_id FROM more WHERE priority = 1), 'w1', 60), true, 'release the other with a delay');
SELECT is(pg_temp.m('tap_mx_more'), '[1, 2, 0, 0, 0, 0]'::jsonb, 'releases: 1 pending, 2 scheduled, none running');
SELECT is(conveyor.cancel(:'k1'), true, 'cancel the pending one');
SELECT is(conveyor.retry(:'k1', 30), true, 'retry it with a delay');
SELECT is(pg_temp.m('tap_mx_more'), '[0, 3, 0, 0, 0, 0]'::jsonb, 'a cancelled job retried with a delay is scheduled');
SELECT job_id AS ga FROM conveyor.enqueue('tap_mx_more', '{}', group_key => 'g') \gset
SELECT job_id AS gb FROM conveyor.enqueue('tap_mx_more', '{}', group_key => 'g') \gset
SELECT is(pg_temp.m('tap_mx_more'), '[2, 3, 0, 0, 0, 0]'::jsonb, 'a waiting group member counts as pending');
SELECT is(conveyor.cancel(:'gb'), true, 'cancel the waiting member');
SELECT is(pg_temp.m('tap_mx_more'), '[1, 3, 0, 0, 0, 0]'::jsonb, 'and it no longer counts');

-- ---- all queues, unknown queue --------------------------------------------------------------------

SELECT is((SELECT array_agg(queue ORDER BY queue) FROM conveyor.queue_metrics()),
    (SELECT array_agg(queue ORDER BY queue) FROM conveyor.list_queues()),
    'queue_metrics() without a queue lists every queue');
SELECT is((SELECT pending FROM conveyor.queue_metrics() WHERE queue = 'tap_mx'), 1::bigint,
    'with the same numbers as queue_metrics(queue)');
SELECT throws_ok($$ SELECT * FROM conveyor.queue_metrics('tap_mx_nope') $$, '42704', NULL,
    'queue_metrics of an unknown queue raises 42704');

-- ---- maintain and retention ----------------------------------------------------------------------

SELECT is(jsonb_typeof(conveyor.maintain()), 'object', 'maintain() returns a jsonb object');

SELECT job_id AS le FROM conveyor.enqueue('tap_mx_other', '{}') \gset
SELECT job_id AS le_dq FROM conveyor.dequeue('tap_mx_other', 'w1') \gset
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'le';
SELECT is((conveyor.maintain()->>'leases_expired')::int, 1, 'maintain() reaps expired leases and says how many');
SELECT is(conveyor.get_job(:'le')->>'last_error', 'lease expired', 'the job maintain() reaped');

-- maintain() folds old counter rows; the numbers queue_metrics reports must not change. Rows of
-- another backend (shard 1) at several ages: two days, just under 24 hours (its hour began more than
-- 24 hours ago), two hours.
INSERT INTO conveyor.queue_counts (queue_id, bucket, shard, pending, dead, failed, completed)
SELECT q.queue_id, b.bucket, 1, b.pending, b.dead, b.failed, b.completed
FROM conveyor.queues q, (VALUES
    (now() - interval '2 days', 2, 1, 7, 9),
    (now() - interval '24 hours' + (date_bin('1 hour', now() - interval '24 hours', 'epoch') + interval '1 hour'
                                    - (now() - interval '24 hours')) / 2, 0, 0, 3, 0),
    (now() - interval '2 hours', -1, 0, 5, 4)) AS b(bucket, pending, dead, failed, completed)
WHERE q.name = 'tap_mx_other';
CREATE TEMP TABLE before_fold AS SELECT * FROM conveyor.queue_metrics('tap_mx_other');
SELECT cmp_ok((conveyor.maintain()->>'counter_rows_folded')::int, '>=', 3, 'maintain() folds the old counter rows');
SELECT is(
    (SELECT jsonb_build_array(pending, scheduled, running, completed_1h, failed_24h, dead) FROM conveyor.queue_metrics('tap_mx_other')),
    (SELECT jsonb_build_array(pending, scheduled, running, completed_1h, failed_24h, dead) FROM before_fold),
    'queue_metrics reports the same numbers after the fold (failed_24h still counts failures 23 to 24 hours old)');

SELECT job_id AS rd FROM conveyor.enqueue('tap_mx_ret', '{"n": "dead"}') \gset
SELECT job_id AS rp FROM conveyor.enqueue('tap_mx_ret', '{"n": "pending"}') \gset
SELECT is(conveyor.dead_letter(:'rd', 'old'), true, 'dead_letter a job of the retention queue');
SELECT is(pg_temp.m('tap_mx_ret'), '[1, 0, 0, 0, 0, 1]'::jsonb, 'the retention queue: 1 pending, 1 dead');
-- Make the dead job's history row one whose purge day has long passed.
CREATE TABLE conveyor.job_history_p20200101 PARTITION OF conveyor.job_history
    FOR VALUES FROM ('2020-01-01 00:00+00') TO ('2020-01-02 00:00+00');
UPDATE conveyor.job_history SET purge_at = '2020-01-01 12:00+00', finished_at = '2019-12-31 12:00+00' WHERE job_id = :'rd';
SELECT is((SELECT count(*)::int FROM conveyor.job_history_p20200101), 1, 'the dead job now sits in the 2020-01-01 partition');

SELECT ok((conveyor.maintain()->>'partitions_dropped')::int >= 1, 'maintain() reports a dropped partition');
SELECT is(to_regclass('conveyor.job_history_p20200101'), NULL, 'the partition of a past purge day is dropped');
SELECT is(pg_temp.m('tap_mx_ret'), '[1, 0, 0, 0, 0, 0]'::jsonb, 'the dead gauge dropped by one; pending kept');
SELECT is(conveyor.get_job(:'rp')->>'status', 'pending', 'the hot table keeps the pending job');

SELECT * FROM finish();
ROLLBACK;
