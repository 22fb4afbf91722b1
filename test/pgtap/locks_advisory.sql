-- Text-keyed advisory locks, seen from this session and from a second one (through dblink).
BEGIN;
SELECT plan(34);

SELECT has_function('conveyor', 'advisory_key', ARRAY['text'], 'advisory_key exists');
SELECT has_function('conveyor', 'try_advisory_lock', ARRAY['text'], 'try_advisory_lock exists');
SELECT has_function('conveyor', 'advisory_lock', ARRAY['text', 'integer'], 'advisory_lock exists');
SELECT has_function('conveyor', 'advisory_unlock', ARRAY['text'], 'advisory_unlock exists');
SELECT has_function('conveyor', 'advisory_unlock_all', ARRAY['text'], 'advisory_unlock_all exists');
SELECT has_function('conveyor', 'advisory_lock_held', ARRAY['text'], 'advisory_lock_held exists');
SELECT has_function('conveyor', 'try_advisory_xact_lock', ARRAY['text'], 'try_advisory_xact_lock exists');
SELECT has_function('conveyor', 'advisory_xact_lock', ARRAY['text', 'integer'], 'advisory_xact_lock exists');

SELECT is(conveyor.advisory_key('hello'), -7685981735718036227, 'advisory_key is XXH3-64 of the UTF-8 bytes');
SELECT is(conveyor.advisory_key('hello'), conveyor.advisory_key('hello'), 'and deterministic');
SELECT isnt(conveyor.advisory_key('artist:1'), conveyor.advisory_key('artist:2'), 'different keys, different values');

-- A second session of the same database.
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT dblink_connect('other', format('dbname=%s host=%s port=%s user=%s', current_database(),
    split_part(current_setting('unix_socket_directories'), ',', 1), current_setting('port'), current_user)) \gset
CREATE FUNCTION pg_temp.other(q text) RETURNS boolean LANGUAGE sql AS
    $$ SELECT r FROM dblink('other', q) AS t(r boolean) $$;

-- ---- session locks -----------------------------------------------------------------------------------

SELECT is(conveyor.try_advisory_lock('tap:adv'), true, 'try_advisory_lock takes a free lock');
SELECT is(conveyor.advisory_lock_held('tap:adv'), true, 'advisory_lock_held sees it');
SELECT is(pg_temp.other($$ SELECT conveyor.try_advisory_lock('tap:adv') $$), false, 'another session cannot take it');
SELECT is(pg_temp.other($$ SELECT pg_try_advisory_lock(conveyor.advisory_key('tap:adv')) $$), false,
          'nor through pg_try_advisory_lock(advisory_key(...)): it is the same lock');
SELECT is(pg_temp.other($$ SELECT conveyor.advisory_lock_held('tap:adv') $$), true, 'held is true from any session');
SELECT is(conveyor.advisory_unlock('tap:adv'), true, 'advisory_unlock releases it');
SELECT is(conveyor.advisory_lock_held('tap:adv'), false, 'then nobody holds it');

-- The other session holds it; this one waits a bounded time.
SELECT is(pg_temp.other($$ SELECT conveyor.try_advisory_lock('tap:adv') $$), true, 'the other session takes it');
SET LOCAL lock_timeout = '5s';
SELECT is(conveyor.advisory_lock('tap:adv', 200), false, 'advisory_lock(key, 200) returns false after its wait');
SELECT is(current_setting('lock_timeout'), '5s', 'the caller''s lock_timeout is as it was');
SELECT is((SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted), 0,
          'this session holds nothing after the timeout');
SELECT is(conveyor.advisory_xact_lock('tap:adv', 100), false, 'advisory_xact_lock times out the same way');
SELECT is(conveyor.try_advisory_xact_lock('tap:adv'), false, 'try_advisory_xact_lock does not wait');
SELECT is(conveyor.try_advisory_lock('tap:adv'), false, 'nor does try_advisory_lock');
SELECT is(pg_temp.other($$ SELECT conveyor.advisory_unlock('tap:adv') $$), true, 'the other session lets go');
SELECT is(conveyor.advisory_lock('tap:adv', 1000), true, 'now advisory_lock gets it at once');
SELECT is(pg_temp.other($$ SELECT conveyor.try_advisory_lock('tap:adv') $$), false, 'and the other session cannot take it');

-- Session locks stack; advisory_unlock_all releases every hold.
SELECT conveyor.try_advisory_lock('tap:adv') \gset
SELECT conveyor.advisory_lock('tap:adv', 10) \gset
SELECT is(conveyor.advisory_unlock_all('tap:adv'), 3, 'advisory_unlock_all releases all 3 holds and counts them');
SELECT is(conveyor.advisory_lock_held('tap:adv'), false, 'after which nobody holds it');
SELECT is(conveyor.advisory_unlock_all('tap:adv'), 0, 'with nothing held it returns 0');

-- ---- transaction locks -------------------------------------------------------------------------------

SELECT is(conveyor.try_advisory_xact_lock('tap:xact'), true, 'try_advisory_xact_lock takes a free lock');
SELECT is(pg_temp.other($$ SELECT conveyor.try_advisory_lock('tap:xact') $$), false,
          'which another session cannot take before this transaction ends');
SELECT is(conveyor.advisory_xact_lock('tap:xact2', 100), true, 'advisory_xact_lock takes a free lock');

SELECT dblink_disconnect('other') \gset
SELECT * FROM finish();
ROLLBACK;
