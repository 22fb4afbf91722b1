-- a. floor: one plain INSERT into the hand-written queue table. -D queue=<name>
\set n random(1, 1000000)
INSERT INTO floor.jobs (queue, payload)
VALUES (:queue::text, jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int)) RETURNING id;
