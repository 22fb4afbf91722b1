-- Roles, SECURITY DEFINER with a pinned search_path, nothing to PUBLIC, RLS.
BEGIN;
SELECT plan(20);

SELECT is((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace IN ('music'::regnamespace, 'music_monitoring'::regnamespace)
           AND p.prosecdef AND (p.proconfig IS NULL OR p.proconfig <> '{"search_path=pg_catalog, pg_temp"}')), 0,
          'every SECURITY DEFINER function pins search_path');
CREATE ROLE music_nobody;
SELECT is((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace IN ('music'::regnamespace, 'music_monitoring'::regnamespace,
           'music_queue_mgmt'::regnamespace) AND has_function_privilege('music_nobody', p.oid, 'EXECUTE')), 0,
          'PUBLIC may execute no function of the schemas');
SELECT is((SELECT count(*)::int FROM pg_class c WHERE c.relnamespace IN ('music'::regnamespace, 'music_queue_mgmt'::regnamespace)
           AND c.relkind = 'r' AND NOT c.relrowsecurity), 0, 'RLS is enabled on every table');
SET ROLE music_nobody;
SELECT throws_ok($$SELECT * FROM music.search_producers('x')$$, '42501', NULL, 'PUBLIC cannot search');
RESET ROLE;

SELECT music.process_artist_atomic('{"name": "A"}', 'op-1', 'sp-1');
SET ROLE music_reader;
SELECT lives_ok($$SELECT * FROM music.search_producers('x')$$, 'reader: search_producers');
SELECT is((SELECT count(*)::int FROM music.artists), 1, 'reader: reads the catalog (RLS policy)');
SELECT throws_ok($$SELECT music.pg_enqueue('artist_discovery', '{"artistName": "x"}')$$, '42501', NULL, 'reader cannot enqueue');
SELECT throws_ok($$SELECT * FROM music.processing_status$$, '42501', NULL, 'reader cannot read processing states');
SELECT throws_ok($$INSERT INTO music.artists (name) VALUES ('x')$$, '42501', NULL, 'reader cannot write the catalog');
RESET ROLE;

SET ROLE music_worker;
SELECT lives_ok($$SELECT music.start_artist_discovery('B')$$, 'worker: start_artist_discovery');
SELECT lives_ok($$SELECT * FROM music.pg_dequeue('artist_discovery', 1, 60)$$, 'worker: pg_dequeue');
SELECT lives_ok($$INSERT INTO music.processing_status (entity_type, entity_id, state) VALUES ('artist', 'sp-1', 'PENDING')$$,
                'worker: writes processing_status');
SELECT lives_ok($$INSERT INTO music.processing_locks (entity_type, entity_id, worker_id) VALUES ('artist', 'sp-1', 'w1')$$,
                'worker: writes processing_locks');
SELECT lives_ok($$INSERT INTO music.queue_metrics (queue_name, operation, started_at) VALUES ('artist_discovery', 'batch', now())$$,
                'worker: records a processor run');
SELECT throws_ok($$INSERT INTO music.monitoring_events (event_type) VALUES ('queue_monitor')$$, '42501', NULL,
                 'worker cannot forge the queue monitor''s events (RLS)');
SELECT throws_ok($$SELECT music.force_release_entity_lock('artist', 'sp-1')$$, '42501', NULL, 'worker cannot force release');
SELECT throws_ok($$SELECT music.get_system_health()$$, '42501', NULL, 'worker cannot read system health');
SELECT throws_ok($$SELECT conveyor.entity_set('artist', 'sp-1', 'COMPLETED')$$, '42501', NULL, 'worker cannot call conveyor directly');
RESET ROLE;

SET ROLE music_admin;
SELECT lives_ok($$SELECT music.get_system_health()$$, 'admin: get_system_health');
SELECT is(music.force_release_entity_lock('artist', 'sp-1'), true, 'admin: force_release_entity_lock');
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
