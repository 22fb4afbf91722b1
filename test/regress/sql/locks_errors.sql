-- Bad input to the lock functions gets a clear error with a precise SQLSTATE and changes nothing.
\set SHOW_CONTEXT never
SELECT conveyor.lock_acquire('held', 'w1', 60) IS NOT NULL AS acquired;
SELECT conveyor.entity_acquire('artist', 'a1') AS acquired;

-- Leases: keys and owners
SELECT conveyor.lock_acquire(NULL, 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('', 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire(repeat('k', 1025), 'w1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', '');
\echo :LAST_ERROR_SQLSTATE
-- ttl
SELECT conveyor.lock_acquire('k', 'w1', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', 'w1', -5);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', 'w1', 2592001);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', 'w1', NULL);
\echo :LAST_ERROR_SQLSTATE
-- metadata
SELECT conveyor.lock_acquire('k', 'w1', 60, metadata => '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('k', 'w1', 60, metadata => '"x"');
\echo :LAST_ERROR_SQLSTATE
-- tokens
SELECT conveyor.lock_heartbeat('held', 'w1', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_release('held', 'w1', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_check('held', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_check(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_heartbeat('held', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_force_release('');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.locks_cleanup(-1);
\echo :LAST_ERROR_SQLSTATE
-- Not the holder: a documented false, and nothing changes.
SELECT conveyor.lock_heartbeat('held', 'w2') AS heartbeat_by_other,
       conveyor.lock_release('held', 'w2') AS release_by_other,
       conveyor.lock_release('nope', 'w1') AS release_unknown,
       conveyor.lock_force_release('nope') AS force_unknown;
SELECT key, owner, ttl_seconds FROM conveyor.locks ORDER BY key;

-- Entities
SELECT conveyor.entity_acquire(NULL, 'a1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_acquire('artist', '');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_acquire('artist', 'a2', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_acquire('artist', 'a2', 60, max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_acquire('artist', 'a2', 60, max_attempts => 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_complete('artist', 'unknown');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_fail('artist', 'unknown', 'boom');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_fail('artist', 'a1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_fail('artist', 'a1', 'boom', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_complete('artist', 'a1', '["done"]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.entity_reset('artist', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.entity_reset('', 60);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_complete('artist', 'a1');
SELECT conveyor.entity_complete('artist', 'a1');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_fail('artist', 'a1', 'late failure');
\echo :LAST_ERROR_SQLSTATE
SELECT entity_type, entity_id, state, attempts, last_error FROM conveyor.entities ORDER BY 1, 2;
SELECT conveyor.entity_state('artist', 'never seen') IS NULL AS unknown_entity_has_no_state;

-- Advisory locks
SELECT conveyor.advisory_key(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.advisory_key('');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.try_advisory_lock('');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.advisory_lock('k', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.advisory_lock('k', 86400001);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.advisory_xact_lock('k', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.advisory_lock_held(NULL);
\echo :LAST_ERROR_SQLSTATE
-- Unlocking what this session does not hold: false, with PostgreSQL's warning.
SELECT conveyor.advisory_unlock('not held');
SELECT conveyor.advisory_unlock_all('not held');
SELECT count(*) AS advisory_locks_left FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
