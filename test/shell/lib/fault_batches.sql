-- The batches of the fault tests that cut one big call short (lib/fault_checks.bash, fault_batches).
CREATE TABLE batches (name text PRIMARY KEY, j jsonb NOT NULL);
INSERT INTO batches
SELECT 'jobs', jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', n, 'pad', repeat('p', 50)),
                         'dedup_key', 'k' || n, 'group_key', 'g' || (n % 100)))
  FROM generate_series(1, 100000) n;
INSERT INTO batches
SELECT 'channels', jsonb_agg(jsonb_build_object('channel_id', 'UC' || lpad(n::text, 5, '0'), 'title', 't' || n, 'views', n))
  FROM generate_series(1, 9999) n;
