-- Entity processing states: the state machine of entity_acquire, entity_complete, entity_fail,
-- entity_reset, and entity_state, entity_stats, entity_inconsistencies.
BEGIN;
SELECT plan(86);

SELECT has_function('conveyor', 'entity_acquire', ARRAY['text', 'text', 'integer', 'text', 'integer'], 'entity_acquire exists');
SELECT has_function('conveyor', 'entity_complete', ARRAY['text', 'text', 'jsonb'], 'entity_complete exists');
SELECT has_function('conveyor', 'entity_fail', ARRAY['text', 'text', 'text', 'boolean'], 'entity_fail exists');
SELECT has_function('conveyor', 'entity_reset', ARRAY['text', 'integer'], 'entity_reset exists');
SELECT has_function('conveyor', 'entity_state', ARRAY['text', 'text'], 'entity_state exists');
SELECT has_function('conveyor', 'entity_stats', ARRAY[]::text[], 'entity_stats exists');
SELECT has_function('conveyor', 'entity_inconsistencies', ARRAY[]::text[], 'entity_inconsistencies exists');

CREATE FUNCTION pg_temp.st(t text, i text) RETURNS jsonb LANGUAGE sql AS $$ SELECT conveyor.entity_state(t, i) $$;
-- The entity has been IN_PROGRESS for `secs` seconds longer than it has.
CREATE FUNCTION pg_temp.age(t text, i text, secs int) RETURNS void LANGUAGE sql AS $$
    UPDATE conveyor.entities SET last_processed_at = last_processed_at - make_interval(secs => secs),
                                 updated_at = updated_at - make_interval(secs => secs)
    WHERE entity_type = t AND entity_id = i $$;

-- ---- new -> IN_PROGRESS; a live IN_PROGRESS is not acquired again ----------------------------------------

SELECT is(conveyor.entity_acquire('tap_artist', 'a1', 60, 'corr-1'), true, 'a new entity is acquired');
SELECT is(pg_temp.st('tap_artist', 'a1')->>'state', 'IN_PROGRESS', 'it is IN_PROGRESS');
SELECT is((pg_temp.st('tap_artist', 'a1')->>'attempts')::int, 1, 'attempts counts the acquisition');
SELECT is(pg_temp.st('tap_artist', 'a1')->'metadata'->>'correlation_id', 'corr-1', 'the correlation id is in the metadata');
SELECT is((pg_temp.st('tap_artist', 'a1')->>'timeout_seconds')::int, 60, 'and the timeout is kept');
SELECT is(conveyor.entity_acquire('tap_artist', 'a1', 60), false, 'a live IN_PROGRESS entity is not acquired again');
SELECT is((pg_temp.st('tap_artist', 'a1')->>'attempts')::int, 1, 'and its attempts stay');

-- ---- IN_PROGRESS past its timeout is recovered -------------------------------------------------------

SELECT pg_temp.age('tap_artist', 'a1', 120) \gset
SELECT pg_temp.st('tap_artist', 'a1')->>'last_processed_at' AS prev_lock \gset
SELECT is(conveyor.entity_acquire('tap_artist', 'a1', 60, 'corr-2'), true, 'an IN_PROGRESS entity past its timeout is recovered');
SELECT is((pg_temp.st('tap_artist', 'a1')->>'attempts')::int, 2, 'the recovery is an attempt');
SELECT is((pg_temp.st('tap_artist', 'a1')->'metadata'->'timeout_recovery'->>'previous_lock_time')::timestamptz,
          :'prev_lock'::timestamptz, 'the recovery records the previous lock time');
SELECT is((pg_temp.st('tap_artist', 'a1')->'metadata'->'timeout_recovery'->>'timeout_seconds')::int, 60,
          'and the timeout it used');
SELECT is(pg_temp.st('tap_artist', 'a1')->'metadata'->'timeout_recovery'->>'correlation_id', 'corr-2',
          'and the new correlation id');
SELECT ok((pg_temp.st('tap_artist', 'a1')->>'last_processed_at')::timestamptz > :'prev_lock'::timestamptz,
          'the lock time is new');

-- ---- COMPLETED is not processed again -----------------------------------------------------------------

SELECT conveyor.entity_complete('tap_artist', 'a1', '{"albums": 12}') \gset
SELECT is(pg_temp.st('tap_artist', 'a1')->>'state', 'COMPLETED', 'entity_complete: COMPLETED');
SELECT is(pg_temp.st('tap_artist', 'a1')->'metadata'->'albums', '12'::jsonb, 'with the metadata merged in');
SELECT ok(pg_temp.st('tap_artist', 'a1')->'metadata' ? 'completed_at', 'and the completion time');
SELECT is(conveyor.entity_acquire('tap_artist', 'a1', 60), false, 'a COMPLETED entity is not acquired');
SELECT pg_temp.age('tap_artist', 'a1', 100000) \gset
SELECT is(conveyor.entity_acquire('tap_artist', 'a1', 60), false, 'however old it is');
SELECT is((pg_temp.st('tap_artist', 'a1')->>'attempts')::int, 2, 'its attempts stay');
SELECT throws_ok($$ SELECT conveyor.entity_complete('tap_artist', 'a1') $$, '55000', NULL,
                 'completing it again is refused (55000)');

-- ---- FAILED -> retry -> ... -> DEAD at max_attempts ---------------------------------------------------

SELECT is(conveyor.entity_acquire('tap_artist', 'a3', 60, max_attempts => 3), true, 'a3: attempt 1');
SELECT is(conveyor.entity_fail('tap_artist', 'a3', 'HTTP 500'), 'FAILED', 'a3: fails with attempts left: FAILED');
SELECT is(pg_temp.st('tap_artist', 'a3')->>'last_error', 'HTTP 500', 'the error is kept');
SELECT is(conveyor.entity_acquire('tap_artist', 'a3', 60, 'corr-r'), true, 'a FAILED entity is retried');
SELECT is((pg_temp.st('tap_artist', 'a3')->>'attempts')::int, 2, 'attempt 2');
SELECT is(pg_temp.st('tap_artist', 'a3')->'metadata'->'retry_info'->>'previous_error', 'HTTP 500',
          'the retry records the previous error');
SELECT is((pg_temp.st('tap_artist', 'a3')->>'max_attempts')::int, 3, 'max_attempts is remembered');
SELECT is(conveyor.entity_fail('tap_artist', 'a3', 'HTTP 502'), 'FAILED', 'a3: attempt 2 fails');
SELECT is(conveyor.entity_acquire('tap_artist', 'a3', 60), true, 'a3: attempt 3 (max_attempts remembered)');
SELECT is(conveyor.entity_fail('tap_artist', 'a3', 'HTTP 503'), 'DEAD', 'the last attempt failing makes it DEAD');
SELECT is(conveyor.entity_acquire('tap_artist', 'a3', 60, max_attempts => 3), false, 'a DEAD entity is not acquired');
SELECT is(pg_temp.st('tap_artist', 'a3')->>'state', 'DEAD', 'and stays DEAD');
SELECT is((pg_temp.st('tap_artist', 'a3')->>'attempts')::int, 3, 'after 3 attempts');

-- A FAILED entity whose attempts are used up by a lower max_attempts becomes DEAD on acquire.
SELECT is(conveyor.entity_acquire('tap_artist', 'a4', 60), true, 'a4: attempt 1, no limit');
SELECT is(conveyor.entity_fail('tap_artist', 'a4', 'timeout'), 'FAILED', 'a4: FAILED (no limit)');
SELECT is(conveyor.entity_acquire('tap_artist', 'a4', 60, max_attempts => 1), false,
          'acquire with max_attempts already reached: not acquired');
SELECT is(pg_temp.st('tap_artist', 'a4')->>'state', 'DEAD', 'it became DEAD');
SELECT is(pg_temp.st('tap_artist', 'a4')->'metadata'->'dead'->>'reason', 'max_attempts reached', 'with the reason');
SELECT is((pg_temp.st('tap_artist', 'a4')->>'attempts')::int, 1, 'the refused acquisition is not an attempt');

SELECT is(conveyor.entity_acquire('tap_artist', 'a5', 60), true, 'a5 acquired');
SELECT is(conveyor.entity_fail('tap_artist', 'a5', 'gone for good', dead => true), 'DEAD', 'entity_fail(dead => true): DEAD at once');

-- ---- entity_reset: stuck IN_PROGRESS -> PENDING -> acquired again -----------------------------------

SELECT conveyor.entity_acquire('tap_artist', 'a6', 7200) \gset
SELECT conveyor.entity_acquire('tap_artist', 'a7', 7200) \gset
SELECT conveyor.entity_acquire('tap_track', 't1', 7200) \gset
SELECT pg_temp.age('tap_artist', 'a6', 4000) \gset
SELECT pg_temp.age('tap_track', 't1', 4000) \gset
SELECT results_eq($$ SELECT * FROM conveyor.entity_reset('tap_artist', 3600) $$,
                  $$ VALUES ('tap_artist'::text, 'a6'::text, 'IN_PROGRESS'::text) $$,
                  'entity_reset(type, 3600) resets that type''s IN_PROGRESS entities stuck over an hour');
SELECT is(pg_temp.st('tap_artist', 'a6')->>'state', 'PENDING', 'the reset entity is PENDING');
SELECT is(pg_temp.st('tap_artist', 'a6')->'metadata'->'reset'->>'previous_state', 'IN_PROGRESS', 'the reset is recorded');
SELECT is(pg_temp.st('tap_artist', 'a7')->>'state', 'IN_PROGRESS', 'a recent one is untouched');
SELECT is(pg_temp.st('tap_track', 't1')->>'state', 'IN_PROGRESS', 'another type is untouched');
SELECT is(conveyor.entity_acquire('tap_artist', 'a6', 7200), true, 'a PENDING entity is acquired');
SELECT is((pg_temp.st('tap_artist', 'a6')->>'attempts')::int, 2, 'as its second attempt');
SELECT is((SELECT count(*)::int FROM conveyor.entity_reset(NULL, 3600) WHERE entity_type LIKE 'tap_%'), 1,
          'entity_reset(NULL) resets stuck entities of every type');

-- ---- entity_state, entity_stats ---------------------------------------------------------------------

SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(pg_temp.st('tap_artist', 'a1')) k),
          ARRAY['attempts', 'created_at', 'entity_id', 'entity_type', 'last_error', 'last_processed_at', 'max_attempts',
                'metadata', 'state', 'timeout_seconds', 'updated_at'], 'entity_state has its fields');
SELECT is(pg_temp.st('tap_artist', 'nobody'), NULL, 'entity_state of an unknown entity is NULL');
SELECT results_eq(
    $$ SELECT entity_type, state, count FROM conveyor.entity_stats() WHERE entity_type LIKE 'tap_%' $$,
    $$ VALUES ('tap_artist'::text, 'COMPLETED'::text, 1::bigint), ('tap_artist', 'DEAD', 3),
              ('tap_artist', 'IN_PROGRESS', 2), ('tap_track', 'PENDING', 1) $$,
    'entity_stats counts entities per type and state');
SELECT ok((SELECT oldest_seconds >= 100000 FROM conveyor.entity_stats() WHERE entity_type = 'tap_artist' AND state = 'COMPLETED'),
          'oldest_seconds: how long the oldest has been in that state');

-- ---- entity_inconsistencies: states that contradict the leases paired with them ('<type>:<id>') ----------

DELETE FROM conveyor.entities WHERE entity_type LIKE 'tap_%';
SELECT conveyor.entity_acquire('tap_x', 'ok', 600) \gset
SELECT conveyor.lock_acquire('tap_x:ok', 'w1', 600) \gset
SELECT conveyor.entity_acquire('tap_x', 'stale', 600) \gset
SELECT conveyor.lock_acquire('tap_x:stale', 'w2', 10) \gset
UPDATE conveyor.locks SET heartbeat_at = heartbeat_at - interval '60 seconds' WHERE key = 'tap_x:stale';
SELECT conveyor.entity_acquire('tap_x', 'old', 60) \gset
SELECT pg_temp.age('tap_x', 'old', 120) \gset
SELECT conveyor.entity_acquire('tap_x', 'done', 600) \gset
SELECT conveyor.entity_complete('tap_x', 'done') \gset
SELECT conveyor.lock_acquire('tap_x:done', 'w3', 600) \gset
SELECT results_eq(
    $$ SELECT entity_id, state, lock_key, issue FROM conveyor.entity_inconsistencies() WHERE entity_type = 'tap_x' $$,
    $$ VALUES ('done'::text, 'COMPLETED'::text, 'tap_x:done'::text, 'live_lease_not_in_progress'::text),
              ('old', 'IN_PROGRESS', 'tap_x:old', 'in_progress_timed_out'),
              ('stale', 'IN_PROGRESS', 'tap_x:stale', 'in_progress_without_live_lease') $$,
    'entity_inconsistencies: a live lease on a finished entity, a timed-out IN_PROGRESS, an IN_PROGRESS whose lease is stale');

-- ---- thresholds of 0: any earlier acquisition has timed out ---------------------------------------------
SELECT is(conveyor.entity_acquire('tap_zero', 'z1', 0), true, 'timeout 0: acquired');
SELECT is(conveyor.entity_acquire('tap_zero', 'z1', 0), true, 'timeout 0: acquired again at once (a recovery)');
SELECT is((pg_temp.st('tap_zero', 'z1')->>'attempts')::int, 2, 'timeout 0: the recovery counts an attempt');
SELECT results_eq($$ SELECT entity_id, previous_state FROM conveyor.entity_reset('tap_zero', 0) $$,
                  $$ VALUES ('z1'::text, 'IN_PROGRESS'::text) $$, 'entity_reset with 0 seconds resets what is IN_PROGRESS now');
SELECT conveyor.lock_acquire('tap_zero:z1', 'w0', 600) \gset
SELECT results_eq($$ SELECT key, owner FROM conveyor.locks_cleanup(0) WHERE key LIKE 'tap_zero:%' $$,
                  $$ VALUES ('tap_zero:z1'::text, 'w0'::text) $$, 'locks_cleanup(0) deletes a lease heartbeated before the call');

-- ---- entity_set: any state, directly ---------------------------------------------------------------------
SELECT has_function('conveyor', 'entity_set', ARRAY['text', 'text', 'text', 'text', 'jsonb'], 'entity_set exists');
SELECT is(conveyor.entity_set('tap_set', 's1', 'PENDING'), NULL, 'entity_set creates a missing entity and returns NULL');
SELECT is(pg_temp.st('tap_set', 's1')->>'state', 'PENDING', '... in the state given');
SELECT is((pg_temp.st('tap_set', 's1')->>'attempts')::int, 0, '... with no attempt');
SELECT is(conveyor.entity_set('tap_set', 's1', 'IN_PROGRESS'), 'PENDING', 'entity_set returns the state it replaced');
SELECT is((pg_temp.st('tap_set', 's1')->>'attempts')::int, 1, 'moving into IN_PROGRESS counts an attempt');
SELECT is(conveyor.entity_set('tap_set', 's1', 'IN_PROGRESS'), 'IN_PROGRESS', 'IN_PROGRESS again');
SELECT is((pg_temp.st('tap_set', 's1')->>'attempts')::int, 1, '... only restarts the clock');
SELECT is(conveyor.entity_set('tap_set', 's1', 'FAILED', 'HTTP 500', '{"step": "albums"}'), 'IN_PROGRESS', 'to FAILED');
SELECT results_eq($$ SELECT s->>'last_error', s->'metadata'->>'step', s->'metadata'->'set'->>'previous_state'
                     FROM pg_temp.st('tap_set', 's1') s $$,
                  $$ VALUES ('HTTP 500'::text, 'albums'::text, 'IN_PROGRESS'::text) $$,
                  'the error, the metadata merged and metadata.set recorded');
SELECT is(conveyor.entity_acquire('tap_set', 's1', 60), true, 'entity_acquire retries an entity entity_set made FAILED');
SELECT is(conveyor.entity_set('tap_set', 's1', 'COMPLETED'), 'IN_PROGRESS', 'to COMPLETED');
SELECT is(pg_temp.st('tap_set', 's1')->>'last_error', NULL, 'COMPLETED clears last_error');
SELECT is(conveyor.entity_set('tap_set', 's1', 'PENDING'), 'COMPLETED', 'a COMPLETED entity sent back to PENDING');
SELECT is(conveyor.entity_acquire('tap_set', 's1', 60), true, '... is acquired again');
SELECT throws_ok($$ SELECT conveyor.entity_set('tap_set', 's1', 'DONE') $$, '22023', 'invalid entity state "DONE"', 'an unknown state');
SELECT throws_ok($$ SELECT conveyor.entity_set('tap_set', 's1', NULL) $$, '22004', NULL, 'a NULL state');
SELECT throws_ok($$ SELECT conveyor.entity_set('tap_set', '', 'PENDING') $$, '22023', NULL, 'an empty id');
SELECT throws_ok($$ SELECT conveyor.entity_set('tap_set', 's1', 'PENDING', NULL, '[1]') $$, '22023', NULL, 'metadata not an object');
SET LOCAL ROLE conveyor_worker;
SELECT throws_ok($$ SELECT conveyor.entity_set('tap_set', 's1', 'PENDING') $$, '42501', NULL, 'entity_set is for conveyor_admin');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
