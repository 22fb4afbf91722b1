-- PgQ: one event per call, pgq.insert_event. -D queue=<PgQ queue>
\set n random(1, 1000000)
SELECT pgq.insert_event(:queue::text, 'job', jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int)::text);
