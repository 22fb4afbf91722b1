-- pgmq: one message per call, pgmq.send. -D queue=<pgmq queue>
\set n random(1, 1000000)
SELECT pgmq.send(:queue::text, jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int));
