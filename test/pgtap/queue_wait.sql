-- wait_for and stop_waiting: the session's wake locks in pg_locks, idempotence, the queues returned
-- as having due jobs, the counts stop_waiting returns, and who may call them. The session LISTENs
-- before the test's transaction, as a worker's listening connection does after its first wait_for
-- (the first call, whose LISTEN is not committed yet, returns every queue: see the isolation spec
-- wait_for_enqueue and test/shell/wait_for.sh).
LISTEN conveyor;
BEGIN;
SELECT plan(25);

SELECT conveyor.create_queue('tap_w_a');
SELECT conveyor.create_queue('tap_w_b');
SELECT conveyor.create_queue('tap_w_c');
SELECT conveyor.create_queue('tap_w_paused');
CREATE TEMP VIEW tap_w_locks AS
    SELECT q.name, l.mode, l.granted
    FROM pg_locks l JOIN conveyor.queues q ON l.classid = 0 AND l.objid = q.queue_id::oid
    WHERE l.locktype = 'advisory' AND l.objsubid = 6 AND l.pid = pg_backend_pid()
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

-- ---- waiting: one session-level ShareLock per queue -------------------------------------------------

SELECT is(conveyor.wait_for(ARRAY['tap_w_a', 'tap_w_b']), '{}'::text[], 'empty queues: wait_for returns no queue');
SELECT is((SELECT array_agg(name || ' ' || mode || ' ' || granted ORDER BY name) FROM tap_w_locks),
          ARRAY['tap_w_a ShareLock true', 'tap_w_b ShareLock true'], 'the session holds the wake lock of each queue');
SELECT is((SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 6 AND pid = pg_backend_pid()
           AND mode = 'ShareLock' AND fastpath = false), 2, 'and only those');
SELECT ok('conveyor' = ANY (ARRAY(SELECT pg_listening_channels())), 'the session listens on conveyor');

SELECT is(conveyor.wait_for(ARRAY['tap_w_b', 'tap_w_a', 'tap_w_b']), '{}'::text[], 'a second call (and a name twice) is fine');
SELECT is((SELECT count(*)::int FROM tap_w_locks), 2, 'a second call takes no second lock');

-- ---- the queues returned: those with due jobs, in the order given ----------------------------------

SELECT count(*) FROM conveyor.enqueue('tap_w_b', '{"n": 1}');
SELECT count(*) FROM conveyor.enqueue('tap_w_a', '{"n": 2}');
SELECT count(*) FROM conveyor.enqueue('tap_w_c', '{"n": 3}', run_at => now() + interval '1 hour');
SELECT is(conveyor.wait_for(ARRAY['tap_w_a', 'tap_w_b', 'tap_w_c']), ARRAY['tap_w_a', 'tap_w_b'],
          'ready jobs: those queues are returned, in the order given; a job due later does not count');
SELECT is((SELECT count(*)::int FROM tap_w_locks), 3, 'the new queue is waited on too');
SELECT is(conveyor.wait_for(ARRAY['tap_w_b', 'tap_w_a']), ARRAY['tap_w_b', 'tap_w_a'], 'the order is the caller''s');

-- A scheduled job that came due (dequeue would make it ready) counts.
UPDATE conveyor.jobs SET run_at = now() - interval '1 second' WHERE queue_id = (SELECT queue_id FROM conveyor.queues WHERE name = 'tap_w_c');
SELECT is(conveyor.wait_for(ARRAY['tap_w_c']), ARRAY['tap_w_c'], 'a scheduled job that came due counts');
-- A running job whose lease ran out (dequeue would expire it) counts.
SELECT job_id AS c1 FROM conveyor.dequeue('tap_w_c', 'w1', 1) \gset
SELECT is(conveyor.wait_for(ARRAY['tap_w_c']), '{}'::text[], 'a running job does not count');
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'c1';
SELECT is(conveyor.wait_for(ARRAY['tap_w_c']), ARRAY['tap_w_c'], 'a running job whose lease ran out counts');
SELECT is((SELECT count(*)::int FROM tap_w_locks), 3, 'the dequeue that returned a job let go of the queue''s wait');

-- A paused queue hands out nothing: it is not returned (resume_queue notifies its waiters).
SELECT count(*) FROM conveyor.enqueue('tap_w_paused', '{"n": 4}');
SELECT conveyor.pause_queue('tap_w_paused');
SELECT is(conveyor.wait_for(ARRAY['tap_w_paused', 'tap_w_a']), ARRAY['tap_w_a'], 'a paused queue with ready jobs is not returned');

-- ---- stop_waiting --------------------------------------------------------------------------------------

SELECT is(conveyor.stop_waiting(ARRAY['tap_w_a', 'tap_w_b']), 2, 'stop_waiting returns how many waits it ended');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_w_locks), ARRAY['tap_w_c', 'tap_w_paused'], 'their locks are gone, the others stay');
SELECT is(conveyor.stop_waiting(ARRAY['tap_w_a']), 0, 'a queue the session no longer waits on counts 0');
SELECT is(conveyor.stop_waiting(), 2, 'stop_waiting() ends every wait of the session');
SELECT is((SELECT count(*)::int FROM tap_w_locks), 0, 'no wake lock is left');
SELECT is(conveyor.stop_waiting(), 0, 'nothing left to end');
SELECT ok('conveyor' = ANY (ARRAY(SELECT pg_listening_channels())), 'the session still listens');

-- pg_advisory_unlock_all() ended a wait behind stop_waiting's back: it is not counted.
SELECT conveyor.wait_for(ARRAY['tap_w_a']);
SELECT pg_advisory_unlock_all();
SELECT is(conveyor.stop_waiting(), 0, 'a wait pg_advisory_unlock_all() ended is not counted again');

-- ---- roles ---------------------------------------------------------------------------------------------

CREATE ROLE tap_w_worker IN ROLE conveyor_worker;
CREATE ROLE tap_w_reader IN ROLE conveyor_reader;
SET ROLE tap_w_worker;
SELECT is(conveyor.wait_for(ARRAY['tap_w_b']), ARRAY['tap_w_b'], 'a conveyor_worker may call wait_for');
SELECT is(conveyor.stop_waiting(), 1, 'and stop_waiting');
SET ROLE tap_w_reader;
SELECT throws_ok($$SELECT conveyor.wait_for(ARRAY['tap_w_b'])$$, '42501', NULL, 'a conveyor_reader may not call wait_for');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
SELECT conveyor.stop_waiting();
UNLISTEN *;
