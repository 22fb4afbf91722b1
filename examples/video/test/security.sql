-- Roles, RLS by client IP, SECURITY DEFINER, grants, security events, the client rate limit.
BEGIN;
SELECT plan(38);

SELECT is(array_agg(p.proname::text ORDER BY p.proname),
          '{add_job_element,complete_processing_step,create_job,health_check,log_storage_operation,log_url_access,start_processing_step,update_element_status,update_job_progress,update_job_status}',
          'the writing functions are SECURITY DEFINER with search_path pinned')
FROM pg_proc p WHERE p.pronamespace = 'video'::regnamespace AND p.prosecdef AND p.proconfig = '{"search_path=pg_catalog, pg_temp"}';
SELECT is(count(*), 0::bigint, 'every function of the schema pins its search_path')
FROM pg_proc p WHERE p.pronamespace = 'video'::regnamespace AND p.proconfig IS DISTINCT FROM '{"search_path=pg_catalog, pg_temp"}';
CREATE ROLE video_nobody;
SELECT is(count(*), 0::bigint, 'PUBLIC may execute no function of the schema')
FROM pg_proc p WHERE p.pronamespace = 'video'::regnamespace AND has_function_privilege('video_nobody', p.oid, 'EXECUTE');
SELECT is(count(*), 0::bigint, 'PUBLIC may read no table or view of the schema')
FROM pg_class c WHERE c.relnamespace = 'video'::regnamespace AND c.relkind IN ('r', 'v') AND has_table_privilege('video_nobody', c.oid, 'SELECT');
SELECT is(count(*), 7::bigint, 'row-level security on every table') FROM pg_class
WHERE relnamespace = 'video'::regnamespace AND relkind = 'r' AND relrowsecurity;
SELECT is(count(*), 5::bigint, 'the five views of jobs run as their caller')
FROM pg_class WHERE relnamespace = 'video'::regnamespace AND relkind = 'v' AND reloptions @> '{security_invoker=true}';

-- jobs of two client IPs, made by the service
SELECT (video.create_job(p_client_ip => '203.0.113.1', p_elements => '[{"type": "image", "source_url": "https://e.com/a.png"}]') ->> 'job_id') AS mine,
       (video.create_job(p_client_ip => '203.0.113.2', p_elements => '[{"type": "image", "source_url": "https://e.com/b.png"}]') ->> 'job_id') AS theirs \gset
SELECT video.log_url_access(:'mine', 'https://cdn.example.com/a.mp4', '203.0.113.1') > 0 AS logged \gset

SET LOCAL ROLE video_client;
SELECT is((SELECT count(*) FROM video.jobs), 0::bigint, 'client without a request IP: no job');
SELECT throws_ok($$SELECT video.create_job()$$, '42501', 'no client IP in this request', 'client without a request IP: cannot create');
SET LOCAL request.client_ip = '203.0.113.1';
SELECT results_eq($$SELECT id::text FROM video.jobs$$, ARRAY[:'mine'], 'client: its own IP''s job only');
SELECT is((SELECT count(*) FROM video.elements), 1::bigint, 'client: its own job''s elements only');
SELECT is((SELECT count(*) FROM video.job_summary), 1::bigint, 'client: job_summary shows its own job only');
SELECT is((SELECT count(*) FROM video.url_access_logs), 1::bigint, 'client: its own job''s URL accesses');
SELECT is(video.list_jobs() #>> '{pagination,total}', '1', 'client: list_jobs counts its own job only');
SELECT is((SELECT count(*) FROM video.find_jobs_by_client_ip('203.0.113.2')), 0::bigint, 'client: find_jobs_by_client_ip of another IP finds nothing');
SELECT throws_ok(format($$SELECT video.get_job_with_details(%L)$$, :'theirs'), '42704', NULL, 'client: another IP''s job does not exist for it');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'cancelled')$$, :'theirs'), '42704', NULL, 'client: cannot cancel another IP''s job');
SELECT throws_ok(format($$SELECT video.add_job_element(%L, 'image', 'https://e.com/c.png', 1)$$, :'theirs'), '42704', NULL, 'client: cannot add to another IP''s job');
SELECT throws_ok(format($$SELECT video.update_job_status(%L, 'processing')$$, :'mine'), '42501', NULL, 'client: may not start its job');
SELECT throws_ok(format($$SELECT video.start_processing_step(%L, 'download')$$, :'mine'), '42501', NULL, 'client: may not call the worker''s functions');
SELECT throws_ok($$SELECT video.get_system_stats()$$, '42501', NULL, 'client: no system stats');
SELECT throws_ok($$SELECT * FROM video.system_metrics$$, '42501', NULL, 'client: no metrics');
SELECT throws_ok($$INSERT INTO video.jobs (output_format, width, height) VALUES ('mp4', 640, 480)$$, '42501', NULL, 'client: no direct write');
SELECT ok(video.add_job_element(:'mine', 'audio', 'https://e.com/a.mp3', 1) IS NOT NULL, 'client: adds an element to its own pending job');
SELECT is(video.create_job(p_client_ip => '10.9.9.9') ->> 'client_ip', '203.0.113.1', 'client: its job gets the request IP, not the one it claims');
SELECT is(video.update_job_status(:'mine', 'cancelled') ->> 'status', 'cancelled', 'client: cancels its own job');
RESET request.client_ip;
SET LOCAL request.headers = '{"x-forwarded-for": "203.0.113.2, 10.0.0.1", "user-agent": "curl"}';
SELECT results_eq($$SELECT id::text FROM video.jobs$$, ARRAY[:'theirs'], 'client: the first x-forwarded-for address of request.headers when request.client_ip is unset');
SET LOCAL request.headers = '{"x-forwarded-for": "not an address"}';
SELECT is((SELECT count(*) FROM video.jobs), 0::bigint, 'client: an invalid address sees nothing');
RESET ROLE;

SELECT is((SELECT arguments ->> 'claimed_ip' FROM conveyor.audit(function => 'video.security_event') WHERE arguments ->> 'event' = 'client_ip_mismatch'),
          '10.9.9.9', 'security event: the claimed IP that differed from the request''s');
SELECT is((SELECT count(*) FROM conveyor.audit(function => 'video.update_job_status') WHERE current_user_name = 'video_client'), 1::bigint,
          'audit: the client''s cancellation');

-- the rate limit of create_job per client IP
UPDATE video.config SET value = 2 WHERE key = 'create_job_per_minute';
SET LOCAL ROLE video_client;
SET LOCAL request.client_ip = '198.18.0.1';
SELECT video.create_job() ->> 'created' AS c1, video.create_job() ->> 'created' AS c2 \gset
SELECT is(video.create_job() - 'retry_after_ms', '{"created": false, "reason": "rate_limited"}', 'client: the third create_job in a minute is refused');
RESET ROLE;
SELECT is((SELECT count(*) FROM conveyor.audit(function => 'video.security_event') WHERE arguments ->> 'event' = 'rate_limited'
           AND arguments ->> 'client_ip' = '198.18.0.1'), 1::bigint, 'security event: the refusal, with the IP');

-- the service sees every job, and so does the admin
SET LOCAL ROLE video_service;
SELECT is((SELECT count(*) FROM video.jobs), 5::bigint, 'service: every job, whatever its IP');
RESET ROLE;
SET LOCAL ROLE video_admin;
SELECT is((SELECT count(*) FROM video.job_summary), 5::bigint, 'admin: every job');
RESET ROLE;

-- retention: conveyor.maintain() purges the old rows by the rules install.sql defined, as the tables' owner
SELECT is((SELECT array_agg(target::text || ' ' || time_column || ' ' || keep ORDER BY target::text) FROM conveyor.retention_rules()),
          ARRAY['video.jobs completed_at 90 days', 'video.storage_operations created_at 90 days', 'video.url_access_logs accessed_at 30 days'],
          'install.sql defined the retention rules');
INSERT INTO video.jobs (status, output_format, width, height, completed_at)
VALUES ('completed', 'mp4', 640, 480, now() - interval '91 days') RETURNING id AS old_job \gset
INSERT INTO video.url_access_logs (url, status_code, accessed_at) VALUES ('https://example.com/old', 200, now() - interval '31 days');
INSERT INTO video.url_access_logs (url, status_code, accessed_at) VALUES ('https://example.com/new', 200, now() - interval '29 days');
SELECT is((conveyor.maintain() ->> 'retention_rows_deleted')::int, 2, 'maintain() deletes the old finished job and the old access log');
SELECT is((SELECT count(*) FROM video.jobs WHERE id = :'old_job'), 0::bigint, 'the job finished 91 days ago is gone');
SELECT is((SELECT array_agg(url) FROM video.url_access_logs WHERE url LIKE 'https://example.com/%'), ARRAY['https://example.com/new'],
          'the access log of 31 days ago is gone, the one of 29 days stays');
SELECT is((SELECT count(*) FROM video.jobs), 5::bigint, 'the recent jobs stay');

SELECT * FROM finish();
ROLLBACK;
