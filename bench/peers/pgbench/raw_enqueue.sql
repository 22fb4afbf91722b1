-- raw floor: one INSERT per job. -D queue is ignored (one table).
\set n random(1, 1000000)
INSERT INTO raw.jobs (payload) VALUES (jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int));
