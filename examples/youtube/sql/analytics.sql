-- Analytics RPCs (administrators, rate limited) and the grants of every RPC.

CREATE FUNCTION youtube.get_queue_metrics()
RETURNS TABLE(pending_jobs integer, running_jobs integer, failed_jobs_24h integer, dead_jobs integer,
              avg_queue_time_minutes numeric, jobs_per_hour numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM youtube.admin_gate('get_queue_metrics');
    RETURN QUERY
    SELECT (m.pending + m.scheduled)::integer, m.running::integer, m.failed_24h::integer, m.dead::integer,
           round(m.avg_queue_seconds / 60, 2), m.jobs_per_hour
    FROM conveyor.queue_metrics('youtube') AS m;
    PERFORM conveyor.audit_record('youtube.get_queue_metrics', '{}', '{"rows": 1}');
END $$;

-- consecutive_failures: jobs of the channel that died since its latest completed job, plus the failed
-- attempts of its job in progress. data_freshness_score: 0.5 ^ (hours since the last successful
-- refresh / 24), 1 just refreshed, 0.5 after a day, 0 never.
-- (PL/pgSQL refuses an input and an output parameter of one name: the contract's function is SQL around it.)
CREATE FUNCTION youtube.channel_health(ch text)
RETURNS TABLE(channel_id text, last_successful_refresh timestamptz, consecutive_failures integer,
              avg_processing_time_seconds numeric, data_freshness_score numeric)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF ch IS NOT NULL AND ch !~ '^UC[A-Za-z0-9_-]{22}$' THEN
        RAISE EXCEPTION 'channel_id: % is not a YouTube channel id', quote_literal(left(ch, 200)) USING ERRCODE = '22023';
    END IF;
    IF ch IS NOT NULL AND NOT EXISTS (SELECT FROM youtube.channels c WHERE c.channel_id = ch) THEN
        RAISE EXCEPTION 'channel % is not known', ch USING ERRCODE = '42704';
    END IF;
    RETURN QUERY
    SELECT c.channel_id::text, r.refreshed,
           coalesce(f.failures, 0)::integer,
           f.avg_run,
           CASE WHEN r.refreshed IS NULL THEN 0::numeric
                ELSE round(power(0.5, greatest(extract(epoch FROM now() - r.refreshed), 0) / 86400.0)::numeric, 4) END
    FROM youtube.channels c
    CROSS JOIN LATERAL (SELECT greatest(c.last_refreshed_at, c.stats_captured_at) AS refreshed) r
    CROSS JOIN LATERAL (
        -- the channel's latest 1000 jobs, newest first: conveyor's group index, no scan
        SELECT (SELECT count(*) FROM jsonb_array_elements(j.jobs) x
                WHERE x ->> 'status' = 'dead'
                  AND (x ->> 'job_id')::uuid > coalesce(j.last_done, '00000000-0000-0000-0000-000000000000'))
               + coalesce((SELECT sum(greatest((x ->> 'attempt')::integer - CASE WHEN x ->> 'status' = 'running' THEN 1 ELSE 0 END, 0))
                           FROM jsonb_array_elements(j.jobs) x WHERE x ->> 'status' IN ('pending', 'running')), 0) AS failures,
               j.avg_run
        FROM (SELECT jsonb_agg(jsonb_build_object('job_id', l.job_id, 'status', l.status, 'attempt', l.attempt)) AS jobs,
                     max(l.job_id::text) FILTER (WHERE l.status = 'completed')::uuid AS last_done,
                     round(avg(extract(epoch FROM l.finished_at - l.started_at)) FILTER (WHERE l.status = 'completed'), 3) AS avg_run
              FROM conveyor.list_jobs('youtube', group_key => c.channel_id::text, lim => 1000) AS l) j
    ) f
    WHERE ch IS NULL OR c.channel_id = ch
    ORDER BY c.channel_id;
END $$;
REVOKE ALL ON FUNCTION youtube.channel_health(text) FROM PUBLIC;

CREATE FUNCTION youtube.get_channel_health(channel_id text DEFAULT NULL)
RETURNS TABLE(channel_id text, last_successful_refresh timestamptz, consecutive_failures integer,
              avg_processing_time_seconds numeric, data_freshness_score numeric)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT youtube.admin_gate('get_channel_health');
    SELECT conveyor.audit_record('youtube.get_channel_health', jsonb_build_object('channel_id', $1));
    SELECT * FROM youtube.channel_health($1);
$$;

CREATE FUNCTION youtube.get_api_quota_status()
RETURNS TABLE(current_quota_used integer, quota_limit integer, quota_remaining integer, reset_time timestamptz,
              projected_daily_usage integer, risk_level text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM youtube.admin_gate('get_api_quota_status');
    RETURN QUERY
    SELECT least(q.current_quota_used, 2147483647)::integer, q.quota_limit::integer, q.quota_remaining::integer,
           q.reset_time, least(q.projected_daily_usage, 2147483647)::integer, q.risk_level
    FROM conveyor.quota_status('youtube_data_api') AS q;
    PERFORM conveyor.audit_record('youtube.get_api_quota_status', '{}', '{"rows": 1}');
END $$;

-- Nothing to PUBLIC; the worker's RPCs to youtube_worker (and so to youtube_admin); the rest to youtube_admin.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA youtube FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    youtube.enqueue_job(text, text, text[], integer, timestamptz, text),
    youtube.dequeue_jobs(text, integer, interval),
    youtube.ack_job(uuid, boolean, text, jsonb),
    youtube.dead_letter_job(uuid, text),
    youtube.upsert_channel(jsonb),
    youtube.upsert_videos(jsonb[]),
    youtube.capture_channel_stats(text, jsonb),
    youtube.capture_video_stats(jsonb[]),
    youtube.consume_api_quota(text, integer)
TO youtube_worker;
GRANT EXECUTE ON FUNCTION
    youtube.retry_job(uuid, integer),
    youtube.get_queue_metrics(),
    youtube.get_channel_health(text),
    youtube.get_api_quota_status()
TO youtube_admin;
