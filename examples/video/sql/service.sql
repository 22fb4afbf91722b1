-- The service's reads (repositories and analytics) and upkeep. The reads run as the caller
-- (SECURITY INVOKER): row-level security gives a client its own IP's jobs only, the service and the
-- admin every job. health_check writes, and runs as its owner.

-- A job with its elements, timeline (in time order), storage operations and URL access count.
CREATE FUNCTION video.get_job_with_details(p_job_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb;
BEGIN
    PERFORM video.require(p_job_id, 'p_job_id');
    SELECT to_jsonb(s) || jsonb_build_object(
        'elements', (SELECT coalesce(jsonb_agg(to_jsonb(e) - 'job_id' ORDER BY e.element_order), '[]')
                     FROM video.elements e WHERE e.job_id = s.job_id),
        'timeline', (SELECT coalesce(jsonb_agg(to_jsonb(t) - 'job_id' ORDER BY t.started_at, t.step_order), '[]')
                     FROM video.processing_timeline t WHERE t.job_id = s.job_id),
        'storage_operations', (SELECT coalesce(jsonb_agg(to_jsonb(o) - 'job_id' ORDER BY o.id), '[]')
                               FROM video.storage_operations o WHERE o.job_id = s.job_id),
        'url_accesses', (SELECT count(*) FROM video.url_access_logs l WHERE l.job_id = s.job_id))
    INTO v
    FROM video.job_summary s WHERE s.job_id = p_job_id;
    IF v IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = '42704';
    END IF;
    RETURN v;
END $$;

-- A page of jobs (job_summary rows, newest first) matching the filters, with the total count.
CREATE FUNCTION video.list_jobs(p_status text[] DEFAULT NULL, p_page integer DEFAULT 1, p_limit integer DEFAULT 20,
    p_output_format text DEFAULT NULL, p_client_ip inet DEFAULT NULL, p_created_after timestamptz DEFAULT NULL,
    p_created_before timestamptz DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_jobs jsonb;
    v_total bigint;
BEGIN
    PERFORM video.require(p_page, 'p_page');
    PERFORM video.require(p_limit, 'p_limit');
    PERFORM video.check_arg(p_status IS NULL OR cardinality(p_status) > 0 AND p_status <@ ARRAY['pending', 'processing', 'uploading', 'completed', 'failed', 'cancelled'],
        'p_status must list statuses among pending, processing, uploading, completed, failed, cancelled');
    PERFORM video.check_arg(p_page BETWEEN 1 AND 100000, 'p_page must be 1 to 100000');
    PERFORM video.check_arg(p_limit BETWEEN 1 AND 100, 'p_limit must be 1 to 100');
    PERFORM video.check_arg(p_output_format IS NULL OR p_output_format IN ('mp4', 'webm', 'mov', 'gif'), 'p_output_format must be mp4, webm, mov or gif');
    PERFORM video.check_arg(p_created_after IS NULL OR p_created_before IS NULL OR p_created_after < p_created_before,
        'p_created_after must be before p_created_before');
    WITH m AS (
        SELECT s.* FROM video.job_summary s
        WHERE (p_status IS NULL OR s.status = ANY (p_status))
          AND (p_output_format IS NULL OR s.output_format = p_output_format)
          AND (p_client_ip IS NULL OR s.client_ip = p_client_ip)
          AND (p_created_after IS NULL OR s.created_at >= p_created_after)
          AND (p_created_before IS NULL OR s.created_at < p_created_before))
    SELECT (SELECT count(*) FROM m),
           (SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.created_at DESC, p.job_id DESC), '[]')
            FROM (SELECT * FROM m ORDER BY created_at DESC, job_id DESC
                  OFFSET (p_page - 1)::bigint * p_limit LIMIT p_limit) p)
    INTO v_total, v_jobs;
    RETURN jsonb_build_object('jobs', v_jobs, 'pagination', jsonb_build_object(
        'page', p_page, 'limit', p_limit, 'total', v_total, 'total_pages', ceil(v_total::numeric / p_limit)::bigint,
        'has_more', v_total > p_page::bigint * p_limit));
END $$;

-- The jobs of one client IP, newest first.
CREATE FUNCTION video.find_jobs_by_client_ip(p_client_ip inet, p_limit integer DEFAULT 100)
RETURNS SETOF video.job_summary LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM video.require(p_client_ip, 'p_client_ip');
    PERFORM video.require(p_limit, 'p_limit');
    PERFORM video.check_arg(p_limit BETWEEN 1 AND 1000, 'p_limit must be 1 to 1000');
    RETURN QUERY SELECT * FROM video.job_summary s WHERE s.client_ip = p_client_ip
                 ORDER BY s.created_at DESC, s.job_id DESC LIMIT p_limit;
END $$;

-- The jobs created in [p_start, p_end], oldest first.
CREATE FUNCTION video.find_jobs_by_date_range(p_start timestamptz, p_end timestamptz, p_limit integer DEFAULT 100)
RETURNS SETOF video.job_summary LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM video.require(p_start, 'p_start');
    PERFORM video.require(p_end, 'p_end');
    PERFORM video.require(p_limit, 'p_limit');
    PERFORM video.check_arg(isfinite(p_start) AND isfinite(p_end), 'p_start and p_end must be finite times');
    PERFORM video.check_arg(p_start <= p_end, 'p_start must not be after p_end');
    PERFORM video.check_arg(p_limit BETWEEN 1 AND 1000, 'p_limit must be 1 to 1000');
    RETURN QUERY SELECT * FROM video.job_summary s WHERE s.created_at BETWEEN p_start AND p_end
                 ORDER BY s.created_at, s.job_id LIMIT p_limit;
END $$;

-- The active jobs (active_jobs), oldest first.
CREATE FUNCTION video.find_active_jobs(p_limit integer DEFAULT 50)
RETURNS SETOF video.active_jobs LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM video.require(p_limit, 'p_limit');
    PERFORM video.check_arg(p_limit BETWEEN 1 AND 1000, 'p_limit must be 1 to 1000');
    RETURN QUERY SELECT * FROM video.active_jobs a ORDER BY a.created_at, a.job_id LIMIT p_limit;
END $$;

-- Totals of the whole service, and the render queue's figures from conveyor.
CREATE FUNCTION video.get_system_stats() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'jobs', (SELECT jsonb_build_object(
                    'total', count(*),
                    'by_status', jsonb_build_object(
                        'pending', count(*) FILTER (WHERE status = 'pending'),
                        'processing', count(*) FILTER (WHERE status = 'processing'),
                        'uploading', count(*) FILTER (WHERE status = 'uploading'),
                        'completed', count(*) FILTER (WHERE status = 'completed'),
                        'failed', count(*) FILTER (WHERE status = 'failed'),
                        'cancelled', count(*) FILTER (WHERE status = 'cancelled')),
                    'last_24h', count(*) FILTER (WHERE created_at >= now() - interval '1 day'),
                    'success_rate', round(count(*) FILTER (WHERE status = 'completed')::numeric
                                          / nullif(count(*) FILTER (WHERE status IN ('completed', 'failed')), 0), 4),
                    'avg_processing_ms', round(avg(processing_time_ms) FILTER (WHERE status = 'completed'))::bigint,
                    'output_bytes', coalesce(sum(file_size) FILTER (WHERE status = 'completed'), 0))
                 FROM video.jobs),
        'elements', (SELECT jsonb_build_object('total', count(*), 'downloaded', count(*) FILTER (WHERE downloaded),
                                               'processed', count(*) FILTER (WHERE processed)) FROM video.elements),
        'storage', (SELECT jsonb_build_object('operations', count(*), 'failed', count(*) FILTER (WHERE NOT success),
                                              'bytes_uploaded', coalesce(sum(file_size) FILTER (WHERE operation = 'upload' AND success), 0))
                    FROM video.storage_operations),
        'queue', (SELECT to_jsonb(m) - 'queue' FROM conveyor.queue_metrics('video') m),
        'at', now())
$$;

-- Jobs and steps of the jobs created in [p_start, p_end]: counts, success rate, durations.
CREATE FUNCTION video.get_processing_metrics(p_start timestamptz, p_end timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_jobs jsonb;
    v_steps jsonb;
BEGIN
    PERFORM video.require(p_start, 'p_start');
    PERFORM video.require(p_end, 'p_end');
    PERFORM video.check_arg(isfinite(p_start) AND isfinite(p_end), 'p_start and p_end must be finite times');
    PERFORM video.check_arg(p_start <= p_end, 'p_start must not be after p_end');
    SELECT jsonb_build_object(
        'created', count(*),
        'completed', count(*) FILTER (WHERE status = 'completed'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'cancelled', count(*) FILTER (WHERE status = 'cancelled'),
        'success_rate', round(count(*) FILTER (WHERE status = 'completed')::numeric
                              / nullif(count(*) FILTER (WHERE status IN ('completed', 'failed')), 0), 4),
        'retried', count(*) FILTER (WHERE attempts > 1),
        'avg_processing_ms', round(avg(processing_time_ms) FILTER (WHERE status = 'completed'))::bigint,
        'p50_processing_ms', (percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_time_ms) FILTER (WHERE status = 'completed'))::bigint,
        'p95_processing_ms', (percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) FILTER (WHERE status = 'completed'))::bigint)
    INTO v_jobs
    FROM video.jobs WHERE created_at BETWEEN p_start AND p_end;
    SELECT coalesce(jsonb_agg(to_jsonb(x) - 'first_order' ORDER BY x.first_order, x.step), '[]') INTO v_steps FROM (
        SELECT t.step, min(t.step_order) AS first_order, count(*) AS executions,
               count(*) FILTER (WHERE t.status = 'completed') AS succeeded,
               count(*) FILTER (WHERE t.status = 'failed') AS failed,
               round(avg(t.duration_ms))::bigint AS avg_duration_ms,
               (percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms))::bigint AS p95_duration_ms,
               round(avg(t.cpu_usage), 2) AS avg_cpu_usage,
               round(avg(t.memory_usage))::bigint AS avg_memory_usage
        FROM video.processing_timeline t JOIN video.jobs j ON j.id = t.job_id
        WHERE j.created_at BETWEEN p_start AND p_end
        GROUP BY t.step) x;
    RETURN jsonb_build_object('from', p_start, 'to', p_end, 'jobs', v_jobs, 'steps', v_steps);
END $$;

-- healthy | degraded | unhealthy, from four checks: connection (this call and conveyor's health),
-- read_operations (an indexed read of the jobs), write_operations (a metric point written through
-- conveyor.record_metric), real_time (a NOTIFY sent, and the notification queue's fill).
CREATE FUNCTION video.health_check() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t0 timestamptz;
    v_conveyor jsonb;
    v_read jsonb;
    v_write jsonb;
    v_realtime jsonb;
    v_usage double precision;
    v_active bigint;
    v_status text;
BEGIN
    PERFORM video.scope();
    v_conveyor := conveyor.health();
    t0 := clock_timestamp();
    BEGIN
        SELECT count(*) INTO v_active FROM video.jobs WHERE status IN ('pending', 'processing', 'uploading');
        v_read := jsonb_build_object('status', 'pass', 'active_jobs', v_active);
    EXCEPTION WHEN OTHERS THEN
        v_read := jsonb_build_object('status', 'fail', 'error', SQLERRM);
    END;
    v_read := v_read || jsonb_build_object('duration_ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 3));
    t0 := clock_timestamp();
    BEGIN
        PERFORM conveyor.record_metric('video.health_check', 1);
        v_write := jsonb_build_object('status', 'pass');
    EXCEPTION WHEN OTHERS THEN
        v_write := jsonb_build_object('status', 'fail', 'error', SQLERRM);
    END;
    v_write := v_write || jsonb_build_object('duration_ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 3));
    BEGIN
        PERFORM pg_notify('video_health', jsonb_build_object('at', now())::text);
        v_usage := pg_notification_queue_usage();
        v_realtime := jsonb_build_object('status', CASE WHEN v_usage >= 0.5 THEN 'warn' ELSE 'pass' END,
                                         'channels', jsonb_build_array('video_job_status', 'video_timeline'),
                                         'notification_queue_usage', v_usage);
    EXCEPTION WHEN OTHERS THEN
        v_realtime := jsonb_build_object('status', 'fail', 'error', SQLERRM);
    END;
    v_status := CASE WHEN v_read ->> 'status' = 'fail' OR v_write ->> 'status' = 'fail' THEN 'unhealthy'
                     WHEN v_realtime ->> 'status' <> 'pass' OR v_conveyor ->> 'overall_status' = 'critical' THEN 'degraded'
                     ELSE 'healthy' END;
    RETURN jsonb_build_object('status', v_status, 'at', now(), 'checks', jsonb_build_object(
        'connection', jsonb_build_object('status', 'pass', 'database', current_database(),
                                         'server_version', current_setting('server_version'),
                                         'conveyor', v_conveyor ->> 'overall_status'),
        'read_operations', v_read, 'write_operations', v_write, 'real_time', v_realtime));
END $$;
