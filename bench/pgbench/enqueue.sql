-- a. One job per call: conveyor.enqueue. -D queue=<name>
\set n random(1, 1000000)
SELECT job_id FROM conveyor.enqueue(:queue::text, jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int));
