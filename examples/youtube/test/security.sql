-- Analytics RPCs, roles, RLS, SECURITY DEFINER, audit and the admin rate limit.
BEGIN;
SELECT plan(26);

-- every RPC: SECURITY DEFINER, search_path pinned, nothing to PUBLIC
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'youtube'::regnamespace
           AND p.proname IN ('enqueue_job', 'dequeue_jobs', 'ack_job', 'retry_job', 'dead_letter_job', 'upsert_channel', 'upsert_videos',
                             'capture_channel_stats', 'capture_video_stats', 'consume_api_quota', 'get_queue_metrics',
                             'get_channel_health', 'get_api_quota_status')
           AND p.prosecdef AND p.proconfig = '{"search_path=pg_catalog, pg_temp"}'), 13::bigint,
          'the 13 RPCs are SECURITY DEFINER with search_path pinned');
CREATE ROLE yt_nobody;
SELECT is((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'youtube'::regnamespace
           AND has_function_privilege('yt_nobody', p.oid, 'EXECUTE')), 0::bigint, 'PUBLIC may execute no function of the schema');
SET ROLE yt_nobody;
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('DISCOVER_CHANNELS')$$, '42501', NULL, 'PUBLIC cannot enqueue');
RESET ROLE;

-- the worker role: its RPCs, not the admin ones, no table
SET ROLE youtube_worker;
SELECT lives_ok($$SELECT * FROM youtube.upsert_channel('{"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "snippet": {"title": "A"}}')$$, 'worker: upsert_channel');
SELECT lives_ok($$SELECT * FROM youtube.enqueue_job('REFRESH_CHANNEL_STATS', 'UCaaaaaaaaaaaaaaaaaaaaaa')$$, 'worker: enqueue_job');
SELECT lives_ok($$SELECT * FROM youtube.consume_api_quota('search.list')$$, 'worker: consume_api_quota');
SELECT throws_ok($$SELECT youtube.retry_job(conveyor.uuid_v7())$$, '42501', NULL, 'worker cannot retry_job');
SELECT throws_ok($$SELECT * FROM youtube.get_queue_metrics()$$, '42501', NULL, 'worker cannot get_queue_metrics');
SELECT throws_ok($$SELECT * FROM youtube.get_channel_health()$$, '42501', NULL, 'worker cannot get_channel_health');
SELECT throws_ok($$SELECT * FROM youtube.get_api_quota_status()$$, '42501', NULL, 'worker cannot get_api_quota_status');
SELECT throws_ok($$SELECT * FROM youtube.channels$$, '42501', NULL, 'worker cannot read the tables');
SELECT throws_ok($$SELECT conveyor.dead_letter(conveyor.uuid_v7(), 'x')$$, '42501', NULL, 'worker cannot call conveyor''s admin functions');
RESET ROLE;

-- audit: one row per call with the role that called
SELECT results_eq($$SELECT current_user_name, arguments ->> 'job_type' FROM conveyor.audit(function => 'youtube.enqueue_job')$$,
                  $$VALUES ('youtube_worker'::text, 'REFRESH_CHANNEL_STATS'::text)$$, 'audit: enqueue_job recorded with the worker role');
SELECT is((SELECT result ->> 'was_created' FROM conveyor.audit(function => 'youtube.upsert_channel')), 'true', 'audit: the result is kept');
SELECT is((SELECT count(*) FROM conveyor.audit() WHERE function_name = 'youtube.consume_api_quota' AND current_user_name = 'youtube_worker'),
          1::bigint, 'audit: consume_api_quota recorded');

-- the admin role: analytics, RLS reads, no writes
SET ROLE youtube_admin;
SELECT results_eq($$SELECT pending_jobs, running_jobs, dead_jobs FROM youtube.get_queue_metrics()$$, $$VALUES (1, 0, 0)$$, 'get_queue_metrics');
SELECT results_eq($$SELECT current_quota_used, quota_limit, quota_remaining, risk_level FROM youtube.get_api_quota_status()$$,
                  $$VALUES (100, 10000, 9900, 'low'::text)$$, 'get_api_quota_status: search.list cost 100 of 10,000 units');
SELECT is((SELECT reset_time FROM youtube.get_api_quota_status()), (SELECT window_end FROM conveyor.quota_window('day', 'America/Los_Angeles')),
          'get_api_quota_status: the quota resets at the end of the Pacific day');
SELECT is((SELECT (reset_time AT TIME ZONE 'America/Los_Angeles')::time FROM youtube.get_api_quota_status()), '00:00'::time,
          'get_api_quota_status: ... at midnight Pacific time');
SELECT results_eq($$SELECT channel_id, consecutive_failures, data_freshness_score FROM youtube.get_channel_health('UCaaaaaaaaaaaaaaaaaaaaaa')$$,
                  $$VALUES ('UCaaaaaaaaaaaaaaaaaaaaaa'::text, 0, 1.0000::numeric)$$, 'get_channel_health: just refreshed, no failure');
SELECT throws_ok($$SELECT * FROM youtube.get_channel_health('UCbbbbbbbbbbbbbbbbbbbbbb')$$, '42704', NULL, 'get_channel_health: an unknown channel');
SELECT is((SELECT count(*) FROM youtube.channels), 1::bigint, 'admin reads the tables (RLS policy)');
SELECT throws_ok($$DELETE FROM youtube.channels$$, '42501', NULL, 'admin cannot write the tables directly');
RESET ROLE;

-- admin functions are rate limited per session user
UPDATE youtube.config SET value = 3 WHERE key = 'admin_calls_per_minute';
SELECT lives_ok($$SELECT * FROM youtube.get_queue_metrics()$$, 'get_queue_metrics: second call of the minute');
SELECT lives_ok($$SELECT * FROM youtube.get_queue_metrics()$$, 'get_queue_metrics: third call of the minute');
SELECT throws_ok($$SELECT * FROM youtube.get_queue_metrics()$$, '54000', NULL,
                 'the admin rate limit refuses the fourth get_queue_metrics call within a minute');
SELECT * FROM finish();
ROLLBACK;
