-- Queue RPCs: pgmq's calls over conveyor's queues; uuid and numeric message ids; visibility timeouts;
-- stuck messages; the dead-letter queue; per-queue validation.
BEGIN;
SELECT plan(61);

-- validate_queue_message: seed 001's rules per queue
SELECT is(music.validate_queue_message('album_discovery', '{"artistId": "a1"}'), '{"valid": true}', 'album_discovery: artistId present');
SELECT is(music.validate_queue_message('album_discovery', '{"artistId": " "}') ->> 'error',
          'Invalid album discovery message: missing or empty artistId', 'album_discovery: empty artistId');
SELECT is(music.validate_queue_message('producer_identification', '{}') ->> 'error',
          'Invalid producer identification message: missing or empty trackId', 'producer_identification: no trackId');
SELECT is(music.validate_queue_message('track_discovery', '{"albumId": null}') ->> 'valid', 'false', 'track_discovery: null albumId');
SELECT is(music.validate_queue_message('track_discovery', '{"albumId": "x"}') ->> 'valid', 'true', 'track_discovery: albumId');
SELECT is(music.validate_queue_message('artist_discovery', '{}'),
          '{"error": "Empty or null message", "queue": "artist_discovery", "valid": false}', 'other queues: an empty object');
SELECT is(music.validate_queue_message('artist_discovery', NULL) ->> 'valid', 'false', 'other queues: NULL');

-- pg_enqueue: numeric ids in order; validation and unknown queues refused
SELECT music.pg_enqueue('album_discovery', '{"artistId": "a1"}') AS m1 \gset
SELECT music.pg_enqueue('album_discovery', '{"artistId": "a2"}') AS m2 \gset
SELECT music.pg_enqueue('album_discovery', '{"artistId": "a3"}') AS m3 \gset
SELECT ok(:m1 < :m2 AND :m2 < :m3, 'pg_enqueue returns increasing numeric message ids');
SELECT throws_ok($$SELECT music.pg_enqueue('album_discovery', '{"artist": "a1"}')$$, '22023',
                 'Invalid album discovery message: missing or empty artistId', 'pg_enqueue refuses an invalid message');
SELECT throws_ok($$SELECT music.pg_enqueue('nope', '{"a": 1}')$$, '42704', NULL, 'pg_enqueue: unknown queue');
SELECT throws_ok($$SELECT music.pg_enqueue(NULL, '{"a": 1}')$$, '22004', NULL, 'pg_enqueue: NULL queue');

-- pg_dequeue: the batch in order, read_ct 1, vt = now + timeout, message ids both ways
SELECT results_eq($$SELECT msg_id, read_ct, message ->> 'artistId' FROM music.pg_dequeue('album_discovery', 2, 30)$$,
                  format($$VALUES (%s::bigint, 1, 'a1'::text), (%s, 1, 'a2')$$, :m1, :m2), 'pg_dequeue: a batch of two, oldest first');
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('album_discovery', 5, 30)), 1, 'the third message only: the others are invisible');
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('album_discovery', 5, 30)), 0, 'no message is visible');
SELECT throws_ok($$SELECT * FROM music.pg_dequeue('album_discovery', 0, 30)$$, '22023', NULL, 'batch_size 0');
SELECT throws_ok($$SELECT * FROM music.pg_dequeue('album_discovery', 5, -1)$$, '22023', NULL, 'a negative visibility timeout');
SELECT throws_ok($$SELECT * FROM music.pg_dequeue('album_discovery', NULL, 30)$$, '22004', NULL, 'a NULL batch_size');

-- pg_delete_message: numeric and uuid ids; a repeat is false; bad ids refused
SELECT is(music.pg_delete_message('album_discovery', :'m1'), true, 'pg_delete_message by numeric id');
SELECT is(music.pg_delete_message('album_discovery', :'m1'), false, '... a second time: false');
SELECT job_id AS j2 FROM music.messages WHERE msg_id = :m2 \gset
SELECT is(music.pg_delete_message('album_discovery', :'j2'), true, 'pg_delete_message by uuid');
SELECT is(conveyor.get_job(:'j2') ->> 'status', 'completed', 'a deleted message is a completed conveyor job');
SELECT is(music.pg_delete_message('album_discovery', '999999'), false, 'an unknown numeric id: false');
SELECT is(music.pg_delete_message('track_discovery', :'m3'), false, 'a message of another queue: false');
SELECT throws_ok($$SELECT music.pg_delete_message('album_discovery', 'abc')$$, '22023', NULL, 'an id neither uuid nor number');

-- pg_release_message: visible again at once, the read not counted
SELECT job_id AS j3 FROM music.messages WHERE msg_id = :m3 \gset
SELECT is(music.pg_release_message('album_discovery', :'j3'), true, 'pg_release_message');
SELECT is(music.pg_release_message('album_discovery', :'j3'), false, '... not being read any more: false');
SELECT results_eq($$SELECT msg_id, read_ct FROM music.pg_dequeue('album_discovery', 5, 0)$$, format('VALUES (%s::bigint, 1)', :m3),
                  'the released message is read again, read_ct 1');
-- visibility timeout 0: visible again at once, each read counted
SELECT results_eq($$SELECT msg_id, read_ct FROM music.pg_dequeue('album_discovery', 5, 0)$$, format('VALUES (%s::bigint, 2)', :m3),
                  'visibility timeout 0: read again at once, read_ct 2');
-- the visibility timeout passes: visible again at once, with no backoff. (A test transaction's clock
-- stands still, so the lease is aged by hand; test/visibility.sh waits for a real one.)
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('album_discovery', 5, 30)), 1, 'read with a 30 s visibility timeout');
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('album_discovery', 5, 30)), 0, 'invisible while it lasts');
UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = :'j3';
SELECT results_eq($$SELECT msg_id, read_ct FROM music.pg_dequeue('album_discovery', 5, 60)$$, format('VALUES (%s::bigint, 4)', :m3),
                  'visible again as soon as the timeout passed, read_ct 4');

-- stuck messages: held 11 minutes
UPDATE conveyor.jobs SET started_at = started_at - interval '11 minutes' WHERE job_id = :'j3';
SELECT is((SELECT count(*)::int FROM music.list_stuck_messages('album_discovery', 12)), 0, 'list_stuck_messages: none locked 12 minutes');
SELECT results_eq($$SELECT msg_id, read_ct FROM music.list_stuck_messages('album_discovery', 10)$$, format('VALUES (%s::bigint, 4)', :m3),
                  'list_stuck_messages: the message locked 11 minutes');
SELECT is(music.reset_stuck_messages('album_discovery', 12), 0, 'reset_stuck_messages: none locked 12 minutes');
SELECT is(music.reset_stuck_messages('album_discovery', 10), 1, 'reset_stuck_messages: the message locked over 10 minutes');
SELECT is(conveyor.get_job(:'j3') ->> 'status', 'pending', '... the message waits to be read again');
SELECT throws_ok($$SELECT music.reset_stuck_messages('album_discovery', -1)$$, '22023', NULL, 'a negative threshold');

-- ensure_message_deleted: a waiting message is deleted (cancelled); an absent one counts as deleted
SELECT is(music.ensure_message_deleted('album_discovery', :'m3'), true, 'ensure_message_deleted');
SELECT is(conveyor.get_job(:'j3') ->> 'status', 'cancelled', '... the waiting message is cancelled');
SELECT is(music.ensure_message_deleted('album_discovery', '424242', 1), true, 'an absent message counts as deleted');
SELECT throws_ok($$SELECT music.ensure_message_deleted('album_discovery', '1', 0)$$, '22023', NULL, 'max_attempts 0');

-- move_to_dead_letter_queue and dlq_messages
SELECT music.pg_enqueue('producer_identification', '{"trackId": "t1"}') AS m4 \gset
SELECT is(music.move_to_dead_letter_queue('producer_identification', 'producer_dlq', :'m4', 'no credits', '{"http": 404}'), true,
          'move_to_dead_letter_queue');
SELECT is(music.move_to_dead_letter_queue('producer_identification', 'producer_dlq', :'m4', 'no credits'), false,
          '... a second time: false, as the message is gone');
SELECT results_eq($$SELECT queue_name, source_queue, original_msg_id, failure_reason, custom_metadata,
                           full_message -> '_dlq_metadata' ->> 'failure_reason'
                    FROM music.dlq_messages WHERE source_queue = 'producer_identification'$$,
                  format($$VALUES ('producer_dlq'::text, 'producer_identification'::text, %s::bigint, 'no credits'::text,
                                   '{"http": 404}'::jsonb, 'no credits'::text)$$, :m4), 'dlq_messages lists it with its metadata');
SELECT is((SELECT details ->> 'dlq_name' FROM music.monitoring_events WHERE event_type = 'message_moved_to_dlq'
           AND details ->> 'source_message_id' = :'m4'), 'producer_dlq',
          'a message_moved_to_dlq event');

-- diagnostics and the name helpers
SELECT is(music.get_queue_table_name_safe('pgmq.q_album_discovery'), 'conveyor.jobs', 'get_queue_table_name_safe: pgmq''s name');
SELECT is(music.get_queue_table_name_safe('nope'), NULL, 'get_queue_table_name_safe: unknown');
SELECT results_eq($$SELECT registered, in_conveyor, dead, messages_numbered FROM music.diagnose_queue_tables('producer_identification')$$,
                  $$VALUES (true, true, 1::bigint, 1::bigint)$$, 'diagnose_queue_tables');
SELECT is(music.cross_schema_queue_op('get', 'album_discovery', :'m1', '{}') -> 'message' ->> 'status', 'completed', 'cross_schema_queue_op get');
SELECT throws_ok($$SELECT music.cross_schema_queue_op('purge', 'album_discovery', '1', '{}')$$, '22023', NULL,
                 'cross_schema_queue_op: unknown operation');
-- register_queue: a new queue, paused while inactive; the registry row updated on a second call
SELECT ok(music.register_queue('test_queue', 'Test', 'for tests', false) > 0, 'register_queue creates a queue');
SELECT results_eq($$SELECT q.paused, q.options ->> 'backoff_base_seconds', q.options ->> 'lease_seconds' FROM conveyor.list_queues() q
                    WHERE q.queue = 'test_queue'$$, $$VALUES (true, '0'::text, '60'::text)$$,
                  'a conveyor queue, paused (inactive), backoff 0, lease 60 s');
SELECT music.pg_enqueue('test_queue', '{"x": 1}') AS m5 \gset
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('test_queue', 5, 30)), 0, 'an inactive queue hands out nothing');
SELECT is(music.register_queue('test_queue', 'Test 2', NULL, true), (SELECT id FROM music.queue_registry WHERE queue_name = 'test_queue'),
          'register_queue again: the same registry row');
SELECT results_eq($$SELECT display_name, active FROM music.queue_registry WHERE queue_name = 'test_queue'$$,
                  $$VALUES ('Test 2'::text, true)$$, '... updated');
SELECT throws_ok($$SELECT music.register_queue('Bad Name', NULL, NULL, true)$$, '22023', NULL, 'register_queue: a bad name');
-- cross_schema_queue_op: release, delete, dead_letter
SELECT job_id AS j5 FROM music.messages WHERE msg_id = :m5 \gset
SELECT is((SELECT count(*)::int FROM music.pg_dequeue('test_queue', 5, 30)), 1, 'active: read');
SELECT is(music.cross_schema_queue_op('release', 'test_queue', :'m5', '{}') ->> 'success', 'true', 'cross_schema_queue_op release');
SELECT is(music.cross_schema_queue_op('dead_letter', 'test_queue', :'j5', '{"reason": "bad", "dlq_name": "test_dlq"}') ->> 'success', 'true',
          'cross_schema_queue_op dead_letter');
SELECT is((SELECT queue_name FROM music.dlq_messages WHERE original_msg_id = :m5), 'test_dlq', '... listed in dlq_messages');
SELECT music.pg_enqueue('test_queue', '{"x": 2}') AS m6 \gset
SELECT is(music.cross_schema_queue_op('delete', 'test_queue', :'m6', '{}') ->> 'success', 'true', 'cross_schema_queue_op delete');
SELECT * FROM finish();
ROLLBACK;
