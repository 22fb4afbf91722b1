-- Queue management RPCs: conveyor's queue 'youtube' under the contract's names and columns.

CREATE FUNCTION youtube.enqueue_job(job_type text, channel_id text DEFAULT NULL, video_ids text[] DEFAULT NULL,
                                    priority integer DEFAULT 5, scheduled_at timestamptz DEFAULT now(),
                                    dedup_key text DEFAULT NULL)
RETURNS TABLE(job_id uuid, was_duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    jt youtube.job_type;
    r record;
BEGIN
    IF job_type IS NULL THEN
        RAISE EXCEPTION 'job_type must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT job_type = ANY (enum_range(NULL::youtube.job_type)::text[]) THEN
        RAISE EXCEPTION 'job_type: unknown job type %', quote_literal(left(job_type, 200))
            USING ERRCODE = '22023', HINT = 'One of: ' || array_to_string(enum_range(NULL::youtube.job_type)::text[], ', ') || '.';
    END IF;
    jt := job_type::youtube.job_type;
    IF channel_id IS NULL AND jt <> 'DISCOVER_CHANNELS' THEN
        RAISE EXCEPTION 'channel_id must not be NULL for a % job', jt USING ERRCODE = '22004',
            HINT = 'Only DISCOVER_CHANNELS is a system job without a channel.';
    END IF;
    IF channel_id IS NOT NULL AND channel_id !~ '^UC[A-Za-z0-9_-]{22}$' THEN
        RAISE EXCEPTION 'channel_id: % is not a YouTube channel id', quote_literal(left(channel_id, 200))
            USING ERRCODE = '22023', DETAIL = 'A channel id is "UC" and 22 letters, digits, "-" or "_".';
    END IF;
    IF jt = 'REFRESH_VIDEO_STATS' AND coalesce(cardinality(video_ids), 0) = 0 THEN
        RAISE EXCEPTION 'video_ids must name at least one video for REFRESH_VIDEO_STATS' USING ERRCODE = '22023';
    END IF;
    IF jt <> 'REFRESH_VIDEO_STATS' AND video_ids IS NOT NULL THEN
        RAISE EXCEPTION 'video_ids are only for REFRESH_VIDEO_STATS jobs, not %', jt USING ERRCODE = '22023';
    END IF;
    IF cardinality(video_ids) > 1000 THEN
        RAISE EXCEPTION 'video_ids: % ids, at most 1000', cardinality(video_ids) USING ERRCODE = '22023';
    END IF;
    SELECT v.ord, v.id INTO r FROM unnest(video_ids) WITH ORDINALITY AS v(id, ord)
    WHERE v.id IS NULL OR v.id !~ '^[A-Za-z0-9_-]{11}$' ORDER BY v.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'video_ids[%]: % is not a YouTube video id', r.ord, coalesce(quote_literal(left(r.id, 200)), 'NULL')
            USING ERRCODE = '22023', DETAIL = 'A video id is 11 letters, digits, "-" or "_".';
    END IF;
    IF priority IS NOT NULL AND priority NOT BETWEEN 1 AND 10 THEN
        RAISE EXCEPTION 'priority must be 1 to 10, not %', priority USING ERRCODE = '22023';
    END IF;
    IF dedup_key = '' THEN
        RAISE EXCEPTION 'dedup_key must not be empty' USING ERRCODE = '22023', HINT = 'Pass NULL for no deduplication.';
    END IF;

    SELECT e.job_id, e.was_duplicate INTO r
    FROM conveyor.enqueue('youtube',
                          jsonb_strip_nulls(jsonb_build_object('channel_id', channel_id, 'video_ids', to_jsonb(video_ids))),
                          job_type => jt::text, group_key => channel_id, priority => coalesce(priority, 5),
                          run_at => coalesce(scheduled_at, now()), dedup_key => dedup_key) AS e;
    job_id := r.job_id;
    was_duplicate := r.was_duplicate;
    PERFORM conveyor.audit_record('youtube.enqueue_job',
        jsonb_build_object('job_type', job_type, 'channel_id', channel_id, 'video_ids', video_ids,
                           'priority', priority, 'scheduled_at', scheduled_at, 'dedup_key', dedup_key),
        jsonb_build_object('job_id', job_id, 'was_duplicate', was_duplicate));
    RETURN NEXT;
END $$;

-- channel_lock_timeout is the lease: the channel's group stays held (no other job of the channel runs)
-- until ack, or until the lease runs out and conveyor retries the job.
CREATE FUNCTION youtube.dequeue_jobs(worker_id text, max_count integer DEFAULT 1,
                                     channel_lock_timeout interval DEFAULT interval '1 hour')
RETURNS TABLE(job_id uuid, job_type text, channel_id text, video_ids text[], priority integer, payload jsonb,
              attempt_count integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    lease_seconds numeric;
    n integer := 0;
BEGIN
    IF worker_id IS NULL OR max_count IS NULL OR channel_lock_timeout IS NULL THEN
        RAISE EXCEPTION 'worker_id, max_count and channel_lock_timeout must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF worker_id = '' OR octet_length(worker_id) > 1024 THEN
        RAISE EXCEPTION 'worker_id must be 1 to 1024 bytes' USING ERRCODE = '22023';
    END IF;
    IF max_count NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_count must be 1 to 1000, not %', max_count USING ERRCODE = '22023';
    END IF;
    lease_seconds := extract(epoch FROM channel_lock_timeout);
    IF lease_seconds < 1 OR lease_seconds > 604800 THEN
        RAISE EXCEPTION 'channel_lock_timeout must be 1 second to 7 days, not %', channel_lock_timeout
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT d.job_id, d.job_type, d.payload ->> 'channel_id',
           CASE WHEN d.payload ? 'video_ids' THEN ARRAY(SELECT jsonb_array_elements_text(d.payload -> 'video_ids')) END,
           d.priority, d.payload, d.attempt
    FROM conveyor.dequeue('youtube', dequeue_jobs.worker_id, dequeue_jobs.max_count, ceil(lease_seconds)::integer) AS d;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM conveyor.audit_record('youtube.dequeue_jobs',
        jsonb_build_object('worker_id', dequeue_jobs.worker_id, 'max_count', dequeue_jobs.max_count,
                           'channel_lock_timeout', dequeue_jobs.channel_lock_timeout),
        jsonb_build_object('rows', n));
END $$;

CREATE FUNCTION youtube.ack_job(job_id uuid, success boolean, error_message text DEFAULT NULL,
                                execution_stats jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done boolean;
BEGIN
    IF job_id IS NULL OR success IS NULL THEN
        RAISE EXCEPTION 'job_id and success must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF execution_stats IS NOT NULL AND jsonb_typeof(execution_stats) <> 'object' THEN
        RAISE EXCEPTION 'execution_stats must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF (SELECT conveyor.get_job(job_id) ->> 'queue') IS DISTINCT FROM 'youtube' THEN
        RAISE EXCEPTION 'job % is not a job of this pipeline', job_id USING ERRCODE = '42704';
    END IF;
    done := conveyor.ack(job_id, success, error_message, execution_stats);
    PERFORM conveyor.audit_record('youtube.ack_job',
        jsonb_build_object('job_id', job_id, 'success', success, 'error_message', error_message,
                           'execution_stats', execution_stats),
        to_jsonb(done));
    RETURN done;
END $$;

-- Without delay_seconds: the queue's backoff for the job's attempts so far, base * 2^(attempt - 1), capped.
CREATE FUNCTION youtube.retry_job(job_id uuid, delay_seconds integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job jsonb;
    opts jsonb;
    delay integer := delay_seconds;
    done boolean;
BEGIN
    PERFORM youtube.admin_gate('retry_job');
    IF job_id IS NULL THEN
        RAISE EXCEPTION 'job_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF delay_seconds < 0 OR delay_seconds > 2592000 THEN
        RAISE EXCEPTION 'delay_seconds must be 0 to 2592000, not %', delay_seconds USING ERRCODE = '22023';
    END IF;
    job := conveyor.get_job(job_id);
    IF job ->> 'queue' IS DISTINCT FROM 'youtube' THEN
        RAISE EXCEPTION 'job % is not a job of this pipeline', job_id USING ERRCODE = '42704';
    END IF;
    IF delay IS NULL THEN
        SELECT q.options INTO opts FROM conveyor.list_queues() q WHERE q.queue = 'youtube';
        delay := least((opts ->> 'backoff_max_seconds')::numeric,
                       (opts ->> 'backoff_base_seconds')::numeric
                       * power(2, greatest((job ->> 'attempt')::integer - 1, 0)))::integer;
    END IF;
    done := conveyor.retry(job_id, delay);
    PERFORM conveyor.audit_record('youtube.retry_job',
        jsonb_build_object('job_id', job_id, 'delay_seconds', delay_seconds), to_jsonb(done));
    RETURN done;
END $$;

CREATE FUNCTION youtube.dead_letter_job(job_id uuid, reason text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done boolean;
BEGIN
    IF job_id IS NULL OR reason IS NULL THEN
        RAISE EXCEPTION 'job_id and reason must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(reason) = '' OR octet_length(reason) > 4000 THEN
        RAISE EXCEPTION 'reason must be 1 to 4000 bytes, not blank' USING ERRCODE = '22023';
    END IF;
    IF (SELECT conveyor.get_job(job_id) ->> 'queue') IS DISTINCT FROM 'youtube' THEN
        RAISE EXCEPTION 'job % is not a job of this pipeline', job_id USING ERRCODE = '42704';
    END IF;
    done := conveyor.dead_letter(job_id, reason);
    PERFORM conveyor.audit_record('youtube.dead_letter_job',
        jsonb_build_object('job_id', job_id, 'reason', reason), to_jsonb(done));
    RETURN done;
END $$;
