-- The functions the service requires: each one transaction, each validating every argument first.

-- Validates and inserts one element; at names the argument in messages ('p_' or 'p_elements[2].').
CREATE FUNCTION video.insert_element(job_id uuid, at text, type text, source_url text, element_order integer,
    track integer, x_position text, y_position text, width text, height text, fit_mode text,
    start_time numeric, duration numeric) RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    position_re CONSTANT text := '^-?[0-9]{1,5}(\.[0-9]{1,3})?(%|px)?$';
    id uuid;
BEGIN
    PERFORM video.require(type, at || 'type');
    PERFORM video.require(source_url, at || 'source_url');
    PERFORM video.require(element_order, at || 'element_order');
    PERFORM video.check_arg(type IN ('video', 'image', 'audio'), format('%stype %s must be video, image or audio', at, video.quoted(type)));
    PERFORM video.check_arg(source_url ~ '^https?://[^\s/?#]+[^\s]*$' AND octet_length(source_url) <= 2048,
        format('%ssource_url %s must be an http(s) URL of at most 2048 bytes', at, video.quoted(source_url)));
    PERFORM video.check_arg(element_order BETWEEN 0 AND 999, format('%selement_order must be 0 to 999, not %s', at, element_order));
    PERFORM video.check_arg(coalesce(track, 0) BETWEEN 0 AND 99, format('%strack must be 0 to 99, not %s', at, track));
    PERFORM video.check_arg(coalesce(x_position, '0') ~ position_re AND coalesce(y_position, '0') ~ position_re,
        format('%sx_position and y_position must be numbers, percentages (10%%) or pixels (120px)', at));
    PERFORM video.check_arg(coalesce(width, '1') ~ position_re AND coalesce(height, '1') ~ position_re
                            AND coalesce(width, '1') !~ '^-' AND coalesce(height, '1') !~ '^-',
        format('%swidth and height must be non-negative numbers, percentages (80%%) or pixels (640px)', at));
    PERFORM video.check_arg(coalesce(fit_mode, 'contain') IN ('contain', 'cover', 'fill', 'none'),
        format('%sfit_mode %s must be contain, cover, fill or none', at, video.quoted(fit_mode)));
    PERFORM video.check_arg(coalesce(start_time, 0) BETWEEN 0 AND 86400, format('%sstart_time must be 0 to 86400 seconds', at));
    PERFORM video.check_arg(duration IS NULL OR duration > 0 AND duration <= 86400, format('%sduration must be above 0 and at most 86400 seconds', at));
    IF EXISTS (SELECT FROM video.elements e WHERE e.job_id OPERATOR(pg_catalog.=) insert_element.job_id
               AND e.element_order OPERATOR(pg_catalog.=) insert_element.element_order) THEN
        RAISE EXCEPTION '%element_order % is taken in job %', at, element_order, job_id USING ERRCODE = '23505';
    END IF;
    INSERT INTO video.elements AS e (job_id, type, source_url, element_order, track, x_position, y_position, width,
                                     height, fit_mode, start_time, duration)
    VALUES (job_id, type, source_url, element_order, coalesce(track, 0), coalesce(x_position, '0%'),
            coalesce(y_position, '0%'), coalesce(width, '100%'), coalesce(height, '100%'),
            coalesce(fit_mode, 'contain'), coalesce(start_time, 0), duration)
    RETURNING e.id INTO id;
    RETURN id;
END $$;

------------------------------------------------------------------------------------------------------
-- create_job: the job, its elements (all or none) and its render job in the queue, in one transaction.
-- A client's job gets the client's request IP whatever p_client_ip says (a differing one is a
-- security event); clients are rate limited per IP (a refusal is a security event and creates nothing).
CREATE FUNCTION video.create_job(p_output_format text DEFAULT 'mp4', p_width integer DEFAULT 1920,
    p_height integer DEFAULT 1080, p_estimated_duration numeric DEFAULT NULL, p_client_ip inet DEFAULT NULL,
    p_user_agent text DEFAULT NULL, p_response_type text DEFAULT 'async', p_request jsonb DEFAULT NULL,
    p_elements jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_scope text := video.scope();
    v_ip inet := p_client_ip;
    v_limit record;
    v_per_minute integer;
    v_id uuid;
    v_queue_job uuid;
    v_count integer := 0;
    e jsonb;
    i integer;
BEGIN
    PERFORM video.require(p_output_format, 'p_output_format');
    PERFORM video.require(p_width, 'p_width');
    PERFORM video.require(p_height, 'p_height');
    PERFORM video.require(p_response_type, 'p_response_type');
    PERFORM video.check_arg(p_output_format IN ('mp4', 'webm', 'mov', 'gif'),
        format('p_output_format %s must be mp4, webm, mov or gif', video.quoted(p_output_format)));
    PERFORM video.check_arg(p_width BETWEEN 16 AND 7680 AND p_width % 2 = 0, format('p_width must be an even number from 16 to 7680, not %s', p_width));
    PERFORM video.check_arg(p_height BETWEEN 16 AND 4320 AND p_height % 2 = 0, format('p_height must be an even number from 16 to 4320, not %s', p_height));
    PERFORM video.check_arg(p_estimated_duration IS NULL OR p_estimated_duration > 0 AND p_estimated_duration <= 86400,
        'p_estimated_duration must be above 0 and at most 86400 seconds');
    PERFORM video.check_arg(p_response_type IN ('sync', 'async'), format('p_response_type %s must be sync or async', video.quoted(p_response_type)));
    PERFORM video.check_arg(p_user_agent IS NULL OR length(p_user_agent) <= 1000, 'p_user_agent must be at most 1000 characters');
    PERFORM video.check_arg(p_request IS NULL OR jsonb_typeof(p_request) = 'object' AND octet_length(p_request::text) <= 65536,
        'p_request must be a JSON object of at most 65536 bytes');
    PERFORM video.check_arg(p_elements IS NULL OR jsonb_typeof(p_elements) = 'array' AND jsonb_array_length(p_elements) <= 100,
        'p_elements must be a JSON array of at most 100 elements');

    IF v_scope = 'client' THEN
        v_ip := video.request_client_ip();
        IF v_ip IS NULL THEN
            RAISE EXCEPTION 'no client IP in this request' USING ERRCODE = '42501',
                HINT = 'The API sets request.client_ip (or request.headers) for each call.';
        END IF;
        IF p_client_ip IS NOT NULL AND p_client_ip IS DISTINCT FROM v_ip THEN
            PERFORM video.security_event('client_ip_mismatch', jsonb_build_object('function', 'video.create_job', 'claimed_ip', host(p_client_ip)));
        END IF;
        v_per_minute := (SELECT c.value FROM video.config c WHERE c.key = 'create_job_per_minute');
        SELECT * INTO v_limit FROM conveyor.rate_limit('video:create_job:' || host(v_ip), v_per_minute, 60);
        IF NOT v_limit.allowed THEN
            PERFORM video.security_event('rate_limited', jsonb_build_object('function', 'video.create_job', 'retry_after_ms', v_limit.retry_after_ms));
            RETURN jsonb_build_object('created', false, 'reason', 'rate_limited', 'retry_after_ms', v_limit.retry_after_ms);
        END IF;
    END IF;

    -- The render job first, so the job row is written once (one 'created' notification, version 1).
    v_id := gen_random_uuid();
    -- A sync request (a caller waits on the HTTP response) goes before async ones.
    SELECT q.job_id INTO v_queue_job FROM conveyor.enqueue('video', jsonb_build_object('video_job_id', v_id),
        job_type => 'RENDER_VIDEO', priority => CASE p_response_type WHEN 'sync' THEN 8 ELSE 5 END,
        dedup_key => 'render:' || v_id::text) AS q;
    INSERT INTO video.jobs (id, output_format, width, height, estimated_duration, client_ip, user_agent, response_type,
                            request, queue_job_id)
    VALUES (v_id, p_output_format, p_width, p_height, p_estimated_duration, v_ip, p_user_agent, p_response_type,
            coalesce(p_request, '{}'), v_queue_job);
    FOR e, i IN SELECT x.e, x.i - 1 FROM jsonb_array_elements(coalesce(p_elements, '[]')) WITH ORDINALITY AS x(e, i) LOOP
        PERFORM video.check_arg(jsonb_typeof(e) = 'object', format('p_elements[%s] must be a JSON object', i));
        PERFORM video.check_arg(NOT EXISTS (SELECT FROM jsonb_object_keys(e) k WHERE k NOT IN ('type', 'source_url', 'element_order',
            'track', 'x_position', 'y_position', 'width', 'height', 'fit_mode', 'start_time', 'duration')),
            format('p_elements[%s] has unknown fields (allowed: type, source_url, element_order, track, x_position, y_position, width, height, fit_mode, start_time, duration)', i));
        PERFORM video.check_arg(coalesce(jsonb_typeof(e -> 'element_order'), 'number') = 'number'
                                AND coalesce(jsonb_typeof(e -> 'track'), 'number') = 'number'
                                AND coalesce(e ->> 'element_order', '0') ~ '^[0-9]{1,3}$' AND coalesce(e ->> 'track', '0') ~ '^[0-9]{1,2}$'
                                AND coalesce(jsonb_typeof(e -> 'start_time'), 'number') = 'number'
                                AND coalesce(jsonb_typeof(e -> 'duration'), 'number') IN ('number', 'null'),
            format('p_elements[%s]: element_order, track, start_time and duration must be numbers (element_order and track whole)', i));
        PERFORM video.insert_element(v_id, format('p_elements[%s].', i), e ->> 'type', e ->> 'source_url',
            coalesce((e ->> 'element_order')::integer, i), (e ->> 'track')::integer, e ->> 'x_position', e ->> 'y_position',
            e ->> 'width', e ->> 'height', e ->> 'fit_mode', (e ->> 'start_time')::numeric, (e ->> 'duration')::numeric);
        v_count := v_count + 1;
    END LOOP;

    IF v_scope = 'client' THEN
        PERFORM conveyor.audit_record('video.create_job', jsonb_build_object('client_ip', host(v_ip),
            'output_format', p_output_format, 'width', p_width, 'height', p_height, 'elements', v_count),
            jsonb_build_object('job_id', v_id));
    END IF;
    RETURN jsonb_build_object('created', true, 'job_id', v_id, 'status', 'pending', 'queue_job_id', v_queue_job,
                              'elements', v_count, 'client_ip', host(v_ip));
END $$;

------------------------------------------------------------------------------------------------------
-- update_job_status: one transition of the state machine (video.status_transitions), with what comes
-- with it: started_at and the attempt count on entering processing (a previous attempt's running steps
-- are closed as failed), completed_at on a terminal status, the result on completed, the error on
-- failed and pending. A terminal status also ends the render job in the queue: failed dead-letters it
-- (reason = error code: message), cancelled cancels it. Clients may only cancel their own jobs.
CREATE FUNCTION video.update_job_status(p_job_id uuid, p_status text, p_error_message text DEFAULT NULL,
    p_error_code text DEFAULT NULL, p_result_url text DEFAULT NULL, p_file_size bigint DEFAULT NULL,
    p_actual_duration numeric DEFAULT NULL, p_worker_id text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j video.jobs;
    v_queue_status text;
BEGIN
    PERFORM video.require(p_job_id, 'p_job_id');
    PERFORM video.require(p_status, 'p_status');
    PERFORM video.check_arg(p_status IN ('pending', 'processing', 'uploading', 'completed', 'failed', 'cancelled'),
        format('p_status %s must be pending, processing, uploading, completed, failed or cancelled', video.quoted(p_status)));
    PERFORM video.check_arg(p_error_message IS NULL OR length(p_error_message) <= 2000, 'p_error_message must be at most 2000 characters');
    PERFORM video.check_arg(p_error_code IS NULL OR p_error_code ~ '^[A-Z][A-Z0-9_]{0,63}$',
        format('p_error_code %s must be 1 to 64 upper-case letters, digits or _', video.quoted(p_error_code)));
    PERFORM video.check_arg(p_result_url IS NULL OR p_result_url ~ '^(https?|s3)://[^\s]+$' AND octet_length(p_result_url) <= 2048,
        format('p_result_url %s must be an http(s) or s3 URL of at most 2048 bytes', video.quoted(p_result_url)));
    PERFORM video.check_arg(p_file_size IS NULL OR p_file_size >= 0, 'p_file_size must be 0 or more');
    PERFORM video.check_arg(p_actual_duration IS NULL OR p_actual_duration >= 0 AND p_actual_duration <= 86400,
        'p_actual_duration must be 0 to 86400 seconds');
    PERFORM video.check_arg(p_status = 'failed' OR p_error_code IS NULL AND p_status <> 'pending' OR p_status = 'pending',
        'p_error_code is only for the statuses failed and pending');
    PERFORM video.check_arg(p_status = 'completed' OR p_result_url IS NULL AND p_file_size IS NULL AND p_actual_duration IS NULL,
        'p_result_url, p_file_size and p_actual_duration are only for the status completed');
    IF p_status = 'failed' AND p_error_code IS NULL THEN
        RAISE EXCEPTION 'p_error_code must not be NULL when the status is failed' USING ERRCODE = '22004';
    END IF;

    j := video.lock_job(p_job_id);
    IF video.scope() = 'client' AND p_status <> 'cancelled' THEN
        RAISE EXCEPTION 'a client may only cancel its jobs, not set them %', p_status USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT FROM video.status_transitions t WHERE t.from_status = j.status AND t.to_status = p_status) THEN
        RAISE EXCEPTION 'job %: no transition from % to %', p_job_id, j.status, p_status USING ERRCODE = '55000',
            DETAIL = format('From %s: %s.', j.status, coalesce((SELECT string_agg(t.to_status, ', ' ORDER BY t.to_status)
                     FROM video.status_transitions t WHERE t.from_status = j.status), 'none, it is final'));
    END IF;
    PERFORM video.fence(j, p_worker_id, 'status.' || p_status, jsonb_strip_nulls(jsonb_build_object('from', j.status, 'error_code', p_error_code)));

    IF p_status = 'processing' THEN
        UPDATE video.processing_timeline SET status = 'failed', completed_at = clock_timestamp(),
            error_message = 'the attempt ended before the step did'
        WHERE job_id OPERATOR(pg_catalog.=) p_job_id AND status = 'running';
    END IF;
    UPDATE video.jobs SET
        status = p_status,
        version = version + 1,
        updated_at = clock_timestamp(),
        attempts = attempts + (p_status = 'processing')::integer,
        started_at = CASE WHEN p_status = 'processing' THEN clock_timestamp() ELSE started_at END,
        completed_at = CASE WHEN p_status IN ('completed', 'failed', 'cancelled') THEN clock_timestamp() END,
        progress = CASE WHEN p_status = 'completed' THEN 100 WHEN p_status = 'processing' THEN 0 ELSE progress END,
        current_step = CASE WHEN p_status IN ('completed', 'failed', 'cancelled', 'pending') THEN NULL ELSE current_step END,
        error_message = CASE WHEN p_status IN ('failed', 'pending') THEN p_error_message WHEN p_status = 'cancelled' THEN coalesce(p_error_message, 'cancelled') END,
        error_code = CASE WHEN p_status IN ('failed', 'pending') THEN p_error_code WHEN p_status = 'cancelled' THEN 'CANCELLED' END,
        result_url = CASE WHEN p_status = 'completed' THEN p_result_url END,
        file_size = CASE WHEN p_status = 'completed' THEN p_file_size END,
        actual_duration = CASE WHEN p_status = 'completed' THEN p_actual_duration END
    WHERE id OPERATOR(pg_catalog.=) p_job_id
    RETURNING * INTO j;

    IF p_status IN ('failed', 'cancelled') AND j.queue_job_id IS NOT NULL THEN
        v_queue_status := conveyor.get_job(j.queue_job_id) ->> 'status';
        IF v_queue_status IN ('pending', 'running') THEN
            IF p_status = 'failed' THEN
                PERFORM conveyor.dead_letter(j.queue_job_id, p_error_code || ': ' || coalesce(p_error_message, 'failed'),
                                             jsonb_build_object('video_job_id', p_job_id, 'error_code', p_error_code));
            ELSE
                PERFORM conveyor.cancel(j.queue_job_id, 'video job cancelled');
            END IF;
        END IF;
    END IF;
    IF p_status = 'cancelled' THEN
        PERFORM conveyor.audit_record('video.update_job_status', jsonb_build_object('job_id', p_job_id, 'status', p_status),
                                      jsonb_build_object('version', j.version));
    END IF;
    RETURN jsonb_build_object('job_id', j.id, 'status', j.status, 'version', j.version, 'attempts', j.attempts,
                              'updated_at', j.updated_at);
END $$;

------------------------------------------------------------------------------------------------------
-- add_job_element: one more element of a pending job (the element_order unique within the job).
CREATE FUNCTION video.add_job_element(p_job_id uuid, p_type text, p_source_url text, p_element_order integer DEFAULT 0,
    p_track integer DEFAULT 0, p_x_position text DEFAULT '0%', p_y_position text DEFAULT '0%',
    p_width text DEFAULT '100%', p_height text DEFAULT '100%', p_fit_mode text DEFAULT 'contain',
    p_start_time numeric DEFAULT 0, p_duration numeric DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j video.jobs;
BEGIN
    PERFORM video.require(p_job_id, 'p_job_id');
    j := video.lock_job(p_job_id);
    IF j.status <> 'pending' THEN
        RAISE EXCEPTION 'job % is %: elements can be added only while it is pending', p_job_id, j.status USING ERRCODE = '55000';
    END IF;
    RETURN video.insert_element(p_job_id, 'p_', p_type, p_source_url, p_element_order, p_track, p_x_position,
                                p_y_position, p_width, p_height, p_fit_mode, p_start_time, p_duration);
END $$;

------------------------------------------------------------------------------------------------------
-- update_element_status: what the worker learnt about one element; NULL keeps a field. An element is
-- processed only once downloaded; a downloaded element cannot become not downloaded while processed.
CREATE FUNCTION video.update_element_status(p_element_id uuid, p_downloaded boolean DEFAULT NULL,
    p_processed boolean DEFAULT NULL, p_local_path text DEFAULT NULL, p_source_size bigint DEFAULT NULL,
    p_error_message text DEFAULT NULL, p_worker_id text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    el video.elements;
    j video.jobs;
BEGIN
    PERFORM video.require(p_element_id, 'p_element_id');
    PERFORM video.check_arg(num_nonnulls(p_downloaded, p_processed, p_local_path, p_source_size, p_error_message) > 0,
        'nothing to update: pass at least one of p_downloaded, p_processed, p_local_path, p_source_size, p_error_message');
    PERFORM video.check_arg(p_local_path IS NULL OR p_local_path ~ '^/[^\0]*$' AND length(p_local_path) <= 1024,
        format('p_local_path %s must be an absolute path of at most 1024 characters', video.quoted(p_local_path)));
    PERFORM video.check_arg(p_source_size IS NULL OR p_source_size >= 0, 'p_source_size must be 0 or more');
    PERFORM video.check_arg(p_error_message IS NULL OR length(p_error_message) <= 2000, 'p_error_message must be at most 2000 characters');
    SELECT * INTO el FROM video.elements WHERE id OPERATOR(pg_catalog.=) p_element_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'element % does not exist', p_element_id USING ERRCODE = '42704';
    END IF;
    j := video.lock_job(el.job_id);
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service updates elements' USING ERRCODE = '42501';
    END IF;
    IF j.status NOT IN ('processing', 'uploading') THEN
        RAISE EXCEPTION 'job % is %: elements are updated only while it is processing', j.id, j.status USING ERRCODE = '55000';
    END IF;
    PERFORM video.check_arg(coalesce(p_downloaded, el.downloaded) OR NOT coalesce(p_processed, el.processed),
        'an element must be downloaded to be processed');
    PERFORM video.fence(j, p_worker_id, 'element.updated', jsonb_build_object('element_id', p_element_id));
    UPDATE video.elements SET downloaded = coalesce(p_downloaded, downloaded), processed = coalesce(p_processed, processed),
        local_path = coalesce(p_local_path, local_path), source_size = coalesce(p_source_size, source_size),
        error_message = coalesce(p_error_message, error_message), updated_at = clock_timestamp()
    WHERE id OPERATOR(pg_catalog.=) p_element_id
    RETURNING * INTO el;
    RETURN jsonb_build_object('element_id', el.id, 'job_id', el.job_id, 'downloaded', el.downloaded,
        'processed', el.processed, 'local_path', el.local_path, 'source_size', el.source_size);
END $$;

------------------------------------------------------------------------------------------------------
-- start_processing_step: a timeline row for a step of the job's current attempt; the job's current_step.
CREATE FUNCTION video.start_processing_step(p_job_id uuid, p_step text, p_step_order integer DEFAULT 0,
    p_details jsonb DEFAULT NULL, p_worker_id text DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j video.jobs;
    v_id uuid;
BEGIN
    PERFORM video.require(p_job_id, 'p_job_id');
    PERFORM video.require(p_step, 'p_step');
    PERFORM video.require(p_step_order, 'p_step_order');
    PERFORM video.check_arg(p_step IN ('validation', 'download', 'processing', 'encoding', 'upload', 'cleanup'),
        format('p_step %s must be validation, download, processing, encoding, upload or cleanup', video.quoted(p_step)));
    PERFORM video.check_arg(p_step_order BETWEEN 0 AND 999, format('p_step_order must be 0 to 999, not %s', p_step_order));
    PERFORM video.check_arg(p_details IS NULL OR jsonb_typeof(p_details) = 'object' AND octet_length(p_details::text) <= 16384,
        'p_details must be a JSON object of at most 16384 bytes');
    j := video.lock_job(p_job_id);
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service records processing steps' USING ERRCODE = '42501';
    END IF;
    IF j.status NOT IN ('processing', 'uploading') THEN
        RAISE EXCEPTION 'job % is %: steps start only while it is processing or uploading', p_job_id, j.status USING ERRCODE = '55000';
    END IF;
    IF EXISTS (SELECT FROM video.processing_timeline t WHERE t.job_id OPERATOR(pg_catalog.=) p_job_id
               AND t.attempt = j.attempts AND t.step = p_step AND t.status = 'running') THEN
        RAISE EXCEPTION 'job %: step % is already running', p_job_id, p_step USING ERRCODE = '55000';
    END IF;
    PERFORM video.fence(j, p_worker_id, 'step.started', jsonb_build_object('step', p_step, 'step_order', p_step_order));
    INSERT INTO video.processing_timeline AS t (job_id, step, step_order, attempt, details)
    VALUES (p_job_id, p_step, p_step_order, j.attempts, coalesce(p_details, '{}'))
    RETURNING t.id INTO v_id;
    UPDATE video.jobs SET current_step = p_step, version = version + 1, updated_at = clock_timestamp()
    WHERE id OPERATOR(pg_catalog.=) p_job_id;
    RETURN v_id;
END $$;

------------------------------------------------------------------------------------------------------
-- complete_processing_step: ends a running step, with its metrics; p_progress (if given) also becomes
-- the job's progress. The details are merged into the ones the step started with.
CREATE FUNCTION video.complete_processing_step(p_timeline_id uuid, p_success boolean DEFAULT true,
    p_progress numeric DEFAULT NULL, p_details jsonb DEFAULT NULL, p_cpu_usage numeric DEFAULT NULL,
    p_memory_usage bigint DEFAULT NULL, p_error_message text DEFAULT NULL, p_worker_id text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t video.processing_timeline;
    j video.jobs;
BEGIN
    PERFORM video.require(p_timeline_id, 'p_timeline_id');
    PERFORM video.require(p_success, 'p_success');
    PERFORM video.check_arg(p_progress IS NULL OR p_progress BETWEEN 0 AND 100, 'p_progress must be 0 to 100');
    PERFORM video.check_arg(p_details IS NULL OR jsonb_typeof(p_details) = 'object' AND octet_length(p_details::text) <= 16384,
        'p_details must be a JSON object of at most 16384 bytes');
    PERFORM video.check_arg(p_cpu_usage IS NULL OR p_cpu_usage BETWEEN 0 AND 12800, 'p_cpu_usage must be 0 to 12800 (percent of one core)');
    PERFORM video.check_arg(p_memory_usage IS NULL OR p_memory_usage >= 0, 'p_memory_usage must be 0 or more bytes');
    PERFORM video.check_arg(p_error_message IS NULL OR length(p_error_message) <= 2000, 'p_error_message must be at most 2000 characters');
    PERFORM video.check_arg(p_success OR p_error_message IS NOT NULL, 'p_error_message is required when p_success is false');
    SELECT * INTO t FROM video.processing_timeline WHERE id OPERATOR(pg_catalog.=) p_timeline_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'timeline step % does not exist', p_timeline_id USING ERRCODE = '42704';
    END IF;
    j := video.lock_job(t.job_id);
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service records processing steps' USING ERRCODE = '42501';
    END IF;
    IF t.status <> 'running' THEN
        RAISE EXCEPTION 'timeline step % (%) is already %', p_timeline_id, t.step, t.status USING ERRCODE = '55000';
    END IF;
    PERFORM video.fence(j, p_worker_id, 'step.' || CASE WHEN p_success THEN 'completed' ELSE 'failed' END,
                        jsonb_build_object('step', t.step, 'progress', p_progress));
    UPDATE video.processing_timeline SET status = CASE WHEN p_success THEN 'completed' ELSE 'failed' END,
        completed_at = clock_timestamp(), progress_percentage = p_progress, details = details || coalesce(p_details, '{}'),
        cpu_usage = p_cpu_usage, memory_usage = p_memory_usage, error_message = p_error_message
    WHERE id OPERATOR(pg_catalog.=) p_timeline_id
    RETURNING * INTO t;
    IF p_progress IS NOT NULL AND j.status IN ('processing', 'uploading') THEN
        UPDATE video.jobs SET progress = p_progress, version = version + 1, updated_at = clock_timestamp()
        WHERE id OPERATOR(pg_catalog.=) t.job_id;
    END IF;
    RETURN jsonb_build_object('timeline_id', t.id, 'job_id', t.job_id, 'step', t.step, 'status', t.status,
                              'duration_ms', t.duration_ms, 'progress_percentage', t.progress_percentage);
END $$;

------------------------------------------------------------------------------------------------------
-- log_storage_operation: one S3 operation, and its duration as the metric video.storage.duration_ms
-- (tags: operation, success) for conveyor's metric rollups.
CREATE FUNCTION video.log_storage_operation(p_job_id uuid, p_operation text, p_bucket text, p_key text,
    p_region text DEFAULT 'us-east-1', p_success boolean DEFAULT true, p_file_size bigint DEFAULT NULL,
    p_duration_ms integer DEFAULT NULL, p_error_message text DEFAULT NULL, p_metadata jsonb DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM video.require(p_operation, 'p_operation');
    PERFORM video.require(p_bucket, 'p_bucket');
    PERFORM video.require(p_key, 'p_key');
    PERFORM video.require(p_region, 'p_region');
    PERFORM video.require(p_success, 'p_success');
    PERFORM video.check_arg(p_operation IN ('upload', 'download', 'delete', 'head', 'copy'),
        format('p_operation %s must be upload, download, delete, head or copy', video.quoted(p_operation)));
    PERFORM video.check_arg(p_bucket ~ '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$', format('p_bucket %s is not an S3 bucket name', video.quoted(p_bucket)));
    PERFORM video.check_arg(octet_length(p_key) BETWEEN 1 AND 1024, 'p_key must be 1 to 1024 bytes');
    PERFORM video.check_arg(p_region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$', format('p_region %s is not an AWS region', video.quoted(p_region)));
    PERFORM video.check_arg(p_file_size IS NULL OR p_file_size >= 0, 'p_file_size must be 0 or more');
    PERFORM video.check_arg(p_duration_ms IS NULL OR p_duration_ms >= 0, 'p_duration_ms must be 0 or more');
    PERFORM video.check_arg(p_error_message IS NULL OR length(p_error_message) <= 2000, 'p_error_message must be at most 2000 characters');
    PERFORM video.check_arg(p_metadata IS NULL OR jsonb_typeof(p_metadata) = 'object' AND octet_length(p_metadata::text) <= 16384,
        'p_metadata must be a JSON object of at most 16384 bytes');
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service logs storage operations' USING ERRCODE = '42501';
    END IF;
    IF p_job_id IS NOT NULL AND NOT EXISTS (SELECT FROM video.jobs WHERE id OPERATOR(pg_catalog.=) p_job_id) THEN
        RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = '42704';
    END IF;
    INSERT INTO video.storage_operations AS s (job_id, operation, bucket, key, region, success, file_size, duration_ms,
                                               error_message, metadata)
    VALUES (p_job_id, p_operation, p_bucket, p_key, p_region, p_success, p_file_size, p_duration_ms, p_error_message,
            coalesce(p_metadata, '{}'))
    RETURNING s.id INTO v_id;
    IF p_duration_ms IS NOT NULL THEN
        PERFORM conveyor.record_metric('video.storage.duration_ms', p_duration_ms,
                                       jsonb_build_object('operation', p_operation, 'success', p_success));
    END IF;
    RETURN v_id;
END $$;

------------------------------------------------------------------------------------------------------
-- update_job_progress: the job's progress (0 to 100) and current step while it is processing or
-- uploading; with p_worker_id also conveyor.progress of its render job (fenced: a worker that lost
-- the lease changes nothing, 55000).
CREATE FUNCTION video.update_job_progress(p_job_id uuid, p_progress numeric, p_current_step text DEFAULT NULL,
    p_worker_id text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j video.jobs;
BEGIN
    PERFORM video.require(p_job_id, 'p_job_id');
    PERFORM video.require(p_progress, 'p_progress');
    PERFORM video.check_arg(p_progress BETWEEN 0 AND 100, format('p_progress must be 0 to 100, not %s', p_progress));
    PERFORM video.check_arg(p_current_step IS NULL OR p_current_step IN ('validation', 'download', 'processing', 'encoding', 'upload', 'cleanup'),
        format('p_current_step %s must be validation, download, processing, encoding, upload or cleanup', video.quoted(p_current_step)));
    j := video.lock_job(p_job_id);
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service reports progress' USING ERRCODE = '42501';
    END IF;
    IF j.status NOT IN ('processing', 'uploading') THEN
        RAISE EXCEPTION 'job % is %: progress is reported only while it is processing or uploading', p_job_id, j.status USING ERRCODE = '55000';
    END IF;
    IF p_worker_id IS NOT NULL THEN
        PERFORM video.check_arg(length(p_worker_id) BETWEEN 1 AND 1024, 'p_worker_id must be 1 to 1024 bytes');
        IF j.queue_job_id IS NULL OR NOT conveyor.progress(j.queue_job_id, p_worker_id, p_progress, coalesce(p_current_step, j.current_step)) THEN
            RAISE EXCEPTION 'job %: worker % does not hold its render job', p_job_id, video.quoted(p_worker_id) USING ERRCODE = '55000',
                HINT = 'Stop working on this job.';
        END IF;
    END IF;
    UPDATE video.jobs SET progress = p_progress, current_step = coalesce(p_current_step, current_step),
        version = version + 1, updated_at = clock_timestamp()
    WHERE id OPERATOR(pg_catalog.=) p_job_id
    RETURNING * INTO j;
    RETURN jsonb_build_object('job_id', j.id, 'status', j.status, 'progress', j.progress, 'current_step', j.current_step,
                              'version', j.version);
END $$;

------------------------------------------------------------------------------------------------------
-- log_url_access: one access to a job's result URL (the API logs each one it serves).
CREATE FUNCTION video.log_url_access(p_job_id uuid, p_url text, p_client_ip inet DEFAULT NULL,
    p_user_agent text DEFAULT NULL, p_status_code integer DEFAULT 200, p_response_time_ms integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM video.require(p_url, 'p_url');
    PERFORM video.require(p_status_code, 'p_status_code');
    PERFORM video.check_arg(p_url ~ '^(https?|s3)://[^\s]+$' AND octet_length(p_url) <= 2048,
        format('p_url %s must be an http(s) or s3 URL of at most 2048 bytes', video.quoted(p_url)));
    PERFORM video.check_arg(p_user_agent IS NULL OR length(p_user_agent) <= 1000, 'p_user_agent must be at most 1000 characters');
    PERFORM video.check_arg(p_status_code BETWEEN 100 AND 599, format('p_status_code must be 100 to 599, not %s', p_status_code));
    PERFORM video.check_arg(p_response_time_ms IS NULL OR p_response_time_ms >= 0, 'p_response_time_ms must be 0 or more');
    IF video.scope() = 'client' THEN
        RAISE EXCEPTION 'only the service logs URL accesses' USING ERRCODE = '42501';
    END IF;
    IF p_job_id IS NOT NULL AND NOT EXISTS (SELECT FROM video.jobs WHERE id OPERATOR(pg_catalog.=) p_job_id) THEN
        RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = '42704';
    END IF;
    INSERT INTO video.url_access_logs AS l (job_id, url, client_ip, user_agent, status_code, response_time_ms)
    VALUES (p_job_id, p_url, p_client_ip, p_user_agent, p_status_code, p_response_time_ms)
    RETURNING l.id INTO v_id;
    RETURN v_id;
END $$;
