-- Ids made on a shard: shard.number in bytes 9 and 10 of every new id, which stays a valid,
-- time-ordered UUID version 7; 0 (the default) leaves ids as on a standalone server.
BEGIN;
SELECT plan(16);

SELECT conveyor.create_queue('tap_shard') \gset

SELECT is(conveyor.get_setting('shard.number'), '0', 'shard.number defaults to 0 (a standalone server)');
-- Standalone: bytes 9-10 are random, so 200 ids show many different values there.
SELECT cmp_ok((SELECT count(DISTINCT conveyor.uuid_shard(conveyor.uuid_v7())) FROM generate_series(1, 200))::int, '>', 100,
    'on a standalone server bytes 9-10 of new ids stay random');

SELECT conveyor.set_setting('shard.number', '2');
SELECT job_id AS j1 FROM conveyor.enqueue('tap_shard', '{"n": 1}') \gset
SELECT job_id AS j2 FROM conveyor.enqueue('tap_shard', '{"n": 2}') \gset
SELECT is(conveyor.uuid_shard(:'j1'), 2, 'a job enqueued on shard 2 carries 2');
-- The bit layout, read without conveyor: bytes 9 and 10 big-endian (hex digits 19 to 22 of the text).
SELECT is(substr(replace(:'j1', '-', ''), 19, 4), '0002', 'bytes 9 and 10 of the id hold the shard number, big-endian');
SELECT is(get_byte(uuid_send(:'j1'), 9) * 256 + get_byte(uuid_send(:'j1'), 10), 2, 'uuid_send shows the same bytes');
SELECT is(substr(:'j1', 15, 1), '7', 'the id is still a version 7 UUID');
SELECT ok(substr(:'j1', 20, 1) IN ('8', '9', 'a', 'b'), 'the id keeps the RFC 9562 variant bits');
SELECT ok(:'j2'::uuid > :'j1'::uuid, 'ids made on a shard still increase in enqueue order');
SELECT ok(conveyor.uuid_v7_time(:'j1') BETWEEN now() - interval '1 minute' AND clock_timestamp(),
    'the id''s time is still the enqueue time');
SELECT is((SELECT count(*)::int FROM conveyor.enqueue_batch('tap_shard', (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', n))) FROM generate_series(1, 500) n)) b
           WHERE conveyor.uuid_shard(b.job_id) = 2), 500, 'every id of an enqueue_batch carries the shard');
SELECT is((SELECT count(DISTINCT id)::int FROM (SELECT conveyor.uuid_v7() id FROM generate_series(1, 5000)) s), 5000,
    '5000 ids made on one shard are distinct (46 random bits and the counter remain)');
SELECT is((SELECT bool_and(a < b) FROM (SELECT id a, lead(id) OVER (ORDER BY n) b FROM (SELECT n, conveyor.uuid_v7() id FROM generate_series(1, 2000) n) s) t WHERE b IS NOT NULL),
    true, 'ids made one after another on a shard increase strictly');

SELECT conveyor.set_setting('shard.number', '65535');
SELECT is(conveyor.uuid_shard(conveyor.uuid_v7()), 65535, 'the largest shard number, 65535, round-trips');
SELECT throws_ok($$SELECT conveyor.set_setting('shard.number', '65536')$$, '22023', NULL, 'a shard number past 65535 is refused');
SELECT throws_ok($$SELECT conveyor.uuid_shard('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')$$, '22023', 'not a version 7 UUID',
    'uuid_shard refuses a UUID of another version');
SELECT conveyor.set_setting('shard.number', NULL);
SELECT cmp_ok((SELECT count(DISTINCT conveyor.uuid_shard(conveyor.uuid_v7())) FROM generate_series(1, 200))::int, '>', 100,
    'back at 0, ids are random in bytes 9-10 again');

SELECT * FROM finish();
ROLLBACK;
