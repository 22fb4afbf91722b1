-- j. The state conveyor.health() is measured against: a large history and a realistic hot set.
--
-- The hot set goes through conveyor's functions (so its counters are conveyor's own): jobs pending,
-- waiting, scheduled, running and with expired leases; leases; accounts with charges; quotas; worker
-- issues. The two large tables are filled set-based, as conveyor would have left them:
--   job_history  1,000,000 finished jobs of the last 7 days in the queues' own daily partitions
--                (purge_at = finished_at + retention_days), 95% completed, 4% dead, 1% cancelled;
--                their counts enter queue_counts as maintain() folds old minutes: one row per queue
--                at bucket -infinity, shard 0.
--   entities     100,000 entities of three types in every state, some IN_PROGRESS for hours (stuck).
-- psql variables: none. Runs in database conveyor_bench after CREATE EXTENSION conveyor.

SELECT conveyor.create_queue('health_' || q, '{"retention_days": 7}') FROM unnest(ARRAY['crawl', 'enrich', 'export']) q;
SELECT conveyor.maintain();  -- history partitions for today .. today + 9

-- ---- the history: 1,000,000 finished jobs over 7 days, 50/30/20 across the queues -------------------
INSERT INTO conveyor.job_history (job_id, queue_id, status, priority, run_at, job_type, group_key, dedup_key, payload,
                                  attempt, max_attempts, worker_id, started_at, last_error, created_at, finished_at, purge_at)
SELECT conveyor.uuid_v7(), q.queue_id, s.status, 5, f.at - interval '10 seconds', 'fetch', NULL, NULL,
       jsonb_build_object('channel_id', 'UC' || (g % 50000), 'n', g),
       CASE s.status WHEN 'dead' THEN 5 ELSE 1 END, 5, 'worker-' || (g % 8), f.at - interval '2 seconds',
       CASE s.status WHEN 'dead' THEN 'HTTP 429 after 5 attempts' END,
       f.at - interval '10 seconds', f.at, f.at + interval '7 days'
FROM generate_series(1, 1000000) g
CROSS JOIN LATERAL (SELECT now() - (g % 604000) * interval '1 second' - interval '1 minute' AS at) f
CROSS JOIN LATERAL (SELECT CASE WHEN g / 10 % 100 < 95 THEN 'completed' WHEN g / 10 % 100 < 99 THEN 'dead' ELSE 'cancelled' END
                    AS status) s
JOIN conveyor.queues q ON q.name = CASE WHEN g % 10 < 5 THEN 'health_crawl' WHEN g % 10 < 8 THEN 'health_enrich'
                                        ELSE 'health_export' END;

INSERT INTO conveyor.queue_counts (queue_id, bucket, shard, dead, enqueued, started, completed, cancelled, failed,
                                   wait_seconds, run_seconds)
SELECT queue_id, '-infinity', 0, count(*) FILTER (WHERE status = 'dead'), count(*), count(*) FILTER (WHERE status <> 'cancelled'),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'cancelled'),
       count(*) FILTER (WHERE status = 'dead'), 8 * count(*), 2 * count(*)
FROM conveyor.job_history GROUP BY queue_id;

-- ---- the hot set of jobs, through conveyor ------------------------------------------------------------
-- Per queue: 2,000 ready jobs, 500 in 50 groups (one ready, the rest waiting), 300 scheduled for later.
SELECT conveyor.enqueue_batch(q, (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('channel_id', 'UC' || g, 'n', g)))
                                  FROM generate_series(1, 2000) g))
FROM unnest(ARRAY['health_crawl', 'health_enrich', 'health_export']) q;
SELECT conveyor.enqueue_batch(q, (SELECT jsonb_agg(jsonb_build_object('group_key', 'channel-' || (g % 50),
                                                                      'payload', jsonb_build_object('n', g)))
                                  FROM generate_series(1, 500) g))
FROM unnest(ARRAY['health_crawl', 'health_enrich', 'health_export']) q;
SELECT conveyor.enqueue_batch(q, (SELECT jsonb_agg(jsonb_build_object('run_at', now() + interval '1 hour',
                                                                      'payload', jsonb_build_object('n', g)))
                                  FROM generate_series(1, 300) g))
FROM unnest(ARRAY['health_crawl', 'health_enrich', 'health_export']) q;
-- Running: 400 leased per queue for an hour, 30 leased for 1 second (their leases run out below);
-- some finish through ack (success and failure) and dead_letter.
SELECT count(*) FROM unnest(ARRAY['health_crawl', 'health_enrich', 'health_export']) q,
    LATERAL (SELECT conveyor.dequeue(q, 'worker-' || w, 100, 3600) FROM generate_series(1, 4) w) d;
SELECT count(*) FROM unnest(ARRAY['health_crawl', 'health_enrich', 'health_export']) q,
    LATERAL conveyor.dequeue(q, 'worker-gone', 30, 1) d;
SELECT count(*) FROM (SELECT job_id, row_number() OVER (ORDER BY job_id) AS k
                      FROM conveyor.jobs WHERE state = 'running' AND worker_id = 'worker-1') r,
    LATERAL (SELECT CASE WHEN k % 10 = 0 THEN conveyor.dead_letter(r.job_id, 'unparseable page')
                         ELSE conveyor.ack(r.job_id, k % 4 <> 0, CASE WHEN k % 4 = 0 THEN 'timeout' END) END) a;

-- ---- leases: 300 held, 20 with a TTL of 1 second (stale below) -----------------------------------------
SELECT count(*) FROM generate_series(1, 300) g, LATERAL conveyor.lock_acquire('artist:' || g, 'worker-' || (g % 8), 1800) l;
SELECT count(*) FROM generate_series(1, 20) g, LATERAL conveyor.lock_acquire('campaign:' || g, 'worker-gone', 1) l;

-- ---- entities: 100,000 in three types, set-based, plus a few through conveyor --------------------------
-- States by g % 1000: < 600 COMPLETED, < 780 PENDING, < 930 IN_PROGRESS (a tenth of them for hours),
-- < 980 FAILED, else DEAD.
INSERT INTO conveyor.entities (entity_type, entity_id, state, attempts, max_attempts, timeout_seconds, last_processed_at,
                               last_error, metadata, created_at, updated_at)
SELECT (ARRAY['artist', 'channel', 'campaign'])[1 + g % 3], 'e' || g, s.state,
       CASE s.state WHEN 'PENDING' THEN 0 WHEN 'DEAD' THEN 5 ELSE 1 + g % 3 END, 5, 1800,
       now() - CASE WHEN s.state = 'IN_PROGRESS' AND g % 10 = 0 THEN interval '5 hours' ELSE (g % 600) * interval '1 second' END,
       CASE WHEN s.state IN ('FAILED', 'DEAD') THEN 'HTTP 503' END, '{}', now() - interval '30 days',
       now() - (g % 3000) * interval '1 second'
FROM generate_series(1, 100000) g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 1000 < 600 THEN 'COMPLETED' WHEN g % 1000 < 780 THEN 'PENDING'
                                WHEN g % 1000 < 930 THEN 'IN_PROGRESS' WHEN g % 1000 < 980 THEN 'FAILED' ELSE 'DEAD' END
                    AS state) s;
SELECT conveyor.entity_acquire('artist', 'live-' || g) FROM generate_series(1, 20) g;
SELECT conveyor.entity_fail('artist', 'live-' || g, 'HTTP 404', g % 2 = 0) FROM generate_series(1, 10) g;

-- ---- costs: five accounts (one near its budget, one over it), three quotas -----------------------------
SELECT conveyor.account_create('client_' || g, 100, 'USD', g <> 5) FROM generate_series(1, 5) g;
SELECT conveyor.charge('client_' || g, 'google_maps', CASE g WHEN 4 THEN 90 WHEN 5 THEN 120 ELSE 10 * g END, 1)
FROM generate_series(1, 5) g;
SELECT conveyor.quota_define('youtube_api_' || g, 10000, 'day') FROM generate_series(1, 3) g;
SELECT conveyor.quota_consume('youtube_api_' || g, 2000 * g) FROM generate_series(1, 3) g;

-- ---- worker issues: 40 reports from 8 workers, of every severity, a few resolved ------------------------
SELECT conveyor.report_issue('worker-' || (g % 8), 'http', (ARRAY['info', 'warning', 'error', 'critical'])[1 + g % 4],
                             'HTTP ' || (400 + g % 5) || ' from the API')
FROM generate_series(1, 40) g;
SELECT conveyor.resolve_issue(issue_id, 'fixed') FROM conveyor.worker_issues WHERE severity = 'critical';

-- The short leases run out.
SELECT pg_sleep(1.2);
