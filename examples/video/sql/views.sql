-- Views. All but system_metrics run as the caller (security_invoker): row-level security decides
-- which jobs a caller sees in them.

CREATE VIEW video.job_summary WITH (security_invoker = true) AS
SELECT j.id AS job_id, j.status, j.output_format, j.width, j.height, j.response_type, j.progress, j.current_step,
       j.client_ip, j.estimated_duration, j.actual_duration, j.result_url, j.file_size, j.error_code, j.error_message,
       j.attempts, j.version, j.created_at, j.updated_at, j.started_at, j.completed_at, j.processing_time_ms,
       coalesce(e.elements, 0) AS element_count, coalesce(e.downloaded, 0) AS elements_downloaded,
       coalesce(e.processed, 0) AS elements_processed,
       coalesce(t.completed, 0) AS steps_completed, coalesce(t.failed, 0) AS steps_failed, t.last_step,
       coalesce(s.operations, 0) AS storage_operations, coalesce(s.bytes_uploaded, 0) AS bytes_uploaded
FROM video.jobs j
LEFT JOIN LATERAL (SELECT count(*) AS elements, count(*) FILTER (WHERE downloaded) AS downloaded,
                          count(*) FILTER (WHERE processed) AS processed
                   FROM video.elements WHERE job_id = j.id) e ON true
LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                          count(*) FILTER (WHERE status = 'failed') AS failed,
                          (array_agg(step ORDER BY started_at DESC))[1] AS last_step
                   FROM video.processing_timeline WHERE job_id = j.id) t ON true
LEFT JOIN LATERAL (SELECT count(*) AS operations,
                          sum(file_size) FILTER (WHERE operation = 'upload' AND success) AS bytes_uploaded
                   FROM video.storage_operations WHERE job_id = j.id) s ON true;

-- What a status page polls: small, one row per job.
CREATE VIEW video.job_status_realtime WITH (security_invoker = true) AS
SELECT j.id AS job_id, j.status, j.progress, j.current_step, j.attempts, j.version, j.error_code, j.result_url,
       j.updated_at, j.status IN ('completed', 'failed', 'cancelled') AS is_final
FROM video.jobs j;

-- Active jobs with a health indicator: 'stalled' when unchanged for stalled_after_seconds, 'slow' when
-- processing for more than three times its estimated duration (at least 5 minutes), else 'healthy'.
CREATE VIEW video.active_jobs WITH (security_invoker = true) AS
SELECT j.id AS job_id, j.status, j.progress, j.current_step, j.attempts, j.client_ip, j.response_type,
       j.created_at, j.started_at, j.updated_at,
       extract(epoch FROM now() - coalesce(j.started_at, j.created_at))::numeric(12, 1) AS age_seconds,
       CASE WHEN j.updated_at < now() - make_interval(secs => (SELECT value FROM video.config WHERE key = 'stalled_after_seconds'))
                THEN 'stalled'
            WHEN j.status <> 'pending' AND j.started_at < now() - make_interval(secs => greatest(coalesce(j.estimated_duration, 0) * 3, 300))
                THEN 'slow'
            ELSE 'healthy' END AS health
FROM video.jobs j
WHERE j.status IN ('pending', 'processing', 'uploading');

-- Per UTC day of creation.
CREATE VIEW video.daily_job_stats WITH (security_invoker = true) AS
SELECT (j.created_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS total_jobs,
       count(*) FILTER (WHERE status = 'completed') AS completed_jobs,
       count(*) FILTER (WHERE status = 'failed') AS failed_jobs,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled_jobs,
       count(*) FILTER (WHERE status IN ('pending', 'processing', 'uploading')) AS active_jobs,
       round(count(*) FILTER (WHERE status = 'completed')::numeric
             / nullif(count(*) FILTER (WHERE status IN ('completed', 'failed')), 0), 4) AS success_rate,
       round(avg(processing_time_ms) FILTER (WHERE status = 'completed'))::bigint AS avg_processing_ms,
       (percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) FILTER (WHERE status = 'completed'))::bigint AS p95_processing_ms,
       coalesce(sum(file_size) FILTER (WHERE status = 'completed'), 0) AS output_bytes
FROM video.jobs j
GROUP BY 1;

-- S3 performance per operation, bucket and region.
CREATE VIEW video.storage_performance WITH (security_invoker = true) AS
SELECT operation, bucket, region,
       count(*) AS operations,
       count(*) FILTER (WHERE success) AS succeeded,
       count(*) FILTER (WHERE NOT success) AS failed,
       round(count(*) FILTER (WHERE success)::numeric / count(*), 4) AS success_rate,
       round(avg(duration_ms))::bigint AS avg_duration_ms,
       (percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms))::bigint AS p95_duration_ms,
       coalesce(sum(file_size) FILTER (WHERE success), 0) AS bytes,
       round(sum(file_size) FILTER (WHERE success AND duration_ms > 0)::numeric / 1048576
             / nullif(sum(duration_ms) FILTER (WHERE success AND duration_ms > 0 AND file_size IS NOT NULL), 0) * 1000, 3) AS avg_mb_per_second,
       max(created_at) AS last_operation_at
FROM video.storage_operations
GROUP BY operation, bucket, region;

-- The service's metrics: conveyor's metric points named video.* (record with conveyor.record_metric;
-- rolled up hourly and daily by conveyor.maintain(), kept retention.metric_points_days).
CREATE VIEW video.system_metrics AS
SELECT p.metric AS metric_name, p.value AS metric_value, p.tags, p.at AS recorded_at
FROM conveyor.metric_points p
WHERE p.metric LIKE 'video.%';
