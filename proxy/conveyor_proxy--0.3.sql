-- conveyor_proxy 0.3: a front database for N conveyor shards (CREATE EXTENSION conveyor_proxy CASCADE).
--
-- The front has conveyor's schema and conveyor's function names and signatures for the producer and
-- worker paths; each is a PL/Proxy function (or a small PL/pgSQL wrapper over PL/Proxy functions) that
-- runs the same call on the shard that owns its data. The shards are plain conveyor databases, each
-- with its setting shard.number (1, 2, ... N), so every job id names its shard (conveyor.uuid_shard).
--
-- Routing (proxy/README.md explains each choice):
--   group key            a directory table (queue, group_key) -> shard, filled on first use by an
--                        autonomous call back into this database, so a group never moves
--   dedup key, no group  hash of (queue, dedup_key) over the first hash_shards shards
--   neither              round robin over the shards that accept new work
--   job or reservation id   the shard number the id carries
--   lock, entity, idempotency, account, quota, rate-limit key   hash over the first hash_shards shards
--   dequeue              a rotating start shard, falling through to the next while it has room
--   metrics, health, listing   every shard, gathered
--   a schedule           its group's shard (the directory), else a hash of its name; removed elsewhere first
-- PL/Proxy partition k is shard k + 1 (routing returns partition numbers below the shard count).
\echo Use "CREATE EXTENSION conveyor_proxy CASCADE" to load this file. \quit

CREATE SCHEMA conveyor;
CREATE SCHEMA conveyor_proxy;
REVOKE ALL ON SCHEMA conveyor, conveyor_proxy FROM PUBLIC;

-- Roles as on the shards (created when missing: they are cluster-wide and may exist already).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_reader') THEN
        CREATE ROLE conveyor_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker') THEN
        CREATE ROLE conveyor_worker NOLOGIN IN ROLE conveyor_reader;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin') THEN
        CREATE ROLE conveyor_admin NOLOGIN IN ROLE conveyor_worker;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA conveyor, conveyor_proxy TO conveyor_reader;

-- ---- configuration ----------------------------------------------------------------------------------

-- The shards, numbered 1..N without gaps (add_shard appends); their connection strings are the options
-- p0..p(N-1) of the SQL/MED server conveyor_shards.
CREATE TABLE conveyor_proxy.shards (
    shard        int PRIMARY KEY CHECK (shard >= 1),
    connstr      text NOT NULL,
    accepts_new  boolean NOT NULL DEFAULT true,   -- new groups and keyless jobs may go to it
    added_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
-- One row: how many of the first shards key hashing spreads over (0 until set_hash_shards is called
-- once the first shards are in: adding a shard never moves a key by itself).
CREATE TABLE conveyor_proxy.config (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    hash_shards  int NOT NULL DEFAULT 0 CHECK (hash_shards >= 0)
);
INSERT INTO conveyor_proxy.config DEFAULT VALUES;
-- The directory of groups: where each (queue, group key) lives, from its first job on.
CREATE TABLE conveyor_proxy.groups (
    queue        text NOT NULL,
    group_key    text NOT NULL,
    shard        int NOT NULL REFERENCES conveyor_proxy.shards,
    assigned_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (queue, group_key)
);
CREATE INDEX groups_shard ON conveyor_proxy.groups (shard);
-- Round robin for new groups and keyless jobs; the dequeue rotation.
CREATE SEQUENCE conveyor_proxy.spread;
CREATE SEQUENCE conveyor_proxy.new_groups;
CREATE SEQUENCE conveyor_proxy.rotation;
SELECT pg_catalog.pg_extension_config_dump('conveyor_proxy.shards', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor_proxy.config', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor_proxy.groups', '');
-- Readers see the shards but not their connection strings.
GRANT SELECT (shard, accepts_new, added_at) ON conveyor_proxy.shards TO conveyor_reader;
GRANT SELECT ON conveyor_proxy.config, conveyor_proxy.groups TO conveyor_reader;
-- Callers advance the sequences through the routing functions only (they run as the caller).
GRANT USAGE ON SEQUENCE conveyor_proxy.spread, conveyor_proxy.rotation TO conveyor_reader;

-- ---- administration ---------------------------------------------------------------------------------

-- Appends a shard: its connection string becomes partition N - 1 of the cluster conveyor_shards (a
-- SQL/MED server of the plproxy foreign data wrapper, created on the first call). PL/Proxy 2.10 wants
-- a power of 2 partitions: the slots past the last shard repeat shard 1's connection string, which
-- PL/Proxy shares as one connection, and the routing never names them. The shard's database must have
-- conveyor with shard.number set to the number returned. Key hashing is not changed: set_hash_shards
-- decides it.
CREATE FUNCTION conveyor_proxy.add_shard(connstr text) RETURNS int
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
    slots int := 1;
    have text[];
    c text;
    ops text[] := '{}';
BEGIN
    IF connstr IS NULL OR connstr = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'connstr must not be NULL or empty';
    END IF;
    LOCK TABLE conveyor_proxy.shards IN EXCLUSIVE MODE;
    n := (SELECT count(*) FROM conveyor_proxy.shards) + 1;
    IF EXISTS (SELECT 1 FROM conveyor_proxy.shards s WHERE s.connstr = add_shard.connstr) THEN
        RAISE EXCEPTION USING ERRCODE = '42710', MESSAGE = 'a shard with this connection string exists';
    END IF;
    INSERT INTO conveyor_proxy.shards (shard, connstr) VALUES (n, connstr);
    WHILE slots < n LOOP slots := slots * 2; END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = 'conveyor_shards') THEN
        EXECUTE pg_catalog.format('CREATE SERVER conveyor_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 %L)', connstr);
        RETURN n;
    END IF;
    have := ARRAY(SELECT split_part(o, '=', 1) FROM pg_catalog.pg_foreign_server f, unnest(f.srvoptions) o
                   WHERE f.srvname = 'conveyor_shards');
    FOR k IN 0 .. slots - 1 LOOP
        c := (SELECT s.connstr FROM conveyor_proxy.shards s WHERE s.shard = CASE WHEN k < n THEN k + 1 ELSE 1 END);
        ops := ops || pg_catalog.format('%s %I %L', CASE WHEN ('p' || k) = ANY (have) THEN 'SET' ELSE 'ADD' END, 'p' || k, c);
    END LOOP;
    EXECUTE 'ALTER SERVER conveyor_shards OPTIONS (' || pg_catalog.array_to_string(ops, ', ') || ')';
    RETURN n;
END
$$;
COMMENT ON FUNCTION conveyor_proxy.add_shard(text) IS 'Appends a shard (its libpq connection string) to the cluster conveyor_shards; returns its shard number.';

-- Changes how many of the first shards key hashing (dedup keys without a group, locks, entities,
-- idempotency keys, accounts, quotas, rate limits) spreads over. Keys move: do it when none of them
-- has live state (proxy/README.md, "Adding a shard").
CREATE FUNCTION conveyor_proxy.set_hash_shards(n int) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF n IS NULL OR n < 1 OR n > (SELECT count(*) FROM conveyor_proxy.shards) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = pg_catalog.format('invalid hash_shards %s', n),
            DETAIL = pg_catalog.format('It takes a number from 1 to the number of shards (%s).', (SELECT count(*) FROM conveyor_proxy.shards));
    END IF;
    UPDATE conveyor_proxy.config SET hash_shards = n;
END
$$;
COMMENT ON FUNCTION conveyor_proxy.set_hash_shards(int) IS 'Sets how many of the first shards key hashing spreads over; keys move, so only when no keyed state is live.';

-- Whether new groups and keyless jobs may go to a shard (false: existing groups stay, no new ones).
CREATE FUNCTION conveyor_proxy.set_accepts_new(shard int, accepts boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE conveyor_proxy.shards s SET accepts_new = accepts WHERE s.shard = set_accepts_new.shard;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = pg_catalog.format('unknown shard %s', shard);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM conveyor_proxy.shards WHERE accepts_new) THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'at least one shard must accept new groups';
    END IF;
END
$$;
COMMENT ON FUNCTION conveyor_proxy.set_accepts_new(int,boolean) IS 'Lets a shard take new groups and keyless jobs, or not; its existing groups stay on it either way.';

-- The directory connection: how the front reaches its own database for group assignments, which
-- must commit on their own (a caller's rollback must not forget where a group's jobs went).
CREATE FUNCTION conveyor_proxy.set_directory(connstr text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF connstr IS NULL OR connstr = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'connstr must not be NULL or empty';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = 'conveyor_directory') THEN
        EXECUTE pg_catalog.format('ALTER SERVER conveyor_directory OPTIONS (SET p0 %L)', connstr);
    ELSE
        EXECUTE pg_catalog.format('CREATE SERVER conveyor_directory FOREIGN DATA WRAPPER plproxy OPTIONS (p0 %L)', connstr);
    END IF;
END
$$;
COMMENT ON FUNCTION conveyor_proxy.set_directory(text) IS 'Sets the connection string by which the front reaches its own database to record new groups.';

-- ---- routing ------------------------------------------------------------------------------------------
-- Each returns a PL/Proxy partition number (shard - 1). They run as the caller (STABLE or VOLATILE
-- SQL and PL/pgSQL with a pinned search_path); only assign_group, which writes the directory, is a
-- SECURITY DEFINER function, and it runs no caller code.

CREATE FUNCTION conveyor_proxy.shard_count() RETURNS int
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT count(*)::int FROM conveyor_proxy.shards $$;

-- The partition of a job id (or of any id made on a shard: reservations): the shard it names, which
-- must be one of this front's shards.
CREATE FUNCTION conveyor_proxy.id_partition(id uuid) RETURNS int
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b bytea;
    s int;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'the id must not be NULL';
    END IF;
    b := pg_catalog.uuid_send(id);
    s := pg_catalog.get_byte(b, 9) * 256 + pg_catalog.get_byte(b, 10);
    IF pg_catalog.get_byte(b, 6) >> 4 <> 7 OR s < 1 OR s > conveyor_proxy.shard_count() THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('id %s names no shard of this front', id),
            DETAIL = pg_catalog.format('It carries shard number %s; this front has shards 1 to %s.', s, conveyor_proxy.shard_count()),
            HINT = 'Ids made on a shard carry its shard.number in bytes 9-10; this one was made elsewhere.';
    END IF;
    RETURN s - 1;
END
$$;

-- A stable hash of a key over the first hash_shards shards.
CREATE FUNCTION conveyor_proxy.key_partition(key text) RETURNS int
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int := (SELECT hash_shards FROM conveyor_proxy.config);
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'the routing key must not be NULL';
    END IF;
    IF n IS NULL OR n < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'key routing is not set up on this front',
            HINT = 'Once the first shards are added, call conveyor_proxy.set_hash_shards(n) with their number.';
    END IF;
    RETURN (pg_catalog.hashtextextended(key, 0) & pg_catalog.int8 '9223372036854775807') % n;
END
$$;

-- The next shard that accepts new work, round robin.
CREATE FUNCTION conveyor_proxy.next_open_shard(seq regclass) RETURNS int
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    open int[] := ARRAY(SELECT shard FROM conveyor_proxy.shards WHERE accepts_new ORDER BY shard);
BEGIN
    IF pg_catalog.cardinality(open) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'no shard of this front accepts new work',
            HINT = 'Add one with conveyor_proxy.add_shard(connstr) or reopen one with conveyor_proxy.set_accepts_new.';
    END IF;
    RETURN open[1 + (pg_catalog.nextval(seq) % pg_catalog.cardinality(open))::int];
END
$$;

-- Records where a new group lives (runs in the front's own database through conveyor_directory, so it
-- commits on its own): the first caller's choice wins, every later one reads it.
CREATE FUNCTION conveyor_proxy.assign_group(queue text, group_key text) RETURNS int
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s int;
BEGIN
    IF queue IS NULL OR group_key IS NULL OR pg_catalog.octet_length(queue) > 1024 OR pg_catalog.octet_length(group_key) > 1024 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'queue and group_key must be given, each at most 1024 bytes';
    END IF;
    INSERT INTO conveyor_proxy.groups AS g (queue, group_key, shard)
    VALUES (queue, group_key, conveyor_proxy.next_open_shard('conveyor_proxy.new_groups'))
    ON CONFLICT DO NOTHING;
    SELECT g.shard INTO s FROM conveyor_proxy.groups g WHERE g.queue = assign_group.queue AND g.group_key = assign_group.group_key;
    RETURN s;
END
$$;
-- The autonomous call: assign_group in the front's database on a connection of its own.
CREATE FUNCTION conveyor_proxy.directory_assign_group(queue text, group_key text) RETURNS int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_directory';
    RUN ON 0;
    SELECT conveyor_proxy.assign_group(queue, group_key);
$$;

CREATE FUNCTION conveyor_proxy.group_partition(queue text, group_key text) RETURNS int
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s int;
BEGIN
    SELECT g.shard INTO s FROM conveyor_proxy.groups g
     WHERE g.queue = group_partition.queue AND g.group_key = group_partition.group_key;
    IF s IS NULL THEN
        s := conveyor_proxy.directory_assign_group(queue, group_key);
    END IF;
    RETURN s - 1;
END
$$;

-- Where enqueue sends a job: by its group, else by its dedup key, else round robin.
CREATE FUNCTION conveyor_proxy.enqueue_partition(queue text, group_key text, dedup_key text) RETURNS int
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'queue must not be NULL';
    END IF;
    -- The shards' limit, checked here before a key reaches the directory.
    IF pg_catalog.octet_length(group_key) > 1024 OR pg_catalog.octet_length(dedup_key) > 1024 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = pg_catalog.format('%s must be at most 1024 bytes, not %s',
                                        CASE WHEN pg_catalog.octet_length(group_key) > 1024 THEN 'group_key' ELSE 'dedup_key' END,
                                        greatest(pg_catalog.octet_length(group_key), pg_catalog.octet_length(dedup_key)));
    END IF;
    IF group_key IS NOT NULL THEN
        RETURN conveyor_proxy.group_partition(queue, group_key);
    END IF;
    IF dedup_key IS NOT NULL THEN
        RETURN conveyor_proxy.key_partition(queue || E'\x1f' || dedup_key);
    END IF;
    RETURN conveyor_proxy.next_open_shard('conveyor_proxy.spread') - 1;
END
$$;

-- ---- queue definitions: every shard, one call ----------------------------------------------------------

CREATE FUNCTION conveyor_proxy.create_queue_all(queue text, options jsonb) RETURNS SETOF int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT 1 FROM conveyor.create_queue(queue, options);
$$;
CREATE FUNCTION conveyor_proxy.alter_queue_all(queue text, options jsonb) RETURNS SETOF int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT 1 FROM conveyor.alter_queue(queue, options);
$$;
CREATE FUNCTION conveyor_proxy.pause_queue_all(queue text) RETURNS SETOF int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT 1 FROM conveyor.pause_queue(queue);
$$;
CREATE FUNCTION conveyor_proxy.resume_queue_all(queue text) RETURNS SETOF int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT 1 FROM conveyor.resume_queue(queue);
$$;
CREATE FUNCTION conveyor_proxy.drop_queue_all(queue text, force boolean) RETURNS SETOF boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
$$;

CREATE FUNCTION conveyor.create_queue(queue text, options jsonb DEFAULT '{}') RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT count(*) FROM conveyor_proxy.create_queue_all(queue, options)) s $$;
COMMENT ON FUNCTION conveyor.create_queue(text,jsonb) IS 'Creates a queue on every shard (proxy of conveyor.create_queue).';
CREATE FUNCTION conveyor.alter_queue(queue text, options jsonb) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT count(*) FROM conveyor_proxy.alter_queue_all(queue, options)) s $$;
COMMENT ON FUNCTION conveyor.alter_queue(text,jsonb) IS 'Changes a queue''s options on every shard (proxy of conveyor.alter_queue).';
CREATE FUNCTION conveyor.pause_queue(queue text) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT count(*) FROM conveyor_proxy.pause_queue_all(queue)) s $$;
COMMENT ON FUNCTION conveyor.pause_queue(text) IS 'Pauses a queue on every shard (proxy of conveyor.pause_queue).';
CREATE FUNCTION conveyor.resume_queue(queue text) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM (SELECT count(*) FROM conveyor_proxy.resume_queue_all(queue)) s $$;
COMMENT ON FUNCTION conveyor.resume_queue(text) IS 'Resumes a queue on every shard (proxy of conveyor.resume_queue).';
CREATE FUNCTION conveyor.drop_queue(queue text, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.bool_or(d) FROM conveyor_proxy.drop_queue_all(queue, force) d $$;
COMMENT ON FUNCTION conveyor.drop_queue(text,boolean) IS 'Drops a queue on every shard (proxy of conveyor.drop_queue); true if any shard had it.';

CREATE FUNCTION conveyor.list_queues()
    RETURNS TABLE(queue text, paused boolean, options jsonb, created_at timestamptz)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON 0;
$$;
COMMENT ON FUNCTION conveyor.list_queues() IS 'Lists the queues as shard 1 has them (every shard has the same definitions).';

-- ---- producing --------------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.enqueue(queue text, payload jsonb DEFAULT '{}', job_type text DEFAULT NULL,
                                 group_key text DEFAULT NULL, priority int DEFAULT 5,
                                 run_at timestamptz DEFAULT now(), dedup_key text DEFAULT NULL,
                                 max_attempts int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, was_duplicate boolean)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON conveyor_proxy.enqueue_partition(queue, group_key, dedup_key);
$$;
COMMENT ON FUNCTION conveyor.enqueue(text,jsonb,text,text,integer,timestamp with time zone,text,integer) IS 'Enqueues on the shard of the job''s group, else of its dedup key, else the next shard (proxy).';

-- One call per shard, each with its share of the batch. (PL/Proxy's SPLIT would send the shares in
-- parallel, but 2.10 names a split array's type wrongly on the remote side when the query is given.)
CREATE FUNCTION conveyor_proxy.enqueue_batch_on(part int, queue text, jobs jsonb)
    RETURNS TABLE(ord int, job_id uuid, was_duplicate boolean)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON part;
    SELECT b.ord, b.job_id, b.was_duplicate FROM conveyor.enqueue_batch(queue, jobs) b;
$$;

CREATE FUNCTION conveyor.enqueue_batch(queue text, jobs jsonb)
    RETURNS TABLE(ord int, job_id uuid, was_duplicate boolean)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    share record;   -- per partition: its elements, and their positions in jobs
    ords int[] := '{}';
    ids uuid[] := '{}';
    dups boolean[] := '{}';
    tries int;
BEGIN
    IF jobs IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'jobs must not be NULL';
    END IF;
    IF pg_catalog.jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'jobs must be a JSON array';
    END IF;
    IF pg_catalog.jsonb_array_length(jobs) = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(jobs) e(v) WHERE pg_catalog.jsonb_typeof(e.v) <> 'object') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'every element of jobs must be a JSON object';
    END IF;
    FOR share IN
        WITH el AS (
            SELECT (e.n - 1)::int AS pos, e.v,
                   conveyor_proxy.enqueue_partition(queue, e.v ->> 'group_key', e.v ->> 'dedup_key') AS part
              FROM pg_catalog.jsonb_array_elements(jobs) WITH ORDINALITY e(v, n))
        SELECT el.part, pg_catalog.jsonb_agg(el.v ORDER BY el.pos) AS batch,
               pg_catalog.jsonb_agg(el.pos ORDER BY el.pos) AS places
          FROM el GROUP BY el.part ORDER BY el.part
    LOOP
        -- A shard's share is all or nothing there; one refused with 40001 or 40P01 is sent again (up to
        -- 10 times) rather than failing the call after other shares have committed.
        tries := 0;
        LOOP
            BEGIN
                SELECT ords || pg_catalog.array_agg((share.places ->> r.ord)::int), ids || pg_catalog.array_agg(r.job_id),
                       dups || pg_catalog.array_agg(r.was_duplicate)
                  INTO ords, ids, dups
                  FROM conveyor_proxy.enqueue_batch_on(share.part, queue, share.batch) r;
                EXIT;
            EXCEPTION WHEN serialization_failure OR deadlock_detected THEN
                tries := tries + 1;
                IF tries >= 10 THEN RAISE; END IF;
            END;
        END LOOP;
    END LOOP;
    RETURN QUERY SELECT u.o, u.i, u.d FROM unnest(ords, ids, dups) AS u(o, i, d) ORDER BY u.o;
END
$$;
COMMENT ON FUNCTION conveyor.enqueue_batch(text,jsonb) IS 'Splits a batch by shard as enqueue routes each job and sends each shard its part in one call (proxy).';

-- ---- consuming ----------------------------------------------------------------------------------------------

CREATE FUNCTION conveyor_proxy.dequeue_on(part int, queue text, worker_id text, max_count int, lease_seconds int)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, priority int, attempt int,
                  lease_until timestamptz)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON part;
    SELECT d.job_id, d.job_type, d.group_key, d.payload, d.priority, d.attempt, d.lease_until
      FROM conveyor.dequeue(queue, worker_id, max_count, lease_seconds) d;
$$;

-- Starts at the next shard in rotation and falls through to the following ones while the worker has
-- room, so every shard is served in turn and an empty one costs only its turn.
CREATE FUNCTION conveyor.dequeue(queue text, worker_id text, max_count int DEFAULT 1, lease_seconds int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, priority int, attempt int,
                  lease_until timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n int := conveyor_proxy.shard_count();
    start int;
    room int := max_count;
    got int;
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'this front has no shards';
    END IF;
    IF max_count IS NULL OR max_count < 1 THEN
        -- As the shard would say it: let it (its message names the argument).
        RETURN QUERY SELECT * FROM conveyor_proxy.dequeue_on(0, queue, worker_id, max_count, lease_seconds);
        RETURN;
    END IF;
    start := (pg_catalog.nextval('conveyor_proxy.rotation') % n)::int;
    FOR i IN 0 .. n - 1 LOOP
        RETURN QUERY SELECT * FROM conveyor_proxy.dequeue_on((start + i) % n, queue, worker_id, room, lease_seconds);
        GET DIAGNOSTICS got = ROW_COUNT;
        room := room - got;
        EXIT WHEN room <= 0;
    END LOOP;
END
$$;
COMMENT ON FUNCTION conveyor.dequeue(text,text,integer,integer) IS 'Leases jobs from the shards in rotation, falling through to the next while there is room (proxy).';

CREATE FUNCTION conveyor.ack(job_id uuid, success boolean, error_message text DEFAULT NULL,
                             stats jsonb DEFAULT NULL, worker_id text DEFAULT NULL, retry boolean DEFAULT true,
                             attempt int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.ack(uuid,boolean,text,jsonb,text,boolean,integer) IS 'Acknowledges a job on the shard its id names (proxy).';

CREATE FUNCTION conveyor_proxy.ack_many_on(part int, job_ids uuid[], success boolean, error_message text, worker_id text)
    RETURNS int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON part;
    SELECT conveyor.ack_many(job_ids, success, error_message, worker_id);
$$;
CREATE FUNCTION conveyor.ack_many(job_ids uuid[], success boolean, error_message text DEFAULT NULL,
                                  worker_id text DEFAULT NULL) RETURNS int
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF job_ids IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'job_ids must not be NULL';
    END IF;
    IF pg_catalog.cardinality(job_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- One call per shard with the ids it holds (all ids are checked before any call).
    RETURN (SELECT coalesce(pg_catalog.sum(conveyor_proxy.ack_many_on(s.part, s.ids, success, error_message, worker_id)), 0)::int
              FROM (SELECT conveyor_proxy.id_partition(i) AS part, pg_catalog.array_agg(i) AS ids
                      FROM pg_catalog.unnest(job_ids) i GROUP BY 1) s);
END
$$;
COMMENT ON FUNCTION conveyor.ack_many(uuid[],boolean,text,text) IS 'Acknowledges jobs on the shards their ids name, one call per shard (proxy).';

CREATE FUNCTION conveyor.heartbeat(job_id uuid, worker_id text, extend_seconds int DEFAULT NULL,
                                   attempt int DEFAULT NULL) RETURNS timestamptz
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.heartbeat(uuid,text,integer,integer) IS 'Extends a lease on the shard the job id names (proxy).';
CREATE FUNCTION conveyor.release(job_id uuid, worker_id text, delay_seconds int DEFAULT 0,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.release(uuid,text,integer,integer) IS 'Gives a job back on the shard its id names (proxy).';
CREATE FUNCTION conveyor.progress(job_id uuid, worker_id text, percent numeric DEFAULT NULL, step text DEFAULT NULL,
                                  details jsonb DEFAULT NULL, attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.progress(uuid,text,numeric,text,jsonb,integer) IS 'Records progress on the shard the job id names (proxy).';
CREATE FUNCTION conveyor.job_log(job_id uuid, worker_id text, event text, details jsonb DEFAULT NULL,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.job_log(uuid,text,text,jsonb,integer) IS 'Appends a trail event on the shard the job id names (proxy).';

-- ---- operating on one job -----------------------------------------------------------------------------------

CREATE FUNCTION conveyor.dead_letter(job_id uuid, reason text, details jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.dead_letter(uuid,text,jsonb) IS 'Dead-letters a job on the shard its id names (proxy).';
CREATE FUNCTION conveyor.cancel(job_id uuid, reason text DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.cancel(uuid,text) IS 'Cancels a job on the shard its id names (proxy).';
CREATE FUNCTION conveyor.requeue(job_id uuid, delay_seconds int DEFAULT 0) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.requeue(uuid,integer) IS 'Requeues a running job on the shard its id names (proxy).';
CREATE FUNCTION conveyor.retry(job_id uuid, delay_seconds int DEFAULT NULL, reset_attempts boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.retry(uuid,integer,boolean) IS 'Runs a dead or cancelled job again on the shard its id names (proxy).';
CREATE FUNCTION conveyor.reschedule(job_id uuid, run_at timestamptz) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.reschedule(uuid,timestamp with time zone) IS 'Moves a pending job to run at run_at on the shard its id names (proxy).';
CREATE FUNCTION conveyor.resolve_dead(job_id uuid, resolution text) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.resolve_dead(uuid,text) IS 'Marks a dead job handled on the shard its id names (proxy).';
CREATE FUNCTION conveyor.requeue_stuck(queue text, older_than interval) RETURNS SETOF uuid
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
$$;
COMMENT ON FUNCTION conveyor.requeue_stuck(text,interval) IS 'Requeues the stuck jobs of a queue on every shard; returns their ids (proxy).';
CREATE FUNCTION conveyor_proxy.reap_all(queue text) RETURNS SETOF int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT conveyor.reap(queue);
$$;
-- As on one server, one number: the leases expired on all the shards together.
CREATE FUNCTION conveyor.reap(queue text DEFAULT NULL) RETURNS int
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT coalesce(pg_catalog.sum(n), 0)::int FROM conveyor_proxy.reap_all(queue) n $$;
COMMENT ON FUNCTION conveyor.reap(text) IS 'Expires lapsed leases on every shard; returns how many, summed over the shards (proxy).';

-- ---- observing ------------------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.get_job(job_id uuid) RETURNS jsonb
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.get_job(uuid) IS 'Returns a job from the shard its id names (proxy).';
CREATE FUNCTION conveyor.job_events(job_id uuid)
    RETURNS TABLE(at timestamptz, event text, worker_id text, details jsonb)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(job_id);
$$;
COMMENT ON FUNCTION conveyor.job_events(uuid) IS 'Returns a job''s trail from the shard its id names (proxy).';

CREATE FUNCTION conveyor_proxy.queue_metrics_all(queue text)
    RETURNS TABLE(queue text, pending bigint, scheduled bigint, running bigint, expired_leases bigint,
                  completed_1h bigint, failed_24h bigint, dead bigint, avg_queue_seconds numeric,
                  jobs_per_hour numeric, oldest_pending_seconds numeric)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT m.queue, m.pending, m.scheduled, m.running, m.expired_leases, m.completed_1h, m.failed_24h, m.dead,
           m.avg_queue_seconds, m.jobs_per_hour, m.oldest_pending_seconds
      FROM conveyor.queue_metrics(queue) m;
$$;
-- Counts add up; the average wait is weighted by each shard's completions of the last hour; the
-- oldest pending job is the oldest of any shard.
CREATE FUNCTION conveyor.queue_metrics(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, pending bigint, scheduled bigint, running bigint, expired_leases bigint,
                  completed_1h bigint, failed_24h bigint, dead bigint, avg_queue_seconds numeric,
                  jobs_per_hour numeric, oldest_pending_seconds numeric)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.queue, sum(m.pending)::bigint, sum(m.scheduled)::bigint, sum(m.running)::bigint,
           sum(m.expired_leases)::bigint, sum(m.completed_1h)::bigint, sum(m.failed_24h)::bigint,
           sum(m.dead)::bigint,
           CASE WHEN sum(m.completed_1h) FILTER (WHERE m.avg_queue_seconds IS NOT NULL) > 0
                THEN round(sum(m.avg_queue_seconds * m.completed_1h) FILTER (WHERE m.avg_queue_seconds IS NOT NULL)
                           / sum(m.completed_1h) FILTER (WHERE m.avg_queue_seconds IS NOT NULL), 3)
                ELSE round(avg(m.avg_queue_seconds), 3) END,
           sum(m.jobs_per_hour), max(m.oldest_pending_seconds)
      FROM conveyor_proxy.queue_metrics_all(queue) m
     GROUP BY m.queue ORDER BY m.queue
$$;
COMMENT ON FUNCTION conveyor.queue_metrics(text) IS 'Gathers queue_metrics from every shard: counts summed, the oldest pending of any (proxy).';

CREATE FUNCTION conveyor_proxy.queue_totals_all(queue text)
    RETURNS TABLE(queue text, enqueued bigint, started bigint, completed bigint, failed bigint, expired bigint,
                  cancelled bigint)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT t.queue, t.enqueued, t.started, t.completed, t.failed, t.expired, t.cancelled FROM conveyor.queue_totals(queue) t;
$$;
CREATE FUNCTION conveyor.queue_totals(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, enqueued bigint, started bigint, completed bigint, failed bigint, expired bigint,
                  cancelled bigint)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.queue, sum(t.enqueued)::bigint, sum(t.started)::bigint, sum(t.completed)::bigint, sum(t.failed)::bigint,
           sum(t.expired)::bigint, sum(t.cancelled)::bigint
      FROM conveyor_proxy.queue_totals_all(queue) t GROUP BY t.queue ORDER BY t.queue
$$;
COMMENT ON FUNCTION conveyor.queue_totals(text) IS 'Gathers queue_totals from every shard, summed per queue (proxy).';

CREATE FUNCTION conveyor_proxy.health_all() RETURNS SETOF jsonb
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT conveyor.health() || pg_catalog.jsonb_build_object('shard', conveyor.get_setting('shard.number')::int);
$$;
-- The worst status of any shard, and each shard's own document under "shards".
CREATE FUNCTION conveyor.health() RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
               'status', (ARRAY['healthy', 'warning', 'critical'])[max(CASE h ->> 'status' WHEN 'critical' THEN 3
                                                                                            WHEN 'warning' THEN 2 ELSE 1 END)],
               'at', now(),
               'shards', jsonb_agg(h ORDER BY (h ->> 'shard')::int))
      FROM conveyor_proxy.health_all() h
$$;
COMMENT ON FUNCTION conveyor.health() IS 'The worst health status of any shard, with every shard''s health document (proxy).';

CREATE FUNCTION conveyor_proxy.list_jobs_all(queue text, status text[], group_key text, job_type text,
                                             since timestamptz, until timestamptz, lim int, after uuid)
    RETURNS TABLE(job_id uuid, queue text, status text, state text, job_type text, group_key text, dedup_key text,
                  payload jsonb, priority int, attempt int, max_attempts int, run_at timestamptz, worker_id text,
                  started_at timestamptz, lease_until timestamptz, last_error text, created_at timestamptz,
                  finished_at timestamptz, percent numeric, step text, reason text, details jsonb,
                  resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT * FROM conveyor.list_jobs(queue, status, group_key, job_type, since, until, lim, after);
$$;
-- Each shard's first lim by id, newest first, merged: ids are time-ordered across shards, so paging
-- with after = the last id seen works as on one server.
CREATE FUNCTION conveyor.list_jobs(queue text DEFAULT NULL, status text[] DEFAULT NULL, group_key text DEFAULT NULL,
                                   job_type text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                   until timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, queue text, status text, state text, job_type text, group_key text, dedup_key text,
                  payload jsonb, priority int, attempt int, max_attempts int, run_at timestamptz, worker_id text,
                  started_at timestamptz, lease_until timestamptz, last_error text, created_at timestamptz,
                  finished_at timestamptz, percent numeric, step text, reason text, details jsonb,
                  resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM conveyor_proxy.list_jobs_all(queue, status, group_key, job_type, since, until, lim, after) j
     ORDER BY j.job_id DESC LIMIT lim
$$;
COMMENT ON FUNCTION conveyor.list_jobs(text,text[],text,text,timestamp with time zone,timestamp with time zone,integer,uuid) IS 'Lists jobs of every shard, newest first, paged by id as on one server (proxy).';

-- ---- recurring jobs: each schedule on one shard ------------------------------------------------------------
-- A schedule lives on one shard: that shard's pg_cron runs it and its run_schedule enqueues there. The
-- shard is its group's (the directory, as for enqueue: the group's jobs stay on one shard), else the one
-- a hash of its name names. Making a schedule removes one of the same name from every other shard
-- first, so a name is on one shard at most and a schedule whose group changes moves with it.

-- The partition a schedule goes to.
CREATE FUNCTION conveyor_proxy.schedule_partition(name text, queue text, group_key text) RETURNS int
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF group_key IS NOT NULL THEN
        -- The shards' limit, checked here before a key reaches the directory.
        IF pg_catalog.octet_length(group_key) > 1024 THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = pg_catalog.format('group_key must be at most 1024 bytes, not %s', pg_catalog.octet_length(group_key));
        END IF;
        RETURN conveyor_proxy.group_partition(queue, group_key);
    END IF;
    RETURN conveyor_proxy.key_partition(E'schedule\x1f' || name);
END
$$;

CREATE FUNCTION conveyor_proxy.schedule_enqueue_on(part int, name text, schedule text, queue text, payload jsonb,
                                                   job_type text, group_key text, priority int, max_attempts int)
    RETURNS bigint
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON part;
    SELECT conveyor.schedule_enqueue(name, schedule, queue, payload, job_type, group_key, priority, max_attempts);
$$;
CREATE FUNCTION conveyor_proxy.unschedule_enqueue_on(part int, name text) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards';
    RUN ON part;
    SELECT conveyor.unschedule_enqueue(name);
$$;
CREATE FUNCTION conveyor_proxy.unschedule_enqueue_all(name text) RETURNS SETOF boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT conveyor.unschedule_enqueue(name);
$$;
-- Every shard's schedules, each with the shard that holds it.
CREATE FUNCTION conveyor_proxy.list_schedules_all()
    RETURNS TABLE(shard int, name text, schedule text, active boolean, queue text, payload jsonb, job_type text,
                  group_key text, priority int, max_attempts int, last_tick timestamptz, last_job_id uuid,
                  cron_job_id bigint, created_at timestamptz, updated_at timestamptz)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT conveyor.get_setting('shard.number')::int AS shard, s.name, s.schedule, s.active, s.queue, s.payload, s.job_type,
           s.group_key, s.priority, s.max_attempts, s.last_tick, s.last_job_id, s.cron_job_id, s.created_at, s.updated_at
      FROM conveyor.list_schedules() s;
$$;

-- Places the schedule on its shard (its group's, else its name's) after removing one of the same name
-- from the other shards; should the target shard refuse it (bad input), the definitions removed are put
-- back where they were and the target's error is raised. Calls for one name take turns on this front.
CREATE FUNCTION conveyor.schedule_enqueue(name text, schedule text, queue text, payload jsonb DEFAULT '{}',
                                          job_type text DEFAULT NULL, group_key text DEFAULT NULL,
                                          priority int DEFAULT 5, max_attempts int DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    part int;
    held jsonb;
    h jsonb;
BEGIN
    IF name IS NULL OR name = '' OR queue IS NULL OR queue = '' OR schedule IS NULL OR schedule = '' OR payload IS NULL
       OR priority IS NULL THEN
        -- As the shard would say it: let it (its message names the argument; it writes nothing).
        RETURN conveyor_proxy.schedule_enqueue_on(0, name, schedule, queue, payload, job_type, group_key, priority, max_attempts);
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(E'conveyor_proxy.schedule\x1f' || name, 0));
    part := conveyor_proxy.schedule_partition(name, queue, group_key);
    SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s)) INTO held
      FROM conveyor_proxy.list_schedules_all() s
     WHERE s.name = schedule_enqueue.name AND s.shard <> part + 1;
    FOR h IN SELECT e.v FROM pg_catalog.jsonb_array_elements(coalesce(held, '[]')) e(v) LOOP
        PERFORM conveyor_proxy.unschedule_enqueue_on((h ->> 'shard')::int - 1, name);
    END LOOP;
    BEGIN
        RETURN conveyor_proxy.schedule_enqueue_on(part, name, schedule, queue, payload, job_type, group_key, priority, max_attempts);
    EXCEPTION WHEN OTHERS THEN
        FOR h IN SELECT e.v FROM pg_catalog.jsonb_array_elements(coalesce(held, '[]')) e(v) LOOP
            BEGIN
                PERFORM conveyor_proxy.schedule_enqueue_on((h ->> 'shard')::int - 1, name, h ->> 'schedule', h ->> 'queue',
                                                           h -> 'payload', h ->> 'job_type', h ->> 'group_key',
                                                           (h ->> 'priority')::int, (h ->> 'max_attempts')::int);
            EXCEPTION WHEN OTHERS THEN
                NULL;   -- the error to report is the target shard's
            END;
        END LOOP;
        RAISE;
    END;
END
$$;
COMMENT ON FUNCTION conveyor.schedule_enqueue(text,text,text,jsonb,text,text,integer,integer) IS 'Schedules a recurring job on one shard (its group''s, else its name''s), removing the name from the others (proxy).';

CREATE FUNCTION conveyor.unschedule_enqueue(name text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NOT NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(E'conveyor_proxy.schedule\x1f' || name, 0));
    END IF;
    RETURN (SELECT pg_catalog.bool_or(r) FROM conveyor_proxy.unschedule_enqueue_all(name) r);
END
$$;
COMMENT ON FUNCTION conveyor.unschedule_enqueue(text) IS 'Removes a recurring job''s schedule from every shard; true if any had it (proxy).';

CREATE FUNCTION conveyor.list_schedules()
    RETURNS TABLE(name text, schedule text, active boolean, queue text, payload jsonb, job_type text,
                  group_key text, priority int, max_attempts int, last_tick timestamptz, last_job_id uuid,
                  cron_job_id bigint, created_at timestamptz, updated_at timestamptz)
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.name, s.schedule, s.active, s.queue, s.payload, s.job_type, s.group_key, s.priority, s.max_attempts,
           s.last_tick, s.last_job_id, s.cron_job_id, s.created_at, s.updated_at
      FROM conveyor_proxy.list_schedules_all() s ORDER BY s.name, s.shard
$$;
COMMENT ON FUNCTION conveyor.list_schedules() IS 'Lists the recurring jobs of every shard (each schedule is on one shard) (proxy).';

-- ---- keyed state: leases, entities, idempotency keys, costs and quotas ---------------------------------------
-- Each key lives on one shard (key_partition): its state, its races and its answers stay there as on
-- one server. Accounts and quotas are defined where their key routes (account_create and quota_define
-- on that shard: conveyor_proxy.key_shard(key) names it). Reservations route by their id.

CREATE FUNCTION conveyor_proxy.key_shard(key text) RETURNS int
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT conveyor_proxy.key_partition(key) + 1 $$;
COMMENT ON FUNCTION conveyor_proxy.key_shard(text) IS 'The shard a lock, entity, idempotency, account, quota or rate-limit key lives on.';

CREATE FUNCTION conveyor.lock_acquire(key text, owner text, ttl_seconds int DEFAULT 1800,
                                      correlation_id text DEFAULT NULL, metadata jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;
CREATE FUNCTION conveyor.lock_heartbeat(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;
CREATE FUNCTION conveyor.lock_release(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;
CREATE FUNCTION conveyor.lock_check(key text, token bigint) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;

-- Entities route by type and id together.
CREATE FUNCTION conveyor.entity_acquire(entity_type text, entity_id text, timeout_seconds int DEFAULT 1800,
                                        correlation_id text DEFAULT NULL, max_attempts int DEFAULT NULL) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(entity_type || E'\x1f' || entity_id);
$$;
CREATE FUNCTION conveyor_proxy.entity_complete_on(entity_type text, entity_id text, metadata jsonb) RETURNS int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(entity_type || E'\x1f' || entity_id);
    SELECT 1 FROM conveyor.entity_complete(entity_type, entity_id, metadata);
$$;
CREATE FUNCTION conveyor.entity_complete(entity_type text, entity_id text, metadata jsonb DEFAULT NULL) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM conveyor_proxy.entity_complete_on(entity_type, entity_id, metadata) $$;
CREATE FUNCTION conveyor.entity_fail(entity_type text, entity_id text, error text, dead boolean DEFAULT false) RETURNS text
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(entity_type || E'\x1f' || entity_id);
$$;
CREATE FUNCTION conveyor.entity_state(entity_type text, entity_id text) RETURNS jsonb
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(entity_type || E'\x1f' || entity_id);
$$;

CREATE FUNCTION conveyor.idempotency_begin(key text, request jsonb DEFAULT NULL, ttl_seconds int DEFAULT 86400)
    RETURNS TABLE(acquired boolean, state text, result jsonb)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;
CREATE FUNCTION conveyor_proxy.idempotency_finish_on(key text, result jsonb) RETURNS int
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
    SELECT 1 FROM conveyor.idempotency_finish(key, result);
$$;
CREATE FUNCTION conveyor.idempotency_finish(key text, result jsonb) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT FROM conveyor_proxy.idempotency_finish_on(key, result) $$;
CREATE FUNCTION conveyor.idempotency_release(key text) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;

CREATE FUNCTION conveyor.charge(account text, service text, amount numeric, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL, idempotency_key text DEFAULT NULL, refund boolean DEFAULT false)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(account);
$$;
CREATE FUNCTION conveyor.reserve(account text, amount numeric, ttl_seconds int DEFAULT 600, idempotency_key text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(account);
$$;
CREATE FUNCTION conveyor.settle(reservation_id uuid, actual numeric, service text, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(reservation_id);
$$;
CREATE FUNCTION conveyor.release_reservation(reservation_id uuid) RETURNS boolean
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.id_partition(reservation_id);
$$;
CREATE FUNCTION conveyor.quota_consume(name text, units int DEFAULT NULL, operation text DEFAULT NULL,
                                       idempotency_key text DEFAULT NULL)
    RETURNS TABLE(allowed boolean, used bigint, remaining bigint, reset_at timestamptz)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(name);
$$;
CREATE FUNCTION conveyor.rate_limit(key text, rate int, per_seconds int DEFAULT 1, burst int DEFAULT NULL)
    RETURNS TABLE(allowed boolean, retry_after_ms int)
    LANGUAGE plproxy AS $$
    CLUSTER 'conveyor_shards'; RUN ON conveyor_proxy.key_partition(key);
$$;

-- ---- privileges: nothing to PUBLIC; the roles as on a shard ------------------------------------------------
DO $privileges$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace IN ('conveyor'::regnamespace, 'conveyor_proxy'::regnamespace)
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$privileges$;
GRANT EXECUTE ON FUNCTION conveyor_proxy.shard_count(), conveyor_proxy.id_partition(uuid),
    conveyor_proxy.key_partition(text), conveyor_proxy.key_shard(text), conveyor.entity_state(text, text) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor_proxy.next_open_shard(regclass), conveyor_proxy.directory_assign_group(text, text),
    conveyor_proxy.group_partition(text, text), conveyor_proxy.enqueue_partition(text, text, text),
    conveyor_proxy.assign_group(text, text) TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.list_queues(), conveyor.get_job(uuid), conveyor.job_events(uuid), conveyor.queue_metrics(text),
    conveyor_proxy.queue_metrics_all(text), conveyor.queue_totals(text), conveyor_proxy.queue_totals_all(text),
    conveyor.health(), conveyor_proxy.health_all(),
    conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid),
    conveyor_proxy.list_jobs_all(text, text[], text, text, timestamptz, timestamptz, int, uuid),
    conveyor.list_schedules(), conveyor_proxy.list_schedules_all()
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.enqueue(text, jsonb, text, text, int, timestamptz, text, int),
    conveyor.enqueue_batch(text, jsonb), conveyor_proxy.enqueue_batch_on(int, text, jsonb),
    conveyor.dequeue(text, text, int, int), conveyor_proxy.dequeue_on(int, text, text, int, int),
    conveyor.ack(uuid, boolean, text, jsonb, text, boolean, int),
    conveyor.ack_many(uuid[], boolean, text, text), conveyor_proxy.ack_many_on(int, uuid[], boolean, text, text),
    conveyor.heartbeat(uuid, text, int, int), conveyor.release(uuid, text, int, int),
    conveyor.progress(uuid, text, numeric, text, jsonb, int), conveyor.job_log(uuid, text, text, jsonb, int),
    conveyor.lock_acquire(text, text, int, text, jsonb), conveyor.lock_heartbeat(text, text, bigint),
    conveyor.lock_release(text, text, bigint), conveyor.lock_check(text, bigint),
    conveyor.entity_acquire(text, text, int, text, int), conveyor.entity_complete(text, text, jsonb),
    conveyor_proxy.entity_complete_on(text, text, jsonb), conveyor.entity_fail(text, text, text, boolean),
    conveyor.idempotency_begin(text, jsonb, int), conveyor.idempotency_finish(text, jsonb),
    conveyor_proxy.idempotency_finish_on(text, jsonb), conveyor.idempotency_release(text),
    conveyor.charge(text, text, numeric, int, jsonb, text, boolean),
    conveyor.reserve(text, numeric, int, text), conveyor.settle(uuid, numeric, text, int, jsonb),
    conveyor.release_reservation(uuid),
    conveyor.quota_consume(text, int, text, text), conveyor.rate_limit(text, int, int, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.create_queue(text, jsonb), conveyor_proxy.create_queue_all(text, jsonb),
    conveyor.alter_queue(text, jsonb), conveyor_proxy.alter_queue_all(text, jsonb),
    conveyor.pause_queue(text), conveyor_proxy.pause_queue_all(text),
    conveyor.resume_queue(text), conveyor_proxy.resume_queue_all(text),
    conveyor.drop_queue(text, boolean), conveyor_proxy.drop_queue_all(text, boolean),
    conveyor.dead_letter(uuid, text, jsonb), conveyor.cancel(uuid, text), conveyor.requeue(uuid, int),
    conveyor.retry(uuid, int, boolean), conveyor.requeue_stuck(text, interval), conveyor.reap(text),
    conveyor_proxy.reap_all(text), conveyor.reschedule(uuid, timestamptz), conveyor.resolve_dead(uuid, text),
    conveyor.schedule_enqueue(text, text, text, jsonb, text, text, int, int), conveyor.unschedule_enqueue(text),
    conveyor_proxy.schedule_partition(text, text, text),
    conveyor_proxy.schedule_enqueue_on(int, text, text, text, jsonb, text, text, int, int),
    conveyor_proxy.unschedule_enqueue_on(int, text), conveyor_proxy.unschedule_enqueue_all(text)
    TO conveyor_admin;
