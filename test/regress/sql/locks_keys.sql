-- advisory_key: XXH3-64 (xxHash, seed 0) of the key's UTF-8 bytes, as a signed bigint. These values
-- are fixed forever: the same on every platform and in every future version.
SELECT k, conveyor.advisory_key(k), pg_catalog.to_hex(conveyor.advisory_key(k)) AS hex
FROM (VALUES ('a'), ('hello'), ('artist:42'), ('channel:UC123'), ('café'), ('ключ')) v(k)
ORDER BY k COLLATE "C";
-- Independent of the database encoding: the key is hashed as UTF-8 (the test database is UTF8).
SELECT conveyor.advisory_key(convert_from('\x636166c3a9'::bytea, 'UTF8')) = conveyor.advisory_key('café') AS same_bytes;

-- conveyor's advisory locks are PostgreSQL's own on advisory_key(key): the two names meet.
SELECT conveyor.try_advisory_lock('artist:42') AS locked;
SELECT count(*) AS in_pg_locks FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid()
  AND ((classid::bigint << 32) | objid::bigint) = conveyor.advisory_key('artist:42');
SELECT pg_advisory_unlock(conveyor.advisory_key('artist:42')) AS unlocked_by_pg;
SELECT conveyor.advisory_lock_held('artist:42') AS still_held;
