-- Every capability called by a caller whose search_path puts a schema of look-alikes ahead of
-- pg_catalog: functions, aggregates and operators named like the ones conveyor's SQL uses, each
-- recording that it ran. conveyor pins its search_path and qualifies pg_catalog, so none may run;
-- a probe shows that the same look-alikes do catch the caller's own SQL. (upsert_hostile.sql covers
-- search_path planted from inside an upsert by triggers, DEFAULTs and CHECKs.)
BEGIN;
SELECT plan(10);

CREATE ROLE tap_sp_mallory LOGIN IN ROLE conveyor_admin;   -- admin: the workload includes admin functions
SELECT format('GRANT CREATE ON DATABASE %I TO tap_sp_mallory', current_database()) \gexec
SET track_functions = 'all';   -- pg_stat_xact_user_functions tells which functions the workload called

SET SESSION AUTHORIZATION tap_sp_mallory;
CREATE SCHEMA evil;
CREATE TABLE evil.seen (id serial, who text, phase text, what text);
-- The spy and every look-alike resolve names in pg_catalog only, so they cannot spy on each other.
CREATE FUNCTION evil.spy(what text) RETURNS void LANGUAGE sql SET search_path = pg_catalog AS $$
    INSERT INTO evil.seen (who, phase, what) VALUES (current_user, current_setting('tap_sp.phase', true), what)
$$;

-- Look-alikes of every plain function of pg_catalog that conveyor's SQL (src/**/*.sql, the statements in
-- src/**/*.cpp) calls, same signature, same result.
DO $plant$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.proname, pg_get_function_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result,
                    (SELECT string_agg('$' || i, ', ') FROM generate_series(1, p.pronargs) i) AS call
             FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
               AND p.proname IN ('now', 'clock_timestamp', 'date_trunc', 'make_interval', 'lower', 'length', 'left',
                                 'round', 'random', 'to_jsonb', 'jsonb_typeof', 'jsonb_each', 'jsonb_array_elements',
                                 'jsonb_array_length', 'unnest', 'generate_series', 'gen_random_uuid')
               AND NOT EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[]) t
                               WHERE t IN ('"any"'::regtype, 'internal'::regtype, 'anycompatible'::regtype))
    LOOP
        EXECUTE format($f$CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS
                          $b$ SELECT evil.spy(%L); SELECT * FROM pg_catalog.%I(%s) $b$$f$,
                       f.proname, f.args, f.result, 'function ' || f.proname, f.proname, coalesce(f.call, ''));
    END LOOP;
END
$plant$;
-- jsonb_build_object(VARIADIC "any") cannot be declared by a user; these overloads catch what they can.
CREATE FUNCTION evil.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE sql SET search_path = pg_catalog
    AS $$ SELECT evil.spy('function jsonb_build_object'); SELECT pg_catalog.jsonb_object($1) $$;
CREATE FUNCTION evil.jsonb_build_object(VARIADIC anyarray) RETURNS jsonb LANGUAGE sql SET search_path = pg_catalog
    AS $$ SELECT evil.spy('function jsonb_build_object'); SELECT pg_catalog.jsonb_object($1::text[]) $$;

-- Look-alike aggregates: count, sum, min and max, as conveyor's statements write them unqualified.
CREATE FUNCTION evil.count_step(n bigint) RETURNS bigint LANGUAGE sql SET search_path = pg_catalog
    AS $$ SELECT evil.spy('aggregate count'); SELECT n + 1 $$;
CREATE AGGREGATE evil.count(*) (sfunc = evil.count_step, stype = bigint, initcond = '0');
CREATE FUNCTION evil.agg_step(s anycompatible, v anycompatible) RETURNS anycompatible LANGUAGE sql
    SET search_path = pg_catalog AS $$ SELECT evil.spy('aggregate'); SELECT coalesce(s, v) $$;
DO $plant$
DECLARE
    a text;
    t text;
BEGIN
    FOREACH a IN ARRAY ARRAY['sum', 'min', 'max'] LOOP
        FOREACH t IN ARRAY ARRAY['integer', 'bigint', 'numeric', 'timestamptz', 'double precision'] LOOP
            EXECUTE format('CREATE AGGREGATE evil.%I(%s) (sfunc = evil.agg_step, stype = %s)', a, t, t);
        END LOOP;
    END LOOP;
END
$plant$;

-- Look-alike operators for the types conveyor compares and computes with, each returning what
-- pg_catalog's operator returns.
DO $plant$
DECLARE
    o record;
    n int := 0;
BEGIN
    FOR o IN SELECT op.oprname, op.oprleft::regtype AS l, op.oprright::regtype AS r, op.oprresult::regtype AS res
             FROM pg_operator op
             WHERE op.oprnamespace = 'pg_catalog'::regnamespace AND op.oprleft <> 0
               AND ((op.oprname IN ('=', '<>', '<', '<=', '>', '>=') AND op.oprleft = op.oprright
                     AND op.oprleft IN ('text'::regtype, 'uuid'::regtype, 'bigint'::regtype, 'integer'::regtype,
                                        'numeric'::regtype, 'jsonb'::regtype, 'timestamptz'::regtype, 'boolean'::regtype))
                 OR (op.oprname IN ('+', '-', '*', '/') AND op.oprleft = op.oprright
                     AND op.oprleft IN ('bigint'::regtype, 'integer'::regtype, 'numeric'::regtype))
                 OR (op.oprname IN ('+', '-') AND op.oprleft = 'timestamptz'::regtype
                     AND op.oprright IN ('interval'::regtype, 'timestamptz'::regtype))
                 OR (op.oprname IN ('->', '->>', '?') AND op.oprleft = 'jsonb'::regtype AND op.oprright = 'text'::regtype)
                 OR (op.oprname IN ('||', '@>') AND op.oprleft = 'jsonb'::regtype AND op.oprright = 'jsonb'::regtype)
                 OR (op.oprname = '||' AND op.oprleft = 'text'::regtype AND op.oprright = 'text'::regtype))
    LOOP
        n := n + 1;
        EXECUTE format($f$CREATE FUNCTION evil.op_%s(a %s, b %s) RETURNS %s LANGUAGE sql SET search_path = pg_catalog AS
                          $b$ SELECT evil.spy(%L); SELECT a OPERATOR(pg_catalog.%s) b $b$$f$,
                       n, o.l, o.r, o.res, format('operator %s %s %s', o.l, o.oprname, o.r), o.oprname);
        EXECUTE format('CREATE OPERATOR evil.%s (leftarg = %s, rightarg = %s, function = evil.op_%s)', o.oprname, o.l, o.r, n);
    END LOOP;
END
$plant$;

-- The caller's own table for upserts, with the types conveyor compares keys and values of.
CREATE TABLE evil.videos (id text PRIMARY KEY, ref uuid, views bigint, meta jsonb, seen_at timestamptz);

-- ---- the workload: from here on the caller's own SQL only names conveyor's functions and literals ------

SET search_path = evil, pg_catalog, public;
SET tap_sp.phase = 'workload';
\o /dev/null

-- queue
SELECT conveyor.create_queue('tap_sp', '{"max_attempts": 3}');
SELECT conveyor.alter_queue('tap_sp', '{"lease_seconds": 60}');
SELECT job_id AS j1 FROM conveyor.enqueue('tap_sp', '{"n": 1}', 'fetch', 'g1', dedup_key => 'd1') \gset
SELECT was_duplicate AS dup FROM conveyor.enqueue('tap_sp', '{"n": 1}', 'fetch', 'g1', dedup_key => 'd1') \gset
SELECT conveyor.enqueue('tap_sp', '{"n": 2}', run_at => '2999-01-01Z');
SELECT conveyor.enqueue_batch('tap_sp', '[{"payload": {"n": 3}, "group_key": "g2"}, {"payload": {"n": 4}, "priority": 1}]');
SELECT job_id AS d1, attempt AS a1 FROM conveyor.dequeue('tap_sp', 'w1', 1) \gset
SELECT conveyor.heartbeat(:'d1', 'w1', 30);
SELECT conveyor.heartbeat(:'d1', 'w1', 30, attempt => :a1);
SELECT conveyor.progress(:'d1', 'w1', 50, 'fetch', '{"n": 1}', attempt => :a1);
SELECT conveyor.job_log(:'d1', 'w1', 'fetch.done', '{"n": 1}', attempt => :a1);
SELECT conveyor.ack(:'d1', true, stats => '{"rows": 1}', worker_id => 'w1', attempt => :a1) AS acked \gset
SELECT job_id AS d2, attempt AS a2 FROM conveyor.dequeue('tap_sp', 'w1', 1) \gset
SELECT conveyor.release(:'d2', 'w1', 0, attempt => :a2);
SELECT job_id AS d3, attempt AS a3 FROM conveyor.dequeue('tap_sp', 'w1', 1) \gset
SELECT conveyor.ack(:'d3', false, 'boom', worker_id => 'w1', attempt => :a3);
SELECT conveyor.dead_letter(:'d3', 'given up');
SELECT conveyor.retry(:'d3', 0);
SELECT conveyor.dead_letter(:'d3', 'given up again', '{"step": "parse"}');
SELECT conveyor.dead_jobs('tap_sp', lim => 1);
SELECT conveyor.dead_jobs('tap_sp', since => '2000-01-01Z', after => :'d3');
SELECT conveyor.resolve_dead(:'d3', 'payload fixed');
SELECT conveyor.retry(:'d3', 0, true);
SELECT conveyor.reschedule(:'d3', '2999-01-01Z');
SELECT conveyor.cancel(:'d3', 'not needed');
SELECT job_id AS d5 FROM conveyor.dequeue('tap_sp', 'w1', 1) \gset
SELECT conveyor.requeue(:'d5', 0);
SELECT conveyor.requeue_stuck('tap_sp', '1 hour');
SELECT job_id AS d4 FROM conveyor.dequeue('tap_sp', 'w2', 1) \gset
SELECT conveyor.ack_many(ARRAY[:'d4']::uuid[], true, worker_id => 'w2');
SELECT conveyor.pause_queue('tap_sp');
SELECT conveyor.resume_queue('tap_sp');
SELECT conveyor.wait_for(ARRAY['tap_sp']) AS waited \gset
SELECT conveyor.stop_waiting(ARRAY['tap_sp']) AS stopped_waiting \gset
SELECT conveyor.stop_waiting();
SELECT conveyor.reap('tap_sp');
SELECT conveyor.get_job(:'d1') AS d1_job \gset
SELECT conveyor.job_events(:'d3');
SELECT conveyor.queue_metrics('tap_sp');
SELECT conveyor.queue_totals('tap_sp');
SELECT conveyor.list_queues();
SELECT conveyor.create_queue('tap_sp_schema', '{"payload_schema": {"type": "object", "required": ["n"]}, "display_name": "sp", "metadata": {"k": 1}}');
SELECT conveyor.enqueue('tap_sp_schema', '{"n": 1}');
SELECT conveyor.validate_payload('tap_sp_schema', '{"m": 1}');
SELECT * FROM conveyor.list_jobs('tap_sp', ARRAY['completed', 'dead'], 'g1', 'fetch', '2000-01-01Z', '2999-01-01Z', 10);
-- A recurring job's row (schedule_enqueue needs pg_cron's database: test/shell/schedule_enqueue.sh), run
-- by the extension's owner as pg_cron would (under this search_path), then listed.
RESET SESSION AUTHORIZATION;
INSERT INTO conveyor.schedules (name, queue, payload, priority, created_at, updated_at)
VALUES ('tap_sp_every', 'tap_sp', '{}', 5, pg_catalog.now(), pg_catalog.now());
SELECT conveyor.run_schedule('tap_sp_every');
SET SESSION AUTHORIZATION tap_sp_mallory;
SELECT * FROM conveyor.list_schedules();
SELECT conveyor.maintain();
SELECT conveyor.job_stats('tap_sp', '-infinity', 'infinity', 'day');
SELECT conveyor.job_stats('tap_sp', '-infinity', 'infinity', 'hour', 'g1');
SELECT conveyor.uuid_v7_time(conveyor.uuid_v7());
SELECT conveyor.uuid_shard(conveyor.uuid_v7());

-- idempotency
SELECT conveyor.idempotency_begin('tap-sp-1', '{"a": 1}');
SELECT conveyor.idempotency_finish('tap-sp-1', '{"done": true}');
SELECT state AS idem_state FROM conveyor.idempotency_begin('tap-sp-1', '{"a": 1}') \gset
SELECT conveyor.idempotency_begin('tap-sp-2');
SELECT conveyor.idempotency_release('tap-sp-2');

-- leases and entities
SELECT conveyor.lock_acquire('tap-sp-lock', 'o1', 60) AS token \gset
SELECT conveyor.lock_heartbeat('tap-sp-lock', 'o1', :token);
SELECT conveyor.lock_check('tap-sp-lock', :token);
SELECT conveyor.lock_release('tap-sp-lock', 'o1', :token);
SELECT conveyor.lock_acquire('tap-sp-lock', 'o2', 60);
SELECT conveyor.lock_force_release('tap-sp-lock');
SELECT conveyor.locks_cleanup(1);
SELECT conveyor.entity_acquire('video', 'v1', 60);
SELECT conveyor.entity_complete('video', 'v1', '{"ok": true}');
SELECT conveyor.entity_acquire('video', 'v2', 60);
SELECT conveyor.entity_fail('video', 'v2', 'boom');
SELECT conveyor.entity_state('video', 'v1') AS v1_entity \gset
SELECT conveyor.entity_stats();
SELECT conveyor.entity_inconsistencies();
SELECT conveyor.entity_reset('video', 1);
SELECT conveyor.entity_set('video', 'v3', 'PENDING');

-- advisory locks
SELECT conveyor.advisory_key('tap-sp');
SELECT conveyor.try_advisory_lock('tap-sp');
SELECT conveyor.advisory_lock_held('tap-sp') AS adv_held \gset
SELECT conveyor.advisory_unlock('tap-sp');
SELECT conveyor.advisory_lock('tap-sp', 100);
SELECT conveyor.advisory_unlock_all('tap-sp');
SELECT conveyor.try_advisory_xact_lock('tap-sp-x');
SELECT conveyor.advisory_xact_lock('tap-sp-y', 100);

-- upserts into the caller's table: text, uuid, bigint, jsonb and timestamptz compared
SELECT conveyor.upsert('evil.videos', '[{"id": "a", "ref": "0190c0de-0000-7000-8000-000000000001", "views": 1,
                                         "meta": {"t": 1}, "seen_at": "2026-01-01T00:00:00Z"}]', '{id}', '{"audit": true}');
SELECT action AS upsert_again FROM conveyor.upsert('evil.videos', '[{"id": "a", "ref": "0190c0de-0000-7000-8000-000000000001",
        "views": 1, "meta": {"t": 1}, "seen_at": "2026-01-01T00:00:00Z"}]', '{id}', '{"audit": true}') \gset
SELECT inserted AS counted_inserted, updated AS counted_updated FROM conveyor.upsert_counts('evil.videos', '[{"id": "a", "views": 2}, {"id": "b", "views": 1}]',
                                                                '{id}', '{"operation_id": "tap-sp-op"}') \gset

-- snapshots
SELECT conveyor.snapshot('tap_sp', 'v1', '{"views": 10}', '2026-01-01T10:00:00Z');
SELECT delta AS snap_delta FROM conveyor.snapshot('tap_sp', 'v1', '{"views": 25}', '2026-01-02T10:00:00Z') \gset
SELECT conveyor.snapshot_batch('tap_sp', '[{"entity_id": "v2", "metrics": {"views": 1}, "captured_at": "2026-01-02T11:00:00Z"}]');
SELECT conveyor.snapshot_series('tap_sp', 'v1');
SELECT conveyor.snapshot_top('tap_sp', '2026-01-02T00:00:00Z', 'views');
SELECT conveyor.metrics_delta('{"views": 3}', '{"views": 1}');

-- costs
SELECT conveyor.account_create('tap-sp', 100);
SELECT conveyor.account_update('tap-sp', 200);
SELECT conveyor.charge('tap-sp', 'api', 1.5, idempotency_key => 'tap-sp-c1');
SELECT total AS charged FROM conveyor.charge('tap-sp', 'api', 1.5, idempotency_key => 'tap-sp-c1') \gset
SELECT conveyor.reserve('tap-sp', 10) AS r1 \gset
SELECT conveyor.settle(:'r1', 4, 'api');
SELECT conveyor.reserve('tap-sp', 10) AS r2 \gset
SELECT conveyor.release_reservation(:'r2');
SELECT conveyor.account_status('tap-sp');
SELECT conveyor.ledger_verify('tap-sp');
SELECT conveyor.cost_report('tap-sp');
SELECT conveyor.quota_define('tap-sp', 1000, 'day', 'America/Los_Angeles', '{"search": 100}');
SELECT allowed AS quota_allowed FROM conveyor.quota_consume('tap-sp', operation => 'search') \gset
SELECT conveyor.quota_status('tap-sp');
SELECT conveyor.quota_window('day', 'America/Los_Angeles', '2026-03-08T12:00:00Z');
SELECT conveyor.quota_projection(10, 100, '2026-01-01Z', '2026-01-02Z', '2026-01-01T12:00:00Z');
SELECT conveyor.rate_limit('tap-sp', 10);
SELECT conveyor.drop_queue('tap_sp', true);

-- monitor; the coverage check below fails for any function of the extension this workload does not call
SELECT conveyor.settings();
SELECT conveyor.set_setting('health.dead_jobs_warning', '5');
SELECT conveyor.get_setting('health.dead_jobs_warning') AS setting \gset
SELECT conveyor.set_setting('health.dead_jobs_warning', NULL);
SELECT conveyor.report_issue('w1', 'timeout', 'warning', 'slow site', '{"url": "x"}') AS issue \gset
SELECT conveyor.report_issue('w1', 'timeout', 'warning', 'slow site', '{"url": "x"}');
SELECT conveyor.worker_issues();
SELECT conveyor.worker_issue_stats();
SELECT conveyor.resolve_issue(:issue, 'fixed') AS resolved \gset
SELECT conveyor.record_metric('tap_sp.latency', 1.5, '{"site": "a"}');
SELECT conveyor.record_metrics('[{"name": "tap_sp.latency", "value": 2, "tags": {"site": "a"}}]');
SELECT conveyor.aggregate_metrics('hour');
SELECT conveyor.metrics('tap_sp.latency', '2000-01-01Z', '2999-01-01Z');
SELECT conveyor.events('2000-01-01Z');
SELECT conveyor.health() AS health \gset
SELECT conveyor.audit_record('tap_sp.app_call', '{"x": 1}', '{"y": 2}') AS audited \gset
SELECT conveyor.audit('2000-01-01Z', NULL, 'set_setting');

-- retention: a rule on the caller's own table, applied by maintain() (called above too), then dropped
CREATE TABLE evil.kept (id int, at timestamptz);
INSERT INTO evil.kept VALUES (1, '2000-01-01Z'), (2, '2999-01-01Z');
SELECT conveyor.retention_define('evil.kept', 'at', '1 day', 10) AS retention_new \gset
SELECT conveyor.maintain() AS retention_report \gset
SELECT * FROM conveyor.retention_rules();
SELECT conveyor.retention_drop('evil.kept') AS retention_dropped \gset

-- ---- the probe: the same look-alikes catch the caller's own SQL ---------------------------------------

\o
SET tap_sp.phase = 'probe';
SELECT now() IS NOT NULL AS probe_now, 'a'::text = 'a'::text AS probe_eq, (SELECT count(*) FROM (VALUES (1)) v) AS probe_count \gset
RESET search_path;
RESET tap_sp.phase;
RESET SESSION AUTHORIZATION;

SELECT is((SELECT array_agg(DISTINCT who || ': ' || what) FROM evil.seen WHERE phase = 'workload'), NULL,
          'no look-alike ran while conveyor worked for the caller');
SELECT is((SELECT array_agg(DISTINCT what ORDER BY what) FROM evil.seen WHERE phase = 'probe'),
          ARRAY['aggregate count', 'function now', 'operator text = text'],
          'the look-alikes resolve for the caller''s own SQL (so the check above can fail)');
SELECT cmp_ok((SELECT count(*)::int FROM pg_operator WHERE oprnamespace = 'evil'::regnamespace), '>=', 40,
              'the plant holds the operators of text, uuid, bigint, integer, numeric, jsonb and timestamptz');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text)
           FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
           WHERE NOT EXISTS (SELECT 1 FROM pg_stat_xact_user_functions s WHERE s.funcid = p.oid AND s.calls > 0)
             -- they succeed only in pg_cron's database, not this one (test/shell/pg_cron.sh)
             AND p.proname NOT IN ('schedule_maintenance', 'unschedule_maintenance', 'schedule_enqueue', 'unschedule_enqueue')), NULL,
          'the workload called every function of the extension (but the four that need pg_cron''s database)');
-- The calls did their work (a failing one would have ended the test).
SELECT is(ARRAY[:'dup', :'acked', :'d1_job'::jsonb->>'status', :'waited', :'stopped_waiting', :'idem_state',
                :'v1_entity'::jsonb->>'state', :'adv_held'],
          ARRAY['t', 't', 'completed', '{tap_sp}', '1', 'completed', 'COMPLETED', 't'],
          'queue, idempotency, entities, advisory locks');
SELECT is(ARRAY[:'upsert_again', :'counted_inserted', :'counted_updated'], ARRAY['unchanged', '1', '1'], 'upserts');
SELECT is(:'snap_delta'::jsonb, '{"views": 15}', 'snapshots');
SELECT is(ARRAY[:'setting', :'resolved', (:'health'::jsonb->>'overall_status' IS NOT NULL)::text], ARRAY['5', 't', 'true'], 'monitor');
SELECT is(ARRAY[:'charged', :'quota_allowed'], ARRAY['1.500000', 't'], 'costs');
SELECT is(ARRAY[:'retention_new', :'retention_report'::jsonb ->> 'retention_rows_deleted', :'retention_dropped'], ARRAY['t', '1', 't'], 'retention');

SELECT * FROM finish();
ROLLBACK;
