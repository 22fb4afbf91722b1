-- l. One job's life as a producer and a worker see it: enqueue, dequeue, ack (three transactions).
-- A dequeue may find the job it enqueued claimed by another client and nothing else free yet: then
-- there is nothing to ack.
SELECT conveyor.enqueue(:queue::text, '{"n": 1}') IS NOT NULL;
SELECT d.job_id AS jid, (d.job_id IS NOT NULL)::int AS got
FROM (SELECT (SELECT job_id FROM conveyor.dequeue(:queue::text, 'bench-' || :client_id::text, 1)) AS job_id) d \gset
\if :got
SELECT conveyor.ack(:jid::uuid, true, worker_id => 'bench-' || :client_id::text);
\endif
