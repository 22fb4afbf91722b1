-- graphile-worker: 100 jobs per call through graphile_worker.add_jobs (-D batch=<jsonb array of {"payload": ...}>).
SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(
    SELECT ROW('bench', (e -> 'payload')::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
    FROM jsonb_array_elements(:batch::jsonb) AS e));
