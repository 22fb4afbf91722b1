-- c./e. One worker cycle: dequeue one job, then acknowledge it (two transactions, as a worker does).
SELECT job_id AS jid FROM conveyor.dequeue(:queue::text, 'bench-' || :client_id::text, 1) \gset
SELECT conveyor.ack(:jid::uuid, true, worker_id => 'bench-' || :client_id::text);
