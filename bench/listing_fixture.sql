-- m. The history list_jobs is measured against: 1,000,000 finished jobs of one queue, 10,000 groups of
-- 100 jobs, three job types, finished over the last 7 days (so in 7 of the queue's daily partitions),
-- 95% completed, 4% dead, 1% cancelled; ids made by conveyor.uuid_v7(), as enqueue makes them.
-- psql variables: none. Runs in a database of its own after CREATE EXTENSION conveyor.
SELECT conveyor.create_queue('listing', '{"retention_days": 7}');
SELECT conveyor.maintain();

INSERT INTO conveyor.job_history (job_id, queue_id, status, priority, run_at, job_type, group_key, dedup_key, payload,
                                  attempt, max_attempts, worker_id, started_at, last_error, created_at, finished_at, purge_at)
SELECT conveyor.uuid_v7(), q.queue_id, s.status, 5, f.at - interval '10 seconds',
       (ARRAY['fetch', 'parse', 'export'])[g % 3 + 1], 'g' || (g % 10000), NULL,
       jsonb_build_object('channel_id', 'UC' || g, 'n', g),
       1, 5, 'worker-' || (g % 8), f.at - interval '2 seconds', NULL,
       f.at - interval '10 seconds', f.at, f.at + interval '7 days'
FROM generate_series(1, 1000000) g
CROSS JOIN LATERAL (SELECT now() - ((1000000 - g) * 0.6) * interval '1 second' - interval '1 minute' AS at) f
CROSS JOIN LATERAL (SELECT CASE WHEN g / 10 % 100 < 95 THEN 'completed' WHEN g / 10 % 100 < 99 THEN 'dead' ELSE 'cancelled' END
                    AS status) s
CROSS JOIN conveyor.queues q WHERE q.name = 'listing';
