-- Monitoring and maintenance: conveyor's metrics, worker issues, entity and queue figures under the
-- specification's names.

-- Metric points (conveyor.metric_points, kept retention.metric_points_days); an INSERT records one with
-- conveyor.record_metric, stamped now (a given timestamp is not kept).
CREATE VIEW music_monitoring.pipeline_metrics AS
SELECT md5(p.metric || p.at::text || p.tags::text || p.value::text || p.xid::text)::uuid AS id,
       p.metric AS metric_name, p.value AS metric_value, p.tags, p.at AS "timestamp", p.at AS created_at
FROM conveyor.metric_points p;
CREATE FUNCTION music_monitoring.pipeline_metrics_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM conveyor.record_metric(NEW.metric_name, NEW.metric_value, coalesce(NEW.tags, '{}'));
    RETURN NEW;
END $$;
CREATE TRIGGER record INSTEAD OF INSERT ON music_monitoring.pipeline_metrics
    FOR EACH ROW EXECUTE FUNCTION music_monitoring.pipeline_metrics_insert();

CREATE VIEW music_monitoring.aggregated_metrics AS
SELECT md5(r.metric || r.period || r.bucket_start::text || r.tag_set::text)::uuid AS id, r.metric AS metric_name,
       r.period, r.bucket_start AS period_start, r.min AS min_value, r.max AS max_value, r.avg AS avg_value,
       r.sum AS sum_value, r.count::integer AS count_value, r.tag_set AS dimensions, r.rolled_at AS created_at
FROM conveyor.metric_rollups r;

CREATE VIEW music_monitoring.api_metrics AS
SELECT
  tags->>'api' AS api_name,
  date_trunc('hour', timestamp) AS hour,
  COUNT(*) AS total_calls,
  SUM(CASE WHEN tags->>'success' = 'true' THEN 1 ELSE 0 END) AS success_count,
  SUM(CASE WHEN tags->>'success' = 'false' THEN 1 ELSE 0 END) AS error_count,
  AVG(CASE WHEN tags->>'success' = 'true' THEN metric_value ELSE NULL END) AS avg_success_time_ms,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY metric_value) AS p95_time_ms
FROM
  music_monitoring.pipeline_metrics
WHERE
  metric_name = 'api_call'
  AND timestamp > now() - interval '7 days'
GROUP BY
  tags->>'api', date_trunc('hour', timestamp)
ORDER BY
  api_name, hour DESC;

-- Worker issues are conveyor's (one open issue per worker, type and message; repeats counted). An
-- INSERT reports one, an UPDATE setting resolved resolves it. issue_id is conveyor's id.
CREATE VIEW music_monitoring.worker_issues AS
SELECT md5('issue:' || i.issue_id)::uuid AS id, i.worker_name, i.issue_type, i.severity, i.message, i.details,
       i.resolved_at IS NOT NULL AS resolved, i.resolution AS resolution_details, i.first_seen AS created_at,
       i.resolved_at, i.issue_id
FROM conveyor.worker_issues i;
CREATE VIEW music.worker_issues AS
SELECT id, worker_name, issue_type, message, details, resolved, created_at,
       coalesce(resolved_at, created_at) AS updated_at, issue_id
FROM music_monitoring.worker_issues;

CREATE FUNCTION music_monitoring.worker_issues_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- music.worker_issues has neither severity nor resolution_details
    sev text := coalesce(to_jsonb(NEW) ->> 'severity', 'error');
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM conveyor.report_issue(NEW.worker_name, NEW.issue_type, sev, NEW.message, NEW.details);
        RETURN NEW;
    END IF;
    IF NEW.resolved AND NOT OLD.resolved THEN
        PERFORM conveyor.resolve_issue(OLD.issue_id, coalesce(to_jsonb(NEW) ->> 'resolution_details', 'resolved'));
    ELSIF OLD.resolved AND NOT NEW.resolved THEN
        RAISE EXCEPTION 'a resolved issue stays resolved' USING ERRCODE = '0A000', HINT = 'Report it again (INSERT).';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER write INSTEAD OF INSERT OR UPDATE ON music_monitoring.worker_issues
    FOR EACH ROW EXECUTE FUNCTION music_monitoring.worker_issues_write();
CREATE TRIGGER write INSTEAD OF INSERT OR UPDATE ON music.worker_issues
    FOR EACH ROW EXECUTE FUNCTION music_monitoring.worker_issues_write();

REVOKE ALL ON music_monitoring.pipeline_metrics, music_monitoring.aggregated_metrics, music_monitoring.api_metrics,
    music_monitoring.worker_issues, music.worker_issues FROM PUBLIC;
GRANT INSERT ON music_monitoring.pipeline_metrics, music_monitoring.worker_issues, music.worker_issues TO music_worker;
GRANT SELECT, UPDATE ON music_monitoring.worker_issues, music.worker_issues TO music_admin;
GRANT SELECT ON music_monitoring.pipeline_metrics, music_monitoring.aggregated_metrics, music_monitoring.api_metrics TO music_admin;
REVOKE ALL ON FUNCTION music_monitoring.pipeline_metrics_insert(), music_monitoring.worker_issues_write() FROM PUBLIC;

-- ---- statistics -----------------------------------------------------------------------------------
CREATE FUNCTION music.get_processing_stats()
RETURNS TABLE(entity_type text, state text, count bigint, oldest_seconds numeric)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.entity_type, s.state, s.count, s.oldest_seconds FROM conveyor.entity_stats() s
$$;

CREATE FUNCTION music.get_worker_issue_stats()
RETURNS TABLE(worker_name text, issue_type text, severity text, open_issues bigint, resolved_issues bigint,
              occurrences bigint, last_seen timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM conveyor.worker_issue_stats()
$$;

-- Every registered queue: its figures now (conveyor.queue_metrics) and the last queue monitor's check.
CREATE FUNCTION music.get_queue_monitoring_data()
RETURNS TABLE(queue_name text, display_name text, active boolean, pending bigint, scheduled bigint, running bigint,
              stuck_messages bigint, dead bigint, completed_1h bigint, failed_24h bigint,
              oldest_pending_seconds numeric, last_check_time timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.queue_name, r.display_name, r.active, m.pending, m.scheduled, m.running, m.expired_leases, m.dead,
           m.completed_1h, m.failed_24h, m.oldest_pending_seconds, v.last_check_time
    FROM music.queue_registry r
    CROSS JOIN LATERAL conveyor.queue_metrics(r.queue_name) m
    LEFT JOIN music.queue_monitoring_view v ON v.queue_name = r.queue_name
    ORDER BY r.queue_name
$$;

-- The queue monitor (seed 003's queueMonitor, as SQL): per queue, messages held longer than
-- stuck_minutes are counted and, with fix, made visible again; each check is a 'queue_monitor' event.
CREATE FUNCTION music.monitor_queues(fix boolean DEFAULT true, stuck_minutes int DEFAULT 10)
RETURNS TABLE(queue_name text, total_messages bigint, stuck_messages bigint, messages_fixed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT q.queue_name FROM music.queue_registry q ORDER BY 1 LOOP
        queue_name := r.queue_name;
        SELECT m.pending + m.scheduled + m.running INTO total_messages FROM conveyor.queue_metrics(r.queue_name) m;
        SELECT count(*) INTO stuck_messages FROM music.list_stuck_messages(r.queue_name, stuck_minutes);
        messages_fixed := CASE WHEN fix AND stuck_messages > 0 THEN music.reset_stuck_messages(r.queue_name, stuck_minutes) ELSE 0 END;
        INSERT INTO music.monitoring_events (event_type, details)
        VALUES ('queue_monitor', jsonb_build_object('queue_name', queue_name, 'totalMessagesInQueues', total_messages,
                'totalStuckMessages', stuck_messages, 'messagesFixed', messages_fixed));
        RETURN NEXT;
    END LOOP;
END $$;

-- Seed 001's document: queue, processing and worker health with its thresholds, from conveyor's
-- figures now (stuck messages: running past their visibility timeout), and conveyor.health() whole.
CREATE FUNCTION music.get_system_health() RETURNS JSONB
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h jsonb := conveyor.health();
    q jsonb;
    p jsonb;
    w jsonb;
    stuck bigint;
    failed bigint;
    issues bigint;
BEGIN
    SELECT jsonb_build_object('queues_checked', count(*), 'queues_with_issues', count(*) FILTER (WHERE d.stuck_messages > 0),
                              'total_stuck_messages', coalesce(sum(d.stuck_messages), 0), 'last_check_time', max(d.last_check_time))
    INTO q FROM music.get_queue_monitoring_data() d;
    q := q || jsonb_build_object('status', CASE WHEN (q ->> 'total_stuck_messages')::bigint > 10 THEN 'critical'
                                                WHEN (q ->> 'total_stuck_messages')::bigint > 0 THEN 'warning' ELSE 'healthy' END);
    stuck := (h -> 'entities' ->> 'stuck')::bigint;
    failed := (h -> 'entities' ->> 'failed')::bigint + (h -> 'entities' ->> 'dead')::bigint;
    p := jsonb_build_object('entities_checked', (SELECT coalesce(sum(s.count), 0) FROM conveyor.entity_stats() s),
                            'stuck_entities', stuck, 'failed_entities', failed,
                            'status', CASE WHEN stuck > 5 OR failed > 10 THEN 'critical'
                                           WHEN stuck > 0 OR failed > 0 THEN 'warning' ELSE 'healthy' END);
    issues := (h -> 'workers' ->> 'open_issues')::bigint;
    w := jsonb_build_object('total_issues', issues, 'workers_with_issues', h -> 'workers' -> 'workers_with_issues',
                            'latest_issue_time', (SELECT max(i.last_seen) FROM conveyor.worker_issues(false) i),
                            'status', CASE WHEN issues > 5 THEN 'critical' WHEN issues > 0 THEN 'warning' ELSE 'healthy' END);
    RETURN jsonb_build_object('timestamp', now(), 'queue_health', q, 'processing_health', p, 'worker_health', w,
        'overall_status', CASE WHEN 'critical' IN (q ->> 'status', p ->> 'status', w ->> 'status') THEN 'critical'
                               WHEN 'warning' IN (q ->> 'status', p ->> 'status', w ->> 'status') THEN 'warning'
                               ELSE 'healthy' END,
        'conveyor', h);
END $$;

CREATE FUNCTION music.find_inconsistent_states()
RETURNS TABLE(entity_type text, entity_id text, state text, lock_key text, issue text, details jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM conveyor.entity_inconsistencies()
$$;

-- ---- maintenance ------------------------------------------------------------------------------------
-- Entities IN_PROGRESS for longer than p_stuck_minutes (0: all of them) go back to PENDING.
CREATE FUNCTION music.reset_entity_processing_state(p_entity_type TEXT DEFAULT NULL, p_stuck_minutes INT DEFAULT 60)
RETURNS TABLE(entity_type text, entity_id text, previous_state text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM conveyor.entity_reset(p_entity_type,
                                        extract(epoch FROM music.minutes(p_stuck_minutes, 'p_stuck_minutes'))::int)
$$;

-- Leases without a heartbeat for p_stale_seconds (0: every lease) are deleted.
CREATE FUNCTION music.cleanup_stale_locks(p_stale_seconds INT DEFAULT 300)
RETURNS TABLE(entity_type text, entity_id text, worker_id text, held_seconds numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_stale_seconds IS NULL OR p_stale_seconds NOT BETWEEN 0 AND 2592000 THEN
        RAISE EXCEPTION 'p_stale_seconds must be between 0 and 2592000' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT split_part(c.key, ':', 1), substr(c.key, length(split_part(c.key, ':', 1)) + 2), c.owner, c.held_seconds
                 FROM conveyor.locks_cleanup(p_stale_seconds) c;
END $$;

-- Seed 003's signature with seed 001's result: leases without a heartbeat for the threshold are deleted
-- ('lock_deleted', with the entity's state), entities IN_PROGRESS that long go back to PENDING ('status_reset').
CREATE FUNCTION music.maintenance_clear_stale_entities(p_stale_threshold_minutes INT DEFAULT 60)
RETURNS TABLE(entity_type text, entity_id text, state text, action text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secs int := extract(epoch FROM music.minutes(p_stale_threshold_minutes, 'p_stale_threshold_minutes'))::int;
BEGIN
    RETURN QUERY
    SELECT l.entity_type, l.entity_id, coalesce(conveyor.entity_state(l.entity_type, l.entity_id) ->> 'state', 'NONE'),
           'lock_deleted'::text
    FROM music.cleanup_stale_locks(secs) l;
    RETURN QUERY
    SELECT r.entity_type, r.entity_id, 'PENDING'::text, 'status_reset'::text FROM conveyor.entity_reset(NULL, secs) r;
END $$;

-- Seed 003's cronCleanupStaleEntities: the maintenance above, stuck messages of every queue made visible,
-- and a monitoring event. (Redis keys: conveyor's dedup keys end with their message, idempotency keys
-- expire and conveyor.maintain() purges them; nothing else to clean.)
CREATE FUNCTION music.cleanup_stale_entities(p_stale_threshold_minutes INT DEFAULT 60) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
BEGIN
    SELECT jsonb_build_object('locks_deleted', count(*) FILTER (WHERE m.action = 'lock_deleted'),
                              'states_reset', count(*) FILTER (WHERE m.action = 'status_reset'))
    INTO result FROM music.maintenance_clear_stale_entities(p_stale_threshold_minutes) m;
    result := result || jsonb_build_object('messages_reset',
        (SELECT coalesce(sum(music.reset_stuck_messages(r.queue_name, p_stale_threshold_minutes)), 0) FROM music.queue_registry r));
    INSERT INTO music.monitoring_events (event_type, details) VALUES ('stale_entities_cleanup', result);
    RETURN result;
END $$;

CREATE FUNCTION music.purge_old_monitoring_events(p_days INT DEFAULT 30) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF p_days IS NULL OR p_days NOT BETWEEN 0 AND 3650 THEN
        RAISE EXCEPTION 'p_days must be between 0 and 3650' USING ERRCODE = '22023';
    END IF;
    DELETE FROM music.monitoring_events e WHERE e.created_at < now() - make_interval(days => p_days);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION music_monitoring.aggregate_hourly_metrics() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.aggregate_metrics('hour') $$;
CREATE FUNCTION music_monitoring.aggregate_daily_metrics() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.aggregate_metrics('day') $$;

REVOKE ALL ON FUNCTION music.get_processing_stats(), music.get_worker_issue_stats(), music.get_queue_monitoring_data(),
    music.monitor_queues(boolean, int), music.get_system_health(), music.find_inconsistent_states(),
    music.reset_entity_processing_state(text, int), music.cleanup_stale_locks(int), music.maintenance_clear_stale_entities(int),
    music.cleanup_stale_entities(int), music.purge_old_monitoring_events(int), music_monitoring.aggregate_hourly_metrics(),
    music_monitoring.aggregate_daily_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION music.get_processing_stats(), music.get_worker_issue_stats(), music.get_queue_monitoring_data(),
    music.monitor_queues(boolean, int), music.get_system_health(), music.find_inconsistent_states(),
    music.reset_entity_processing_state(text, int), music.cleanup_stale_locks(int), music.maintenance_clear_stale_entities(int),
    music.cleanup_stale_entities(int), music.purge_old_monitoring_events(int), music_monitoring.aggregate_hourly_metrics(),
    music_monitoring.aggregate_daily_metrics() TO music_admin;
