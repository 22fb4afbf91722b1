-- f. Single worker at a steady backlog: enqueue one job (keeps the backlog constant), dequeue one,
-- acknowledge it. pgbench -r gives each statement's latency; the dequeue's is what scales.
\set n random(1, 1000000)
SELECT job_id FROM conveyor.enqueue(:queue::text, jsonb_build_object('channel_id', 'UC' || :n::int, 'n', :n::int));
SELECT job_id AS jid FROM conveyor.dequeue(:queue::text, 'bench-scale', 1) \gset
SELECT conveyor.ack(:jid::uuid, true, worker_id => 'bench-scale');
