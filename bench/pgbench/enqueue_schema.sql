-- a. One job per call with a 5-property payload: conveyor.enqueue. -D queue=<name>. Run against a queue
-- with a payload_schema over those 5 properties and against the same queue without one.
\set n random(1, 1000000)
SELECT job_id FROM conveyor.enqueue(:queue::text, jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int,
    'url', 'https://example.com/watch?v=' || :n::int, 'kind', 'video', 'tags', jsonb_build_array('a', 'b')));
