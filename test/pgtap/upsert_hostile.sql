-- upsert against a hostile or merely clever target: triggers, DEFAULTs and CHECKs that call upsert
-- again, invalidate the table's description, change search_path, skip rows or change keys. The
-- backend survives, no caller code runs as the extension's owner, and a trigger's decision is reported.
BEGIN;
SELECT plan(26);

-- ---- re-entrant upserts while the table's description is invalidated ---------------------------------

CREATE TABLE tap_ho_reentrant (id int PRIMARY KEY, v text);
CREATE FUNCTION tap_ho_reenter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id < 100 THEN
        -- Each invalidates the relcache entry of the table the outer upsert is running on.
        IF NEW.v = 'grant' THEN EXECUTE 'GRANT SELECT ON public.tap_ho_reentrant TO PUBLIC'; END IF;
        IF NEW.v = 'analyze' THEN EXECUTE 'ANALYZE public.tap_ho_reentrant'; END IF;
        IF NEW.v = 'revoke' THEN EXECUTE 'REVOKE SELECT ON public.tap_ho_reentrant FROM PUBLIC'; END IF;
        PERFORM * FROM conveyor.upsert('public.tap_ho_reentrant',
                                       pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('id', NEW.id + 100, 'v', NEW.v)),
                                       '{id}', '{"audit": true}');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tap_ho_reentrant_b BEFORE INSERT OR UPDATE ON tap_ho_reentrant FOR EACH ROW EXECUTE FUNCTION tap_ho_reenter();
SELECT pg_backend_pid() AS pid \gset

SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_ho_reentrant', '[{"id": 1, "v": "grant"}]', '{id}', '{"audit": true}') $$,
    $$ VALUES (0, 'inserted') $$, 'an upsert whose trigger GRANTs on the table and upserts into it again');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_ho_reentrant', '[{"id": 1, "v": "analyze"}, {"id": 2, "v": "grant"}]', '{id}',
                                               '{"audit": true}') $$,
    $$ VALUES (0, 'updated'), (1, 'inserted') $$, 'the same with ANALYZE, updating the outer row');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert_counts('tap_ho_reentrant', '[{"id": 3, "v": "revoke"}, {"id": 2, "v": "analyze"}]',
                                                      '{id}', '{"audit": true, "operation_id": "tap-ho-1"}')
       CROSS JOIN LATERAL (VALUES (0, 'counted')) AS x(ord, action) $$,
    $$ VALUES (0, 'counted') $$, 'the same with REVOKE, an operation_id and upsert_counts');
SELECT is(pg_backend_pid(), :pid, 'the backend survived every re-entrant call');
SELECT results_eq(
    $$ SELECT id, v FROM tap_ho_reentrant ORDER BY id $$,
    $$ VALUES (1, 'analyze'), (2, 'analyze'), (3, 'revoke'), (101, 'analyze'), (102, 'analyze'), (103, 'revoke') $$,
    'outer and inner upserts each wrote their rows');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_ho_reentrant'), 10,
          'and the audit trail holds every inner and outer change');

-- ---- no caller code as the extension's owner --------------------------------------------------------

CREATE ROLE tap_ho_mallory NOLOGIN IN ROLE conveyor_worker;
CREATE SCHEMA tap_ho_evil AUTHORIZATION tap_ho_mallory;
CREATE TABLE tap_ho_seen (who text, via text);
GRANT INSERT, SELECT ON tap_ho_seen TO PUBLIC;
SET ROLE tap_ho_mallory;
-- A look-alike of text = text that records who runs it.
CREATE FUNCTION tap_ho_evil.texteq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.tap_ho_seen VALUES (current_user, 'operator');
    RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR tap_ho_evil.= (leftarg = text, rightarg = text, function = tap_ho_evil.texteq);
CREATE FUNCTION tap_ho_evil.plant() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'tap_ho_evil, pg_catalog', false);
    RETURN true;
END $$;
CREATE FUNCTION tap_ho_evil.plant_text() RETURNS text LANGUAGE sql AS $$ SELECT 'planted' WHERE tap_ho_evil.plant() $$;
CREATE FUNCTION tap_ho_evil.plant_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM tap_ho_evil.plant(); RETURN NEW; END $$;
-- The same move from a trigger, a column DEFAULT and a CHECK constraint.
CREATE TABLE tap_ho_evil.by_trigger (id int PRIMARY KEY, v text);
CREATE TRIGGER plant BEFORE INSERT OR UPDATE ON tap_ho_evil.by_trigger FOR EACH ROW EXECUTE FUNCTION tap_ho_evil.plant_trigger();
CREATE TABLE tap_ho_evil.by_default (id int PRIMARY KEY, v text, d text DEFAULT tap_ho_evil.plant_text());
CREATE TABLE tap_ho_evil.by_check (id int PRIMARY KEY, v text CHECK (tap_ho_evil.plant()));

-- The calls keep their results in psql variables: pgTAP's own functions are not on the planted path.
SELECT (SELECT action FROM conveyor.upsert('tap_ho_evil.by_trigger', '[{"id": 1, "v": "a"}]', '{id}', '{"audit": true}')) AS by_trigger_audit \gset
SELECT (SELECT action FROM conveyor.upsert('tap_ho_evil.by_trigger', '[{"id": 2, "v": "a"}]', '{id}', '{"operation_id": "tap-ho-op"}')) AS by_trigger_op \gset
SELECT (SELECT action FROM conveyor.upsert('tap_ho_evil.by_default', '[{"id": 1, "v": "a"}]', '{id}',
                                           '{"audit": true, "operation_id": "tap-ho-default"}')) AS by_default \gset
SELECT (SELECT action FROM conveyor.upsert('tap_ho_evil.by_check', '[{"id": 1, "v": "a"}]', '{id}',
                                           '{"audit": true, "operation_id": "tap-ho-check"}')) AS by_check \gset
SELECT (SELECT action FROM conveyor.upsert('tap_ho_evil.by_check', '[{"id": 1, "v": "b"}]', '{id}',
                                           '{"audit": true, "operation_id": "tap-ho-check-2"}')) AS by_check_update \gset
SELECT (SELECT inserted FROM conveyor.upsert_counts('tap_ho_evil.by_trigger', '[{"id": 3, "v": "a"}]', '{id}',
                                                    '{"audit": true, "operation_id": "tap-ho-op-2"}')) AS counts_both \gset
SELECT current_setting('search_path') AS planted \gset
-- The planted operator is live: mallory's own comparison goes through it (so the checks below can fail).
SELECT ('x'::text = 'x'::text) AS own_comparison \gset
RESET search_path;
RESET ROLE;
SELECT is(:'by_trigger_audit'::text, 'inserted', 'a trigger that plants a search_path, with audit');
SELECT is(:'by_trigger_op'::text, 'inserted', '... with an operation_id');
SELECT is(:'by_default'::text, 'inserted', 'a DEFAULT that plants it');
SELECT is(:'by_check'::text, 'inserted', 'a CHECK that plants it');
SELECT is(:'by_check_update'::text, 'updated', '... and on update');
SELECT is(:'counts_both'::text, '1', 'upsert_counts with both');
SELECT is(:'planted'::text, 'tap_ho_evil, pg_catalog', 'the planted search_path was in force after the calls');
SELECT is(:'own_comparison'::text, 't', 'the look-alike operator resolves for the caller''s own SQL');
SELECT is((SELECT count(*)::int FROM tap_ho_seen WHERE who = 'tap_ho_mallory'), 1, 'the look-alike ran once, as mallory herself');
SELECT is((SELECT count(*)::int FROM tap_ho_seen WHERE who <> 'tap_ho_mallory'), 0, 'and never as anybody else (the owner)');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target LIKE 'tap_ho_evil.%'), 5, 'every audited change was recorded');

-- ---- a trigger's decisions: skipped rows, changed rows, changed keys ------------------------------------

CREATE TABLE tap_ho_skip (id int PRIMARY KEY, v text);
CREATE FUNCTION tap_ho_decide() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.v = 'skip' THEN RETURN NULL; END IF;
    IF NEW.v = 'rekey' THEN NEW.id := NEW.id + 1000; END IF;
    IF NEW.v = 'shout' THEN NEW.v := 'SHOUT'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tap_ho_decide BEFORE INSERT OR UPDATE ON tap_ho_skip FOR EACH ROW EXECUTE FUNCTION tap_ho_decide();

SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_ho_skip', '[{"id": 1, "v": "a"}, {"id": 2, "v": "skip"}, {"id": 3, "v": "shout"}]',
                                               '{id}', '{"audit": true}') $$,
    $$ VALUES (0, 'inserted'), (1, 'skipped'), (2, 'inserted') $$, 'an insert the trigger skips is reported as skipped');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_ho_skip', '[{"id": 1, "v": "skip"}, {"id": 2, "v": "b"}]', '{id}', '{"audit": true}') $$,
    $$ VALUES (0, 'skipped'), (1, 'inserted') $$, 'so is an update it skips');
SELECT results_eq($$ SELECT id, v FROM tap_ho_skip ORDER BY id $$, $$ VALUES (1, 'a'), (2, 'b'), (3, 'SHOUT') $$,
                  'skipped elements wrote nothing; a changed row was written as the trigger made it');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_ho_skip'), 3,
          'the audit trail records what was written, not what was skipped');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_ho_skip', '[{"id": 1, "v": "skip"}, {"id": 9, "v": "skip"}, {"id": 2, "v": "c"}]',
                                            '{id}', '{"operation_id": "tap-ho-skip"}') $$,
    $$ VALUES (0::bigint, 1::bigint, 0::bigint, 2::bigint) $$, 'upsert_counts counts the skipped elements');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_ho_skip', '[{"id": 1, "v": "skip"}, {"id": 9, "v": "skip"}, {"id": 2, "v": "c"}]',
                                            '{id}', '{"operation_id": "tap-ho-skip"}') $$,
    $$ VALUES (0::bigint, 1::bigint, 0::bigint, 2::bigint) $$, '... and so does its repeat by operation_id');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_ho_skip', '[{"id": 7, "v": "rekey"}]', '{id}') $$,
    '09000', 'a BEFORE INSERT trigger on public.tap_ho_skip changed the key of a row upsert inserted',
    'a trigger that changes the key of an inserted row gets 09000, not an internal error');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_ho_skip', '[{"id": 1, "v": "a"}, {"id": 8, "v": "rekey"}]', '{id}') $$,
    '09000', NULL, '... in a batch as well');
SELECT is(pg_backend_pid(), :pid, 'and the backend is still the same');

SELECT * FROM finish();
ROLLBACK;
