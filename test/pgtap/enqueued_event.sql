-- The trail's 'enqueued' event: read from the job (not a row of job_events), shown once, as a stored
-- one looked, whatever happens to the job afterwards.
BEGIN;
SELECT plan(22);

SELECT conveyor.create_queue('tap_ev') \gset
SELECT conveyor.create_queue('tap_ev_quiet', '{"event_trail": "failures"}') \gset
SELECT conveyor.create_queue('tap_ev_old') \gset

-- ---- single enqueue ---------------------------------------------------------------------------------

SELECT job_id AS a FROM conveyor.enqueue('tap_ev', '{"n": "a"}', group_key => 'g1', priority => 10) \gset
SELECT job_id AS s FROM conveyor.enqueue('tap_ev', '{"n": "s"}', run_at => now() + interval '1 hour') \gset
SELECT is((SELECT array_agg(row(at, event, worker_id, details)::text) FROM conveyor.job_events(:'a')),
          ARRAY[row(now(), 'enqueued', NULL::text,
                    jsonb_build_object('priority', 10, 'run_at', now(), 'group_key', 'g1'))::text],
          'enqueue: one enqueued event at the job''s creation, with its priority, run_at and group_key');
SELECT is((SELECT details FROM conveyor.job_events(:'s') WHERE event = 'enqueued'),
          jsonb_build_object('priority', 5, 'run_at', now() + interval '1 hour', 'group_key', NULL),
          'a scheduled job''s event names the run_at it was given');
SELECT is((SELECT count(*)::int FROM conveyor.job_events WHERE job_id IN (:'a', :'s')), 0,
          'enqueue writes no row to job_events');

-- ---- enqueue_batch ----------------------------------------------------------------------------------

CREATE TEMP TABLE b AS
SELECT ord, job_id FROM conveyor.enqueue_batch('tap_ev', jsonb_build_array(
    jsonb_build_object('payload', '{"n": 1}'::jsonb),
    jsonb_build_object('payload', '{"n": 2}'::jsonb, 'priority', 9, 'group_key', 'g2'),
    jsonb_build_object('payload', '{"n": 3}'::jsonb, 'run_at', now() + interval '2 hours', 'dedup_key', 'd3')));
SELECT is((SELECT array_agg(e.details ORDER BY b.ord) FROM b, conveyor.job_events(b.job_id) e WHERE e.event = 'enqueued'),
          ARRAY[jsonb_build_object('priority', 5, 'run_at', now(), 'group_key', NULL),
                jsonb_build_object('priority', 9, 'run_at', now(), 'group_key', 'g2'),
                jsonb_build_object('priority', 5, 'run_at', now() + interval '2 hours', 'group_key', NULL)],
          'enqueue_batch: each job has its enqueued event with its own values');
SELECT is((SELECT count(*)::int FROM b, conveyor.job_events(b.job_id) e), 3, 'and nothing else');
SELECT is((SELECT count(*)::int FROM conveyor.job_events e JOIN b USING (job_id)), 0, 'enqueue_batch writes no row to job_events');
SELECT is((SELECT job_id FROM conveyor.enqueue_batch('tap_ev', '[{"dedup_key": "d3"}]')),
          (SELECT job_id FROM b WHERE ord = 2), 'a duplicate returns the first job');
SELECT is((SELECT count(*)::int FROM b, conveyor.job_events(b.job_id) e WHERE b.ord = 2), 1,
          'and the first job still shows one enqueued event');

-- ---- what happens to the job later does not change its enqueued event ------------------------------

SELECT job_id AS d FROM conveyor.dequeue('tap_ev', 'w1') \gset
SELECT is(:'d'::uuid, :'a'::uuid, 'the priority 10 job is dequeued first');
SELECT conveyor.ack(:'a', false, 'boom', worker_id => 'w1');
SELECT ok((conveyor.get_job(:'a')->>'run_at')::timestamptz > now(), 'a failed attempt moves run_at to its backoff');
SELECT is((SELECT details->>'run_at' FROM conveyor.job_events(:'a') WHERE event = 'enqueued'),
          (SELECT to_jsonb(now())->>0), 'the enqueued event keeps the run_at the job was enqueued with');
SELECT conveyor.reschedule(:'s', now() + interval '5 hours');
SELECT is((SELECT array_agg(event || ' ' || (details->>'run_at')::timestamptz::text ORDER BY at) FROM conveyor.job_events(:'s')),
          ARRAY['enqueued ' || (now() + interval '1 hour')::text, 'rescheduled ' || (now() + interval '5 hours')::text],
          'a rescheduled job: enqueued with its first run_at, then rescheduled');
SELECT conveyor.retry(:'a');
SELECT job_id AS d FROM conveyor.dequeue('tap_ev', 'w1') \gset
SELECT is(conveyor.ack(:'a', true, worker_id => 'w1'), true, 'the retried job completes');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'a')),
          ARRAY['enqueued', 'started', 'failed', 'retried', 'started', 'succeeded'],
          'in history its trail starts with the enqueued event, once');
SELECT is((SELECT details FROM conveyor.job_events(:'a') WHERE event = 'enqueued'),
          jsonb_build_object('priority', 10, 'run_at', now(), 'group_key', 'g1'), 'with the values it was enqueued with');
SELECT conveyor.cancel(:'s', 'not needed');
SELECT conveyor.retry(:'s');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'s')),
          ARRAY['enqueued', 'rescheduled', 'cancelled', 'retried'],
          'a cancelled job taken back from history keeps its enqueued event');

-- ---- the queue's event_trail when the job was enqueued decides --------------------------------------

SELECT job_id AS q FROM conveyor.enqueue('tap_ev_quiet', '{"n": "q"}') \gset
SELECT is((SELECT count(*)::int FROM conveyor.job_events(:'q')), 0, 'a queue with event_trail failures: no enqueued event');
SELECT conveyor.alter_queue('tap_ev_quiet', '{"event_trail": "all"}');
SELECT is((SELECT count(*)::int FROM conveyor.job_events(:'q')), 0, '... nor after the queue turns its trail on');
SELECT conveyor.alter_queue('tap_ev', '{"event_trail": "failures"}');
SELECT is((SELECT count(*)::int FROM b, conveyor.job_events(b.job_id) e WHERE e.event = 'enqueued'), 3,
          'jobs enqueued with the trail on keep their event after it is turned off');

-- ---- an event stored by 0.2 ---------------------------------------------------------------------------

-- A job enqueued before the update to 0.3: its event is a row of job_events, and it has no
-- enqueued_run_at.
SELECT job_id AS o FROM conveyor.enqueue('tap_ev_old', '{"n": "o"}') \gset
UPDATE conveyor.jobs SET enqueued_run_at = NULL WHERE job_id = :'o';
INSERT INTO conveyor.job_events (job_id, at, event, details)
VALUES (:'o', clock_timestamp(), 'enqueued', jsonb_build_object('priority', 5, 'run_at', now(), 'group_key', NULL));
SELECT is((SELECT array_agg(event) FROM conveyor.job_events(:'o')), ARRAY['enqueued'], 'a stored enqueued event shows once');
SELECT job_id AS o2 FROM conveyor.dequeue('tap_ev_old', 'w1') \gset
SELECT is(conveyor.ack(:'o2', true, worker_id => 'w1'), true, 'that job completes');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'o')), ARRAY['enqueued', 'started', 'succeeded'],
          '... and its stored event still shows once when it is in history');

SELECT * FROM finish();
ROLLBACK;
