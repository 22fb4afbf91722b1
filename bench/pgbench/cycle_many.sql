-- d. Batch worker cycle: dequeue up to 100 jobs, then acknowledge them all with ack_many.
SELECT array_agg(job_id)::text AS ids FROM conveyor.dequeue(:queue::text, 'bench-' || :client_id::text, 100) \gset
SELECT conveyor.ack_many(:ids::uuid[], true, worker_id => 'bench-' || :client_id::text);
