-- Discovery starters, atomic processors with operation ids, track batches, search; monitoring and
-- maintenance; schedule_pipeline_jobs where pg_cron is not; roles and RLS.
BEGIN;
SELECT plan(56);

-- starters: dedup keys stand in for the Redis keys
SELECT is(music.start_artist_discovery('Daft Punk'), music.start_artist_discovery(' daft punk '),
          'start_artist_discovery: the same artist while queued is one message');
SELECT throws_ok($$SELECT music.start_artist_discovery('  ')$$, '22023', NULL, 'start_artist_discovery: a blank name');
SELECT throws_ok($$SELECT music.start_artist_discovery(NULL)$$, '22004', NULL, 'start_artist_discovery: NULL');
SELECT is((SELECT message FROM music.start_bulk_artist_discovery('House', 60, 5)),
          '{"genre": "house", "limit": 5, "minPopularity": 60}', 'start_bulk_artist_discovery: one genre search');
SELECT throws_ok($$SELECT * FROM music.start_bulk_artist_discovery('house', 101, 5)$$, '22023', NULL, 'min_popularity over 100');
SELECT throws_ok($$SELECT * FROM music.start_bulk_artist_discovery('house', 0, 51)$$, '22023', NULL, 'limit_count over 50');

-- process_artist_atomic: once per operation id
SELECT music.process_artist_atomic('{"name": "Daft Punk", "followers": 1000, "popularity": 80}', 'op-a1', 'sp-a1') ->> 'artist_id' AS a1 \gset
SELECT is(music.process_artist_atomic('{"name": "Daft Punk", "followers": 1000, "popularity": 80}', 'op-a1', 'sp-a1') ->> 'replayed', 'true',
          'the same operation id again: the first result, replayed');
SELECT throws_ok($$SELECT music.process_artist_atomic('{"name": "Daft Punk", "followers": 9}', 'op-a1', 'sp-a1')$$, 'CV004', NULL,
                 'the same operation id with other data: CV004');
SELECT is(music.process_artist_atomic('{"name": "Daft Punk", "followers": 2000}', 'op-a2', 'sp-a1') ->> 'action', 'updated',
          'a new operation with new figures updates the artist');
SELECT is(music.process_artist_atomic('{"name": "Daft Punk", "followers": 2000}', 'op-a3', 'sp-a1') ->> 'action', 'unchanged',
          'the same figures under a new operation: unchanged, nothing written');
SELECT results_eq($$SELECT followers, popularity FROM music.artists WHERE spotify_id = 'sp-a1'$$, $$VALUES (2000, 80)$$,
                  'fields not given keep their values');
SELECT throws_ok($$SELECT music.process_artist_atomic('{"followers": 1}', 'op-x', 'sp-x')$$, '22023', NULL, 'an artist without a name');
SELECT throws_ok($$SELECT music.process_artist_atomic('{"name": "X"}', '', 'sp-x')$$, '22023', NULL, 'an empty operation id');
SELECT throws_ok($$SELECT music.process_artist_atomic('{"name": "X"}', 'op-x', NULL)$$, '22023', NULL, 'a NULL spotify id');

-- albums and tracks
SELECT music.process_album_atomic('{"name": "Discovery", "artist_spotify_id": "sp-a1", "release_date": "2001-03"}', 'op-al1', 'sp-al1') ->> 'album_id' AS al1 \gset
SELECT is((SELECT release_date FROM music.albums WHERE spotify_id = 'sp-al1'), '2001-03-01'::date, 'a month release date: its first day');
SELECT throws_ok($$SELECT music.process_album_atomic('{"name": "X", "artist_spotify_id": "nope"}', 'op-al2', 'sp-al2')$$, '42704', NULL,
                 'an album of an unknown artist');
SELECT throws_ok($$SELECT music.process_album_atomic('{"name": "X", "artist_spotify_id": "sp-a1", "release_date": "March"}', 'op-al3', 'sp-al3')$$,
                 '22023', NULL, 'a bad release date');
SELECT is(music.process_track_batch(ARRAY['{"spotify_id": "t1", "name": "One More Time", "popularity": 70}',
                                          '{"spotify_id": "t2", "name": "One more time!", "popularity": 60}',
                                          '{"spotify_id": "t3", "name": "Aerodynamic", "popularity": 65}']::jsonb[],
                                    :'al1', :'a1') ->> 'processed', '3', 'process_track_batch: three tracks');
SELECT results_eq($$SELECT n.normalized_name, t.spotify_id FROM music.normalized_tracks n JOIN music.tracks t ON t.id = n.representative_track_id
                    ORDER BY 1$$, $$VALUES ('aerodynamic'::text, 't3'::text), ('onemoretime', 't1')$$,
                  'normalized names: "One More Time" and "One more time!" are one, the first its representative');
SELECT is(music.process_track_batch(ARRAY['{"spotify_id": "t1", "name": "One More Time", "popularity": 71}']::jsonb[], :'al1', :'a1')
              -> 'results' -> 0 ->> 'action', 'updated', 'a track again: updated');
SELECT is(music.process_track_batch(ARRAY['{"name": "No id"}']::jsonb[], :'al1', :'a1') ->> 'detail', '22023',
          'a track without spotify_id: the error document of the specification');
SELECT is(music.process_track_batch(ARRAY['{"spotify_id": "t9", "name": "x"}']::jsonb[], :'al1', gen_random_uuid()) ->> 'detail', '42704',
          'an album of another artist: the error document');
SELECT is((SELECT count(*)::int FROM music.tracks), 3, 'failed batches wrote nothing');
SELECT is(music.process_track_atomic('{"name": "Digital Love", "album_spotify_id": "sp-al1", "popularity": 60}', 'op-t4', 't4') ->> 'action',
          'inserted', 'process_track_atomic');
SELECT is(music.process_track_atomic('{"name": "Digital Love", "album_spotify_id": "sp-al1", "popularity": 60}', 'op-t4', 't4') ->> 'replayed',
          'true', 'process_track_atomic replayed');

-- producers and search
SELECT music.process_producer_atomic(jsonb_build_object('name', 'Thomas Bangalter', 'track_id', id, 'confidence', 0.9, 'source', 'credits'),
                                     'op-p-' || spotify_id, 'thomas bangalter') FROM music.tracks WHERE spotify_id IN ('t1', 't3', 't4');
SELECT music.process_producer_atomic(jsonb_build_object('name', 'Todd Edwards', 'track_id', id), 'op-p2', 'todd edwards')
FROM music.tracks WHERE spotify_id = 't4';
SELECT music.process_artist_atomic('{"name": "Discovery Artist"}', 'op-a9', 'sp-a9') ->> 'artist_id' AS a9 \gset
SELECT music.process_album_atomic(jsonb_build_object('name', 'Other', 'artist_id', :'a9'), 'op-al9', 'sp-al9') ->> 'album_id' AS al9 \gset
SELECT music.process_track_batch(ARRAY['{"spotify_id": "t9", "name": "Nine"}']::jsonb[], :'al9', :'a9');
SELECT music.process_producer_atomic(jsonb_build_object('name', 'Thomas Bangalter', 'track_id', id), 'op-p9', 'thomas bangalter')
FROM music.tracks WHERE spotify_id = 't9';
SELECT results_eq($$SELECT name, track_count, artist_count FROM music.search_producers('bangal')$$,
                  $$VALUES ('Thomas Bangalter'::text, 4::bigint, 2::bigint)$$, 'search_producers: four tracks of two artists');
SELECT results_eq($$SELECT name, track_count FROM music.search_producers('t')$$,
                  $$VALUES ('Thomas Bangalter'::text, 4::bigint), ('Todd Edwards', 1)$$, 'most tracks first');
SELECT is((SELECT count(*)::int FROM music.search_producers('%')), 0, 'a % in the term is a character, not a wildcard');
SELECT throws_ok($$SELECT * FROM music.search_producers('')$$, '22023', NULL, 'an empty search term');
SELECT results_eq($$SELECT c.artist_name, c.track_count FROM music.producers p, music.get_producer_collaborations(p.id) c
                    WHERE p.normalized_name = 'thomas bangalter'$$,
                  $$VALUES ('Daft Punk'::text, 3::bigint), ('Discovery Artist', 1)$$, 'get_producer_collaborations');
SELECT throws_ok($$SELECT * FROM music.get_producer_collaborations(gen_random_uuid())$$, '42704', NULL, 'an unknown producer');
SELECT music.process_producer_atomic('{"enrichment_failed": true}', 'op-e1', 'todd edwards');
SELECT results_eq($$SELECT name, enrichment_failed FROM music.producers WHERE normalized_name = 'todd edwards'$$,
                  $$VALUES ('Todd Edwards'::text, true)$$, 'an enrichment update writes only its fields');
SELECT results_eq($$SELECT name, track_count::bigint, artist_count::bigint FROM music.producer_popularity ORDER BY name$$,
                  $$VALUES ('Thomas Bangalter'::text, 4::bigint, 2::bigint), ('Todd Edwards', 1, 1)$$, 'producer_popularity');

-- monitoring
INSERT INTO music.worker_issues (worker_name, issue_type, message) VALUES ('w1', 'spotify', 'HTTP 429');
INSERT INTO music_monitoring.worker_issues (worker_name, issue_type, severity, message) VALUES ('w1', 'spotify', 'warning', 'HTTP 429');
SELECT results_eq($$SELECT worker_name, issue_type, open_issues, occurrences FROM music.get_worker_issue_stats()$$,
                  $$VALUES ('w1'::text, 'spotify'::text, 1::bigint, 2::bigint)$$, 'worker issues: the repeat is one issue, two occurrences');
SELECT is((music.get_system_health() -> 'worker_health' ->> 'status'), 'warning', 'get_system_health: an open issue is a warning');
UPDATE music_monitoring.worker_issues SET resolved = true, resolution_details = 'backed off' WHERE worker_name = 'w1';
SELECT is((music.get_system_health() -> 'worker_health' ->> 'status'), 'healthy', 'resolved: healthy');
INSERT INTO music_monitoring.pipeline_metrics (metric_name, metric_value, tags) VALUES
    ('api_call', 100, '{"api": "spotify", "success": "true"}'), ('api_call', 300, '{"api": "spotify", "success": "false"}');
SELECT results_eq($$SELECT api_name, total_calls, success_count, error_count, avg_success_time_ms FROM music_monitoring.api_metrics$$,
                  $$VALUES ('spotify'::text, 2::bigint, 1::bigint, 1::bigint, 100::double precision)$$, 'api_metrics');
SELECT is((music_monitoring.aggregate_hourly_metrics() ->> 'period'), 'hour', 'aggregate_hourly_metrics');
SELECT is((music_monitoring.aggregate_daily_metrics() ->> 'period'), 'day', 'aggregate_daily_metrics');
SELECT is((SELECT count_value FROM music_monitoring.aggregated_metrics WHERE metric_name = 'api_call' AND period = 'hour'
           AND dimensions = '{"api": "spotify", "success": "true"}'), 1, 'aggregated_metrics');
SELECT results_eq($$SELECT queue_name, total_messages FROM music.monitor_queues() WHERE queue_name = 'artist_discovery'$$,
                  $$VALUES ('artist_discovery'::text, 2::bigint)$$, 'monitor_queues counts the waiting messages');
SELECT results_eq($$SELECT total_messages, stuck_messages FROM music.queue_monitoring_view WHERE queue_name = 'artist_discovery'$$,
                  $$VALUES (2, 0)$$, 'queue_monitoring_view shows the check');
SELECT is((SELECT count(*)::int FROM music.get_processing_stats()), 0, 'get_processing_stats: no entity yet');
SELECT music.acquire_processing_lock('track', 't1');
UPDATE conveyor.entities SET last_processed_at = last_processed_at - interval '2 hours' WHERE entity_id = 't1';
SELECT results_eq($$SELECT entity_id, issue FROM music.find_inconsistent_states()$$, $$VALUES ('t1'::text, 'in_progress_timed_out'::text)$$,
                  'find_inconsistent_states');
SELECT results_eq($$SELECT * FROM music.maintenance_clear_stale_entities(60)$$,
                  $$VALUES ('track'::text, 't1'::text, 'PENDING'::text, 'status_reset'::text)$$, 'maintenance_clear_stale_entities');
UPDATE music.monitoring_events SET created_at = now() - interval '31 days' WHERE event_type = 'queue_monitor';
SELECT is(music.purge_old_monitoring_events(30), 6, 'purge_old_monitoring_events(30): the six checks of 31 days ago');
SELECT is(music.purge_old_monitoring_events(0), 0, 'purge_old_monitoring_events(0): nothing older than now');

SELECT results_eq($$SELECT entity_type, state, count FROM music.get_processing_stats()$$, $$VALUES ('track'::text, 'PENDING'::text, 1::bigint)$$,
                  'get_processing_stats');
SELECT music.acquire_processing_lock('track', 't1');
UPDATE conveyor.entities SET last_processed_at = last_processed_at - interval '3 hours' WHERE entity_id = 't1';
SELECT results_eq($$SELECT entity_id, previous_state FROM music.reset_entity_processing_state('track', 120)$$,
                  $$VALUES ('t1'::text, 'IN_PROGRESS'::text)$$, 'reset_entity_processing_state: stuck over 2 hours');
SELECT music.acquire_processing_lock('track', 't1');
INSERT INTO music.processing_locks (entity_type, entity_id, worker_id) VALUES ('track', 't1', 'w5');
UPDATE conveyor.locks SET heartbeat_at = heartbeat_at - interval '2 hours' WHERE key = 'track:t1';
UPDATE conveyor.entities SET last_processed_at = last_processed_at - interval '2 hours' WHERE entity_id = 't1';
SELECT is(music.cleanup_stale_entities(60) - 'messages_reset', '{"locks_deleted": 1, "states_reset": 1}',
          'cleanup_stale_entities: the stale lease and the stuck entity');
SELECT results_eq($$SELECT queue_name, pending FROM music.get_queue_monitoring_data() WHERE queue_name = 'artist_discovery'$$,
                  $$VALUES ('artist_discovery'::text, 2::bigint)$$, 'get_queue_monitoring_data');
SELECT is(music.pg_try_advisory_lock('import'), true, 'pg_try_advisory_lock');
SELECT is(music.pg_advisory_unlock('import'), true, 'pg_advisory_unlock');
SELECT is(music.pg_advisory_lock_exists('import'), false, '... released');

-- pg_cron is not usable in this database: said clearly, nothing scheduled
SELECT throws_ok($$SELECT * FROM music.schedule_pipeline_jobs()$$, '55000', NULL, 'schedule_pipeline_jobs where pg_cron is not');
SELECT is((SELECT count(*)::int FROM music.pipeline_jobs()), 15, 'pipeline_jobs: the 15 jobs a deployment schedules');
SELECT * FROM finish();
ROLLBACK;
