-- UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, variant 10, increasing within a backend.
SELECT conveyor.uuid_v7_time('017f22e2-79b0-7cc3-98c4-dc0c0c07398f') AT TIME ZONE 'UTC' AS rfc9562_example_time;

WITH ids AS (SELECT n, conveyor.uuid_v7() AS id FROM generate_series(1, 10000) n)
SELECT count(*) AS ids,
       count(DISTINCT id) AS distinct_ids,
       bool_and(substr(id::text, 15, 1) = '7') AS version_7,
       bool_and(substr(id::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant_10,
       bool_and(abs(extract(epoch FROM conveyor.uuid_v7_time(id) - clock_timestamp())) < 60) AS time_is_now
FROM ids;

-- Generation order is sort order.
WITH ids AS (SELECT n, conveyor.uuid_v7() AS id FROM generate_series(1, 10000) n)
SELECT bool_and(prev < id) AS strictly_increasing
FROM (SELECT id, lag(id) OVER (ORDER BY n) AS prev FROM ids) s WHERE prev IS NOT NULL;

SELECT conveyor.uuid_v7_time('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
