-- upsert runs as its caller: the caller's table and column privileges and the target's row-level
-- security apply; conveyor's own tables stay out of the caller's reach.
BEGIN;
SELECT plan(19);

CREATE ROLE tap_up_writer NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_up_inserter NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_up_stranger NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_up_nobody NOLOGIN;

CREATE TABLE tap_up_priv (id int PRIMARY KEY, owner text NOT NULL, body text, secret text);
INSERT INTO tap_up_priv VALUES (1, 'tap_up_writer', 'first', 's1'), (2, 'someone_else', 'theirs', 's2');
GRANT SELECT, INSERT, UPDATE ON tap_up_priv TO tap_up_writer;
GRANT SELECT, INSERT ON tap_up_priv TO tap_up_inserter;
GRANT SELECT (id, owner, body), INSERT (id, owner, body), UPDATE (body) ON tap_up_priv TO tap_up_stranger;

SELECT is(has_function_privilege('tap_up_nobody', 'conveyor.upsert(regclass, jsonb, text[], jsonb)', 'EXECUTE'), false,
          'upsert is not granted to PUBLIC');
SELECT is(has_function_privilege('conveyor_worker', 'conveyor.upsert_counts(regclass, jsonb, text[], jsonb)', 'EXECUTE'), true,
          'conveyor_worker may call upsert_counts');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'conveyor.upsert(regclass, jsonb, text[], jsonb)'::regprocedure), false,
          'upsert is SECURITY INVOKER');

-- ---- table privileges -------------------------------------------------------------------------------

SET ROLE tap_up_inserter;
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "body": "changed"}]', '{id}') $$,
    '42501', 'permission denied for table public.tap_up_priv',
    'a role without UPDATE on the target gets 42501 ...');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 3, "owner": "tap_up_inserter", "body": "new"}]', '{id}') $$,
    '42501', NULL, '... even for a batch that would only insert');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM tap_up_priv WHERE id = 3 OR body = 'changed'), 0, 'and nothing changed');

SET ROLE tap_up_stranger;
SELECT is((SELECT action FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "body": "by column rights"}]', '{id}',
                                              '{"immutable_columns": ["owner"]}')),
          'updated', 'column privileges that cover every column written and compared are enough');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "secret": "x"}]', '{id}') $$,
    '42501', NULL, 'a column the role may not write is refused');
RESET ROLE;
SELECT is((SELECT secret FROM tap_up_priv WHERE id = 1), 's1', 'and stays as it was');

SET ROLE tap_up_nobody;
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "x"}]', '{id}') $$,
    '42501', NULL, 'a role without conveyor_worker cannot call upsert at all');
RESET ROLE;

-- ---- conveyor's own tables ----------------------------------------------------------------------------

SET ROLE tap_up_writer;
SELECT is((SELECT action FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "body": "audited"}]', '{id}',
                                              '{"audit": true, "operation_id": "tap-priv-1"}')),
          'updated', 'a worker''s audited upsert with an operation_id writes change_log and idempotency_keys ...');
SELECT throws_ok($$ INSERT INTO conveyor.change_log (at, target, key, action, changed_by) VALUES (now(), 'x', '{}', 'inserted', 'me') $$,
                 '42501', NULL, '... which the worker cannot write directly');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.change_log $$, '42501', NULL, 'nor read');
RESET ROLE;
SELECT is((SELECT changed_by FROM conveyor.change_log WHERE operation_id = 'tap-priv-1'), 'tap_up_writer',
          'the change is recorded under the calling role');

-- ---- row-level security ----------------------------------------------------------------------------------

ALTER TABLE tap_up_priv ENABLE ROW LEVEL SECURITY;
CREATE POLICY tap_up_own ON tap_up_priv USING (owner = current_user) WITH CHECK (owner = current_user);
SET ROLE tap_up_writer;
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "body": "mine"},
                                                               {"id": 4, "owner": "tap_up_writer", "body": "new"}]', '{id}') $$,
    $$ VALUES (0, 'updated'), (1, 'inserted') $$,
    'rows the policies allow are updated and inserted');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 5, "owner": "someone_else", "body": "planted"}]', '{id}') $$,
    '42501', 'rows[0]: new row violates row-level security policy for table "tap_up_priv"',
    'a new row the policy''s WITH CHECK refuses is 42501, named by its element');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "tap_up_writer", "body": "ok"},
                                                     {"id": 2, "owner": "tap_up_writer", "body": "hijacked"}]', '{id}') $$,
    '42501', 'rows[1]: a row of public.tap_up_priv with key (id=2) exists, but row-level security hides it from you',
    'a row the policy hides cannot be overwritten: 42501');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_priv', '[{"id": 1, "owner": "someone_else", "body": "given away"}]', '{id}') $$,
    '42501', NULL, 'an update the policy''s WITH CHECK refuses is 42501');
RESET ROLE;
SELECT results_eq(
    $$ SELECT id, owner, body FROM tap_up_priv ORDER BY id $$,
    $$ VALUES (1, 'tap_up_writer', 'mine'), (2, 'someone_else', 'theirs'), (4, 'tap_up_writer', 'new') $$,
    'the refused batches changed nothing');

SELECT * FROM finish();
ROLLBACK;
