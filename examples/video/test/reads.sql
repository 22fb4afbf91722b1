-- The service's reads: job details, list with filters and pages, by client IP and date range, stats,
-- processing metrics, health check.
BEGIN;
SELECT plan(16);

SELECT (video.create_job(p_output_format => CASE WHEN i % 2 = 0 THEN 'mp4' ELSE 'webm' END,
                         p_client_ip => ('192.0.2.' || (i % 3))::inet) ->> 'job_id') AS id
FROM generate_series(1, 7) i \g /dev/null
SELECT (video.create_job(p_client_ip => '192.0.2.9') ->> 'job_id') AS job \gset
SELECT video.update_job_status(:'job', 'processing') IS NOT NULL AS started \gset
SELECT video.complete_processing_step(video.start_processing_step(:'job', 'download', 1), true, 50, NULL, 40, 1000) IS NOT NULL AS stepped \gset

SELECT is(video.list_jobs(p_page => 2, p_limit => 3) -> 'pagination', '{"page": 2, "limit": 3, "total": 8, "total_pages": 3, "has_more": true}',
          'list_jobs: page 2 of 3');
SELECT is(jsonb_array_length(video.list_jobs(p_page => 3, p_limit => 3) -> 'jobs'), 2, 'list_jobs: the last page holds the rest');
SELECT is(video.list_jobs(p_page => 4, p_limit => 3) -> 'jobs', '[]', 'list_jobs: past the end, no job');
SELECT is(video.list_jobs(ARRAY['processing']) #>> '{jobs,0,job_id}', :'job', 'list_jobs: by status');
SELECT is(video.list_jobs(p_output_format => 'webm') #>> '{pagination,total}', '4', 'list_jobs: by output format');
SELECT is(video.list_jobs(p_client_ip => '192.0.2.1') #>> '{pagination,total}', '3', 'list_jobs: by client IP');
SELECT throws_ok($$SELECT video.list_jobs(ARRAY['running'])$$, '22023', NULL, 'list_jobs: an unknown status');
SELECT throws_ok($$SELECT video.list_jobs(p_limit => 101)$$, '22023', NULL, 'list_jobs: at most 100 a page');
SELECT is((SELECT count(*) FROM video.find_jobs_by_client_ip('192.0.2.0', 2)), 2::bigint, 'find_jobs_by_client_ip: limited');
SELECT is((SELECT count(*) FROM video.find_jobs_by_date_range(now() - interval '1 hour', now() + interval '1 hour')), 8::bigint,
          'find_jobs_by_date_range: the jobs of the range');
SELECT throws_ok($$SELECT * FROM video.find_jobs_by_date_range(now(), now() - interval '1 day')$$, '22023', NULL, 'find_jobs_by_date_range: an inverted range');
SELECT is((SELECT array_agg(status || ':' || health) FROM video.find_active_jobs() WHERE job_id = :'job'), '{processing:healthy}', 'find_active_jobs: with its health');
SELECT is(video.get_job_with_details(:'job') #>> '{timeline,0,step}', 'download', 'get_job_with_details: its timeline');
SELECT is(video.get_system_stats() #> '{jobs,by_status}', '{"pending": 7, "processing": 1, "uploading": 0, "completed": 0, "failed": 0, "cancelled": 0}',
          'get_system_stats: jobs by status');
SELECT is((video.get_processing_metrics(now() - interval '1 day', now() + interval '1 day') #> '{steps,0}') - 'avg_duration_ms' - 'p95_duration_ms',
          '{"step": "download", "executions": 1, "succeeded": 1, "failed": 0, "avg_cpu_usage": 40.00, "avg_memory_usage": 1000}',
          'get_processing_metrics: per step');
SELECT is(video.health_check() #>> '{checks,write_operations,status}', 'pass', 'health_check: the write check passes');

SELECT * FROM finish();
ROLLBACK;
