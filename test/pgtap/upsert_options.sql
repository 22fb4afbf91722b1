-- The batch writers' options of upsert and upsert_counts: on_duplicate, returning, mode, on_error,
-- alone and together, and the roles that may use them.
BEGIN;
SELECT plan(38);

CREATE TABLE tap_uo (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, place_id text NOT NULL UNIQUE, name text NOT NULL,
                     rating numeric CHECK (rating BETWEEN 0 AND 5), secret text DEFAULT 'hidden',
                     created_at timestamptz NOT NULL DEFAULT '2026-01-01');

-- ---- on_duplicate ------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, key->>'place_id', action FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p1", "name": "one"}, {"place_id": "p2", "name": "two"}, {"place_id": "p1", "name": "one later"},
           {"place_id": "p1", "name": "one latest"}]', '{place_id}', '{"on_duplicate": "last"}') $$,
    $$ VALUES (0, 'p1', 'duplicate'), (1, 'p2', 'inserted'), (2, 'p1', 'duplicate'), (3, 'p1', 'inserted') $$,
    'on_duplicate last: the last element of a key is written, the others are reported duplicate');
SELECT is((SELECT name FROM tap_uo WHERE place_id = 'p1'), 'one latest', '... and the stored row is the last one');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p1", "name": "first wins"}, {"place_id": "p1", "name": "second"}]', '{place_id}', '{"on_duplicate": "first"}') $$,
    $$ VALUES (0, 'updated'), (1, 'duplicate') $$,
    'on_duplicate first: the first element of a key is written');
SELECT is((SELECT name FROM tap_uo WHERE place_id = 'p1'), 'first wins', '... and the stored row is the first one');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_uo', '[{"place_id": "p1", "name": "a"}, {"place_id": "p1", "name": "b"}]', '{place_id}',
                                     '{"on_duplicate": "error"}') $$,
    '22023', 'rows[0] and rows[1] have the same key (place_id=p1)', 'on_duplicate error (the default) refuses a repeated key');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, duplicates FROM conveyor.upsert_counts('tap_uo',
         '[{"place_id": "p3", "name": "three"}, {"place_id": "p3", "name": "three"}, {"place_id": "p2", "name": "two"}]',
         '{place_id}', '{"on_duplicate": "first"}') $$,
    $$ VALUES (1::bigint, 0::bigint, 1::bigint, 1::bigint) $$,
    'upsert_counts counts the duplicates');
SELECT is((SELECT count(*)::int FROM tap_uo), 3, 'a key given three times is stored once');

-- ---- returning ---------------------------------------------------------------------------------------

CREATE TEMP TABLE tap_uo_ret AS SELECT ord, action, "row" FROM conveyor.upsert('tap_uo',
    '[{"place_id": "p4", "name": "four"}, {"place_id": "p3", "name": "three"}, {"place_id": "p2", "name": "two!"}]', '{place_id}',
    '{"returning": ["id", "secret", "created_at"]}');
SELECT results_eq(
    $$ SELECT action, "row" FROM tap_uo_ret ORDER BY ord $$,
    $$ SELECT a, jsonb_build_object('id', t.id, 'secret', t.secret, 'created_at', t.created_at)
         FROM (VALUES (1, 'inserted', 'p4'), (2, 'unchanged', 'p3'), (3, 'updated', 'p2')) v(o, a, p) JOIN tap_uo t ON t.place_id = v.p
        ORDER BY o $$,
    'returning: the stored row''s columns (generated id, defaults) for inserted, unchanged and updated rows');
SELECT is((SELECT "row" FROM conveyor.upsert('tap_uo', '[{"place_id": "p4", "name": "four"}]', '{place_id}', '{"returning": []}')),
          '{}'::jsonb, 'returning [] gives an empty object');
SELECT is((SELECT count(*)::int FROM conveyor.upsert('tap_uo', '[{"place_id": "p4", "name": "four"}]', '{place_id}') WHERE "row" IS NULL),
          1, 'without returning, row is NULL');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_uo', '[{"place_id": "p9", "name": "nine"}]', '{place_id}', '{"returning": ["nope"]}') $$,
    '42703', 'option returning: column "nope" of relation public.tap_uo does not exist', 'an unknown returning column is 42703');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert_counts('tap_uo', '[]', '{place_id}', '{"returning": ["id"]}') $$,
    '22023', 'option returning is not available in upsert_counts', 'upsert_counts refuses returning');

-- ---- mode --------------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, action, "row"->>'name' FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p1", "name": "renamed"}, {"place_id": "p5", "name": "five"}]', '{place_id}',
         '{"mode": "insert", "returning": ["name"]}') $$,
    $$ VALUES (0, 'exists', 'first wins'), (1, 'inserted', 'five') $$,
    'mode insert: an existing key is reported exists with its stored row; a new one is inserted');
SELECT is((SELECT name FROM tap_uo WHERE place_id = 'p1'), 'first wins', '... and the existing row is left untouched');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p1", "rating": 4.5}, {"place_id": "p6", "name": "six"}, {"place_id": "p5", "name": "five"}]', '{place_id}',
         '{"mode": "update"}') $$,
    $$ VALUES (0, 'updated'), (1, 'missing'), (2, 'unchanged') $$,
    'mode update: a missing key is reported missing');
SELECT is((SELECT count(*)::int FROM tap_uo WHERE place_id = 'p6'), 0, '... and not inserted');
SELECT results_eq(
    $$ SELECT inserted, updated, existing, missing FROM conveyor.upsert_counts('tap_uo',
         '[{"place_id": "p1", "name": "x"}, {"place_id": "p7", "name": "seven"}]', '{place_id}', '{"mode": "insert"}')
       UNION ALL
       SELECT inserted, updated, existing, missing FROM conveyor.upsert_counts('tap_uo',
         '[{"place_id": "p1", "rating": 1}, {"place_id": "p8", "name": "eight"}]', '{place_id}', '{"mode": "update"}') $$,
    $$ VALUES (1::bigint, 0::bigint, 1::bigint, 0::bigint), (0, 1, 0, 1) $$,
    'upsert_counts counts existing (mode insert) and missing (mode update)');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p7", "name": "seven"}, {"place_id": "p9", "name": "nine"}, {"place_id": "p9", "name": "nine?"}]', '{place_id}',
         '{"mode": "insert", "on_duplicate": "first"}') $$,
    $$ VALUES (0, 'exists'), (1, 'inserted'), (2, 'duplicate') $$,
    'mode insert with on_duplicate first');

-- ---- on_error ----------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, action, changed->>'sqlstate' FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p1", "rating": 9}, {"place_id": "p2", "rating": 3}, {"place_id": "p10"}, {"place_id": "p11", "name": "eleven"},
           {"place_id": "p3", "rating": "good"}, {"name": "no key"}]', '{place_id}', '{"on_error": "skip"}') $$,
    $$ VALUES (0, 'error', '23514'), (1, 'updated', NULL), (2, 'error', '23502'), (3, 'inserted', NULL), (4, 'error', '22P02'),
              (5, 'error', '22023') $$,
    'on_error skip: failing elements are reported with their SQLSTATE, the others are written');
SELECT is((SELECT changed->>'message' FROM conveyor.upsert('tap_uo', '[{"place_id": "p1", "rating": 9}]', '{place_id}', '{"on_error": "skip"}')),
          'new row for relation "tap_uo" violates check constraint "tap_uo_rating_check"', '... with the error''s message');
SELECT results_eq(
    $$ SELECT place_id, rating FROM tap_uo WHERE place_id IN ('p1', 'p2', 'p10', 'p11', 'p3') ORDER BY place_id $$,
    $$ VALUES ('p1', 1::numeric), ('p11', NULL), ('p2', 3), ('p3', NULL) $$,
    '... and exactly the good elements were written');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_uo', '[{"place_id": "p2", "rating": 4}, {"place_id": "p1", "rating": 9}]', '{place_id}',
                                     '{"on_error": "abort"}') $$,
    '23514', NULL, 'on_error abort (the default): one failing element fails the batch ...');
SELECT is((SELECT rating FROM tap_uo WHERE place_id = 'p2'), 3::numeric, '... and nothing is written');
SELECT results_eq(
    $$ SELECT updated, unchanged, missing, errors FROM conveyor.upsert_counts('tap_uo',
         (SELECT jsonb_agg(jsonb_build_object('place_id', 'p' || g, 'rating', CASE WHEN g % 3 = 0 THEN 7 ELSE 2 END) ORDER BY g)
            FROM generate_series(1, 12) g), '{place_id}', '{"on_error": "skip", "mode": "update"}') $$,
    $$ VALUES (6::bigint, 0::bigint, 4::bigint, 2::bigint) $$,
    'an enrichment batch with mode update and on_error skip: counts of updated, missing and errors');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_uo', '[{"place_id": "p20", "name": "twenty"}, {"place_id": "p21", "name": "x"}]',
                                               '{place_id}', '{"on_error": "skip"}') $$,
    $$ VALUES (0, 'inserted'), (1, 'inserted') $$,
    'on_error skip with nothing failing writes the batch as without it');
CREATE FUNCTION tap_uo_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'refused' THEN RAISE EXCEPTION 'refused by trigger' USING ERRCODE = 'P0001'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tap_uo_refuse BEFORE INSERT OR UPDATE ON tap_uo FOR EACH ROW EXECUTE FUNCTION tap_uo_refuse();
SELECT results_eq(
    $$ SELECT ord, action, changed->>'message' FROM conveyor.upsert('tap_uo',
         '[{"place_id": "p22", "name": "refused"}, {"place_id": "p20", "name": "refused"}, {"place_id": "p23", "name": "ok"}]',
         '{place_id}', '{"on_error": "skip", "audit": true}') $$,
    $$ VALUES (0, 'error', 'refused by trigger'), (1, 'error', 'refused by trigger'), (2, 'inserted', NULL) $$,
    'on_error skip: an error a trigger raises is the element''s error');
SELECT results_eq(
    $$ SELECT key->>'place_id', action FROM conveyor.change_log WHERE target = 'public.tap_uo' $$,
    $$ VALUES ('p23', 'inserted') $$,
    'audit records only what was written');
DROP TRIGGER tap_uo_refuse ON tap_uo;
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_uo', '[{"place_id": "p30", "name": "a"}, {"place_id": "p30", "name": "b"}]',
                                               '{place_id}', '{"on_error": "skip"}') $$,
    $$ VALUES (0, 'inserted'), (1, 'error') $$,
    'on_error skip without on_duplicate: a repeated key is the later element''s error');
SELECT results_eq(
    $$ SELECT ord, action, "row"->>'name' FROM conveyor.upsert('tap_uo', '[{"place_id": "p31", "name": "a", "rating": 10},
         {"place_id": "p31", "name": "b"}, {"place_id": "p32", "name": "c", "rating": -1}]', '{place_id}',
         '{"on_error": "skip", "on_duplicate": "first", "returning": ["name"]}') $$,
    $$ VALUES (0, 'error', NULL), (1, 'duplicate', NULL), (2, 'error', NULL) $$,
    'on_duplicate first keeps the first element even when it then fails: the key is not written');
SELECT results_eq(
    $$ SELECT r OPERATOR(pg_catalog.->>) 2 FROM conveyor.upsert('tap_uo', '[{"place_id": "p40", "rating": 8}]', '{place_id}',
         '{"on_error": "skip", "operation_id": "tap-uo-1"}') u, LATERAL (SELECT jsonb_build_array(u.ord, u.key, u.action) r) x $$,
    $$ VALUES ('error') $$, 'on_error skip with operation_id ...');
SELECT results_eq(
    $$ SELECT action, changed->>'sqlstate' FROM conveyor.upsert('tap_uo', '[{"place_id": "p40", "rating": 8}]', '{place_id}',
         '{"on_error": "skip", "operation_id": "tap-uo-1"}') $$,
    $$ VALUES ('error', '23502') $$, '... a repeat replays the element''s error');
SELECT results_eq(
    $$ SELECT errors FROM conveyor.upsert_counts('tap_uo', '[{"place_id": "p40", "rating": 8}]', '{place_id}',
         '{"on_error": "skip", "operation_id": "tap-uo-2"}') $$,
    $$ VALUES (1::bigint) $$, 'upsert_counts with operation_id counts errors');

-- ---- roles -------------------------------------------------------------------------------------------

CREATE ROLE tap_uo_writer NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_uo_inserter NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_uo_updater NOLOGIN IN ROLE conveyor_worker;
GRANT SELECT (id, place_id, name, rating, created_at), INSERT, UPDATE ON tap_uo TO tap_uo_writer;
GRANT SELECT, INSERT ON tap_uo TO tap_uo_inserter;
GRANT SELECT, UPDATE ON tap_uo TO tap_uo_updater;
SET ROLE tap_uo_writer;
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_uo', '[{"place_id": "p50", "name": "fifty"}]', '{place_id}', '{"returning": ["id", "secret"]}') $$,
    '42501', 'permission denied for column "secret" of table public.tap_uo',
    'returning a column the caller may not SELECT is 42501 ...');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM tap_uo WHERE place_id = 'p50'), 0, '... before anything is written');
SET ROLE tap_uo_writer;
SELECT is((SELECT "row" ? 'id' FROM conveyor.upsert('tap_uo', '[{"place_id": "p50", "name": "fifty"}]', '{place_id}', '{"returning": ["id"]}')),
          true, 'returning columns the caller may SELECT are returned');
SET ROLE tap_uo_inserter;
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_uo', '[{"place_id": "p50", "name": "changed"}, {"place_id": "p51", "name": "x"}]', '{place_id}',
                                          '{"mode": "insert"}') ORDER BY ord $$,
    $$ VALUES ('exists'), ('inserted') $$, 'mode insert needs no UPDATE right');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_uo', '[{"place_id": "p50", "name": "changed"}]', '{place_id}') $$,
    '42501', NULL, '... mode upsert does');
SET ROLE tap_uo_updater;
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_uo', '[{"place_id": "p50", "name": "changed"}, {"place_id": "p52", "name": "x"}]', '{place_id}',
                                          '{"mode": "update"}') ORDER BY ord $$,
    $$ VALUES ('updated'), ('missing') $$, 'mode update needs no INSERT right');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
