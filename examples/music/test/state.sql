-- Processing states and locks: seed 001's state machine through acquire_processing_lock, the direct
-- writes of processing_status and processing_locks, the lock functions, 0-minute thresholds, advisory locks.
BEGIN;
SELECT plan(46);

CREATE FUNCTION pg_temp.st(i text) RETURNS text LANGUAGE sql AS
    $$ SELECT state || CASE WHEN dead_lettered THEN '/dead' ELSE '' END FROM music.processing_status WHERE entity_type = 'artist' AND entity_id = i $$;
CREATE FUNCTION pg_temp.age(i text, mins int) RETURNS void LANGUAGE sql AS
    $$ UPDATE conveyor.entities SET last_processed_at = last_processed_at - make_interval(mins => mins) WHERE entity_type = 'artist' AND entity_id = i $$;

-- the state machine
SELECT is(music.acquire_processing_lock('artist', 'a1', 30, 'run-1'), true, 'a new entity: acquired, IN_PROGRESS');
SELECT is(pg_temp.st('a1'), 'IN_PROGRESS', 'processing_status shows it IN_PROGRESS');
SELECT is((SELECT metadata ->> 'correlation_id' FROM music.processing_status WHERE entity_id = 'a1'), 'run-1', 'with its correlation id');
SELECT is(music.acquire_processing_lock('artist', 'a1', 30), false, 'IN_PROGRESS within its timeout: not acquired');
SELECT pg_temp.age('a1', 31);
SELECT is(music.acquire_processing_lock('artist', 'a1', 30, 'run-2'), true, 'IN_PROGRESS past its timeout: recovered');
SELECT ok((SELECT metadata ? 'timeout_recovery' FROM music.processing_status WHERE entity_id = 'a1'), 'the recovery is recorded');
SELECT is(music.acquire_processing_lock('artist', 'a1', 0), true, 'timeout 0: any earlier acquisition has timed out');
SELECT is((SELECT attempts FROM music.processing_status WHERE entity_id = 'a1'), 3, 'three attempts');
UPDATE music.processing_status SET state = 'COMPLETED' WHERE entity_type = 'artist' AND entity_id = 'a1';
SELECT is(pg_temp.st('a1'), 'COMPLETED', 'a worker''s UPDATE to COMPLETED');
SELECT is(music.acquire_processing_lock('artist', 'a1', 0), false, 'COMPLETED: not acquired, even with timeout 0');
SELECT is(music.acquire_processing_lock('artist', 'a2'), true, 'a2 acquired');
UPDATE music.processing_status SET state = 'FAILED', last_error = 'HTTP 500' WHERE entity_type = 'artist' AND entity_id = 'a2';
SELECT is((SELECT state || ':' || last_error FROM music.processing_status WHERE entity_id = 'a2'), 'FAILED:HTTP 500', 'an UPDATE to FAILED with its error');
SELECT is(music.acquire_processing_lock('artist', 'a2'), true, 'FAILED: retried');
SELECT ok((SELECT metadata ? 'retry_info' FROM music.processing_status WHERE entity_id = 'a2'), 'the retry is recorded');
UPDATE music.processing_status SET state = 'FAILED', dead_lettered = true WHERE entity_type = 'artist' AND entity_id = 'a2';
SELECT is(pg_temp.st('a2'), 'FAILED/dead', 'dead_lettered: a dead FAILED entity');
SELECT is(music.acquire_processing_lock('artist', 'a2'), false, 'a dead-lettered entity is not acquired');
UPDATE music.processing_status SET state = 'PENDING', dead_lettered = false WHERE entity_type = 'artist' AND entity_id = 'a2';
SELECT is(pg_temp.st('a2'), 'PENDING', 'an UPDATE back to PENDING');
SELECT is(music.acquire_processing_lock('artist', 'a2'), true, 'PENDING: acquired');
INSERT INTO music.processing_status (entity_type, entity_id, state, metadata) VALUES ('artist', 'a3', 'PENDING', '{"source": "import"}');
SELECT is(pg_temp.st('a3'), 'PENDING', 'an INSERT of a PENDING entity');
SELECT throws_ok($$INSERT INTO music.processing_status (entity_type, entity_id, state) VALUES ('artist', 'a3', 'PENDING')$$, '23505', NULL,
                 'an INSERT of an existing entity: unique violation, as the table''s');
SELECT throws_ok($$UPDATE music.processing_status SET state = 'DONE' WHERE entity_id = 'a3'$$, '22023', NULL, 'an unknown state');
SELECT throws_ok($$UPDATE music.processing_status SET entity_id = 'a4' WHERE entity_id = 'a3'$$, '0A000', NULL, 'an entity id cannot change');
SELECT throws_ok($$SELECT music.acquire_processing_lock('artist', 'a1', -1)$$, '22023', NULL, 'a negative timeout');
SELECT throws_ok($$SELECT music.acquire_processing_lock('Artist!', 'a1')$$, '22023', NULL, 'a bad entity type');
SELECT throws_ok($$SELECT music.acquire_processing_lock('artist', NULL)$$, '22004', NULL, 'a NULL entity id');

-- processing_locks: INSERT, heartbeat by UPDATE, DELETE
INSERT INTO music.processing_locks (entity_type, entity_id, worker_id, correlation_id, ttl_seconds) VALUES ('artist', 'a2', 'w1', 'c1', 600);
SELECT results_eq($$SELECT worker_id, correlation_id, ttl_seconds FROM music.processing_locks WHERE entity_id = 'a2'$$,
                  $$VALUES ('w1'::text, 'c1'::text, 600)$$, 'an INSERT takes a lease');
SELECT throws_ok($$INSERT INTO music.processing_locks (entity_type, entity_id, worker_id) VALUES ('artist', 'a2', 'w2')$$, '23505', NULL,
                 'another worker''s INSERT: unique violation');
SELECT is(music.update_lock_heartbeat('artist', 'a2', 'w1', 'c2'), true, 'update_lock_heartbeat by the holder');
SELECT is((SELECT correlation_id FROM music.processing_locks WHERE entity_id = 'a2'), 'c2', '... with the new correlation id');
SELECT is(music.update_lock_heartbeat('artist', 'a2', 'w2'), false, 'update_lock_heartbeat by another worker: false');
SELECT is(music.claim_stale_lock('artist', 'a2', 'w2'), false, 'claim_stale_lock while the lease is live: false');
UPDATE conveyor.locks SET heartbeat_at = heartbeat_at - interval '11 minutes' WHERE key = 'artist:a2';
SELECT is((SELECT is_stale FROM music.processing_locks WHERE entity_id = 'a2'), true, 'the lease went stale');
SELECT is(music.claim_stale_lock('artist', 'a2', 'w2', 'c3'), true, 'claim_stale_lock takes the stale lease');
SELECT results_eq($$SELECT worker_id, correlation_id FROM music.processing_locks WHERE entity_id = 'a2'$$,
                  $$VALUES ('w2'::text, 'c3'::text)$$, '... for the new worker');
SELECT is((SELECT count(*)::int FROM conveyor.lock_events WHERE key = 'artist:a2' AND event = 'takeover'), 1, 'a takeover lock event');
DELETE FROM music.processing_locks WHERE entity_type = 'artist' AND entity_id = 'a2';
SELECT is((SELECT count(*)::int FROM music.processing_locks WHERE entity_id = 'a2'), 0, 'a DELETE releases the lease');

-- release_processing_lock and force_release_entity_lock: unfinished work goes back to PENDING
SELECT is(music.release_processing_lock('artist', 'a2'), true, 'release_processing_lock: a2 was IN_PROGRESS');
SELECT is(pg_temp.st('a2'), 'PENDING', '... and is PENDING again');
SELECT is(music.release_processing_lock('artist', 'a1'), false, 'a COMPLETED entity without a lease: nothing to release');
SELECT music.acquire_processing_lock('artist', 'a3');
INSERT INTO music.processing_locks (entity_type, entity_id, worker_id) VALUES ('artist', 'a3', 'w9');
SELECT is(music.force_release_entity_lock('artist', 'a3'), true, 'force_release_entity_lock');
SELECT results_eq($$SELECT pg_temp.st('a3'), (SELECT count(*)::int FROM music.processing_locks WHERE entity_id = 'a3')$$,
                  $$VALUES ('PENDING'::text, 0)$$, '... lease gone, entity PENDING');

-- advisory locks with text keys
SELECT is(music.pg_try_advisory_lock('artist-import'), true, 'pg_try_advisory_lock');
SELECT is(music.pg_advisory_lock_exists('artist-import'), true, 'pg_advisory_lock_exists');
SELECT is(music.pg_advisory_lock_timeout('artist-import', 0), true, 'pg_advisory_lock_timeout 0: no wait (a second hold of this session)');
SELECT is(music.pg_force_advisory_unlock_all('artist-import'), 2, 'pg_force_advisory_unlock_all releases both holds');
SELECT is(music.pg_advisory_lock_exists('artist-import'), false, 'gone');
SELECT * FROM finish();
ROLLBACK;
