-- Helpers of the functions (EXECUTE revoked from everyone: only their owner's functions call them).

-- 22004 naming the parameter when value is NULL.
CREATE FUNCTION video.require(value anyelement, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name USING ERRCODE = '22004';
    END IF;
END $$;

-- 22023 with message when ok is not true.
CREATE FUNCTION video.check_arg(ok boolean, message text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(ok, false) THEN
        RAISE EXCEPTION '%', message USING ERRCODE = '22023';
    END IF;
END $$;

-- A value quoted in a message: its first 100 characters.
CREATE FUNCTION video.quoted(v text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN length(v) > 100 THEN quote_literal(left(v, 100)) || '...' ELSE coalesce(quote_literal(v), 'NULL') END
$$;

-- The caller's scope, or 42501 when the caller holds none of the video roles.
CREATE FUNCTION video.scope() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text := video.caller_scope();
BEGIN
    IF s IS NULL THEN
        RAISE EXCEPTION 'the caller holds none of video_client, video_service, video_admin' USING ERRCODE = '42501';
    END IF;
    RETURN s;
END $$;

-- A security event: one row in conveyor's audit log under video.security_event.
CREATE FUNCTION video.security_event(kind text, details jsonb) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT NULL::void FROM conveyor.audit_record('video.security_event',
        jsonb_build_object('event', kind, 'client_ip', host(video.request_client_ip()), 'scope', video.caller_scope()) || details)
$$;

-- Locks a job row for an update. A client may only act on its own IP's jobs: another IP's job is
-- "not found" (42704), as RLS hides it from that client's reads.
CREATE FUNCTION video.lock_job(job_id uuid) RETURNS video.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j video.jobs;
BEGIN
    PERFORM video.require(job_id, 'job_id');
    SELECT * INTO j FROM video.jobs WHERE id OPERATOR(pg_catalog.=) lock_job.job_id FOR UPDATE;
    IF NOT FOUND OR (video.scope() = 'client' AND j.client_ip IS DISTINCT FROM video.request_client_ip()) THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = '42704';
    END IF;
    RETURN j;
END $$;

-- The fence of a worker's write: with a worker_id, the job's conveyor job must be running under that
-- worker (conveyor.job_log records the event in its trail and answers false otherwise): a worker whose
-- lease was lost changes nothing (55000). Without a worker_id, nothing is checked.
CREATE FUNCTION video.fence(j video.jobs, worker_id text, event text, details jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF worker_id IS NULL THEN
        RETURN;
    END IF;
    PERFORM video.check_arg(length(worker_id) BETWEEN 1 AND 1024, 'p_worker_id must be 1 to 1024 bytes');
    IF j.queue_job_id IS NULL OR NOT conveyor.job_log(j.queue_job_id, worker_id, event, details) THEN
        RAISE EXCEPTION 'job %: worker % does not hold its render job', j.id, video.quoted(worker_id)
            USING ERRCODE = '55000', DETAIL = 'The lease ran out or the job finished; another worker may hold it.',
                  HINT = 'Stop working on this job.';
    END IF;
END $$;

-- Realtime: every change of a job (insert, status, progress, step) on video_job_status (all jobs) and
-- video_job_status:<job id> (that job); every timeline row written on video_timeline and
-- video_timeline:<job id>. Sent at commit, in commit order. No client IP, user agent or URL in them:
-- any role may LISTEN on any channel.
CREATE FUNCTION video.notify_job_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload text;
BEGIN
    payload := jsonb_build_object(
        'event', CASE WHEN TG_OP = 'INSERT' THEN 'created' WHEN OLD.status IS DISTINCT FROM NEW.status THEN 'status' ELSE 'progress' END,
        'job_id', NEW.id, 'version', NEW.version,
        'old_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, 'new_status', NEW.status,
        'progress', NEW.progress, 'current_step', NEW.current_step, 'attempt', NEW.attempts,
        'error_code', NEW.error_code, 'at', NEW.updated_at)::text;
    PERFORM pg_notify('video_job_status', payload);
    PERFORM pg_notify('video_job_status:' || NEW.id::text, payload);
    RETURN NULL;
END $$;
CREATE TRIGGER notify_job_created AFTER INSERT ON video.jobs
    FOR EACH ROW EXECUTE FUNCTION video.notify_job_change();
CREATE TRIGGER notify_job_change AFTER UPDATE ON video.jobs
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION video.notify_job_change();

CREATE FUNCTION video.notify_timeline_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload text;
BEGIN
    payload := jsonb_build_object(
        'event', CASE WHEN TG_OP = 'INSERT' THEN 'step_started' ELSE 'step_' || NEW.status END,
        'timeline_id', NEW.id, 'job_id', NEW.job_id, 'step', NEW.step, 'step_order', NEW.step_order,
        'attempt', NEW.attempt, 'status', NEW.status, 'progress_percentage', NEW.progress_percentage,
        'duration_ms', NEW.duration_ms, 'at', coalesce(NEW.completed_at, NEW.started_at))::text;
    PERFORM pg_notify('video_timeline', payload);
    PERFORM pg_notify('video_timeline:' || NEW.job_id::text, payload);
    RETURN NULL;
END $$;
CREATE TRIGGER notify_timeline_change AFTER INSERT OR UPDATE ON video.processing_timeline
    FOR EACH ROW EXECUTE FUNCTION video.notify_timeline_change();
