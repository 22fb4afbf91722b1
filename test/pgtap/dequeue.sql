-- Consuming jobs: dequeue order, limits, leases and per-group serialization.
BEGIN;
SELECT plan(49);

SELECT conveyor.create_queue('tap_dq_order') \gset
SELECT conveyor.create_queue('tap_dq_lease', '{"lease_seconds": 120}') \gset
SELECT conveyor.create_queue('tap_dq_group') \gset

-- ---- order: priority DESC, run_at ASC, then enqueue order ----------------------------------------

SELECT job_id AS oa FROM conveyor.enqueue('tap_dq_order', '{"k": "a"}', run_at => now() - interval '10 minutes') \gset
SELECT job_id AS ob FROM conveyor.enqueue('tap_dq_order', '{"k": "b"}', run_at => now() - interval '20 minutes') \gset
SELECT job_id AS oc FROM conveyor.enqueue('tap_dq_order', '{"k": "c"}', priority => 9, run_at => now() - interval '1 minute') \gset
SELECT job_id AS od FROM conveyor.enqueue('tap_dq_order', '{"k": "d"}') \gset
SELECT job_id AS oe FROM conveyor.enqueue('tap_dq_order', '{"k": "e"}') \gset
SELECT job_id AS of FROM conveyor.enqueue('tap_dq_order', '{"k": "f"}', priority => 1, run_at => now() - interval '1 hour') \gset

CREATE TEMP TABLE dq1 AS
    SELECT d.*, d.ordinality AS pos FROM conveyor.dequeue('tap_dq_order', 'w1', 4) WITH ORDINALITY d;

SELECT is((SELECT count(*)::int FROM dq1), 4, 'max_count 4 returns 4 of the 6 due jobs');
SELECT is((SELECT array_agg(payload->>'k' ORDER BY pos) FROM dq1), ARRAY['c', 'b', 'a', 'd'],
    'highest priority first, then oldest run_at, then enqueue order');
SELECT is((SELECT array_agg(DISTINCT attempt) FROM dq1), ARRAY[1], 'the first dequeue of a job returns attempt 1');
SELECT ok((SELECT bool_and(lease_until BETWEEN now() + interval '300 seconds' AND clock_timestamp() + interval '300 seconds') FROM dq1),
    'lease_until is the clock at dequeue + the queue''s lease_seconds (300 by default)');
SELECT is((SELECT priority FROM dq1 WHERE job_id = :'oc'), 9, 'dequeue returns the job''s priority');
SELECT is((SELECT payload FROM dq1 WHERE job_id = :'oc'), '{"k": "c"}'::jsonb, 'dequeue returns the payload');
SELECT is(
    (SELECT array_agg(payload->>'k' ORDER BY n) FROM conveyor.dequeue('tap_dq_order', 'w2', 10) WITH ORDINALITY AS t(job_id, job_type, group_key, payload, priority, attempt, lease_until, n)),
    ARRAY['e', 'f'],
    'the next dequeue returns the remaining jobs, in order');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_dq_order', 'w3', 10)), 0,
    'nothing is left to dequeue');
SELECT is(conveyor.get_job(:'od')->>'status', 'running', 'a dequeued job is running');
SELECT is(conveyor.get_job(:'od')->>'worker_id', 'w1', 'leased to the worker that dequeued it');
SELECT is(conveyor.get_job(:'of')->>'worker_id', 'w2', 'each job names its own worker');
SELECT ok((conveyor.get_job(:'od')->>'started_at')::timestamptz BETWEEN now() AND clock_timestamp(), 'started_at is set at dequeue, from the clock');

-- ---- arguments -----------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_dq_order', 'w1', 0) $$,
    '22023', 'max_count must be between 1 and 1000, not 0', 'max_count 0 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_dq_order', 'w1', 1001) $$,
    '22023', NULL, 'max_count 1001 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_dq_order', 'w1', -5) $$,
    '22023', NULL, 'a negative max_count raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_dq_order', NULL) $$,
    '22004', 'worker_id must not be NULL', 'a NULL worker_id raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_dq_order', 'w1', 1, 0) $$,
    '22023', NULL, 'lease_seconds 0 raises 22023');

-- ---- lease length --------------------------------------------------------------------------------

SELECT job_id AS la FROM conveyor.enqueue('tap_dq_lease', '{}') \gset
SELECT job_id AS lb FROM conveyor.enqueue('tap_dq_lease', '{}') \gset
-- (BETWEEN evaluates its left side twice: dequeue once into a variable.)
SELECT lease_until AS la_until FROM conveyor.dequeue('tap_dq_lease', 'w1') \gset
SELECT ok(:'la_until'::timestamptz BETWEEN now() + interval '120 seconds' AND clock_timestamp() + interval '120 seconds',
    'lease_until uses the queue''s lease_seconds');
SELECT lease_until AS lb_until FROM conveyor.dequeue('tap_dq_lease', 'w1', lease_seconds => 30) \gset
SELECT ok(:'lb_until'::timestamptz BETWEEN now() + interval '30 seconds' AND clock_timestamp() + interval '30 seconds',
    'the lease_seconds argument overrides the queue''s');
SELECT ok((conveyor.get_job(:'lb')->>'lease_until')::timestamptz BETWEEN now() + interval '30 seconds' AND clock_timestamp() + interval '30 seconds',
    'get_job reports the lease given at dequeue');

-- ---- groups: at most one running job per (queue, group_key) --------------------------------------

SELECT job_id AS g1a FROM conveyor.enqueue('tap_dq_group', '{"k": "g1a"}', group_key => 'g1') \gset
SELECT job_id AS g1b FROM conveyor.enqueue('tap_dq_group', '{"k": "g1b"}', group_key => 'g1') \gset
SELECT job_id AS g1c FROM conveyor.enqueue('tap_dq_group', '{"k": "g1c"}', group_key => 'g1') \gset
SELECT job_id AS u1 FROM conveyor.enqueue('tap_dq_group', '{"k": "u1"}') \gset
SELECT job_id AS u2 FROM conveyor.enqueue('tap_dq_group', '{"k": "u2"}') \gset

CREATE TEMP TABLE dq2 AS SELECT * FROM conveyor.dequeue('tap_dq_group', 'w1', 10);
SELECT is((SELECT count(*)::int FROM dq2), 3, 'a dequeue of 10 returns one g1 job and the two ungrouped jobs');
SELECT is((SELECT array_agg(job_id) FROM dq2 WHERE group_key = 'g1'), ARRAY[:'g1a'::uuid],
    'the g1 job returned is the first enqueued');
SELECT is((SELECT count(*)::int FROM dq2 WHERE job_id IN (:'u1', :'u2')), 2, 'both ungrouped jobs are returned');
SELECT is((SELECT group_key FROM dq2 WHERE job_id = :'g1a'), 'g1', 'dequeue returns the group_key');
SELECT is(conveyor.get_job(:'g1b')->>'status', 'pending', 'the other g1 jobs stay pending');
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_dq_group', 'w2', 10)), 0,
    'while g1a runs, no other g1 job is dequeued');

SELECT is(conveyor.ack(:'g1a', true), true, 'ack g1a');
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group', 'w2', 10)), ARRAY[:'g1b'::uuid],
    'after g1a is acknowledged, the next g1 job (g1b) is dequeued');

SELECT job_id AS g2a FROM conveyor.enqueue('tap_dq_group', '{"k": "g2a"}', group_key => 'g2') \gset
SELECT job_id AS g2b FROM conveyor.enqueue('tap_dq_group', '{"k": "g2b"}', group_key => 'g2') \gset
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group', 'w3', 10)), ARRAY[:'g2a'::uuid],
    'a job of another group is dequeued while g1 is busy (and only one of g2)');
SELECT is(
    (SELECT array_agg(job_id ORDER BY group_key) FROM (SELECT (conveyor.get_job(id)->>'job_id')::uuid AS job_id,
        conveyor.get_job(id)->>'group_key' AS group_key FROM unnest(ARRAY[:'g1b', :'g2a']::uuid[]) id
        WHERE conveyor.get_job(id)->>'status' = 'running') s),
    ARRAY[:'g1b'::uuid, :'g2a'::uuid],
    'g1b and g2a run at the same time');

-- A failure in backoff hands the group to its next job.
SELECT is(conveyor.ack(:'g1b', false, 'boom'), true, 'ack g1b as failed');
SELECT is(conveyor.get_job(:'g1b')->>'state', 'scheduled', 'g1b waits out its backoff');
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group', 'w1', 10)), ARRAY[:'g1c'::uuid],
    'while g1b is in backoff, g1c is dequeued');
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'g1b';
SELECT is((SELECT count(*)::int FROM conveyor.dequeue('tap_dq_group', 'w1', 10)), 0,
    'g1b, due again, is not dequeued while g1c runs');
SELECT is(conveyor.get_job(:'g1b')->>'state', 'waiting', 'it waits for its group');
SELECT is(conveyor.ack(:'g1c', true), true, 'ack g1c');
SELECT is((SELECT array_agg(row(job_id, attempt)::text) FROM conveyor.dequeue('tap_dq_group', 'w1', 10) WHERE group_key = 'g1'),
    ARRAY[row(:'g1b'::uuid, 2)::text],
    'then g1b runs again, on attempt 2');

-- Within a group, jobs run in the queue's order too: a better job enqueued while the group's head is
-- only ready (not yet running) heads the group instead.
SELECT conveyor.create_queue('tap_dq_group_prio') \gset
SELECT job_id AS p1 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 1) \gset
SELECT job_id AS p5 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 5) \gset
SELECT job_id AS p9 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 9) \gset
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group_prio', 'w1', 10)), ARRAY[:'p9'::uuid],
    'the highest-priority job of the group runs first, though enqueued last');
SELECT is(conveyor.ack(:'p9', true), true, 'ack it');
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group_prio', 'w1', 10)), ARRAY[:'p5'::uuid],
    'then the next best waiting job of the group');
SELECT is(conveyor.ack(:'p5', true), true, 'ack it');
SELECT job_id AS p7 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 7) \gset
SELECT job_id AS p8 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 8) \gset
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group_prio', 'w1', 10)), ARRAY[:'p8'::uuid],
    'new better jobs overtake the waiting low-priority job');
SELECT is(conveyor.get_job(:'p1')->>'state', 'waiting', 'the low-priority job still waits');
SELECT job_id AS p10 FROM conveyor.enqueue('tap_dq_group_prio', '{}', group_key => 'g', priority => 10) \gset
SELECT is(conveyor.get_job(:'p10')->>'state', 'waiting', 'a better job does not overtake a running head');
SELECT is(conveyor.get_job(:'p8')->>'status', 'running', 'the running head keeps running');

-- The same holds for a better job that joins the group later by other paths than enqueue: a scheduled
-- job coming due, or an operator's retry.
SELECT conveyor.create_queue('tap_dq_group_due') \gset
SELECT job_id AS lo FROM conveyor.enqueue('tap_dq_group_due', '{"k": "lo"}', group_key => 'g', priority => 1) \gset
SELECT job_id AS hi FROM conveyor.enqueue('tap_dq_group_due', '{"k": "hi"}', group_key => 'g', priority => 9,
    run_at => now() + interval '1 minute') \gset
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE job_id = :'hi';
SELECT is((SELECT array_agg(payload->>'k') FROM conveyor.dequeue('tap_dq_group_due', 'w1', 10)), ARRAY['hi'],
    'a better job of the group that comes due runs before the group''s ready (not running) head');

SELECT conveyor.create_queue('tap_dq_group_retry') \gset
SELECT job_id AS rhi FROM conveyor.enqueue('tap_dq_group_retry', '{"k": "hi"}', group_key => 'g', priority => 9) \gset
SELECT conveyor.dead_letter(:'rhi', 'parked') \gset
SELECT job_id AS rlo FROM conveyor.enqueue('tap_dq_group_retry', '{"k": "lo"}', group_key => 'g', priority => 1) \gset
SELECT conveyor.retry(:'rhi') \gset
SELECT is((SELECT array_agg(payload->>'k') FROM conveyor.dequeue('tap_dq_group_retry', 'w1', 10)), ARRAY['hi'],
    'a better job of the group brought back by retry runs before the group''s ready (not running) head');

-- Cancelling a group's head hands the group to the next job.
SELECT conveyor.create_queue('tap_dq_group_cancel') \gset
SELECT job_id AS ca FROM conveyor.enqueue('tap_dq_group_cancel', '{}', group_key => 'g') \gset
SELECT job_id AS cb FROM conveyor.enqueue('tap_dq_group_cancel', '{}', group_key => 'g') \gset
SELECT is(conveyor.cancel(:'ca'), true, 'cancel the group''s ready head');
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_dq_group_cancel', 'w1', 10)), ARRAY[:'cb'::uuid],
    'the next job of the group is dequeued');

SELECT * FROM finish();
ROLLBACK;
