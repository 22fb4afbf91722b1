-- Retention rules: define, replace, drop and list; validation; who may define; batches; maintain()'s
-- report; a partitioned target; date and timestamp columns; a table that changed owner, was dropped or
-- whose trigger fails; and the proof that the table's own code runs as the table's owner, restricted,
-- never as conveyor's owner (the superuser running maintain() here).
BEGIN;
SELECT plan(44);

CREATE ROLE tap_rt_owner NOLOGIN IN ROLE conveyor_admin;
CREATE ROLE tap_rt_other NOLOGIN IN ROLE conveyor_admin;
CREATE ROLE tap_rt_reader NOLOGIN IN ROLE conveyor_reader;
CREATE SCHEMA tap_rt AUTHORIZATION tap_rt_owner;
GRANT USAGE ON SCHEMA tap_rt TO tap_rt_other, tap_rt_reader;

SET ROLE tap_rt_owner;
CREATE TABLE tap_rt.log (id int PRIMARY KEY, at timestamptz NOT NULL, d date, ts timestamp, n int, note text);
INSERT INTO tap_rt.log SELECT i, now() - i * interval '1 day', current_date - i, localtimestamp - i * interval '1 day', i, 'x'
FROM generate_series(1, 20) i;
CREATE VIEW tap_rt.log_view AS SELECT * FROM tap_rt.log;
-- What the owner's trigger saw: who it ran as, its search_path, and what a superuser-only act gave.
CREATE TABLE tap_rt.seen (n serial, who text, path text, escalation text, set_role text);
CREATE FUNCTION tap_rt.spy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    escalation text := 'succeeded';
    set_role text := 'succeeded';
BEGIN
    BEGIN
        CREATE ROLE tap_rt_evil SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN escalation := SQLSTATE;
    END;
    BEGIN
        SET ROLE NONE;
    EXCEPTION WHEN insufficient_privilege THEN set_role := SQLSTATE;
    END;
    INSERT INTO tap_rt.seen (who, path, escalation, set_role) VALUES (current_user, current_setting('search_path'), escalation, set_role);
    -- A plain SET outlives a function: maintain() must undo it.
    PERFORM set_config('search_path', 'tap_rt, pg_catalog', false);
    PERFORM set_config('statement_timeout', '1', false);
    RETURN OLD;
END $$;
CREATE TRIGGER spy BEFORE DELETE ON tap_rt.log FOR EACH ROW EXECUTE FUNCTION tap_rt.spy();

-- ---- define, replace, list ----
SELECT is(conveyor.retention_define('tap_rt.log', 'at', '15 days', 2), true, 'define: a new rule');
SELECT is(conveyor.retention_define('tap_rt.log', 'at', '15 days', 3), false, 'define again: the rule is replaced');
SELECT is((SELECT ARRAY[target::text, time_column, keep::text, batch::text, table_owner, current_owner, created_by]
           FROM conveyor.retention_rules() WHERE target = 'tap_rt.log'::regclass),
          ARRAY['tap_rt.log', 'at', '15 days', '3', 'tap_rt_owner', 'tap_rt_owner', 'tap_rt_owner'], 'retention_rules() lists it');

-- ---- validation ----
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'nope', '1 day')$$, '42703', NULL, 'unknown column: 42703');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'n', '1 day')$$, '22023',
                 'column "n" of table tap_rt.log is of type integer', 'a column of another type: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'xmin', '1 day')$$, '22023', NULL, 'a system column: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log_view', 'at', '1 day')$$, '22023',
                 'tap_rt.log_view is not a table', 'a view: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '0 days')$$, '22023', NULL, 'keep zero: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '-1 day')$$, '22023', NULL, 'keep negative: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '1 month -40 days')$$, '22023', NULL,
                 'keep that reaches into the future: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '5000 years')$$, '22023', NULL, 'keep past 1900: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '1 day', 0)$$, '22023', NULL, 'batch 0: 22023');
SELECT throws_ok($$SELECT conveyor.retention_define(NULL, 'at', '1 day')$$, '22004', NULL, 'NULL target: 22004');
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', NULL)$$, '22004', NULL, 'NULL keep: 22004');
SELECT throws_ok($$SELECT conveyor.retention_define(4000000000::oid::regclass, 'at', '1 day')$$, '42P01', NULL, 'no such table: 42P01');
RESET ROLE;

-- ---- who may define and drop ----
SET ROLE tap_rt_other;
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '1 day')$$, '42501',
                 'must be owner of table tap_rt.log to define its retention rule', 'an admin who does not own the table cannot define its rule');
SELECT throws_ok($$SELECT conveyor.retention_drop('tap_rt.log')$$, '42501', NULL, '... nor drop it');
RESET ROLE;
SET ROLE tap_rt_reader;
SELECT throws_ok($$SELECT conveyor.retention_define('tap_rt.log', 'at', '1 day')$$, '42501', NULL, 'a reader cannot define rules');
SELECT is((SELECT count(*)::int FROM conveyor.retention_rules()), 1, 'a reader lists them');
RESET ROLE;
-- A SECURITY DEFINER wrapper of a role that does not own the table does not lend its caller's ownership.
SET ROLE tap_rt_other;
CREATE FUNCTION pg_temp.define_for_caller() RETURNS boolean LANGUAGE sql SECURITY DEFINER
    AS $$ SELECT conveyor.retention_define('tap_rt.log', 'at', '1 day') $$;
RESET ROLE;
SET ROLE tap_rt_owner;
SELECT throws_ok($$SELECT pg_temp.define_for_caller()$$, '42501', NULL,
                 'the owner calling a non-owner''s SECURITY DEFINER wrapper: refused (the wrapper''s rights count)');
RESET ROLE;

-- ---- maintain(): batches, the report, and who the owner's code ran as ----
SET search_path = public, pg_catalog;
SET statement_timeout = 0;
SELECT conveyor.maintain() AS first \gset
SELECT is((:'first'::jsonb ->> 'retention_rows_deleted')::int, 3, 'maintain() deletes one batch (3) of the 5 rows older than 15 days');
SELECT is((SELECT (s->>'count')::int FROM jsonb_array_elements(:'first'::jsonb -> 'steps') s WHERE s->>'step' = 'retention_rows_deleted'),
          3, 'its step reports the count');
SELECT is((SELECT array_agg(id ORDER BY id) FROM tap_rt.log WHERE id > 15), ARRAY[16, 17], 'the oldest went first');
SELECT is((SELECT array_agg(DISTINCT who) FROM tap_rt.seen), ARRAY['tap_rt_owner'], 'the owner''s trigger ran as the table''s owner');
SELECT is((SELECT array_agg(DISTINCT escalation) FROM tap_rt.seen), ARRAY['42501'], 'a superuser-only act in it failed with 42501');
SELECT is((SELECT count(*)::int FROM pg_roles WHERE rolname = 'tap_rt_evil'), 0, 'no role was created');
SELECT is((SELECT array_agg(DISTINCT set_role) FROM tap_rt.seen), ARRAY['42501'], 'SET ROLE is refused there (security-restricted)');
SELECT is((SELECT path FROM tap_rt.seen ORDER BY n LIMIT 1), 'pg_catalog, pg_temp', 'its search_path was pinned');
SELECT is(ARRAY[current_setting('search_path'), current_setting('statement_timeout')], ARRAY['public, pg_catalog', '0'],
          'what the trigger SET did not outlive the DELETE');
SELECT is((SELECT ARRAY[last_deleted::text, coalesce(last_error, '-')] FROM conveyor.retention_rules() WHERE target = 'tap_rt.log'::regclass),
          ARRAY['3', '-'], 'the rule records its last run');
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 2, 'the next run deletes the rest');
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 0, 'then nothing is old enough');
SELECT is((SELECT count(*)::int FROM tap_rt.log), 15, 'the 15 recent rows stay');

-- ---- date and timestamp columns; a partitioned target ----
SET ROLE tap_rt_owner;
DROP TRIGGER spy ON tap_rt.log;
SELECT conveyor.retention_define('tap_rt.log', 'd', '10 days', 100);
CREATE TABLE tap_rt.parted (at timestamp NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE tap_rt.parted_old PARTITION OF tap_rt.parted FOR VALUES FROM ('2000-01-01') TO ('2020-01-01');
CREATE TABLE tap_rt.parted_new PARTITION OF tap_rt.parted FOR VALUES FROM ('2020-01-01') TO ('3000-01-01');
INSERT INTO tap_rt.parted VALUES ('2010-01-01', 1), ('2019-06-01', 2), ('2021-01-01', 3), (localtimestamp, 4);
SELECT conveyor.retention_define('tap_rt.parted', 'at', '1 year', 2);
RESET ROLE;
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 8, 'a date column (the 6 rows of 10 days ago and older) and a partitioned table (one batch of 2) in one run');
SELECT is((SELECT array_agg(v ORDER BY v) FROM tap_rt.parted), ARRAY[3, 4], 'the oldest rows of both partitions went');

-- ---- the owner changed, the table was dropped, a trigger failed ----
ALTER TABLE tap_rt.parted OWNER TO tap_rt_other;
INSERT INTO tap_rt.parted VALUES ('2010-01-01', 5);
CREATE TABLE tap_rt.doomed (at timestamptz);
ALTER TABLE tap_rt.doomed OWNER TO tap_rt_owner;
SET ROLE tap_rt_owner;
SELECT conveyor.retention_define('tap_rt.doomed', 'at', '1 day');
CREATE FUNCTION tap_rt.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'not today'; END $$;
CREATE TRIGGER refuse BEFORE DELETE ON tap_rt.log FOR EACH ROW EXECUTE FUNCTION tap_rt.refuse();
INSERT INTO tap_rt.log VALUES (100, now() - interval '100 days', current_date - 100, NULL, 0, 'x');
RESET ROLE;
SELECT 'tap_rt.doomed'::regclass::oid AS doomed_oid \gset
DROP TABLE tap_rt.doomed;
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 0, 'nothing deleted: each rule failed alone, maintain() went on');
SELECT is((SELECT last_error FROM conveyor.retention_rules() WHERE target = 'tap_rt.parted'::regclass),
          'the owner of tap_rt.parted changed from tap_rt_owner to tap_rt_other: its new owner must define the rule again',
          'a table that changed owner: its rule is skipped, and says why');
SELECT is((SELECT count(*)::int FROM tap_rt.parted WHERE v = 5), 1, '... and its rows stay');
SELECT is((SELECT last_error FROM conveyor.retention_rules() WHERE target = 'tap_rt.log'::regclass), 'not today',
          'a failing trigger: the rule records the error');
SELECT is((SELECT count(*)::int FROM conveyor.retention_rules WHERE target::oid = :doomed_oid), 0, 'a dropped table''s rule is removed');
SELECT is((SELECT array_agg(event ORDER BY event) FROM conveyor.events(event_type => NULL) WHERE source = 'retention'),
          ARRAY['retention_rule_failed', 'retention_rule_failed', 'retention_rule_removed'], 'each is an event');
SET ROLE tap_rt_other;
SELECT conveyor.retention_define('tap_rt.parted', 'at', '1 year', 2);
RESET ROLE;
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 2, 'defined again by the new owner, the rule runs (its 2 rows older than a year)');

-- ---- drop ----
SET ROLE tap_rt_owner;
SELECT is(conveyor.retention_drop('tap_rt.log'), true, 'drop: the rule is gone');
SELECT is(conveyor.retention_drop('tap_rt.log'), false, 'drop again: false');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
