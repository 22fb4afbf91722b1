-- The audit trail: every admin action writes one row in its own transaction, with the caller (session
-- user and the role that called, not conveyor's owner), application_name, the arguments by name and
-- the result; a failed call leaves none; worker calls only when audit.worker_calls is on; readers
-- never; an application's own rows through audit_record(); audit() filters; maintain() drops the log's partitions past retention.audit_days.
BEGIN;
SELECT plan(47);

CREATE ROLE tap_au_op NOLOGIN;
GRANT conveyor_admin TO tap_au_op;
CREATE ROLE tap_au_worker NOLOGIN;
GRANT conveyor_worker TO tap_au_worker;
CREATE TABLE tap_au_target (id int PRIMARY KEY, v text);
GRANT SELECT, INSERT, UPDATE ON tap_au_target TO tap_au_worker;
SET LOCAL application_name = 'tap-audit';

-- The rows of the log written by this test, by function (without the conveyor. prefix).
CREATE FUNCTION pg_temp.calls(f text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM conveyor.audit_log WHERE function_name = 'conveyor.' || f $$;
GRANT SELECT ON conveyor.audit_log TO tap_au_op, tap_au_worker;
SELECT is((SELECT count(*) FROM conveyor.audit_log), 0::bigint, 'the log starts empty');

CREATE TABLE tap_au_kept (at timestamptz);
ALTER TABLE tap_au_kept OWNER TO tap_au_op;   -- retention rules are defined by the table's owner

-- ---- admin actions, each called once by a member of conveyor_admin ----
SET ROLE tap_au_op;
SELECT conveyor.create_queue('tap_au', '{"max_attempts": 3}');
SELECT conveyor.alter_queue('tap_au', '{"max_attempts": 4}');
SELECT conveyor.pause_queue('tap_au');
SELECT conveyor.resume_queue('tap_au');
SELECT job_id AS j1 FROM conveyor.enqueue('tap_au', '{"n": 1}') \gset
SELECT job_id AS j2 FROM conveyor.enqueue('tap_au', '{"n": 2}') \gset
SELECT conveyor.dead_letter(:'j1', 'bad input');
SELECT conveyor.retry(:'j1', 0);
SELECT conveyor.cancel(:'j2', 'not needed');
SELECT conveyor.reschedule(:'j1', now());
SELECT job_id AS j1_dq FROM conveyor.dequeue('tap_au', 'w1') \gset
SELECT conveyor.requeue(:'j1');
SELECT count(*) AS stuck FROM conveyor.requeue_stuck('tap_au', '1 hour') \gset
SELECT conveyor.resolve_dead(:'j2', 'not dead: false, but recorded');
SELECT conveyor.reap('tap_au');
SELECT conveyor.lock_force_release('tap_au_lock');
SELECT conveyor.entity_set('tap_au_entity', 'e1', 'PENDING');
SELECT conveyor.account_create('tap_au_acct', 100, 'USD');
SELECT conveyor.account_update('tap_au_acct', budget => 250);
SELECT conveyor.quota_define('tap_au_quota', 1000, 'day');
SELECT conveyor.set_setting('retention.audit_days', '30');
SELECT conveyor.drop_queue('tap_au', true);
SELECT conveyor.retention_define('tap_au_kept', 'at', '1 day');
SELECT conveyor.retention_drop('tap_au_kept');
-- Upkeep and readers granted to admins only: not recorded.
SELECT conveyor.maintain() IS NOT NULL AS maintained;
SELECT conveyor.aggregate_metrics('hour') IS NOT NULL AS aggregated;
SELECT count(*) FROM conveyor.audit();
RESET ROLE;

-- The decision, checked against the catalog: every function that conveyor_admin may execute and
-- conveyor_worker may not wrote exactly one row above, but the upkeep and reader exceptions.
CREATE TEMP VIEW tap_au_admin_only AS
SELECT p.proname::text AS name
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
WHERE has_function_privilege('conveyor_admin', p.oid, 'EXECUTE')
  AND NOT has_function_privilege('conveyor_worker', p.oid, 'EXECUTE');
-- schedule_maintenance, unschedule_maintenance, schedule_enqueue and unschedule_enqueue succeed only in
-- pg_cron's database, not this one: test/shell/pg_cron.sh and schedule_enqueue.sh check their rows.
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_au_admin_only
           WHERE name NOT IN ('maintain', 'aggregate_metrics', 'audit', 'schedule_maintenance', 'unschedule_maintenance',
                              'schedule_enqueue', 'unschedule_enqueue')
             AND pg_temp.calls(name) <> 1), NULL,
          'every admin-only function (but upkeep and audit()) wrote exactly one row');
SELECT is((SELECT array_agg(DISTINCT function_name ORDER BY function_name) FROM conveyor.audit_log
           WHERE substr(function_name, 10) NOT IN (SELECT name FROM tap_au_admin_only)), NULL,
          'worker calls (enqueue) wrote no row while audit.worker_calls is off');
SELECT is(pg_temp.calls('maintain') + pg_temp.calls('aggregate_metrics') + pg_temp.calls('audit'), 0::bigint,
          'maintain(), aggregate_metrics() and audit() wrote none');

-- ---- what a row holds ----
SELECT is((SELECT jsonb_build_array(session_user_name, current_user_name, application_name)
           FROM conveyor.audit_log WHERE function_name = 'conveyor.create_queue'),
          jsonb_build_array(session_user, 'tap_au_op', 'tap-audit'),
          'the session user, the role that called (SET ROLE, not conveyor''s owner) and application_name');
SELECT is((SELECT arguments FROM conveyor.audit_log WHERE function_name = 'conveyor.create_queue'),
          '{"queue": "tap_au", "options": {"max_attempts": 3}}'::jsonb, 'create_queue: its arguments by name, jsonb embedded');
SELECT is((SELECT arguments FROM conveyor.audit_log WHERE function_name = 'conveyor.retry'),
          jsonb_build_object('job_id', :'j1'::text, 'delay_seconds', 0, 'reset_attempts', false),
          'retry: a uuid as a string, an int as a number, a boolean as a boolean');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'conveyor.retry'), 'true'::jsonb,
          'retry: its boolean result');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'conveyor.reap'), '0'::jsonb, 'reap: its int result');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'conveyor.lock_force_release'), 'false'::jsonb,
          'lock_force_release of no lease: false, recorded all the same');
SELECT is((SELECT arguments FROM conveyor.audit_log WHERE function_name = 'conveyor.account_update'),
          '{"account": "tap_au_acct", "budget": 250, "currency": null, "hard_limit": null, "metadata": null,
            "remove_budget": false}'::jsonb,
          'account_update: defaults as passed, NULL as null, a numeric as a number');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'conveyor.set_setting'), 'null'::jsonb,
          'a void result is null');
SELECT is((SELECT arguments FROM conveyor.audit_log WHERE function_name = 'conveyor.set_setting'),
          '{"key": "retention.audit_days", "value": "30"}'::jsonb, 'set_setting: key and value');
SELECT ok((SELECT bool_and(at BETWEEN now() AND clock_timestamp()) FROM conveyor.audit_log), 'each row has the time of its call');
SELECT is((SELECT array_agg(function_name ORDER BY audit_id) FROM conveyor.audit_log
           WHERE function_name IN ('conveyor.dead_letter', 'conveyor.retry', 'conveyor.cancel')),
          ARRAY['conveyor.dead_letter', 'conveyor.retry', 'conveyor.cancel'], 'ids follow the order of the calls');

-- ---- a failed admin call leaves no row ----
SET ROLE tap_au_op;
SELECT throws_ok($$SELECT conveyor.set_setting('retention.audit_days', '0')$$, '22023', NULL,
                 'a refused set_setting fails ...');
SELECT throws_ok($$SELECT conveyor.alter_queue('tap_au_none', '{}')$$, '42704', NULL, '... and so does alter_queue of no queue');
RESET ROLE;
SELECT is(pg_temp.calls('set_setting') + pg_temp.calls('alter_queue'), 2::bigint, '... and neither left a row');

-- ---- the session user (SET SESSION AUTHORIZATION) ----
SET SESSION AUTHORIZATION tap_au_op;
SELECT conveyor.create_queue('tap_au2');
SELECT conveyor.alter_queue('tap_au2', '{"max_attempts": 2}');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT jsonb_build_array(session_user_name, current_user_name) FROM conveyor.audit_log
           WHERE function_name = 'conveyor.create_queue' AND arguments->>'queue' = 'tap_au2'),
          '["tap_au_op", "tap_au_op"]'::jsonb, 'a session of tap_au_op records it as both users');

-- ---- worker calls, when audit.worker_calls is on ----
SELECT conveyor.set_setting('audit.worker_calls', 'on');
SET ROLE tap_au_worker;
-- First, so that the settings changed just now are read again inside an invoker function, as the worker.
SELECT count(*) FROM conveyor.upsert('tap_au_target', '[{"id": 1, "v": "a"}]', ARRAY['id']);
SELECT job_id AS j3 FROM conveyor.enqueue('tap_au2', '{"n": 3}', priority => 2) \gset
SELECT count(*) FROM conveyor.dequeue('tap_au2', 'tap_au_w');
SELECT conveyor.ack(:'j3', true);
-- readers are never recorded
SELECT count(*) FROM conveyor.queue_metrics('tap_au2');
SELECT conveyor.health() IS NOT NULL AS healthy;
RESET ROLE;
SELECT is((SELECT array_agg(substr(function_name, 10) ORDER BY audit_id) FROM conveyor.audit_log
           WHERE current_user_name = 'tap_au_worker'),
          ARRAY['upsert', 'enqueue', 'dequeue', 'ack'], 'each worker call wrote one row; the readers none');
SELECT is((SELECT arguments || jsonb_build_object('result', result) FROM conveyor.audit_log
           WHERE function_name = 'conveyor.enqueue' AND current_user_name = 'tap_au_worker')
          - 'run_at',
          '{"queue": "tap_au2", "payload": {"n": 3}, "job_type": null, "group_key": null, "priority": 2,
            "dedup_key": null, "max_attempts": null, "result": {"rows": 1}}'::jsonb,
          'enqueue: its arguments, and a set-returning function''s result as its row count');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'conveyor.ack' AND current_user_name = 'tap_au_worker'),
          'true'::jsonb, 'ack: its result');
SELECT is((SELECT jsonb_build_array(session_user_name, arguments->>'target', result) FROM conveyor.audit_log
           WHERE function_name = 'conveyor.upsert'),
          jsonb_build_array(session_user, 'public.tap_au_target', '{"rows": 1}'::jsonb),
          'upsert (SECURITY INVOKER) is recorded too, as its caller could not write the log');
SELECT conveyor.set_setting('audit.worker_calls', 'off');
SET ROLE tap_au_worker;
SELECT conveyor.enqueue('tap_au2', '{"n": 4}');
RESET ROLE;
SELECT is((SELECT count(*) FROM conveyor.audit_log WHERE current_user_name = 'tap_au_worker'), 4::bigint,
          'off again: the next worker call wrote no row');

-- A long text argument is clipped at a character boundary.
SELECT conveyor.set_setting('audit.worker_calls', 'on');
SELECT conveyor.report_issue('tap_au_w', 'tap', 'info', repeat('é', 3000)) > 0 AS reported;
SELECT conveyor.set_setting('audit.worker_calls', 'off');
SELECT is((SELECT jsonb_build_array(right(arguments->>'message', 4), octet_length(arguments->>'message') <= 2000)
           FROM conveyor.audit_log WHERE function_name = 'conveyor.report_issue'),
          '["é...", true]'::jsonb, 'a long argument is clipped, at a character boundary, marked ...');

-- ---- audit_record(): an application's own security-definer RPC records its call ----
CREATE ROLE tap_au_app NOLOGIN;  -- owns the application's functions
GRANT conveyor_worker TO tap_au_app;
CREATE ROLE tap_au_caller NOLOGIN;  -- calls them; no conveyor role at all
CREATE SCHEMA tap_au_app AUTHORIZATION tap_au_app;
GRANT USAGE ON SCHEMA tap_au_app TO tap_au_caller;
CREATE FUNCTION tap_au_app.double_it(x int) RETURNS int LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM conveyor.audit_record('tap_au_app.double_it', jsonb_build_object('x', x, 'note', repeat('é', 1500)), to_jsonb(x * 2));
    RETURN x * 2;
END $$;
ALTER FUNCTION tap_au_app.double_it(int) OWNER TO tap_au_app;
REVOKE EXECUTE ON FUNCTION tap_au_app.double_it(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tap_au_app.double_it(int) TO tap_au_caller;
SET ROLE tap_au_caller;
SELECT is(tap_au_app.double_it(21), 42, 'the application''s RPC runs');
RESET ROLE;
SELECT is((SELECT jsonb_build_array(session_user_name, current_user_name, application_name, arguments->'x', result)
             FROM conveyor.audit(function => 'tap_au_app.double_it')),
          jsonb_build_array(session_user, 'tap_au_caller', 'tap-audit', 21, 42),
          'audit_record: one row with the role that called the wrapper (not its owner), the session, application_name, arguments, result');
SELECT is((SELECT right(arguments->>'note', 4) || octet_length(arguments->>'note')::text
             FROM conveyor.audit_log WHERE function_name = 'tap_au_app.double_it'),
          'é...2000', 'audit_record: a long argument is clipped like conveyor''s own');
SELECT ok((SELECT conveyor.audit_record('tap_au_app.batch', '{}') > max(audit_id) FROM conveyor.audit_log
            WHERE function_name = 'tap_au_app.double_it'), 'audit_record returns the new row''s increasing id');
SELECT is((SELECT result FROM conveyor.audit_log WHERE function_name = 'tap_au_app.batch'), NULL, 'audit_record: no result is NULL');
SELECT throws_ok($$SELECT conveyor.audit_record('conveyor.retry', '{}')$$, '22023', NULL,
                 'audit_record cannot write a row of a conveyor function');
SELECT throws_ok($$SELECT conveyor.audit_record('CONVEYOR.retry', '{}')$$, '22023', NULL, '... in any case');
SELECT throws_ok($$SELECT conveyor.audit_record('tap_au_app.x', '[1]')$$, '22023', 'arguments must be a JSON object, not array',
                 'audit_record: arguments must be an object');
SELECT throws_ok($$SELECT conveyor.audit_record('tap_au_app.x', NULL)$$, '22004', 'arguments must not be NULL', 'audit_record: NULL arguments');
SELECT throws_ok($$SELECT conveyor.audit_record(repeat('a', 1025), '{}')$$, '22023', NULL, 'audit_record: name over 1024 bytes');
SET ROLE tap_au_caller;
SELECT throws_ok($$SELECT conveyor.audit_record('tap_au_app.x', '{}')$$, '42501', NULL,
                 'a role without conveyor_worker cannot write the log directly');
RESET ROLE;

-- ---- audit(): by time, actor and function ----
SET ROLE tap_au_op;
SELECT is((SELECT count(*) FROM conveyor.audit()), (SELECT count(*) FROM conveyor.audit_log), 'audit(): the last day, every row');
SELECT is((SELECT count(*) FROM conveyor.audit(since => clock_timestamp())), 0::bigint, 'audit(since): none after now');
SELECT is((SELECT array_agg(function_name) FROM conveyor.audit(actor => 'tap_au_op')),
          ARRAY['conveyor.create_queue', 'conveyor.alter_queue'], 'audit(actor): the session user''s calls');
SELECT is((SELECT array_agg(result ORDER BY audit_id) FROM conveyor.audit(function => 'retry')), ARRAY['true'::jsonb],
          'audit(function) without the prefix ...');
SELECT is((SELECT count(*) FROM conveyor.audit(function => 'conveyor.set_setting')), 5::bigint, '... and with it');
SELECT is((SELECT count(*) FROM conveyor.audit(actor => 'nobody', function => 'retry')), 0::bigint, 'both filters apply');
RESET ROLE;
SELECT is((SELECT array_agg(DISTINCT function_name) FROM conveyor.audit_log WHERE function_name = 'conveyor.audit'), NULL,
          'reading the log is not recorded');

-- ---- retention: maintain() drops partitions past retention.audit_days ----
CREATE TABLE conveyor.audit_log_p20200101 PARTITION OF conveyor.audit_log
    FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-01-02 00:00:00+00');
INSERT INTO conveyor.audit_log VALUES (0, '2020-01-01 12:00+00', 'old', 'old', NULL, NULL, 'conveyor.retry', '{}', NULL);
SELECT is((SELECT count(*) FROM conveyor.audit(since => '2019-12-31')), (SELECT count(*) FROM conveyor.audit_log),
          'the old row is in the log');
SELECT ok((conveyor.maintain()->>'partitions_dropped')::int >= 1, 'maintain() reports a dropped partition');
SELECT is(to_regclass('conveyor.audit_log_p20200101'), NULL, 'the partition past retention is dropped');
SELECT isnt(to_regclass('conveyor.audit_log_p' || to_char(now() AT TIME ZONE 'UTC' + interval '1 day', 'YYYYMMDD')), NULL,
            'and tomorrow''s exists');

SELECT * FROM finish();
ROLLBACK;
