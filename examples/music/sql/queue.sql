-- Queue RPCs: pgmq's calls of the specification over conveyor's queues. A message is a conveyor job of
-- the queue of the same name; its uuid is the job id, its numeric msg_id a row of music.messages.

-- The queue, registered and existing in conveyor; 42704 otherwise.
CREATE FUNCTION music.require_queue(queue_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'queue_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM music.queue_registry r WHERE r.queue_name = require_queue.queue_name) THEN
        RAISE EXCEPTION 'queue "%" is not registered', left(queue_name, 200) USING ERRCODE = '42704',
            HINT = 'Register it with music.register_queue.';
    END IF;
    RETURN queue_name;
END $$;

-- A message id as the specification passes it: a uuid (the job id) or a number (msg_id). NULL when no
-- message of that queue has it.
CREATE FUNCTION music.message_job(queue_name text, message_id text) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid;
BEGIN
    IF message_id IS NULL THEN
        RAISE EXCEPTION 'message_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(message_id) ~ '^[0-9]{1,18}$' THEN
        SELECT m.job_id INTO j FROM music.messages m
        WHERE m.msg_id = btrim(message_id)::bigint AND m.queue_name = message_job.queue_name;
    ELSIF btrim(message_id) ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        SELECT m.job_id INTO j FROM music.messages m
        WHERE m.job_id = btrim(message_id)::uuid AND m.queue_name = message_job.queue_name;
    ELSE
        RAISE EXCEPTION 'message_id "%" is neither a uuid nor a number', left(message_id, 200) USING ERRCODE = '22023';
    END IF;
    RETURN j;
END $$;

CREATE FUNCTION music.register_queue(p_queue_name TEXT, p_display_name TEXT, p_description TEXT,
                                     p_active BOOLEAN DEFAULT TRUE) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id integer;
BEGIN
    IF p_queue_name IS NULL OR p_active IS NULL THEN
        RAISE EXCEPTION 'p_queue_name and p_active must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_queue_name !~ '^[a-z][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid queue name "%"', left(p_queue_name, 200) USING ERRCODE = '22023',
            HINT = 'Queue names are 1 to 48 lowercase letters, digits and underscores, starting with a letter.';
    END IF;
    IF NOT EXISTS (SELECT FROM conveyor.list_queues() q WHERE q.queue = p_queue_name) THEN
        PERFORM conveyor.create_queue(p_queue_name, music.queue_options(p_display_name, p_description));
    ELSE
        PERFORM conveyor.alter_queue(p_queue_name, jsonb_build_object('display_name', p_display_name, 'description', p_description));
    END IF;
    IF p_active THEN PERFORM conveyor.resume_queue(p_queue_name); ELSE PERFORM conveyor.pause_queue(p_queue_name); END IF;
    INSERT INTO music.queue_registry AS r (queue_name, display_name, description, active)
    VALUES (p_queue_name, p_display_name, p_description, p_active)
    ON CONFLICT (queue_name) DO UPDATE SET display_name = EXCLUDED.display_name, description = EXCLUDED.description,
        active = EXCLUDED.active, updated_at = now()
    RETURNING r.id INTO v_id;
    RETURN v_id;
END $$;

-- Seed 001's per-queue rules.
CREATE FUNCTION music.validate_album_discovery_message(p_message JSONB) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_typeof(p_message -> 'artistId') = 'string' AND btrim(p_message ->> 'artistId') <> '', false)
$$;
CREATE FUNCTION music.validate_producer_identification_message(p_message JSONB) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_typeof(p_message -> 'trackId') = 'string' AND btrim(p_message ->> 'trackId') <> '', false)
$$;

CREATE FUNCTION music.validate_queue_message(p_queue_name TEXT, p_message JSONB) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_is_valid BOOLEAN := FALSE;
    v_error TEXT := 'Unknown message format';
BEGIN
    IF p_queue_name = 'album_discovery' THEN
        v_is_valid := music.validate_album_discovery_message(p_message);
        v_error := 'Invalid album discovery message: missing or empty artistId';
    ELSIF p_queue_name = 'producer_identification' THEN
        v_is_valid := music.validate_producer_identification_message(p_message);
        v_error := 'Invalid producer identification message: missing or empty trackId';
    ELSIF p_queue_name = 'track_discovery' THEN
        v_is_valid := coalesce(p_message ? 'albumId' AND (p_message->>'albumId') IS NOT NULL, false);
        v_error := 'Invalid track discovery message: missing or empty albumId';
    ELSE
        v_is_valid := coalesce(p_message IS NOT NULL AND jsonb_typeof(p_message) = 'object' AND p_message <> '{}'::jsonb, false);
        v_error := 'Empty or null message';
    END IF;
    IF v_is_valid THEN
        RETURN jsonb_build_object('valid', TRUE);
    END IF;
    RETURN jsonb_build_object('valid', FALSE, 'error', v_error, 'queue', p_queue_name);
END $$;

-- Sends a message; returns its msg_id. dedup_key (optional): while a message with it is waiting or being
-- processed, the same key returns that message (the Redis deduplication keys of the specification).
CREATE FUNCTION music.send_message(queue_name text, message jsonb, dedup_key text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb := music.validate_queue_message(music.require_queue(queue_name), message);
    e record;
    id bigint;
BEGIN
    IF NOT (v ->> 'valid')::boolean THEN
        RAISE EXCEPTION '%', v ->> 'error' USING ERRCODE = '22023', DETAIL = pg_catalog.left(message::text, 200);
    END IF;
    SELECT * INTO e FROM conveyor.enqueue(queue_name, message, dedup_key => dedup_key);
    IF e.was_duplicate THEN
        SELECT m.msg_id INTO id FROM music.messages m WHERE m.job_id = e.job_id;
        RETURN id;
    END IF;
    INSERT INTO music.messages (job_id, queue_name, enqueued_at) VALUES (e.job_id, queue_name, conveyor.uuid_v7_time(e.job_id))
    RETURNING msg_id INTO id;
    RETURN id;
END $$;

CREATE FUNCTION music.pg_enqueue(queue_name TEXT, message_body JSONB) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT music.send_message(queue_name, message_body)
$$;

-- pgmq.read: up to batch_size messages, each invisible for visibility_timeout seconds (0: visible
-- again at once), read_ct counting its reads. worker_id: who read it, for conveyor's job history.
CREATE FUNCTION music.pg_dequeue(queue_name TEXT, batch_size INT DEFAULT 5, visibility_timeout INT DEFAULT 60)
RETURNS TABLE(msg_id bigint, id uuid, read_ct integer, enqueued_at timestamptz, vt timestamptz, message jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    PERFORM music.require_queue(queue_name);
    IF batch_size IS NULL OR visibility_timeout IS NULL THEN
        RAISE EXCEPTION 'batch_size and visibility_timeout must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF batch_size NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 1000, not %', batch_size USING ERRCODE = '22023';
    END IF;
    IF visibility_timeout NOT BETWEEN 0 AND 604800 THEN
        RAISE EXCEPTION 'visibility_timeout must be between 0 and 604800 seconds, not %', visibility_timeout USING ERRCODE = '22023';
    END IF;
    FOR j IN SELECT * FROM conveyor.dequeue(queue_name, 'music:' || session_user, batch_size,
                                            greatest(visibility_timeout, 1)) LOOP
        IF visibility_timeout = 0 THEN
            PERFORM conveyor.requeue(j.job_id);
        END IF;
        -- a job enqueued by conveyor itself (a scheduled tick) gets its number when first read
        INSERT INTO music.messages (job_id, queue_name, enqueued_at)
        VALUES (j.job_id, pg_dequeue.queue_name, conveyor.uuid_v7_time(j.job_id)) ON CONFLICT (job_id) DO NOTHING;
        RETURN QUERY SELECT m.msg_id, j.job_id, j.attempt,
                            m.enqueued_at, CASE WHEN visibility_timeout = 0 THEN now() ELSE j.lease_until END, j.payload
                     FROM music.messages m WHERE m.job_id = j.job_id;
    END LOOP;
END $$;

-- pgmq.delete: the message is done. A message being processed is acknowledged (completed); one waiting
-- to be read again is cancelled. False when the queue has no such message (already deleted). A message
-- whose timeout lapses meanwhile (another reader reaps it) is looked at again.
CREATE FUNCTION music.pg_delete_message(queue_name TEXT, message_id TEXT) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid := music.message_job(music.require_queue(queue_name), message_id);
    s text;
BEGIN
    IF j IS NULL THEN RETURN false; END IF;
    FOR attempt IN 1..3 LOOP
        s := conveyor.get_job(j) ->> 'status';
        BEGIN
            IF s = 'running' THEN
                PERFORM conveyor.ack(j, true);
            ELSIF s = 'pending' THEN
                PERFORM conveyor.cancel(j, 'deleted while waiting');
            ELSE
                RETURN false;
            END IF;
            RETURN true;
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            IF attempt = 3 THEN RAISE; END IF;
        END;
    END LOOP;
END $$;

-- Returns a message being processed to the queue, visible at once, without counting the read.
CREATE FUNCTION music.pg_release_message(queue_name TEXT, message_id UUID) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid := music.message_job(music.require_queue(queue_name), message_id::text);
    w text;
BEGIN
    IF j IS NULL THEN RETURN false; END IF;
    w := conveyor.get_job(j) ->> 'worker_id';
    IF w IS NULL OR conveyor.get_job(j) ->> 'status' <> 'running' THEN RETURN false; END IF;
    RETURN conveyor.release(j, w);
END $$;

CREATE FUNCTION music.minutes(v int, what text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = '22004';
    END IF;
    IF v NOT BETWEEN 0 AND 43200 THEN
        RAISE EXCEPTION '% must be between 0 and 43200 minutes, not %', what, v USING ERRCODE = '22023';
    END IF;
    RETURN make_interval(mins => v);
END $$;

-- Messages read longer than min_minutes_locked ago and still not deleted (0: every message being read).
CREATE FUNCTION music.list_stuck_messages(queue_name TEXT, min_minutes_locked INT DEFAULT 10)
RETURNS TABLE(msg_id bigint, id uuid, read_ct integer, locked_since timestamptz, vt timestamptz,
              minutes_locked numeric, worker_id text, message jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.msg_id, j.job_id, j.attempt, j.started_at, j.lease_until,
           round(extract(epoch FROM now() - j.started_at) / 60, 2), j.worker_id, j.payload
    FROM conveyor.list_jobs(music.require_queue(queue_name), '{running}', lim => 1000) j
    JOIN music.messages m ON m.job_id = j.job_id
    WHERE j.started_at <= now() - music.minutes(min_minutes_locked, 'min_minutes_locked')
    ORDER BY j.started_at
$$;

-- Makes messages read longer than min_minutes_locked ago visible again; returns how many.
CREATE FUNCTION music.reset_stuck_messages(queue_name TEXT, min_minutes_locked INT DEFAULT 10) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*)::int FROM conveyor.requeue_stuck(music.require_queue(queue_name),
                                                     music.minutes(min_minutes_locked, 'min_minutes_locked'))
$$;

-- Deletes a message, trying max_attempts times with an exponential pause (0.1 s, 0.2 s, ...) when a
-- concurrent change gets in the way; true once no live message has the id (deleted now or before).
CREATE FUNCTION music.ensure_message_deleted(queue_name TEXT, message_id TEXT, max_attempts INT DEFAULT 3) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid := music.message_job(music.require_queue(queue_name), message_id);
BEGIN
    IF max_attempts IS NULL OR max_attempts NOT BETWEEN 1 AND 10 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 10, not %', coalesce(max_attempts::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF j IS NULL THEN RETURN true; END IF;
    FOR attempt IN 1..max_attempts LOOP
        BEGIN
            PERFORM music.pg_delete_message(queue_name, j::text);
            RETURN true;
        EXCEPTION WHEN object_not_in_prerequisite_state OR lock_not_available THEN
            IF attempt < max_attempts THEN PERFORM pg_sleep(0.1 * 2 ^ (attempt - 1)); END IF;
        END;
    END LOOP;
    RETURN conveyor.get_job(j) ->> 'status' NOT IN ('pending', 'running');
END $$;

-- Moves a message to its dead-letter queue: conveyor's dead jobs of the source queue, listed under
-- dlq_name by get_dlq_messages. False (with a notice) when the message is not live, as the specification.
CREATE FUNCTION music.move_to_dead_letter_queue(source_queue TEXT, dlq_name TEXT, message_id TEXT,
                                                failure_reason TEXT, metadata JSONB DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid := music.message_job(music.require_queue(source_queue), message_id);
    n bigint;
BEGIN
    IF dlq_name IS NULL OR btrim(dlq_name) = '' OR failure_reason IS NULL THEN
        RAISE EXCEPTION 'dlq_name and failure_reason are required' USING ERRCODE = '22004';
    END IF;
    IF j IS NULL OR conveyor.get_job(j) ->> 'status' NOT IN ('pending', 'running') THEN
        RAISE NOTICE 'Message % not found in queue %', message_id, source_queue;
        RETURN false;
    END IF;
    PERFORM conveyor.dead_letter(j, failure_reason, jsonb_build_object('dlq_name', dlq_name, 'custom_metadata', metadata));
    SELECT m.msg_id INTO n FROM music.messages m WHERE m.job_id = j;
    INSERT INTO music.monitoring_events (event_type, details)
    VALUES ('message_moved_to_dlq', jsonb_build_object('source_queue', source_queue, 'dlq_name', dlq_name,
            'source_message_id', message_id, 'dlq_message_id', j, 'original_msg_id', n, 'failure_reason', failure_reason,
            'timestamp', now()));
    RETURN true;
END $$;

CREATE FUNCTION music.get_dlq_messages()
RETURNS TABLE(queue_name text, source_queue text, message_id uuid, original_msg_id bigint, moved_to_dlq_at timestamptz,
              failure_reason text, custom_metadata jsonb, full_message jsonb)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(d.details ->> 'dlq_name', r.queue_name || '_dlq'), r.queue_name, d.job_id, m.msg_id, d.finished_at,
           d.reason, d.details -> 'custom_metadata',
           d.payload || jsonb_build_object('_dlq_metadata', jsonb_build_object('source_queue', r.queue_name,
               'original_message_id', m.msg_id, 'moved_at', d.finished_at, 'failure_reason', d.reason,
               'custom_metadata', d.details -> 'custom_metadata', 'read_ct', d.attempt))
    FROM music.queue_registry r
    CROSS JOIN LATERAL conveyor.dead_jobs(r.queue_name, lim => 1000) d
    LEFT JOIN music.messages m ON m.job_id = d.job_id
    ORDER BY d.finished_at DESC
$$;
CREATE VIEW music.dlq_messages AS
SELECT queue_name, source_queue, message_id, original_msg_id, moved_to_dlq_at, failure_reason, custom_metadata, full_message
FROM music.get_dlq_messages();

-- pgmq kept a table per queue (pgmq.q_<name>); conveyor keeps every queue's messages in conveyor.jobs.
-- Accepts the names 'x', 'q_x' and 'pgmq.q_x'; NULL for a queue that is not registered.
CREATE FUNCTION music.get_queue_table_name_safe(p_queue_name TEXT) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'conveyor.jobs' FROM music.queue_registry r
    WHERE r.queue_name = regexp_replace(p_queue_name, '^(pgmq\.)?q_', '')
$$;

CREATE FUNCTION music.diagnose_queue_tables(queue_name TEXT DEFAULT NULL)
RETURNS TABLE(queue_name text, registered boolean, active boolean, in_conveyor boolean, paused boolean,
              table_name text, pending bigint, scheduled bigint, running bigint, expired_leases bigint, dead bigint,
              messages_numbered bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH names AS (
        SELECT r.queue_name FROM music.queue_registry r
        UNION SELECT q.queue FROM conveyor.list_queues() q WHERE q.queue IN (SELECT x.queue_name FROM music.queue_registry x)
    )
    SELECT n.queue_name, r.id IS NOT NULL, r.active, q.queue IS NOT NULL, q.paused,
           music.get_queue_table_name_safe(n.queue_name), qm.pending, qm.scheduled, qm.running, qm.expired_leases, qm.dead,
           (SELECT count(*) FROM music.messages m WHERE m.queue_name = n.queue_name)
    FROM names n
    LEFT JOIN music.queue_registry r ON r.queue_name = n.queue_name
    LEFT JOIN conveyor.list_queues() q ON q.queue = n.queue_name
    LEFT JOIN LATERAL (SELECT * FROM conveyor.queue_metrics(q.queue) WHERE q.queue IS NOT NULL) qm ON true
    WHERE diagnose_queue_tables.queue_name IS NULL OR n.queue_name = diagnose_queue_tables.queue_name
    ORDER BY 1
$$;

-- One entry point for the message operations: delete, release, dead_letter (p_params: dlq_name,
-- reason, metadata), get.
CREATE FUNCTION music.cross_schema_queue_op(p_operation TEXT, p_queue_name TEXT, p_message_id TEXT, p_params JSONB DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j uuid := music.message_job(music.require_queue(p_queue_name), p_message_id);
BEGIN
    CASE p_operation
    WHEN 'delete' THEN
        RETURN jsonb_build_object('operation', p_operation, 'success', music.pg_delete_message(p_queue_name, p_message_id));
    WHEN 'release' THEN
        RETURN jsonb_build_object('operation', p_operation,
                                  'success', j IS NOT NULL AND music.pg_release_message(p_queue_name, j));
    WHEN 'dead_letter' THEN
        RETURN jsonb_build_object('operation', p_operation, 'success', music.move_to_dead_letter_queue(p_queue_name,
            coalesce(p_params ->> 'dlq_name', p_queue_name || '_dlq'), p_message_id,
            coalesce(p_params ->> 'reason', 'moved by cross_schema_queue_op'), p_params -> 'metadata'));
    WHEN 'get' THEN
        RETURN jsonb_build_object('operation', p_operation, 'success', j IS NOT NULL,
                                  'message', CASE WHEN j IS NOT NULL THEN conveyor.get_job(j) END);
    ELSE
        RAISE EXCEPTION 'unknown operation "%"', left(coalesce(p_operation, 'NULL'), 200) USING ERRCODE = '22023',
            HINT = 'p_operation is one of delete, release, dead_letter, get.';
    END CASE;
END $$;

REVOKE ALL ON FUNCTION music.require_queue(text), music.message_job(text, text), music.send_message(text, jsonb, text),
    music.minutes(int, text), music.validate_album_discovery_message(jsonb),
    music.validate_producer_identification_message(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION music.register_queue(text, text, text, boolean), music.validate_queue_message(text, jsonb),
    music.pg_enqueue(text, jsonb), music.pg_dequeue(text, int, int), music.pg_delete_message(text, text),
    music.pg_release_message(text, uuid), music.list_stuck_messages(text, int), music.reset_stuck_messages(text, int),
    music.ensure_message_deleted(text, text, int), music.move_to_dead_letter_queue(text, text, text, text, jsonb),
    music.get_dlq_messages(), music.get_queue_table_name_safe(text), music.diagnose_queue_tables(text),
    music.cross_schema_queue_op(text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION music.validate_queue_message(text, jsonb), music.pg_enqueue(text, jsonb),
    music.pg_dequeue(text, int, int), music.pg_delete_message(text, text), music.pg_release_message(text, uuid),
    music.ensure_message_deleted(text, text, int), music.move_to_dead_letter_queue(text, text, text, text, jsonb)
    TO music_worker;
GRANT EXECUTE ON FUNCTION music.register_queue(text, text, text, boolean), music.list_stuck_messages(text, int),
    music.reset_stuck_messages(text, int), music.get_dlq_messages(), music.get_queue_table_name_safe(text),
    music.diagnose_queue_tables(text), music.cross_schema_queue_op(text, text, text, jsonb) TO music_admin;
REVOKE ALL ON music.dlq_messages FROM PUBLIC;
GRANT SELECT ON music.dlq_messages TO music_admin;
