-- Privileges: nothing to PUBLIC; conveyor_reader < conveyor_worker < conveyor_admin.
BEGIN;
SELECT plan(41);

SELECT has_role('conveyor_reader', 'role conveyor_reader exists');
SELECT has_role('conveyor_worker', 'role conveyor_worker exists');
SELECT has_role('conveyor_admin', 'role conveyor_admin exists');
SELECT ok(pg_has_role('conveyor_worker', 'conveyor_reader', 'MEMBER'), 'conveyor_worker is a member of conveyor_reader');
SELECT ok(pg_has_role('conveyor_admin', 'conveyor_worker', 'MEMBER'), 'conveyor_admin is a member of conveyor_worker');

-- Fresh roles, dropped again by the closing ROLLBACK.
CREATE ROLE tap_priv_nobody NOLOGIN;
CREATE ROLE tap_priv_reader NOLOGIN IN ROLE conveyor_reader;
CREATE ROLE tap_priv_worker NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_priv_admin NOLOGIN IN ROLE conveyor_admin;

SELECT conveyor.create_queue('tap_priv') \gset

-- ---- PUBLIC --------------------------------------------------------------------------------------

SELECT is(has_function_privilege('tap_priv_nobody',
        'conveyor.enqueue(text, jsonb, text, text, integer, timestamptz, text, integer)', 'EXECUTE'), false,
    'a role without conveyor roles cannot execute conveyor.enqueue');
SELECT is(has_function_privilege('tap_priv_nobody', 'conveyor.dequeue(text, text, integer, integer)', 'EXECUTE'), false,
    'nor conveyor.dequeue');
SELECT is(has_function_privilege('tap_priv_nobody', 'conveyor.queue_metrics(text)', 'EXECUTE'), false,
    'nor conveyor.queue_metrics');
SELECT is(
    (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
     WHERE p.pronamespace = 'conveyor'::regnamespace
       AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))),
    NULL,
    'no conveyor function is executable by PUBLIC');
SELECT is(has_table_privilege('tap_priv_nobody', 'conveyor.queues', 'SELECT'), false,
    'PUBLIC cannot read conveyor.queues');

SET ROLE tap_priv_nobody;
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_priv', '{}') $$, '42501', NULL,
    'a role without conveyor roles gets 42501 from enqueue');
RESET ROLE;

-- ---- conveyor_worker -----------------------------------------------------------------------------

SET ROLE tap_priv_worker;
SELECT job_id AS wj, was_duplicate AS wj_dup FROM conveyor.enqueue('tap_priv', '{"by": "worker"}') \gset
SELECT is(:'wj_dup'::boolean, false, 'a worker can enqueue');
SELECT is((SELECT count(*)::int FROM conveyor.enqueue_batch('tap_priv', '[{"payload": {"i": 1}}]')), 1,
    'a worker can enqueue_batch');
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_priv', 'pw1')), :'wj'::uuid, 'a worker can dequeue');
SELECT ok(conveyor.heartbeat(:'wj', 'pw1', 60) BETWEEN now() + interval '60 seconds' AND clock_timestamp() + interval '60 seconds', 'a worker can heartbeat');
SELECT is(conveyor.ack(:'wj', true, worker_id => 'pw1'), true, 'a worker can ack');
SELECT is(conveyor.get_job(:'wj')->>'status', 'completed', 'a worker can read a job (reader rights)');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_priv_by_worker') $$, '42501', NULL,
    'a worker cannot create_queue (42501)');
SELECT throws_ok($$ SELECT conveyor.pause_queue('tap_priv') $$, '42501', NULL, 'a worker cannot pause_queue');
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'wj'), '42501', NULL, 'a worker cannot retry');
SELECT throws_ok($$ SELECT conveyor.maintain() $$, '42501', NULL, 'a worker cannot run maintain');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.jobs $$, '42501', NULL, 'a worker cannot SELECT conveyor.jobs directly');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.job_history $$, '42501', NULL, 'nor conveyor.job_history');
SELECT throws_ok($$ UPDATE conveyor.queues SET paused = true $$, '42501', NULL, 'a worker cannot write conveyor.queues');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM conveyor.list_queues() WHERE queue = 'tap_priv_by_worker'), 0,
    'the worker''s create_queue created nothing');

-- ---- conveyor_reader -----------------------------------------------------------------------------

SET ROLE tap_priv_reader;
SELECT is((SELECT pending FROM conveyor.queue_metrics('tap_priv')), 1::bigint, 'a reader can call queue_metrics');
SELECT is((SELECT count(*)::int FROM conveyor.list_queues() WHERE queue = 'tap_priv'), 1, 'a reader can list_queues');
SELECT is(conveyor.get_job(:'wj')->>'status', 'completed', 'a reader can get_job');
SELECT is((SELECT array_agg(event ORDER BY at) FROM conveyor.job_events(:'wj')), ARRAY['enqueued', 'started', 'succeeded'],
    'a reader can read job_events');
SELECT is((SELECT count(*)::int FROM conveyor.queues WHERE name = 'tap_priv'), 1, 'a reader can SELECT conveyor.queues');
SELECT throws_ok($$ SELECT * FROM conveyor.enqueue('tap_priv', '{}') $$, '42501', NULL, 'a reader cannot enqueue (42501)');
SELECT throws_ok($$ SELECT * FROM conveyor.dequeue('tap_priv', 'r1') $$, '42501', NULL, 'a reader cannot dequeue');
SELECT throws_ok(format('SELECT conveyor.ack(%L, true)', :'wj'), '42501', NULL, 'a reader cannot ack');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.jobs $$, '42501', NULL, 'a reader cannot SELECT conveyor.jobs');
RESET ROLE;

-- ---- conveyor_admin ------------------------------------------------------------------------------

SET ROLE tap_priv_admin;
SELECT is(conveyor.create_queue('tap_priv_admin_q')::text, '', 'an admin can create_queue');
SELECT is((SELECT count(*)::int FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'tap_priv'), 1,
    'an admin can SELECT conveyor.jobs');
SELECT job_id AS aj FROM conveyor.enqueue('tap_priv_admin_q', '{}') \gset
SELECT is(conveyor.cancel(:'aj'), true, 'an admin can cancel (and enqueue, as a worker)');
SELECT is(conveyor.retry(:'aj'), true, 'an admin can retry');
SELECT is(jsonb_typeof(conveyor.maintain()), 'object', 'an admin can run maintain');
SELECT throws_ok($$ DELETE FROM conveyor.jobs $$, '42501', NULL, 'an admin cannot write conveyor.jobs directly');
SELECT is(conveyor.drop_queue('tap_priv_admin_q', true), true, 'an admin can drop_queue');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
