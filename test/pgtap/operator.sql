-- Operator actions (requeue, requeue_stuck, reschedule, retry) and dead letters (dead_letter's
-- details, dead_retention_days, dead_jobs, resolve_dead): results, trail events, audit lines, the
-- queue_metrics gauges after each action, group serialization and dedup keys across them, roles.
BEGIN;
SELECT plan(101);

SELECT conveyor.create_queue('tap_op', '{"backoff_base_seconds": 60, "max_attempts": 2}') \gset
CREATE TEMP VIEW tap_op_gauges AS
    SELECT jsonb_build_array(pending, scheduled, running, dead) AS g FROM conveyor.queue_metrics('tap_op');
CREATE TEMP VIEW tap_op_audit AS
    SELECT function_name, arguments FROM conveyor.audit_log ORDER BY audit_id DESC LIMIT 1;

-- ---- requeue -------------------------------------------------------------------------------------

SELECT job_id AS a FROM conveyor.enqueue('tap_op', '{"n": "a"}') \gset
SELECT job_id AS a_dq FROM conveyor.dequeue('tap_op', 'w1') \gset
SELECT is((SELECT g FROM tap_op_gauges), '[0, 0, 1, 0]'::jsonb, 'gauges: one running');
SELECT is(conveyor.requeue(:'a'), true, 'requeue of a running job returns true');
SELECT is((SELECT function_name FROM tap_op_audit), 'conveyor.requeue', 'requeue is a line in the audit log');
SELECT is((SELECT g FROM tap_op_gauges), '[1, 0, 0, 0]'::jsonb, 'gauges after requeue: one pending, none running');
SELECT is((SELECT jsonb_build_array(j->'status', j->'worker_id', j->'lease_until', j->'attempt') FROM conveyor.get_job(:'a') j),
    '["pending", null, null, 1]'::jsonb, 'the job is pending without worker or lease, its attempt counted');
SELECT is((SELECT event FROM conveyor.job_events(:'a') ORDER BY at DESC LIMIT 1), 'requeued', 'the trail records the requeue');
SELECT is((SELECT worker_id FROM conveyor.job_events(:'a') ORDER BY at DESC LIMIT 1), 'w1',
    'naming the worker the lease was taken from');
SELECT is((SELECT details->>'by' FROM conveyor.job_events(:'a') ORDER BY at DESC LIMIT 1), session_user::text,
    'and who took it');
SELECT is(conveyor.ack(:'a', true, worker_id => 'w1'), false, 'the worker''s late ack is refused (false)');
SELECT is(conveyor.heartbeat(:'a', 'w1'), NULL, 'the worker''s late heartbeat is refused (NULL)');
SELECT throws_ok(format('SELECT conveyor.ack(%L, true)', :'a'), '55000', NULL,
    'an ack without worker_id raises 55000: the job is not running');
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_op', 'w2')), 2, 'the next dequeue reports the next attempt, 2');
SELECT is(conveyor.requeue(:'a', 120), true, 'requeue with a delay');
SELECT is((SELECT jsonb_build_array(j->'state', (j->>'run_at')::timestamptz = now() + interval '120 seconds')
           FROM conveyor.get_job(:'a') j), '["scheduled", true]'::jsonb, 'is scheduled after the delay');
SELECT is((SELECT g FROM tap_op_gauges), '[0, 1, 0, 0]'::jsonb, 'gauges: one scheduled');
SELECT is(conveyor.requeue(:'a'), false, 'requeue of a job that is not running returns false');
SELECT throws_ok(format('SELECT conveyor.requeue(%L, -1)', :'a'), '22023', NULL, 'a negative delay raises 22023');
SELECT throws_ok($$ SELECT conveyor.requeue('00000000-0000-7000-8000-000000000000') $$, '42704', NULL,
    'requeue of an unknown job raises 42704');
SELECT throws_ok(format('SELECT conveyor.requeue(%L, NULL)', :'a'), '22004', NULL, 'a NULL delay raises 22004');

-- ---- requeue keeps group serialization -------------------------------------------------------------

SELECT conveyor.create_queue('tap_op_g') \gset
SELECT job_id AS g1 FROM conveyor.enqueue('tap_op_g', '{"n": 1}', group_key => 'g') \gset
SELECT job_id AS g2 FROM conveyor.enqueue('tap_op_g', '{"n": 2}', group_key => 'g') \gset
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_op_g', 'w1')), :'g1'::uuid, 'g1 runs first');
SELECT is(conveyor.requeue(:'g1'), true, 'requeue g1 at once');
SELECT is((SELECT array_agg(job_id ORDER BY job_id) FROM conveyor.dequeue('tap_op_g', 'w2', 10)), ARRAY[:'g1'::uuid],
    'only g1 can run: g2 still waits behind it');
SELECT is(conveyor.requeue(:'g1', 300), true, 'requeue g1 with a delay');
SELECT is((SELECT array_agg(job_id) FROM conveyor.dequeue('tap_op_g', 'w2', 10)), ARRAY[:'g2'::uuid],
    'g2 heads the group while g1 waits out the delay');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE group_key = 'g' AND state IN ('ready', 'running')), 1,
    'one active job in the group');

-- ---- requeue_stuck -------------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_op_s') \gset
SELECT job_id AS s1 FROM conveyor.enqueue('tap_op_s', '{"n": 1}') \gset
SELECT job_id AS s2 FROM conveyor.enqueue('tap_op_s', '{"n": 2}') \gset
SELECT count(*) AS s_dq FROM conveyor.dequeue('tap_op_s', 'w1', 2) \gset
UPDATE conveyor.jobs SET started_at = now() - interval '2 hours' WHERE job_id = :'s1';
SELECT is((SELECT array_agg(requeue_stuck) FROM conveyor.requeue_stuck('tap_op_s', '1 hour')), ARRAY[:'s1'::uuid],
    'requeue_stuck returns the job running longer than the interval');
SELECT is((SELECT function_name FROM tap_op_audit), 'conveyor.requeue_stuck', 'requeue_stuck is a line in the audit log');
SELECT is((SELECT jsonb_build_array(pending, running) FROM conveyor.queue_metrics('tap_op_s')), '[1, 1]'::jsonb,
    'gauges after requeue_stuck: one pending, one still running');
SELECT is(conveyor.get_job(:'s2')->>'status', 'running', 'the job running for less is left alone');
SELECT is((SELECT count(*)::int FROM conveyor.requeue_stuck('tap_op_s', '1 hour')), 0, 'a second call finds nothing');
SELECT is((SELECT count(*)::int FROM conveyor.events(now(), 'jobs_requeued') WHERE subject = 'tap_op_s'), 1,
    'a monitoring event reports the requeued jobs');
SELECT throws_ok($$ SELECT * FROM conveyor.requeue_stuck('tap_op_s', '-1 hour') $$, '22023', NULL,
    'a negative interval raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.requeue_stuck('tap_op_s', '1 month') $$, '22023', NULL,
    'an interval in months raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.requeue_stuck('tap_op_nope', '1 hour') $$, '42704', NULL,
    'an unknown queue raises 42704');

-- ---- reschedule ----------------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_op_r') \gset
SELECT job_id AS r1 FROM conveyor.enqueue('tap_op_r', '{"n": 1}', group_key => 'rg') \gset
SELECT job_id AS r2 FROM conveyor.enqueue('tap_op_r', '{"n": 2}', group_key => 'rg') \gset
SELECT is(conveyor.reschedule(:'r1', now() + interval '1 hour'), true, 'reschedule a ready job to later');
SELECT is((SELECT function_name FROM tap_op_audit), 'conveyor.reschedule', 'reschedule is a line in the audit log');
SELECT is((SELECT jsonb_build_array(pending, scheduled) FROM conveyor.queue_metrics('tap_op_r')), '[1, 1]'::jsonb,
    'gauges: one pending, one scheduled');
SELECT is((SELECT state FROM conveyor.jobs WHERE job_id = :'r2'), 'ready', 'the next job of the group heads it');
SELECT is(conveyor.reschedule(:'r1', now() - interval '1 hour'), true, 'reschedule it back to an earlier time');
SELECT is((SELECT state FROM conveyor.jobs WHERE job_id = :'r1'), 'ready', 'the earlier job heads the group again');
SELECT is((SELECT state FROM conveyor.jobs WHERE job_id = :'r2'), 'waiting', 'and the other waits');
SELECT is((SELECT jsonb_build_array(pending, scheduled) FROM conveyor.queue_metrics('tap_op_r')), '[2, 0]'::jsonb,
    'gauges: two pending');
SELECT is((SELECT details ? 'previous_run_at' FROM conveyor.job_events(:'r1') WHERE event = 'rescheduled' LIMIT 1), true,
    'the trail records the reschedule with the previous time');
SELECT job_id AS r_dq FROM conveyor.dequeue('tap_op_r', 'w1') \gset
SELECT is(conveyor.reschedule(:'r1', now()), false, 'reschedule of a running job returns false');
SELECT conveyor.ack(:'r1', true) \gset
SELECT is(conveyor.reschedule(:'r1', now()), false, 'reschedule of a finished job returns false');
SELECT throws_ok(format('SELECT conveyor.reschedule(%L, %L)', :'r2', 'infinity'), '22023', NULL,
    'an infinite run_at raises 22023');
SELECT throws_ok(format('SELECT conveyor.reschedule(%L, NULL)', :'r2'), '22004', NULL, 'a NULL run_at raises 22004');
SELECT throws_ok($$ SELECT conveyor.reschedule('00000000-0000-7000-8000-000000000000', now()) $$, '42704', NULL,
    'reschedule of an unknown job raises 42704');

-- ---- retry: attempts kept, backoff cut short -----------------------------------------------------

SELECT job_id AS b FROM conveyor.enqueue('tap_op', '{"n": "b"}', dedup_key => 'bk') \gset
SELECT conveyor.reschedule(:'a', now() + interval '1 day') \gset
SELECT is((SELECT job_id FROM conveyor.dequeue('tap_op', 'w1')), :'b'::uuid, 'b runs');
SELECT is(conveyor.ack(:'b', false, 'flaky', '{"rows": 7}', 'w1'), true, 'and fails');
SELECT is((SELECT details - 'retry_at' - 'duration_ms' FROM conveyor.job_events(:'b') WHERE event = 'failed'),
    '{"attempt": 1, "error": "flaky", "stats": {"rows": 7}}'::jsonb, 'the failed ack records its stats');
SELECT ok((SELECT (details->>'duration_ms')::numeric >= 0 FROM conveyor.job_events(:'b') WHERE event = 'failed'),
    'and the run''s duration');
SELECT is((SELECT state FROM conveyor.jobs WHERE job_id = :'b'), 'scheduled', 'b waits out its backoff');
SELECT is((SELECT g FROM tap_op_gauges), '[0, 2, 0, 0]'::jsonb, 'gauges: two scheduled');
SELECT is(conveyor.retry(:'b'), true, 'retry of a job in backoff runs it now');
SELECT is((SELECT g FROM tap_op_gauges), '[1, 1, 0, 0]'::jsonb, 'gauges: one pending, one scheduled');
SELECT is((SELECT attempt FROM conveyor.dequeue('tap_op', 'w1')), 2, 'its next dequeue is attempt 2: the count is kept');
SELECT is(conveyor.ack(:'b', false, 'flaky again', worker_id => 'w1'), true, 'it fails its last attempt');
SELECT is(conveyor.get_job(:'b')->>'status', 'dead', 'and dies');
SELECT is((SELECT g FROM tap_op_gauges), '[0, 1, 0, 1]'::jsonb, 'gauges: one dead');
SELECT is(conveyor.retry(:'b'), true, 'retry of the dead job');
SELECT is((SELECT jsonb_build_array(j->'status', j->'attempt', j->'max_attempts') FROM conveyor.get_job(:'b') j),
    '["pending", 2, 3]'::jsonb, 'keeps attempt 2 and gets a third attempt');
SELECT is((SELECT details->>'resolution' FROM conveyor.job_events(:'b') WHERE event = 'retried' ORDER BY at DESC LIMIT 1),
    'retried', 'the retry is the dead job''s resolution, in the trail');
SELECT is((SELECT g FROM tap_op_gauges), '[1, 1, 0, 0]'::jsonb, 'gauges: no longer dead');
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'b'), '55000', NULL, 'retry of a pending job raises 55000');
SELECT conveyor.cancel(:'b') \gset
SELECT is(conveyor.retry(:'b', reset_attempts => true), true, 'retry with reset_attempts');
SELECT is((SELECT jsonb_build_array(j->'attempt', j->'max_attempts') FROM conveyor.get_job(:'b') j), '[0, 3]'::jsonb,
    'starts again from attempt 0');
SELECT conveyor.cancel(:'b') \gset
SELECT job_id AS b2 FROM conveyor.enqueue('tap_op', '{"n": "b2"}', dedup_key => 'bk') \gset
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'b'), '55000', NULL,
    'retry while another job holds the dedup key raises 55000');
SELECT is(conveyor.reschedule(:'b2', now() + interval '1 hour'), true, 'reschedule keeps the dedup key''s job');
SELECT is((SELECT was_duplicate FROM conveyor.enqueue('tap_op', '{}', dedup_key => 'bk')), true,
    'an enqueue with that key still finds it');

-- ---- dead letters ----------------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_op_d', '{"retention_days": 2, "dead_retention_days": 45}') \gset
SELECT is((SELECT options->'dead_retention_days' FROM conveyor.list_queues() WHERE queue = 'tap_op_d'), '45'::jsonb,
    'list_queues shows dead_retention_days');
SELECT is((SELECT options->'dead_retention_days' FROM conveyor.list_queues() WHERE queue = 'tap_op'), '30'::jsonb,
    'dead_retention_days defaults to 30');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_op_d', '{"dead_retention_days": -1}') $$, '22023', NULL,
    'a negative dead_retention_days raises 22023');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_op_d', '{"dead_retention_days": 3651}') $$, '22023', NULL,
    'dead_retention_days above 3650 raises 22023');
SELECT job_id AS d1 FROM conveyor.enqueue('tap_op_d', '{"n": 1}') \gset
SELECT job_id AS d2 FROM conveyor.enqueue('tap_op_d', '{"n": 2}') \gset
SELECT job_id AS d3 FROM conveyor.enqueue('tap_op_d', '{"n": 3}') \gset
SELECT is(conveyor.dead_letter(:'d1', 'bad payload', '{"field": "url"}'), true, 'dead_letter with details');
SELECT is(conveyor.dead_letter(:'d2', 'upstream gone'), true, 'dead_letter without details');
SELECT conveyor.cancel(:'d3') \gset
SELECT is((SELECT (purge_at - finished_at) FROM conveyor.job_history WHERE job_id = :'d1'), interval '45 days',
    'a dead job is kept for dead_retention_days');
SELECT is((SELECT (purge_at - finished_at) FROM conveyor.job_history WHERE job_id = :'d3'), interval '2 days',
    'a cancelled job for retention_days');
SELECT is((SELECT details FROM conveyor.job_events(:'d1') WHERE event = 'dead'),
    '{"reason": "bad payload", "details": {"field": "url"}, "previous_status": "pending"}'::jsonb,
    'the trail keeps the reason and details');
SELECT is((SELECT array_agg(job_id ORDER BY finished_at DESC, job_id DESC) FROM conveyor.job_history
           WHERE queue_id = (SELECT queue_id FROM conveyor.queues WHERE name = 'tap_op_d') AND status = 'dead'),
          (SELECT array_agg(job_id) FROM conveyor.dead_jobs('tap_op_d')), 'dead_jobs lists the dead jobs newest first');
SELECT is((SELECT jsonb_build_array(reason, details, last_error, attempt) FROM conveyor.dead_jobs('tap_op_d') WHERE job_id = :'d1'),
    '["bad payload", {"field": "url"}, "bad payload", 0]'::jsonb, 'with reason, details, last error and attempts');
SELECT job_id AS first_id FROM conveyor.dead_jobs('tap_op_d', lim => 1) \gset
SELECT is((SELECT array_agg(job_id) FROM conveyor.dead_jobs('tap_op_d', lim => 1, after => :'first_id')),
          (SELECT array_agg(job_id) FROM (SELECT job_id FROM conveyor.dead_jobs('tap_op_d') OFFSET 1) s),
    'the next page starts after the given job');
SELECT is((SELECT count(*)::int FROM conveyor.dead_jobs('tap_op_d', since => now() + interval '1 second')), 0,
    'since leaves out older dead jobs');
SELECT throws_ok(format('SELECT * FROM conveyor.dead_jobs(%L, after => %L)', 'tap_op_d', :'d3'), '42704', NULL,
    'after naming a job that is not dead raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.dead_jobs('tap_op_d', lim => 0) $$, '22023', NULL, 'lim 0 raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.dead_jobs('tap_op_nope') $$, '42704', NULL, 'an unknown queue raises 42704');

CREATE ROLE tap_op_admin IN ROLE conveyor_admin;
SET SESSION AUTHORIZATION tap_op_admin;
SELECT is(conveyor.resolve_dead(:'d1', 'payload fixed and re-sent'), true, 'an admin resolves a dead job');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT jsonb_build_array(resolution, resolved_by, resolved_at = now()) FROM conveyor.dead_jobs('tap_op_d') WHERE job_id = :'d1'),
    '["payload fixed and re-sent", "tap_op_admin", true]'::jsonb, 'dead_jobs shows the resolution, by whom and when');
SELECT is((SELECT function_name FROM tap_op_audit), 'conveyor.resolve_dead', 'resolve_dead is a line in the audit log');
SELECT is((SELECT jsonb_build_array(j->'reason', j->'details', j->'resolution', j->'resolved_by') FROM conveyor.get_job(:'d1') j),
    '["bad payload", {"field": "url"}, "payload fixed and re-sent", "tap_op_admin"]'::jsonb,
    'get_job shows the reason, details and resolution');
SELECT is((SELECT to_jsonb(l) FROM conveyor.list_jobs('tap_op_d', ARRAY['dead']) l WHERE l.job_id = :'d1'),
    conveyor.get_job(:'d1'), 'list_jobs gives the same columns');
SELECT is(conveyor.resolve_dead(:'d1', 'again'), false, 'a resolved job keeps its first resolution (false)');
SELECT is(conveyor.resolve_dead(:'d3', 'n/a'), false, 'resolve_dead of a cancelled job returns false');
SELECT throws_ok($$ SELECT conveyor.resolve_dead('00000000-0000-7000-8000-000000000000', 'x') $$, '42704', NULL,
    'resolve_dead of an unknown job raises 42704');
SELECT throws_ok(format('SELECT conveyor.resolve_dead(%L, %L)', :'d2', ''), '22023', NULL, 'an empty resolution raises 22023');

-- ---- roles ---------------------------------------------------------------------------------------

CREATE ROLE tap_op_reader IN ROLE conveyor_reader;
CREATE ROLE tap_op_worker IN ROLE conveyor_worker;
SET ROLE tap_op_reader;
SELECT is((SELECT count(*)::int FROM conveyor.dead_jobs('tap_op_d')), 2, 'a reader lists dead jobs');
SELECT throws_ok(format('SELECT conveyor.resolve_dead(%L, %L)', :'d2', 'x'), '42501', NULL, 'a reader cannot resolve them');
RESET ROLE;
SET ROLE tap_op_worker;
SELECT throws_ok(format('SELECT conveyor.requeue(%L)', :'a'), '42501', NULL, 'a worker cannot requeue');
SELECT throws_ok($$ SELECT * FROM conveyor.requeue_stuck('tap_op', '1 hour') $$, '42501', NULL, 'nor requeue_stuck');
SELECT throws_ok(format('SELECT conveyor.reschedule(%L, now())', :'a'), '42501', NULL, 'nor reschedule');
SELECT throws_ok(format('SELECT conveyor.retry(%L)', :'d2'), '42501', NULL, 'nor retry');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
