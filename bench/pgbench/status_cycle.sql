-- l. One job's life as a producer and a worker see it: enqueue, dequeue, ack (three transactions).
-- Every client enqueues before it dequeues, so a ready job is always there for it.
SELECT conveyor.enqueue(:queue::text, '{"n": 1}') IS NOT NULL;
SELECT job_id AS jid FROM conveyor.dequeue(:queue::text, 'bench-' || :client_id::text, 1) \gset
SELECT conveyor.ack(:jid::uuid, true, worker_id => 'bench-' || :client_id::text);
