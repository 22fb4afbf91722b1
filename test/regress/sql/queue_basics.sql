-- The job queue by example: what a producer, a worker and an operator see.
SELECT conveyor.create_queue('crawl', '{"lease_seconds": 60, "max_attempts": 2, "backoff_base_seconds": 30}');
SELECT queue, paused, options FROM conveyor.list_queues();

-- Producers: priorities, groups (one running job per channel) and dedup keys.
SELECT was_duplicate FROM conveyor.enqueue('crawl', '{"channel_id": "UC1", "step": 1}', 'REFRESH', group_key => 'UC1', dedup_key => 'refresh:UC1');
SELECT was_duplicate FROM conveyor.enqueue('crawl', '{"channel_id": "UC1", "step": 1}', 'REFRESH', group_key => 'UC1', dedup_key => 'refresh:UC1');
SELECT was_duplicate FROM conveyor.enqueue('crawl', '{"channel_id": "UC1", "step": 2}', 'BACKFILL', group_key => 'UC1', priority => 9);
SELECT was_duplicate FROM conveyor.enqueue('crawl', '{"channel_id": "UC2"}', 'REFRESH', group_key => 'UC2', priority => 3);
SELECT ord, was_duplicate FROM conveyor.enqueue_batch('crawl', '[
    {"payload": {"channel_id": "UC3"}, "job_type": "REFRESH", "priority": 10},
    {"payload": {"channel_id": "UC4"}, "job_type": "REFRESH", "run_at": "2999-01-01T00:00:00Z"},
    {"payload": {"channel_id": "UC1"}, "job_type": "REFRESH", "dedup_key": "refresh:UC1"}
]');
SELECT pending, scheduled, running FROM conveyor.queue_metrics('crawl');

-- Workers: highest priority first; only one job of channel UC1 at a time (its priority 9 job
-- enqueued later runs before its priority 5 job).
SELECT payload, job_type, group_key, priority, attempt FROM conveyor.dequeue('crawl', 'worker-1', 10);
SELECT payload FROM conveyor.dequeue('crawl', 'worker-2', 10);
SELECT pending, scheduled, running FROM conveyor.queue_metrics('crawl');

-- Success, failure with backoff, and the next job of UC1 becoming available.
SELECT conveyor.ack(job_id, true, stats => '{"videos": 12}', worker_id => 'worker-1')
  FROM conveyor.jobs WHERE payload = '{"channel_id": "UC1", "step": 2}';
SELECT conveyor.ack(job_id, false, 'HTTP 503', worker_id => 'worker-1')
  FROM conveyor.jobs WHERE payload = '{"channel_id": "UC3"}';
SELECT payload, attempt FROM conveyor.dequeue('crawl', 'worker-2', 10);
-- The backoff (30 s, less up to a quarter of jitter) counts from the failing ack, not from now: a
-- slow machine may pass seconds between the two statements.
SELECT j->>'status' AS status, j->>'attempt' AS attempt, j->>'last_error' AS last_error,
       (j->>'run_at')::timestamptz - (SELECT max(e.at) FROM conveyor.job_events(s.job_id) e WHERE e.event = 'failed')
         BETWEEN interval '22 seconds' AND interval '30 seconds' AS backoff_in_band
FROM (SELECT job_id, conveyor.get_job(job_id) AS j FROM conveyor.jobs WHERE payload = '{"channel_id": "UC3"}') s;

-- Events of the first job.
SELECT event, worker_id, details ? 'duration_ms' AS has_duration, details->'stats' AS stats
FROM conveyor.job_events((SELECT job_id FROM conveyor.job_history WHERE payload = '{"channel_id": "UC1", "step": 2}'))
ORDER BY at;

-- Operators: cancel, dead-letter and retry.
SELECT conveyor.cancel(job_id, 'channel deleted') FROM conveyor.jobs WHERE payload = '{"channel_id": "UC4"}';
SELECT conveyor.dead_letter(job_id, 'bad data') FROM conveyor.jobs WHERE payload = '{"channel_id": "UC2"}';
SELECT status, last_error FROM conveyor.job_history ORDER BY status;
SELECT conveyor.retry(job_id) FROM conveyor.job_history WHERE status = 'dead';
SELECT pending, scheduled, running, completed_1h, failed_24h, dead FROM conveyor.queue_metrics('crawl');
SELECT conveyor.drop_queue('crawl', force => true);
