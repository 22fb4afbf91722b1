-- Privileges of the lock functions: reader reads, worker works, only admin force-releases.
BEGIN;
SELECT plan(30);

CREATE ROLE tap_lk_nobody NOLOGIN;
CREATE ROLE tap_lk_reader NOLOGIN IN ROLE conveyor_reader;
CREATE ROLE tap_lk_worker NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_lk_admin NOLOGIN IN ROLE conveyor_admin;

-- ---- PUBLIC --------------------------------------------------------------------------------------

SELECT is(has_function_privilege('tap_lk_nobody', 'conveyor.lock_acquire(text, text, integer, text, jsonb)', 'EXECUTE'),
          false, 'a role without conveyor roles cannot execute lock_acquire');
SELECT is(has_function_privilege('tap_lk_nobody', 'conveyor.try_advisory_lock(text)', 'EXECUTE'), false,
          'nor try_advisory_lock');
SELECT is(has_table_privilege('tap_lk_nobody', 'conveyor.locks_view', 'SELECT'), false, 'nor read locks_view');
SET ROLE tap_lk_nobody;
SELECT throws_ok($$ SELECT conveyor.entity_acquire('tap_priv', 'e1') $$, '42501', NULL,
                 'a role without conveyor roles gets 42501 from entity_acquire');
RESET ROLE;

-- ---- conveyor_worker -----------------------------------------------------------------------------

SET ROLE tap_lk_worker;
SELECT conveyor.lock_acquire('tap_priv:1', 'pw', 60) AS tok \gset
SELECT ok(:tok > 0, 'a worker can lock_acquire');
SELECT is(conveyor.lock_heartbeat('tap_priv:1', 'pw', :tok), true, 'lock_heartbeat');
SELECT is(conveyor.lock_check('tap_priv:1', :tok), true, 'lock_check');
SELECT is((SELECT count(*)::int FROM conveyor.locks_cleanup(3600) WHERE key LIKE 'tap_priv:%'), 0, 'locks_cleanup');
SELECT is((SELECT owner FROM conveyor.locks_view WHERE key = 'tap_priv:1'), 'pw', 'read locks_view (reader rights)');
SELECT throws_ok($$ SELECT conveyor.lock_force_release('tap_priv:1') $$, '42501', NULL,
                 'a worker cannot lock_force_release (42501)');
SELECT is(conveyor.lock_release('tap_priv:1', 'pw', :tok), true, 'lock_release');
SELECT is(conveyor.entity_acquire('tap_priv', 'e1'), true, 'entity_acquire');
SELECT is(conveyor.entity_fail('tap_priv', 'e1', 'x'), 'FAILED', 'entity_fail');
SELECT is(conveyor.entity_acquire('tap_priv', 'e1'), true, 'entity_acquire again');
SELECT lives_ok($$ SELECT conveyor.entity_complete('tap_priv', 'e1') $$, 'entity_complete');
SELECT is((SELECT count(*)::int FROM conveyor.entity_reset('tap_priv', 3600)), 0, 'entity_reset');
SELECT is((SELECT count(*)::int FROM conveyor.entity_inconsistencies() WHERE entity_type = 'tap_priv'), 0,
          'entity_inconsistencies');
SELECT is(conveyor.try_advisory_lock('tap_priv:adv') AND conveyor.advisory_unlock('tap_priv:adv'), true,
          'the advisory lock functions');
SELECT throws_ok($$ SELECT count(*) FROM conveyor.locks $$, '42501', NULL, 'a worker cannot read conveyor.locks directly');
SELECT throws_ok($$ DELETE FROM conveyor.locks $$, '42501', NULL, 'nor write it');
SELECT throws_ok($$ UPDATE conveyor.entities SET state = 'PENDING' $$, '42501', NULL, 'nor write conveyor.entities');
RESET ROLE;

-- ---- conveyor_reader -----------------------------------------------------------------------------

SET ROLE tap_lk_reader;
SELECT is(conveyor.entity_state('tap_priv', 'e1')->>'state', 'COMPLETED', 'a reader can read entity_state');
SELECT is((SELECT count FROM conveyor.entity_stats() WHERE entity_type = 'tap_priv'), 1::bigint, 'and entity_stats');
SELECT is((SELECT count(*)::int FROM conveyor.locks_view WHERE key LIKE 'tap_priv:%'), 0, 'and locks_view');
SELECT throws_ok($$ SELECT conveyor.lock_acquire('tap_priv:2', 'r', 60) $$, '42501', NULL, 'a reader cannot lock_acquire');
SELECT throws_ok($$ SELECT conveyor.entity_acquire('tap_priv', 'e2') $$, '42501', NULL, 'nor entity_acquire');
SELECT throws_ok($$ SELECT conveyor.try_advisory_lock('tap_priv:adv') $$, '42501', NULL, 'nor take advisory locks');
RESET ROLE;

-- ---- conveyor_admin ------------------------------------------------------------------------------

SET ROLE tap_lk_admin;
SELECT conveyor.lock_acquire('tap_priv:3', 'someone', 60) \gset
SELECT is(conveyor.lock_force_release('tap_priv:3'), true, 'an admin can lock_force_release');
SELECT is((SELECT details->>'by' FROM conveyor.lock_events WHERE key = 'tap_priv:3'), session_user::text,
          'the event names the session user who forced it');
SELECT is((SELECT count(*)::int FROM conveyor.locks WHERE key LIKE 'tap_priv:%'), 0, 'an admin can read conveyor.locks');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
