-- b. 100 jobs per call: conveyor.enqueue_batch. -D queue=<name> -D batch=<jsonb array of 100 {"payload": ...}>
SELECT count(*) FROM conveyor.enqueue_batch(:queue::text, :batch::jsonb);
