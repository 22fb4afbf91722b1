-- Processing states and locks: the specification's processing_status and processing_locks are views of
-- conveyor's entity states and leases (lease key '<entity_type>:<entity_id>'); the writes its workers make
-- to them (INSERT, UPDATE, DELETE) are turned into conveyor's calls by INSTEAD OF triggers.

CREATE FUNCTION music.check_entity(entity_type text, entity_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF entity_type IS NULL OR entity_id IS NULL THEN
        RAISE EXCEPTION 'entity_type and entity_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF entity_type !~ '^[a-z_]{1,64}$' THEN
        RAISE EXCEPTION 'invalid entity_type "%"', left(entity_type, 200) USING ERRCODE = '22023',
            HINT = 'Entity types are 1 to 64 lowercase letters or underscores (artist, album, track, producer).';
    END IF;
    IF entity_id = '' OR octet_length(entity_id) > 512 THEN
        RAISE EXCEPTION 'entity_id must be 1 to 512 bytes' USING ERRCODE = '22023';
    END IF;
END $$;

-- A FAILED entity marked dead_lettered is conveyor's DEAD.
CREATE VIEW music.processing_status AS
SELECT md5(e.entity_type || ':' || e.entity_id)::uuid AS id, e.entity_type, e.entity_id,
       CASE WHEN e.state = 'DEAD' THEN 'FAILED' ELSE e.state END AS state,
       e.last_processed_at, e.last_error, e.metadata, e.attempts, e.created_at, e.updated_at,
       e.state = 'DEAD' AS dead_lettered
FROM conveyor.entities e;

CREATE FUNCTION music.processing_status_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text;
BEGIN
    PERFORM music.check_entity(NEW.entity_type, NEW.entity_id);
    IF NEW.state IS NULL OR NEW.state NOT IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED') THEN
        RAISE EXCEPTION 'invalid processing state "%"', coalesce(NEW.state, 'NULL') USING ERRCODE = '22023',
            HINT = 'state is one of PENDING, IN_PROGRESS, COMPLETED, FAILED (dead_lettered marks a FAILED one dead).';
    END IF;
    target := CASE WHEN coalesce(NEW.dead_lettered, false) THEN 'DEAD' ELSE NEW.state END;
    IF TG_OP = 'INSERT' THEN
        IF conveyor.entity_state(NEW.entity_type, NEW.entity_id) IS NOT NULL THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "processing_status_entity_type_entity_id_key"'
                USING ERRCODE = '23505', DETAIL = format('Key (entity_type, entity_id)=(%s, %s) already exists.', NEW.entity_type, NEW.entity_id);
        END IF;
        PERFORM conveyor.entity_set(NEW.entity_type, NEW.entity_id, target, NEW.last_error, coalesce(NEW.metadata, '{}'));
        RETURN NEW;
    END IF;
    IF (NEW.entity_type, NEW.entity_id) IS DISTINCT FROM (OLD.entity_type, OLD.entity_id) THEN
        RAISE EXCEPTION 'an entity''s type and id cannot change' USING ERRCODE = '0A000';
    END IF;
    IF target <> (CASE WHEN OLD.dead_lettered THEN 'DEAD' ELSE OLD.state END)
       OR NEW.last_error IS DISTINCT FROM OLD.last_error OR NEW.metadata IS DISTINCT FROM OLD.metadata
       OR (target = 'IN_PROGRESS' AND NEW.last_processed_at IS DISTINCT FROM OLD.last_processed_at) THEN
        PERFORM conveyor.entity_set(NEW.entity_type, NEW.entity_id, target,
                                    CASE WHEN NEW.last_error IS DISTINCT FROM OLD.last_error THEN NEW.last_error END,
                                    CASE WHEN NEW.metadata IS DISTINCT FROM OLD.metadata THEN coalesce(NEW.metadata, '{}') END);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER write INSTEAD OF INSERT OR UPDATE ON music.processing_status
    FOR EACH ROW EXECUTE FUNCTION music.processing_status_write();

CREATE VIEW music.processing_locks AS
SELECT md5(l.key)::uuid AS id, split_part(l.key, ':', 1) AS entity_type,
       substr(l.key, length(split_part(l.key, ':', 1)) + 2) AS entity_id,
       l.owner AS worker_id, l.correlation_id, l.acquired_at, l.last_heartbeat,
       coalesce(l.metadata, '{}') AS metadata, l.ttl_seconds, l.token, l.is_stale
FROM conveyor.locks_view l
WHERE l.key LIKE '%:%';

CREATE FUNCTION music.processing_locks_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.entity_type || ':' || OLD.entity_id;
        IF NOT conveyor.lock_release(k, OLD.worker_id, OLD.token) THEN
            RETURN NULL;   -- taken over or gone meanwhile: not this row any more
        END IF;
        RETURN OLD;
    END IF;
    PERFORM music.check_entity(NEW.entity_type, NEW.entity_id);
    IF NEW.worker_id IS NULL OR NEW.worker_id = '' THEN
        RAISE EXCEPTION 'worker_id must not be empty' USING ERRCODE = '22004';
    END IF;
    k := NEW.entity_type || ':' || NEW.entity_id;
    IF TG_OP = 'INSERT' THEN
        IF conveyor.lock_acquire(k, NEW.worker_id, coalesce(NEW.ttl_seconds, 1800), NEW.correlation_id,
                                 coalesce(NEW.metadata, '{}')) IS NULL THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "processing_locks_entity_type_entity_id_key"'
                USING ERRCODE = '23505', DETAIL = format('Key (entity_type, entity_id)=(%s, %s) is locked by another worker.',
                                                         NEW.entity_type, NEW.entity_id);
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.entity_type, NEW.entity_id) IS DISTINCT FROM (OLD.entity_type, OLD.entity_id) THEN
        RAISE EXCEPTION 'a lock''s entity cannot change' USING ERRCODE = '0A000';
    END IF;
    IF NEW.worker_id <> OLD.worker_id THEN
        -- the row is handed to another worker: the old lease goes, the new holder gets a new token
        PERFORM conveyor.lock_force_release(k);
        PERFORM conveyor.lock_acquire(k, NEW.worker_id, coalesce(NEW.ttl_seconds, OLD.ttl_seconds), NEW.correlation_id, NEW.metadata);
    ELSIF NEW.ttl_seconds IS DISTINCT FROM OLD.ttl_seconds OR NEW.correlation_id IS DISTINCT FROM OLD.correlation_id
          OR NEW.metadata IS DISTINCT FROM OLD.metadata THEN
        IF conveyor.lock_acquire(k, NEW.worker_id, coalesce(NEW.ttl_seconds, OLD.ttl_seconds), NEW.correlation_id, NEW.metadata) IS NULL THEN
            RETURN NULL;
        END IF;
    ELSIF NEW.last_heartbeat IS DISTINCT FROM OLD.last_heartbeat THEN
        IF NOT conveyor.lock_heartbeat(k, NEW.worker_id, OLD.token) THEN
            RETURN NULL;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER write INSTEAD OF INSERT OR UPDATE OR DELETE ON music.processing_locks
    FOR EACH ROW EXECUTE FUNCTION music.processing_locks_write();

REVOKE ALL ON music.processing_status, music.processing_locks FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON music.processing_status TO music_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON music.processing_locks TO music_worker;
REVOKE ALL ON FUNCTION music.check_entity(text, text), music.processing_status_write(),
    music.processing_locks_write() FROM PUBLIC;

-- ---- state functions ------------------------------------------------------------------------------

-- Seed 001's state machine, which is conveyor's: new, PENDING and FAILED -> IN_PROGRESS; IN_PROGRESS
-- older than the timeout -> IN_PROGRESS again (a recovery); COMPLETED (and dead-lettered) -> false.
CREATE FUNCTION music.acquire_processing_lock(p_entity_type TEXT, p_entity_id TEXT, p_timeout_minutes INT DEFAULT 30,
                                              p_correlation_id TEXT DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM music.check_entity(p_entity_type, p_entity_id);
    PERFORM music.minutes(p_timeout_minutes, 'p_timeout_minutes');
    RETURN conveyor.entity_acquire(p_entity_type, p_entity_id, p_timeout_minutes * 60, p_correlation_id);
END $$;

-- Ends processing: the entity's lease goes; an entity still IN_PROGRESS (its worker did not record an
-- outcome) goes back to PENDING. True when there was a lease or an IN_PROGRESS state to release.
CREATE FUNCTION music.release_processing_lock(p_entity_type TEXT, p_entity_id TEXT) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    released boolean;
BEGIN
    PERFORM music.check_entity(p_entity_type, p_entity_id);
    released := conveyor.lock_force_release(p_entity_type || ':' || p_entity_id);
    IF conveyor.entity_state(p_entity_type, p_entity_id) ->> 'state' = 'IN_PROGRESS' THEN
        PERFORM conveyor.entity_set(p_entity_type, p_entity_id, 'PENDING', metadata => '{"released": true}');
        released := true;
    END IF;
    RETURN released;
END $$;

-- The worker's lease lives on, and so does its entity (an IN_PROGRESS entity's timeout restarts).
-- False when p_worker_id does not hold the lease.
CREATE FUNCTION music.update_lock_heartbeat(p_entity_type TEXT, p_entity_id TEXT, p_worker_id TEXT,
                                            p_correlation_id TEXT DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text := p_entity_type || ':' || p_entity_id;
BEGIN
    PERFORM music.check_entity(p_entity_type, p_entity_id);
    IF p_worker_id IS NULL THEN
        RAISE EXCEPTION 'p_worker_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT conveyor.lock_heartbeat(k, p_worker_id) THEN
        RETURN false;
    END IF;
    IF p_correlation_id IS NOT NULL THEN
        PERFORM conveyor.lock_acquire(k, p_worker_id, (SELECT l.ttl_seconds FROM conveyor.locks_view l WHERE l.key = k),
                                      p_correlation_id, (SELECT l.metadata FROM conveyor.locks_view l WHERE l.key = k));
    END IF;
    IF conveyor.entity_state(p_entity_type, p_entity_id) ->> 'state' = 'IN_PROGRESS' THEN
        PERFORM conveyor.entity_set(p_entity_type, p_entity_id, 'IN_PROGRESS');
    END IF;
    RETURN true;
END $$;

-- Takes over a lease whose holder stopped heartbeating (or a free one); the entity is then IN_PROGRESS
-- under the new worker, one attempt more. False while another worker's lease is live.
CREATE FUNCTION music.claim_stale_lock(p_entity_type TEXT, p_entity_id TEXT, p_new_worker_id TEXT,
                                       p_correlation_id TEXT DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text := p_entity_type || ':' || p_entity_id;
    ttl int;
BEGIN
    PERFORM music.check_entity(p_entity_type, p_entity_id);
    IF p_new_worker_id IS NULL OR p_new_worker_id = '' THEN
        RAISE EXCEPTION 'p_new_worker_id must not be empty' USING ERRCODE = '22004';
    END IF;
    SELECT l.ttl_seconds INTO ttl FROM conveyor.locks_view l WHERE l.key = k;
    IF conveyor.lock_acquire(k, p_new_worker_id, coalesce(ttl, (SELECT s.value::int FROM music.settings s
                                                                WHERE s.key = 'stale_lock_ttl_seconds')),
                             p_correlation_id) IS NULL THEN
        RETURN false;
    END IF;
    -- the claim is a new attempt at the entity: back to PENDING, then acquired as entity_acquire counts it
    IF coalesce(conveyor.entity_state(p_entity_type, p_entity_id) ->> 'state', '') NOT IN ('COMPLETED', 'DEAD') THEN
        PERFORM conveyor.entity_set(p_entity_type, p_entity_id, 'PENDING',
                                    metadata => jsonb_build_object('claimed_by', p_new_worker_id));
        PERFORM conveyor.entity_acquire(p_entity_type, p_entity_id, 1800, p_correlation_id);
    END IF;
    RETURN true;
END $$;

-- For operators: the lease goes whoever holds it (a force_release lock event), an IN_PROGRESS entity
-- goes back to PENDING, and a monitoring event records it.
CREATE FUNCTION music.force_release_entity_lock(p_entity_type TEXT, p_entity_id TEXT) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    released boolean := music.release_processing_lock(p_entity_type, p_entity_id);
BEGIN
    INSERT INTO music.monitoring_events (event_type, details)
    VALUES ('entity_lock_force_released', jsonb_build_object('entity_type', p_entity_type, 'entity_id', p_entity_id,
            'released', released, 'by', session_user));
    RETURN released;
END $$;

-- ---- advisory locks with text keys (session locks: not through a transaction-mode pooler) ----------
CREATE FUNCTION music.pg_try_advisory_lock(p_key TEXT) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.try_advisory_lock(p_key) $$;
-- p_timeout_ms 0 does not wait.
CREATE FUNCTION music.pg_advisory_lock_timeout(p_key TEXT, p_timeout_ms INTEGER) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_timeout_ms = 0 THEN RETURN conveyor.try_advisory_lock(p_key); END IF;
    RETURN conveyor.advisory_lock(p_key, p_timeout_ms);
END $$;
CREATE FUNCTION music.pg_advisory_unlock(p_key TEXT) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.advisory_unlock(p_key) $$;
CREATE FUNCTION music.pg_advisory_lock_exists(p_key TEXT) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.advisory_lock_held(p_key) $$;
-- Every hold this session has on the key (another session's holds end with that session).
CREATE FUNCTION music.pg_force_advisory_unlock_all(p_key TEXT) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ SELECT conveyor.advisory_unlock_all(p_key) $$;

REVOKE ALL ON FUNCTION music.acquire_processing_lock(text, text, int, text), music.release_processing_lock(text, text),
    music.update_lock_heartbeat(text, text, text, text), music.claim_stale_lock(text, text, text, text),
    music.force_release_entity_lock(text, text), music.pg_try_advisory_lock(text), music.pg_advisory_lock_timeout(text, int),
    music.pg_advisory_unlock(text), music.pg_advisory_lock_exists(text), music.pg_force_advisory_unlock_all(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION music.acquire_processing_lock(text, text, int, text), music.release_processing_lock(text, text),
    music.update_lock_heartbeat(text, text, text, text), music.claim_stale_lock(text, text, text, text),
    music.pg_try_advisory_lock(text), music.pg_advisory_lock_timeout(text, int), music.pg_advisory_unlock(text),
    music.pg_advisory_lock_exists(text), music.pg_force_advisory_unlock_all(text) TO music_worker;
GRANT EXECUTE ON FUNCTION music.force_release_entity_lock(text, text) TO music_admin;
