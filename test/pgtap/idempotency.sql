-- Idempotency keys: idempotency_begin, idempotency_finish, idempotency_release, expiry and purge.
BEGIN;
SELECT plan(34);

-- ---- the first caller acquires, later callers get its result --------------------------------------

SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_a', '{"order": 1}') $$,
    $$ VALUES (true, 'in_progress', NULL::jsonb) $$,
    'the first begin on a key acquires it');
SELECT is(
    (SELECT state FROM conveyor.idempotency_keys WHERE scope = 'user' AND key = 'tap_idem_a'), 'in_progress',
    'the key is stored in scope user, in progress');
SELECT is(
    (SELECT expires_at - created_at FROM conveyor.idempotency_keys WHERE key = 'tap_idem_a'), interval '1 day',
    'the default time to live is one day');
SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_a', '{"order": 1}') $$,
    $$ VALUES (false, 'in_progress', NULL::jsonb) $$,
    'a second begin while the first is in progress does not acquire and says in_progress');
SELECT lives_ok(
    $$ SELECT conveyor.idempotency_finish('tap_idem_a', '{"charge_id": "ch_1"}') $$,
    'finish stores the result');
SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_a', '{"order": 1}') $$,
    $$ VALUES (false, 'completed', '{"charge_id": "ch_1"}'::jsonb) $$,
    'a later begin gets the stored result and does not acquire');
SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_a') $$,
    $$ VALUES (false, 'completed', '{"charge_id": "ch_1"}'::jsonb) $$,
    'a begin without a request is not compared with the stored request');
SELECT ok(
    (SELECT completed_at IS NOT NULL FROM conveyor.idempotency_keys WHERE key = 'tap_idem_a'),
    'completed_at is set');

-- ---- the same key with a different request ---------------------------------------------------------

SELECT throws_ok(
    $$ SELECT * FROM conveyor.idempotency_begin('tap_idem_a', '{"order": 2}') $$,
    'CV004', 'idempotency key "tap_idem_a" was already used with a different request',
    'the same key with a different request raises CV004');
SELECT results_eq(
    $$ SELECT acquired, state FROM conveyor.idempotency_begin('tap_idem_a', '{ "order" : 1 }') $$,
    $$ VALUES (false, 'completed') $$,
    'requests are compared as jsonb values, not as text');
SELECT results_eq(
    $$ SELECT acquired FROM conveyor.idempotency_begin('tap_idem_norequest') $$, $$ VALUES (true) $$,
    'a key begun without a request ...');
SELECT results_eq(
    $$ SELECT acquired, state FROM conveyor.idempotency_begin('tap_idem_norequest', '{"x": 1}') $$,
    $$ VALUES (false, 'in_progress') $$,
    '... accepts any request later');

-- ---- finish: only once, only known keys -----------------------------------------------------------

SELECT throws_ok(
    $$ SELECT conveyor.idempotency_finish('tap_idem_a', '{}') $$,
    '55000', 'idempotency key "tap_idem_a" is already completed',
    'finishing a completed key raises 55000');
SELECT throws_ok(
    $$ SELECT conveyor.idempotency_finish('tap_idem_unknown', '{}') $$,
    '42704', 'idempotency key "tap_idem_unknown" does not exist',
    'finishing an unknown key raises 42704');
SELECT lives_ok(
    $$ SELECT conveyor.idempotency_finish('tap_idem_norequest', NULL) $$,
    'a key may be finished without a result');
SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_norequest') $$,
    $$ VALUES (false, 'completed', NULL::jsonb) $$,
    'and later callers see it completed with no result');

-- ---- release ---------------------------------------------------------------------------------------

SELECT conveyor.idempotency_begin('tap_idem_r') \gset
SELECT is(conveyor.idempotency_release('tap_idem_r'), true, 'release gives up a key in progress');
SELECT is((SELECT count(*)::int FROM conveyor.idempotency_keys WHERE key = 'tap_idem_r'), 0, 'the released key is gone');
SELECT results_eq(
    $$ SELECT acquired FROM conveyor.idempotency_begin('tap_idem_r') $$, $$ VALUES (true) $$,
    'a released key can be acquired again');
SELECT is(conveyor.idempotency_release('tap_idem_a'), false, 'release of a completed key returns false');
SELECT is(conveyor.idempotency_release('tap_idem_unknown'), false, 'release of an unknown key returns false');
SELECT is(
    (SELECT state FROM conveyor.idempotency_keys WHERE key = 'tap_idem_a'), 'completed',
    'and the completed key is unchanged');

-- ---- expiry -----------------------------------------------------------------------------------------

SELECT conveyor.idempotency_begin('tap_idem_x', '{"v": 1}', ttl_seconds => 60) \gset
SELECT conveyor.idempotency_finish('tap_idem_x', '{"old": true}');
UPDATE conveyor.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'tap_idem_x';
SELECT results_eq(
    $$ SELECT acquired, state, result FROM conveyor.idempotency_begin('tap_idem_x', '{"v": 2}', ttl_seconds => 120) $$,
    $$ VALUES (true, 'in_progress', NULL::jsonb) $$,
    'an expired key counts as absent: the next begin takes it over, whatever its request');
SELECT results_eq(
    $$ SELECT request, result, expires_at - created_at FROM conveyor.idempotency_keys WHERE key = 'tap_idem_x' $$,
    $$ VALUES ('{"v": 2}'::jsonb, NULL::jsonb, interval '2 minutes') $$,
    'the taken-over key holds the new request, no result and the new time to live');
UPDATE conveyor.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key IN ('tap_idem_x', 'tap_idem_r');
SELECT is(
    (SELECT (conveyor.maintain() ->> 'idempotency_keys_purged')::int), 2,
    'maintain purges the expired keys');
SELECT is(
    (SELECT array_agg(key ORDER BY key) FROM conveyor.idempotency_keys WHERE key LIKE 'tap_idem_%'),
    ARRAY['tap_idem_a', 'tap_idem_norequest'],
    'and only those');

-- ---- bad input ----------------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.idempotency_begin(NULL) $$, '22004', 'key must not be NULL',
    'a NULL key raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.idempotency_begin('') $$, '22023', 'key must not be empty',
    'an empty key raises 22023');
SELECT throws_ok($$ SELECT * FROM conveyor.idempotency_begin('tap_idem_t', ttl_seconds => 0) $$, '22023',
    'ttl_seconds must be between 1 and 31622400, not 0', 'ttl_seconds 0 raises 22023');
SELECT is((SELECT count(*)::int FROM conveyor.idempotency_keys WHERE key = 'tap_idem_t'), 0,
    'and nothing was written');

-- ---- privileges ------------------------------------------------------------------------------------

CREATE ROLE tap_idem_nobody NOLOGIN;
CREATE ROLE tap_idem_worker NOLOGIN IN ROLE conveyor_worker;
SET ROLE tap_idem_worker;
SELECT results_eq($$ SELECT acquired FROM conveyor.idempotency_begin('tap_idem_w') $$, $$ VALUES (true) $$,
    'a worker can begin a key');
SELECT lives_ok($$ SELECT conveyor.idempotency_finish('tap_idem_w', '{}') $$, 'and finish it');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.idempotency_keys $$, '42501', NULL,
    'a worker cannot read conveyor.idempotency_keys directly');
SET ROLE tap_idem_nobody;
SELECT throws_ok($$ SELECT * FROM conveyor.idempotency_begin('tap_idem_n') $$, '42501', NULL,
    'a role without conveyor roles cannot begin a key');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
