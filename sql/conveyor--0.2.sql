-- conveyor install script. Built from src/*.sql by the Makefile; edit those, not the built file.
\echo Use "CREATE EXTENSION conveyor" to load this file. \quit

CREATE SCHEMA conveyor;
COMMENT ON SCHEMA conveyor IS 'conveyor: job queue, leases, upserts, costs and monitoring';

-- Roles are cluster-wide: create them once, whichever database installs conveyor first.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_reader') THEN
        CREATE ROLE conveyor_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker') THEN
        CREATE ROLE conveyor_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin') THEN
        CREATE ROLE conveyor_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT conveyor_reader TO conveyor_worker;
GRANT conveyor_worker TO conveyor_admin;

GRANT USAGE ON SCHEMA conveyor TO conveyor_reader;

-- Time-ordered UUIDs (RFC 9562 version 7), the ids of jobs and events.
CREATE FUNCTION conveyor.uuid_v7() RETURNS uuid
    LANGUAGE C VOLATILE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_v7';
COMMENT ON FUNCTION conveyor.uuid_v7() IS 'Returns a new time-ordered UUID version 7; ids from one session increase strictly.';
CREATE FUNCTION conveyor.uuid_v7_time(id uuid) RETURNS timestamptz
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_v7_time';
COMMENT ON FUNCTION conveyor.uuid_v7_time(uuid) IS 'Returns the creation time (millisecond precision) encoded in a version 7 UUID.';

-- ---- roles of the ids ----
GRANT EXECUTE ON FUNCTION conveyor.uuid_v7(), conveyor.uuid_v7_time(uuid) TO conveyor_reader;
-- ===================================================================================================
-- The job queue
-- ===================================================================================================

CREATE SEQUENCE conveyor.queue_id_seq AS integer;

CREATE TABLE conveyor.queues (
    queue_id             integer PRIMARY KEY DEFAULT pg_catalog.nextval('conveyor.queue_id_seq'),
    name                 text NOT NULL UNIQUE,
    lease_seconds        integer NOT NULL DEFAULT 300,
    max_attempts         integer NOT NULL DEFAULT 5,
    backoff_base_seconds integer NOT NULL DEFAULT 10,
    backoff_max_seconds  integer NOT NULL DEFAULT 3600,
    job_types            text[],
    required_keys        text[],
    retention_days       integer NOT NULL DEFAULT 7,
    notify               boolean NOT NULL DEFAULT true,
    event_trail          text NOT NULL DEFAULT 'all' CHECK (event_trail IN ('all', 'failures')),
    paused               boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE conveyor.queue_id_seq OWNED BY conveyor.queues.queue_id;

-- Backends cache queue rows for enqueue and dequeue; any change to this table tells them to drop
-- their cache (the trigger invalidates the table's relcache entry, which every backend hears of).
CREATE FUNCTION conveyor.queues_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'conveyor_queues_changed';
COMMENT ON FUNCTION conveyor.queues_changed() IS 'Trigger function on conveyor.queues that makes every backend drop its cached queue rows; not for calling.';
CREATE TRIGGER queues_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON conveyor.queues
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor.queues_changed();

-- Job states as domains rather than table CHECK constraints: PostgreSQL 15 re-reads and re-plans a
-- table's CHECK expressions every time a statement starts writing the table, while a domain's check
-- is kept ready in the type cache (about a tenth of a single enqueue's CPU, measured).
CREATE DOMAIN conveyor.job_state AS text CHECK (VALUE IN ('ready', 'waiting', 'scheduled', 'running'));
CREATE DOMAIN conveyor.job_status AS text CHECK (VALUE IN ('completed', 'dead', 'cancelled'));

-- The hot table: pending and running jobs only. Finished jobs move to job_history.
-- state: 'ready'     due and first in line: the only jobs dequeue scans (jobs_ready)
--        'waiting'   due, but another job of its group is ready or running
--        'scheduled' not yet due (run_at in the future, e.g. a retry in backoff)
--        'running'   leased to a worker until lease_until
CREATE TABLE conveyor.jobs (
    job_id       uuid PRIMARY KEY,
    queue_id     integer NOT NULL,
    state        conveyor.job_state NOT NULL,
    priority     smallint NOT NULL,
    run_at       timestamptz NOT NULL,
    job_type     text,
    group_key    text,
    dedup_key    text,
    payload      jsonb NOT NULL,
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    worker_id    text,
    started_at   timestamptz,
    lease_until  timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- What dequeue scans: due, first-in-line jobs, in dequeue order.
CREATE INDEX jobs_ready ON conveyor.jobs (queue_id, priority DESC, run_at, job_id) WHERE state = 'ready';
-- Per-group serialization, enforced by the database: at most one ready-or-running job per group.
CREATE UNIQUE INDEX jobs_group_active ON conveyor.jobs (queue_id, group_key)
    WHERE state IN ('ready', 'running') AND group_key IS NOT NULL;
-- The next job of a group, when its active job finishes.
CREATE INDEX jobs_waiting ON conveyor.jobs (queue_id, group_key, priority DESC, run_at, job_id) WHERE state = 'waiting';
-- Scheduled jobs by the time they come due, and waiting jobs by how long they have waited: one index
-- for both (each query names one state), since every index on this table, even one a row does not
-- enter, costs each insert and update its upkeep (about 8k instructions each, measured).
CREATE INDEX jobs_by_run_at ON conveyor.jobs (queue_id, state, run_at) WHERE state IN ('waiting', 'scheduled');
-- Leases running out.
CREATE INDEX jobs_running ON conveyor.jobs (queue_id, lease_until) WHERE state = 'running';
-- A dedup key names at most one pending or running job per queue (finished jobs leave this table).
CREATE UNIQUE INDEX jobs_dedup ON conveyor.jobs (queue_id, dedup_key) WHERE dedup_key IS NOT NULL;

-- Finished jobs, partitioned by the day they may be purged (finished_at + the queue's retention), so
-- retention drops whole partitions. Partitions are created ahead by conveyor.maintain() and on demand.
CREATE TABLE conveyor.job_history (
    job_id       uuid NOT NULL,
    queue_id     integer NOT NULL,
    status       conveyor.job_status NOT NULL,
    priority     smallint NOT NULL,
    run_at       timestamptz NOT NULL,
    job_type     text,
    group_key    text,
    dedup_key    text,
    payload      jsonb NOT NULL,
    attempt      integer NOT NULL,
    max_attempts integer NOT NULL,
    worker_id    text,
    started_at   timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    purge_at     timestamptz NOT NULL
) PARTITION BY RANGE (purge_at);
-- Each partition carries its own indexes, (job_id) and (queue_id, status) WHERE status <> 'completed',
-- created with it (not inherited from here), so pg_dump restores partitions without name clashes.

-- The trail of every state change, partitioned by day.
CREATE TABLE conveyor.job_events (
    job_id    uuid NOT NULL,
    at        timestamptz NOT NULL,
    event     text NOT NULL,
    worker_id text,
    details   jsonb
) PARTITION BY RANGE (at);
-- Each partition carries its own index on (job_id, at).

-- Counters behind queue_metrics, so it never counts a large table. Each backend writes its own rows
-- (shard = backend pid), one per queue and minute, so writers never wait on each other. Gauges
-- (pending, scheduled, running, dead) are deltas summed over all rows; maintain() folds old minutes
-- into the row at bucket -infinity.
CREATE TABLE conveyor.queue_counts (
    queue_id     integer NOT NULL,
    bucket       timestamptz NOT NULL,
    shard        integer NOT NULL,
    pending      bigint NOT NULL DEFAULT 0,
    scheduled    bigint NOT NULL DEFAULT 0,
    running      bigint NOT NULL DEFAULT 0,
    dead         bigint NOT NULL DEFAULT 0,
    enqueued     bigint NOT NULL DEFAULT 0,
    started      bigint NOT NULL DEFAULT 0,
    completed    bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    expired      bigint NOT NULL DEFAULT 0,
    cancelled    bigint NOT NULL DEFAULT 0,
    wait_seconds double precision NOT NULL DEFAULT 0,
    run_seconds  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, bucket, shard)
) WITH (fillfactor = 50);

-- pg_dump keeps users' queues and jobs.
SELECT pg_catalog.pg_extension_config_dump('conveyor.queues', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_history', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_events', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.queue_counts', '');

-- Every statement a queue function runs is planned once per backend and kept (a generic plan). All of
-- them are index lookups; the function-level settings below keep the planner on those indexes
-- whatever the table statistics were when a backend first planned them (a bitmap AND of a partial
-- index with the primary key, or a sequential scan chosen while the table was empty, would be kept
-- for the life of the backend). jit is off because those settings inflate the cost of the few plans
-- that must scan (the queues table) past jit_above_cost, and JIT-compiling them each call costs ms.

-- ---- queue management -----------------------------------------------------------------------------

CREATE FUNCTION conveyor.create_queue(queue text, options jsonb DEFAULT '{}') RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_create_queue';
COMMENT ON FUNCTION conveyor.create_queue(text,jsonb) IS 'Creates a queue; options set its lease, attempts, backoff, allowed job types, required payload keys and retention.';
CREATE FUNCTION conveyor.alter_queue(queue text, options jsonb) RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_alter_queue';
COMMENT ON FUNCTION conveyor.alter_queue(text,jsonb) IS 'Changes the given options of a queue; options not named keep their values.';
CREATE FUNCTION conveyor.drop_queue(queue text, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_drop_queue';
COMMENT ON FUNCTION conveyor.drop_queue(text,boolean) IS 'Drops a queue with its history and counters; refuses while jobs are pending or running unless forced.';
CREATE FUNCTION conveyor.pause_queue(queue text) RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_pause_queue';
COMMENT ON FUNCTION conveyor.pause_queue(text) IS 'Pauses a queue: enqueue still accepts jobs, dequeue hands out none until resume_queue.';
CREATE FUNCTION conveyor.resume_queue(queue text) RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_resume_queue';
COMMENT ON FUNCTION conveyor.resume_queue(text) IS 'Resumes a paused queue and wakes its listening workers.';
CREATE FUNCTION conveyor.list_queues()
    RETURNS TABLE(queue text, paused boolean, options jsonb, created_at timestamptz)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_list_queues';
COMMENT ON FUNCTION conveyor.list_queues() IS 'Lists every queue with its paused flag, its options as JSON and its creation time.';

-- ---- producing ---------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.enqueue(queue text, payload jsonb DEFAULT '{}', job_type text DEFAULT NULL,
                                 group_key text DEFAULT NULL, priority int DEFAULT 5,
                                 run_at timestamptz DEFAULT now(), dedup_key text DEFAULT NULL,
                                 max_attempts int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, was_duplicate boolean)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_enqueue';
COMMENT ON FUNCTION conveyor.enqueue(text,jsonb,text,text,integer,timestamp with time zone,text,integer) IS 'Adds one job to a queue, or returns the pending or running job that holds the same dedup key.';
CREATE FUNCTION conveyor.enqueue_batch(queue text, jobs jsonb)
    RETURNS TABLE(ord int, job_id uuid, was_duplicate boolean)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_enqueue_batch';
COMMENT ON FUNCTION conveyor.enqueue_batch(text,jsonb) IS 'Adds many jobs in one statement, all or none; each element may carry any of enqueue''s arguments.';

-- ---- consuming ---------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.dequeue(queue text, worker_id text, max_count int DEFAULT 1, lease_seconds int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, priority int, attempt int,
                  lease_until timestamptz)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_dequeue';
COMMENT ON FUNCTION conveyor.dequeue(text,text,integer,integer) IS 'Leases up to max_count due jobs of a queue to a worker, by priority, then run_at, then enqueue order.';
CREATE FUNCTION conveyor.ack(job_id uuid, success boolean, error_message text DEFAULT NULL,
                             stats jsonb DEFAULT NULL, worker_id text DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_ack';
COMMENT ON FUNCTION conveyor.ack(uuid,boolean,text,jsonb,text) IS 'Acknowledges a running job: success completes it; failure retries it after backoff, or makes it dead.';
CREATE FUNCTION conveyor.ack_many(job_ids uuid[], success boolean, error_message text DEFAULT NULL,
                                  worker_id text DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_ack_many';
COMMENT ON FUNCTION conveyor.ack_many(uuid[],boolean,text,text) IS 'Acknowledges several running jobs at once with the same outcome; returns how many were acknowledged.';
CREATE FUNCTION conveyor.heartbeat(job_id uuid, worker_id text, extend_seconds int DEFAULT NULL) RETURNS timestamptz
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_heartbeat';
COMMENT ON FUNCTION conveyor.heartbeat(uuid,text,integer) IS 'Extends the lease of a running job held by worker_id; NULL when the worker no longer holds it.';
CREATE FUNCTION conveyor.release(job_id uuid, worker_id text, delay_seconds int DEFAULT 0) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_release';
COMMENT ON FUNCTION conveyor.release(uuid,text,integer) IS 'Gives a running job back to the queue without counting the attempt, due after delay_seconds.';

-- ---- operating -------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.retry(job_id uuid, delay_seconds int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_retry';
COMMENT ON FUNCTION conveyor.retry(uuid,integer) IS 'Puts a dead or cancelled job back as pending with its attempts reset, due after delay_seconds.';
CREATE FUNCTION conveyor.dead_letter(job_id uuid, reason text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_dead_letter';
COMMENT ON FUNCTION conveyor.dead_letter(uuid,text) IS 'Moves a pending or running job to history as dead, with a reason.';
CREATE FUNCTION conveyor.cancel(job_id uuid, reason text DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_cancel';
COMMENT ON FUNCTION conveyor.cancel(uuid,text) IS 'Cancels a pending or running job: it moves to history as cancelled.';
CREATE FUNCTION conveyor.reap(queue text DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_reap';
COMMENT ON FUNCTION conveyor.reap(text) IS 'Expires the lapsed leases of one queue, or of all, now; returns how many jobs it expired.';
CREATE FUNCTION conveyor.maintain() RETURNS jsonb
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_maintain';
COMMENT ON FUNCTION conveyor.maintain() IS 'Runs all upkeep: partitions, retention, counters, expired leases, keys, lock events, reservations, rate limits.';

-- ---- observing -------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.get_job(job_id uuid) RETURNS jsonb
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_get_job';
COMMENT ON FUNCTION conveyor.get_job(uuid) IS 'Returns one job, pending, running or finished, as a JSON object.';
CREATE FUNCTION conveyor.job_events(job_id uuid)
    RETURNS TABLE(at timestamptz, event text, worker_id text, details jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_job_events';
COMMENT ON FUNCTION conveyor.job_events(uuid) IS 'Returns the event trail of a job in time order.';
CREATE FUNCTION conveyor.queue_metrics(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, pending bigint, scheduled bigint, running bigint, expired_leases bigint,
                  completed_1h bigint, failed_24h bigint, dead bigint, avg_queue_seconds numeric,
                  jobs_per_hour numeric, oldest_pending_seconds numeric)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_queue_metrics';
COMMENT ON FUNCTION conveyor.queue_metrics(text) IS 'Returns counts and timings of one queue or of every queue, read from counters, never by counting jobs.';
-- Totals since each queue was created: they only grow (folding keeps their sums), so monitoring
-- systems take rates from them (Prometheus counters).
CREATE FUNCTION conveyor.queue_totals(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, enqueued bigint, started bigint, completed bigint, failed bigint, expired bigint,
                  cancelled bigint)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_queue_totals';
COMMENT ON FUNCTION conveyor.queue_totals(text) IS 'Returns the running totals of jobs enqueued, started, completed, failed, expired and cancelled per queue, for counters.';

-- ---- roles of the queue ----
GRANT EXECUTE ON FUNCTION conveyor.get_job(uuid), conveyor.job_events(uuid), conveyor.queue_metrics(text),
    conveyor.list_queues(), conveyor.queue_totals(text)
    TO conveyor_reader;
GRANT SELECT ON conveyor.queues TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.enqueue(text, jsonb, text, text, int, timestamptz, text, int),
    conveyor.enqueue_batch(text, jsonb),
    conveyor.dequeue(text, text, int, int),
    conveyor.ack(uuid, boolean, text, jsonb, text),
    conveyor.ack_many(uuid[], boolean, text, text),
    conveyor.heartbeat(uuid, text, int),
    conveyor.release(uuid, text, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.create_queue(text, jsonb), conveyor.alter_queue(text, jsonb), conveyor.drop_queue(text, boolean),
    conveyor.pause_queue(text), conveyor.resume_queue(text),
    conveyor.retry(uuid, int), conveyor.dead_letter(uuid, text), conveyor.cancel(uuid, text),
    conveyor.reap(text), conveyor.maintain()
    TO conveyor_admin;
-- ===================================================================================================
-- Idempotency keys
-- ===================================================================================================

-- One row per key: scope 'user' for idempotency_begin/finish; conveyor's own callers (upsert's
-- operation_id, charge's idempotency_key) use scopes of their own. Expired keys count as absent and
-- conveyor.maintain() deletes them.
CREATE DOMAIN conveyor.idempotency_state AS text CHECK (VALUE IN ('in_progress', 'completed'));
CREATE TABLE conveyor.idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request      jsonb,
    state        conveyor.idempotency_state NOT NULL,
    result       jsonb,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON conveyor.idempotency_keys (expires_at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.idempotency_keys', '');

CREATE FUNCTION conveyor.idempotency_begin(key text, request jsonb DEFAULT NULL, ttl_seconds int DEFAULT 86400)
    RETURNS TABLE(acquired boolean, state text, result jsonb)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_idempotency_begin';
COMMENT ON FUNCTION conveyor.idempotency_begin(text,jsonb,integer) IS 'Claims an idempotency key, or returns its state and result when another caller has claimed it.';
CREATE FUNCTION conveyor.idempotency_finish(key text, result jsonb) RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_idempotency_finish';
COMMENT ON FUNCTION conveyor.idempotency_finish(text,jsonb) IS 'Completes a claimed idempotency key and stores the result later callers receive.';
CREATE FUNCTION conveyor.idempotency_release(key text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_idempotency_release';
COMMENT ON FUNCTION conveyor.idempotency_release(text) IS 'Deletes an idempotency key still in progress, so that a retry may claim it; false if there was none.';

-- ---- roles of idempotency keys ----
GRANT EXECUTE ON FUNCTION
    conveyor.idempotency_begin(text, jsonb, int), conveyor.idempotency_finish(text, jsonb),
    conveyor.idempotency_release(text)
    TO conveyor_worker;
-- ===================================================================================================
-- Locks: leases with fencing tokens, entity processing states, text-keyed advisory locks
-- ===================================================================================================

-- Fencing tokens. One sequence for every key: a sequence never hands out a value twice, not after a
-- rollback, a restart or a crash, so it is the high-water mark of every key at once, and a lease row
-- can be deleted on release without forgetting which tokens were issued. lock_acquire draws a token
-- only while it holds the key's transaction-scoped lock, so for each key tokens grow in the order
-- the leases were granted. bigint, NO CYCLE: it never wraps.
CREATE SEQUENCE conveyor.lock_token_seq AS bigint NO CYCLE;

-- One row per held lease. A lease is live while heartbeat_at + ttl_seconds is in the future (server
-- clock); after that anyone may take it over. Released leases are deleted.
CREATE TABLE conveyor.locks (
    key              text PRIMARY KEY,
    owner            text NOT NULL,
    token            bigint NOT NULL,
    ttl_seconds      integer NOT NULL,
    acquired_at      timestamptz NOT NULL,
    heartbeat_at     timestamptz NOT NULL,
    correlation_id   text,
    metadata         jsonb,
    taken_from_owner text,      -- when this lease began by taking over a stale one: its holder
    taken_from_token bigint     -- and its token
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

-- Takeovers, force releases and cleanups, with the old and the new holder. conveyor.maintain()
-- deletes events older than 7 days.
CREATE TABLE conveyor.lock_events (
    at        timestamptz NOT NULL,
    key       text NOT NULL,
    event     text NOT NULL CHECK (event IN ('takeover', 'force_release', 'cleanup')),
    old_owner text,
    old_token bigint,
    new_owner text,
    new_token bigint,
    details   jsonb
);
CREATE INDEX lock_events_at ON conveyor.lock_events (at);
CREATE INDEX lock_events_key ON conveyor.lock_events (key, at);

-- Processing states of entities (an artist, a channel, a campaign), the seeds' processing_status.
--   PENDING -> IN_PROGRESS (entity_acquire) -> COMPLETED (entity_complete)
--                                           -> FAILED (entity_fail) -> IN_PROGRESS (entity_acquire, a retry)
--                                           -> DEAD (entity_fail with dead, or attempts used up)
--   IN_PROGRESS older than its timeout -> IN_PROGRESS again (entity_acquire, a recovery)
--   IN_PROGRESS older than stuck_seconds -> PENDING (entity_reset)
CREATE TABLE conveyor.entities (
    entity_type       text NOT NULL,
    entity_id         text NOT NULL,
    state             text NOT NULL CHECK (state IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'DEAD')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer,
    timeout_seconds   integer NOT NULL,
    last_processed_at timestamptz NOT NULL,   -- when it last became IN_PROGRESS
    last_error        text,
    metadata          jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
) WITH (fillfactor = 80);
CREATE INDEX entities_in_progress ON conveyor.entities (entity_type, last_processed_at) WHERE state = 'IN_PROGRESS';
-- What health() counts (FAILED and DEAD, capped): only those rows, so the count never walks the table.
CREATE INDEX entities_failed_dead ON conveyor.entities (state) WHERE state IN ('FAILED', 'DEAD');

-- pg_dump keeps users' leases, states, events and the token high-water mark.
SELECT pg_catalog.pg_extension_config_dump('conveyor.lock_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.locks', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.lock_events', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.entities', '');

-- Every lease with its age and whether it is stale, on the server's clock.
CREATE VIEW conveyor.locks_view AS
SELECT l.key, l.owner, l.token, l.correlation_id, l.metadata, l.ttl_seconds, l.acquired_at,
       l.heartbeat_at AS last_heartbeat,
       pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.acquired_at), 3)
           AS age_seconds,
       pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.heartbeat_at), 3)
           AS heartbeat_age_seconds,
       l.heartbeat_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => l.ttl_seconds) AS expires_at,
       l.heartbeat_at OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => l.ttl_seconds)
           OPERATOR(pg_catalog.<) pg_catalog.clock_timestamp() AS is_stale,
       l.taken_from_owner, l.taken_from_token
FROM conveyor.locks l;

-- ---- leases ------------------------------------------------------------------------------------------
-- Same settings as the queue's functions: kept generic plans stay on their indexes.

CREATE FUNCTION conveyor.lock_acquire(key text, owner text, ttl_seconds int DEFAULT 1800,
                                      correlation_id text DEFAULT NULL, metadata jsonb DEFAULT NULL)
    RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_lock_acquire';
COMMENT ON FUNCTION conveyor.lock_acquire(text,text,integer,text,jsonb) IS 'Takes, refreshes or takes over a lease on a key; returns its fencing token, or NULL while another owner holds it.';
CREATE FUNCTION conveyor.lock_heartbeat(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_lock_heartbeat';
COMMENT ON FUNCTION conveyor.lock_heartbeat(text,text,bigint) IS 'Restarts the clock of a lease held by owner (and token); false, changing nothing, when it is not theirs.';
CREATE FUNCTION conveyor.lock_release(key text, owner text, token bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_lock_release';
COMMENT ON FUNCTION conveyor.lock_release(text,text,bigint) IS 'Releases a lease held by owner (and token); false, changing nothing, when it is not theirs.';
CREATE FUNCTION conveyor.lock_force_release(key text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_lock_force_release';
COMMENT ON FUNCTION conveyor.lock_force_release(text) IS 'Deletes a lease whoever holds it and records a force_release event; for operators.';
-- Locks the lease row (FOR SHARE) until the caller's transaction ends: a takeover, release or
-- heartbeat of that lease waits for the caller's write to commit.
CREATE FUNCTION conveyor.lock_check(key text, token bigint) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_lock_check';
COMMENT ON FUNCTION conveyor.lock_check(text,bigint) IS 'True while token is the live holder''s, and then locks the lease row until the caller''s transaction ends.';
-- Scans all leases: no index settings.
CREATE FUNCTION conveyor.locks_cleanup(stale_seconds int DEFAULT NULL)
    RETURNS TABLE(key text, owner text, token bigint, held_seconds numeric)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_locks_cleanup';
COMMENT ON FUNCTION conveyor.locks_cleanup(integer) IS 'Deletes leases without a heartbeat for stale_seconds (default: each lease''s own ttl) and returns them.';

-- ---- entity processing states ------------------------------------------------------------------------

CREATE FUNCTION conveyor.entity_acquire(entity_type text, entity_id text, timeout_seconds int DEFAULT 1800,
                                        correlation_id text DEFAULT NULL, max_attempts int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_acquire';
COMMENT ON FUNCTION conveyor.entity_acquire(text,text,integer,text,integer) IS 'Moves an entity to IN_PROGRESS for the caller if it is new, pending, failed or timed out; false otherwise.';
CREATE FUNCTION conveyor.entity_complete(entity_type text, entity_id text, metadata jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_complete';
COMMENT ON FUNCTION conveyor.entity_complete(text,text,jsonb) IS 'Marks an IN_PROGRESS entity COMPLETED, merging metadata into its own.';
CREATE FUNCTION conveyor.entity_fail(entity_type text, entity_id text, error text, dead boolean DEFAULT false)
    RETURNS text
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_fail';
COMMENT ON FUNCTION conveyor.entity_fail(text,text,text,boolean) IS 'Marks an IN_PROGRESS entity FAILED, or DEAD when asked or when its attempts are used up; returns the state.';
CREATE FUNCTION conveyor.entity_reset(entity_type text DEFAULT NULL, stuck_seconds int DEFAULT 3600)
    RETURNS TABLE(entity_type text, entity_id text, previous_state text)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_reset';
COMMENT ON FUNCTION conveyor.entity_reset(text,integer) IS 'Returns entities stuck IN_PROGRESS longer than stuck_seconds to PENDING, and lists them.';
CREATE FUNCTION conveyor.entity_state(entity_type text, entity_id text) RETURNS jsonb
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_state';
COMMENT ON FUNCTION conveyor.entity_state(text,text) IS 'Returns an entity''s state, attempts, timeout, last error and metadata as JSON; NULL when unknown.';
-- These two read every entity: no index settings.
CREATE FUNCTION conveyor.entity_stats()
    RETURNS TABLE(entity_type text, state text, count bigint, oldest_seconds numeric)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_stats';
COMMENT ON FUNCTION conveyor.entity_stats() IS 'Counts entities by type and state, with the age of the oldest change in each.';
CREATE FUNCTION conveyor.entity_inconsistencies()
    RETURNS TABLE(entity_type text, entity_id text, state text, lock_key text, issue text, details jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_entity_inconsistencies';
COMMENT ON FUNCTION conveyor.entity_inconsistencies() IS 'Lists entities whose state disagrees with their timeout or with their lease ''<entity_type>:<entity_id>''.';

-- ---- text-keyed advisory locks -----------------------------------------------------------------------
-- conveyor.try_advisory_lock(k) takes the same lock as pg_try_advisory_lock(conveyor.advisory_key(k)).
-- They touch no table, so they run as the caller and without SET clauses.

CREATE FUNCTION conveyor.advisory_key(key text) RETURNS bigint
    LANGUAGE C IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_key';
COMMENT ON FUNCTION conveyor.advisory_key(text) IS 'Returns the stable 64-bit key of a text: XXH3-64 (seed 0) of its UTF-8 bytes, as a signed bigint.';
CREATE FUNCTION conveyor.try_advisory_lock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_try_advisory_lock';
COMMENT ON FUNCTION conveyor.try_advisory_lock(text) IS 'Takes the session-level advisory lock of a text key if it is free now; does not wait.';
CREATE FUNCTION conveyor.advisory_lock(key text, timeout_ms int) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_lock';
COMMENT ON FUNCTION conveyor.advisory_lock(text,integer) IS 'Waits at most timeout_ms for the session-level advisory lock of a text key; false on timeout.';
CREATE FUNCTION conveyor.advisory_unlock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_unlock';
COMMENT ON FUNCTION conveyor.advisory_unlock(text) IS 'Releases one session-level hold of the advisory lock of a text key.';
-- Releases every session-level hold of this session on the key and returns how many. (A key this
-- transaction holds only at transaction level gets PostgreSQL's "you don't own a lock" warning.)
CREATE FUNCTION conveyor.advisory_unlock_all(key text) RETURNS int
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_unlock_all';
COMMENT ON FUNCTION conveyor.advisory_unlock_all(text) IS 'Releases every session-level hold this session has on the advisory lock of a text key; returns how many.';
CREATE FUNCTION conveyor.advisory_lock_held(key text) RETURNS boolean
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_advisory_lock_held';
COMMENT ON FUNCTION conveyor.advisory_lock_held(text) IS 'True when any session of this database holds the advisory lock of a text key (read from pg_locks).';
CREATE FUNCTION conveyor.try_advisory_xact_lock(key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_try_advisory_xact_lock';
COMMENT ON FUNCTION conveyor.try_advisory_xact_lock(text) IS 'Takes the transaction-level advisory lock of a text key if it is free now; released at transaction end.';
CREATE FUNCTION conveyor.advisory_xact_lock(key text, timeout_ms int) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_advisory_xact_lock';
COMMENT ON FUNCTION conveyor.advisory_xact_lock(text,integer) IS 'Waits at most timeout_ms for the transaction-level advisory lock of a text key; false on timeout.';

-- ---- roles of locks, leases and entity states ----
GRANT EXECUTE ON FUNCTION conveyor.entity_stats(), conveyor.entity_state(text, text) TO conveyor_reader;
GRANT SELECT ON conveyor.locks_view, conveyor.lock_events TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.lock_acquire(text, text, int, text, jsonb),
    conveyor.lock_heartbeat(text, text, bigint),
    conveyor.lock_release(text, text, bigint),
    conveyor.lock_check(text, bigint),
    conveyor.locks_cleanup(int),
    conveyor.entity_acquire(text, text, int, text, int),
    conveyor.entity_complete(text, text, jsonb),
    conveyor.entity_fail(text, text, text, boolean),
    conveyor.entity_reset(text, int),
    conveyor.entity_inconsistencies(),
    conveyor.advisory_key(text),
    conveyor.try_advisory_lock(text), conveyor.advisory_lock(text, int),
    conveyor.advisory_unlock(text), conveyor.advisory_unlock_all(text), conveyor.advisory_lock_held(text),
    conveyor.try_advisory_xact_lock(text), conveyor.advisory_xact_lock(text, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.lock_force_release(text) TO conveyor_admin;
-- ===================================================================================================
-- Costs, budgets and quotas
-- ===================================================================================================

-- An account pays for calls (a campaign, a customer, a pipeline). Its running total is the sum of its
-- ledger; reserved the running sum of its open reservations. Both change only together with the
-- ledger or reservation rows they sum, in one statement (ledger_verify checks it).
-- An account with a hard budget keeps its whole running total in total, so that one row decides
-- every charge. Any other account (no budget, or a soft one) takes charges on account_slots rows,
-- one per backend slot, so that concurrent charges to one hot account do not queue on one row; its
-- running total is total plus the sum of its slots. account_update folds the slots back into total.
CREATE TABLE conveyor.accounts (
    account    text PRIMARY KEY,
    budget     numeric(24, 6) CHECK (budget >= 0),
    currency   text NOT NULL,
    hard_limit boolean NOT NULL,
    metadata   jsonb,
    total      numeric(30, 6) NOT NULL DEFAULT 0,
    reserved   numeric(30, 6) NOT NULL DEFAULT 0,
    entries    bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.accounts', '');

CREATE TABLE conveyor.account_slots (
    account text NOT NULL,
    slot    integer NOT NULL,
    total   numeric(30, 6) NOT NULL,
    entries bigint NOT NULL,
    PRIMARY KEY (account, slot)
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.account_slots', '');

-- The ledger: one immutable row per charge, refund or settlement.
CREATE TABLE conveyor.ledger (
    entry_id       uuid PRIMARY KEY,
    account        text NOT NULL,
    service        text NOT NULL,
    amount         numeric(24, 6) NOT NULL,
    items          integer NOT NULL,
    metadata       jsonb,
    reservation_id uuid,
    created_at     timestamptz NOT NULL
);
CREATE INDEX ledger_account ON conveyor.ledger (account, created_at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.ledger', '');

-- Budget held for work of unknown cost. state: 'open' until it resolves, exactly once, as
-- 'settled' (charged through the ledger), 'released' or 'expired'.
CREATE TABLE conveyor.reservations (
    reservation_id uuid PRIMARY KEY,
    account        text NOT NULL,
    amount         numeric(24, 6) NOT NULL,
    state          text NOT NULL CHECK (state IN ('open', 'settled', 'released', 'expired')),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    resolved_at    timestamptz,
    entry_id       uuid
);
CREATE INDEX reservations_open ON conveyor.reservations (account, expires_at) WHERE state = 'open';
CREATE INDEX reservations_expiry ON conveyor.reservations (expires_at) WHERE state = 'open';
SELECT pg_catalog.pg_extension_config_dump('conveyor.reservations', '');

-- A quota: quota_limit units per calendar window ('hour', 'day', 'month') in the time zone reset_tz.
-- used counts the window [window_start, window_end); the first consume after window_end starts the
-- next window.
CREATE TABLE conveyor.quotas (
    name         text PRIMARY KEY,
    quota_limit  bigint NOT NULL CHECK (quota_limit > 0),
    period       text NOT NULL CHECK (period IN ('hour', 'day', 'month')),
    reset_tz     text NOT NULL,
    costs        jsonb,
    used         bigint NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.quotas', '');

-- GCRA rate limiters: one row per key holding its theoretical arrival time (microseconds since
-- 2000-01-01, PostgreSQL's timestamp origin). A row whose tat has passed is as good as absent;
-- conveyor.maintain() deletes those.
CREATE TABLE conveyor.rate_limits (
    key text PRIMARY KEY,
    tat bigint NOT NULL
) WITH (fillfactor = 50);

-- The calendar window of `period` in time zone `reset_tz` that contains `instant`:
-- date_trunc in that zone for the start; the end is the start of the next window, found by truncating
-- an instant safely inside it (local days last 23 to 25 hours, months 28 to 31 days), so a window
-- always ends at the local midnight (or hour, or first of the month) whatever the offset change.
-- instant must be a time conveyor can compute with (README, "Limits"): finite, from 1900-01-01 to
-- 9999-12-31 UTC; anything else is 22023 naming it.
CREATE FUNCTION conveyor.quota_window(period text, reset_tz text, instant timestamptz DEFAULT pg_catalog.now(),
                                      OUT window_start timestamptz, OUT window_end timestamptz)
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog, conveyor, pg_temp
    AS $body$
BEGIN
    IF period IS NULL OR period NOT IN ('hour', 'day', 'month') THEN
        RAISE EXCEPTION 'period "%" is not one of hour, day, month', period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF instant OPERATOR(pg_catalog.<) '1900-01-01 00:00:00+00'::timestamptz
       OR instant OPERATOR(pg_catalog.>=) '10000-01-01 00:00:00+00'::timestamptz THEN
        RAISE EXCEPTION 'instant must be between 1900-01-01 00:00:00+00 and 9999-12-31 23:59:59+00, not "%"', instant
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'conveyor stores only finite times it can compute with (subtract, add leases and backoffs, truncate to periods).';
    END IF;
    SELECT s.start, pg_catalog.date_trunc(period, s.start OPERATOR(pg_catalog.+) CASE period
               WHEN 'hour' THEN interval '90 minutes' WHEN 'day' THEN interval '26 hours'
               WHEN 'month' THEN interval '768 hours' END, reset_tz)
    INTO window_start, window_end
    FROM (SELECT pg_catalog.date_trunc(period, instant, reset_tz) AS start) s;
END
$body$;
COMMENT ON FUNCTION conveyor.quota_window(text,text,timestamp with time zone) IS 'Returns the calendar window (hour, day or month in a time zone) that contains an instant.';

-- The projection and risk level of quota_status (README, "Risk levels"), for any instant:
-- projected = used extrapolated to the end of the window at the rate so far, the rate measured over
-- at least the first 1/24 of the window (one hour of a day); risk_level
--   'exhausted' when used >= quota_limit,
--   'high'      when projected >= quota_limit or used >= 90% of it,
--   'medium'    when projected >= 75% of quota_limit,
--   'low'       otherwise.
-- Computed in numeric and the projection clamped to bigint, so that no stored quota (not one defined
-- before limits were checked, with the largest bigint as its limit) can make quota_status fail. The
-- times must be ones conveyor can compute with (README, "Limits") and the window must not be empty:
-- 22023 otherwise.
CREATE FUNCTION conveyor.quota_projection(used bigint, quota_limit bigint, window_start timestamptz,
                                          window_end timestamptz, instant timestamptz DEFAULT pg_catalog.now(),
                                          OUT projected_usage bigint, OUT risk_level text)
    LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, conveyor, pg_temp
    AS $body$
DECLARE
    arg text;
    val timestamptz;
    span numeric;
    projected numeric;
BEGIN
    FOR arg, val IN VALUES ('window_start', window_start), ('window_end', window_end), ('instant', instant) LOOP
        IF val OPERATOR(pg_catalog.<) '1900-01-01 00:00:00+00'::timestamptz
           OR val OPERATOR(pg_catalog.>=) '10000-01-01 00:00:00+00'::timestamptz THEN
            RAISE EXCEPTION '% must be between 1900-01-01 00:00:00+00 and 9999-12-31 23:59:59+00, not "%"', arg, val
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'conveyor stores only finite times it can compute with (subtract, add leases and backoffs, truncate to periods).';
        END IF;
    END LOOP;
    IF window_end OPERATOR(pg_catalog.<=) window_start THEN
        RAISE EXCEPTION 'window_end (%) must be after window_start (%)', window_end, window_start
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    span := extract(epoch FROM window_end OPERATOR(pg_catalog.-) window_start);
    projected := pg_catalog.ceil((used::numeric OPERATOR(pg_catalog.*) span) OPERATOR(pg_catalog./)
                 GREATEST(extract(epoch FROM LEAST(instant, window_end) OPERATOR(pg_catalog.-) window_start),
                          span OPERATOR(pg_catalog./) 24));
    projected_usage := LEAST(GREATEST(projected, -9223372036854775808::numeric),
                                        9223372036854775807::numeric)::bigint;
    risk_level := CASE
        WHEN used OPERATOR(pg_catalog.>=) quota_limit THEN 'exhausted'
        WHEN projected OPERATOR(pg_catalog.>=) quota_limit::numeric
             OR (used::numeric OPERATOR(pg_catalog.*) 10) OPERATOR(pg_catalog.>=) (quota_limit::numeric OPERATOR(pg_catalog.*) 9)
             THEN 'high'
        WHEN (projected OPERATOR(pg_catalog.*) 4) OPERATOR(pg_catalog.>=) (quota_limit::numeric OPERATOR(pg_catalog.*) 3)
             THEN 'medium'
        ELSE 'low' END;
END
$body$;
COMMENT ON FUNCTION conveyor.quota_projection(bigint,bigint,timestamp with time zone,timestamp with time zone,timestamp with time zone) IS 'Projects a window''s use to its end at the rate so far and classifies the risk: low, medium, high, exhausted.';

CREATE FUNCTION conveyor.account_create(account text, budget numeric DEFAULT NULL, currency text DEFAULT 'USD',
                                        hard_limit boolean DEFAULT true, metadata jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_account_create';
COMMENT ON FUNCTION conveyor.account_create(text,numeric,text,boolean,jsonb) IS 'Creates an account with an optional budget, its currency and whether the budget is a hard limit.';
CREATE FUNCTION conveyor.account_update(account text, budget numeric DEFAULT NULL, currency text DEFAULT NULL,
                                        hard_limit boolean DEFAULT NULL, metadata jsonb DEFAULT NULL,
                                        remove_budget boolean DEFAULT false)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_account_update';
COMMENT ON FUNCTION conveyor.account_update(text,numeric,text,boolean,jsonb,boolean) IS 'Changes the given settings of an account (budget, currency, hard limit, metadata) and leaves the rest.';
CREATE FUNCTION conveyor.account_status(account text DEFAULT NULL)
    RETURNS TABLE(account text, total numeric, reserved numeric, budget numeric, available numeric,
                  entries bigint, by_service jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_account_status';
COMMENT ON FUNCTION conveyor.account_status(text) IS 'Returns each account''s (or one account''s) total, reserved amount, budget, what is available and spend by service.';
CREATE FUNCTION conveyor.charge(account text, service text, amount numeric, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL, idempotency_key text DEFAULT NULL,
                                refund boolean DEFAULT false)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_charge';
COMMENT ON FUNCTION conveyor.charge(text,text,numeric,integer,jsonb,text,boolean) IS 'Records a charge (or with refund, a negative amount) to an account; a hard budget refuses it with CV001.';
CREATE FUNCTION conveyor.reserve(account text, amount numeric, ttl_seconds int DEFAULT 600,
                                 idempotency_key text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_reserve';
COMMENT ON FUNCTION conveyor.reserve(text,numeric,integer,text) IS 'Holds part of an account''s budget for work of unknown cost until settled, released or expired.';
CREATE FUNCTION conveyor.settle(reservation_id uuid, actual numeric, service text, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_settle';
COMMENT ON FUNCTION conveyor.settle(uuid,numeric,text,integer,jsonb) IS 'Charges the actual cost of an open reservation through the ledger and frees the rest of what it held.';
CREATE FUNCTION conveyor.release_reservation(reservation_id uuid)
    RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_release_reservation';
COMMENT ON FUNCTION conveyor.release_reservation(uuid) IS 'Releases an open reservation without charging; false when it was already released or expired.';
CREATE FUNCTION conveyor.ledger_verify(account text DEFAULT NULL)
    RETURNS TABLE(account text, total numeric, ledger_sum numeric, reserved numeric,
                  open_reservations_sum numeric, ok boolean)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_ledger_verify';
COMMENT ON FUNCTION conveyor.ledger_verify(text) IS 'Checks each account''s running totals and reserved amount against its ledger rows and open reservations.';
CREATE FUNCTION conveyor.cost_report(account text, since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                                     bucket text DEFAULT 'day')
    RETURNS TABLE(bucket_start timestamptz, service text, items bigint, amount numeric)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_cost_report';
COMMENT ON FUNCTION conveyor.cost_report(text,timestamp with time zone,timestamp with time zone,text) IS 'Sums an account''s ledger by time bucket and service over [since, until), in the session''s time zone.';

CREATE FUNCTION conveyor.quota_define(name text, quota_limit bigint, period text DEFAULT 'day',
                                      reset_tz text DEFAULT 'UTC', costs jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_quota_define';
COMMENT ON FUNCTION conveyor.quota_define(text,bigint,text,text,jsonb) IS 'Creates or redefines a quota: a limit of units per calendar window in a time zone, with costs per operation.';
CREATE FUNCTION conveyor.quota_consume(name text, units int DEFAULT NULL, operation text DEFAULT NULL,
                                       idempotency_key text DEFAULT NULL)
    RETURNS TABLE(allowed boolean, used bigint, remaining bigint, reset_at timestamptz)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_quota_consume';
COMMENT ON FUNCTION conveyor.quota_consume(text,integer,text,text) IS 'Consumes units of a quota atomically if they fit in the current window; otherwise consumes nothing.';
CREATE FUNCTION conveyor.quota_status(name text DEFAULT NULL)
    RETURNS TABLE(name text, current_quota_used bigint, quota_limit bigint, quota_remaining bigint,
                  reset_time timestamptz, projected_daily_usage bigint, risk_level text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_quota_status';
COMMENT ON FUNCTION conveyor.quota_status(text) IS 'Returns each quota''s (or one quota''s) use in the current window, its reset time, projection and risk level.';
CREATE FUNCTION conveyor.rate_limit(key text, rate int, per_seconds int DEFAULT 1, burst int DEFAULT NULL)
    RETURNS TABLE(allowed boolean, retry_after_ms int)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_rate_limit';
COMMENT ON FUNCTION conveyor.rate_limit(text,integer,integer,integer) IS 'GCRA rate limiter per key: allows burst requests at once, then one every per_seconds / rate.';

-- ---- roles of costs, quotas and rate limits ----
GRANT EXECUTE ON FUNCTION
    conveyor.account_status(text), conveyor.ledger_verify(text),
    conveyor.cost_report(text, timestamptz, timestamptz, text),
    conveyor.quota_status(text), conveyor.quota_window(text, text, timestamptz),
    conveyor.quota_projection(bigint, bigint, timestamptz, timestamptz, timestamptz)
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.charge(text, text, numeric, int, jsonb, text, boolean),
    conveyor.reserve(text, numeric, int, text),
    conveyor.settle(uuid, numeric, text, int, jsonb),
    conveyor.release_reservation(uuid),
    conveyor.quota_consume(text, int, text, text),
    conveyor.rate_limit(text, int, int, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.account_create(text, numeric, text, boolean, jsonb),
    conveyor.account_update(text, numeric, text, boolean, jsonb, boolean),
    conveyor.quota_define(text, bigint, text, text, jsonb)
    TO conveyor_admin;
-- ===================================================================================================
-- Upserts that write only what changed
-- ===================================================================================================

-- One row per real change an upsert with the option audit made (inserted or updated rows; unchanged
-- rows leave no trace). Written as the extension's owner: callers cannot write it directly.
-- conveyor_admin reads it. Old rows are the user's to delete (e.g. from a pg_cron job).
CREATE TABLE conveyor.change_log (
    change_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    target       text NOT NULL,          -- schema.table
    key          jsonb NOT NULL,         -- {"key column": value, ...}
    action       text NOT NULL CHECK (action IN ('inserted', 'updated')),
    changed      jsonb,                  -- updated: {"column": {"old": ..., "new": ...}}
    operation_id text,
    changed_by   text NOT NULL           -- the calling role (current_user)
);
CREATE INDEX change_log_target ON conveyor.change_log (target, at);
CREATE INDEX change_log_at ON conveyor.change_log (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.change_log', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.change_log_change_id_seq', '');

-- SECURITY INVOKER: the statements on the target run as the caller, so the caller's privileges and
-- the target's row-level security policies apply as to the caller's own SQL. The kept plans are
-- generic (one per target, column set and options); the scan settings keep them on the key's index.
CREATE FUNCTION conveyor.upsert(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(ord int, key jsonb, action text, changed jsonb)
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_upsert';
COMMENT ON FUNCTION conveyor.upsert(regclass,jsonb,text[],jsonb) IS 'Inserts or updates JSON rows in a table by a unique key, writing only real changes; reports each row.';
CREATE FUNCTION conveyor.upsert_counts(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(inserted bigint, updated bigint, unchanged bigint, skipped bigint)
    LANGUAGE C VOLATILE SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_upsert_counts';
COMMENT ON FUNCTION conveyor.upsert_counts(regclass,jsonb,text[],jsonb) IS 'Same as upsert, but returns only the counts of inserted, updated, unchanged and skipped rows.';

-- ---- roles of upserts ----
GRANT EXECUTE ON FUNCTION conveyor.upsert(regclass, jsonb, text[], jsonb), conveyor.upsert_counts(regclass, jsonb, text[], jsonb)
    TO conveyor_worker;
-- ===================================================================================================
-- Period snapshots with deltas
-- ===================================================================================================

-- One row per series, entity and period. period_start is the start of the period in the capture's
-- time zone ('hour', 'day'), or the capture time itself ('none'). The primary key is the only index:
-- the period's row, the previous period's, the day-ago snapshot and every read of a series are
-- ranges of it.
CREATE TABLE conveyor.snapshots (
    series            text NOT NULL,
    entity_id         text NOT NULL,
    period_start      timestamptz NOT NULL,
    snapshot_id       uuid NOT NULL,           -- UUIDv7 of the period's first capture
    period            text NOT NULL CHECK (period IN ('hour', 'day', 'none')),
    tz                text NOT NULL,
    first_captured_at timestamptz NOT NULL,
    captured_at       timestamptz NOT NULL,    -- the period's latest capture, whose metrics these are
    captures          integer NOT NULL,        -- captures that changed the row (the first included)
    metrics           jsonb NOT NULL,
    delta             jsonb,                   -- numeric metrics minus the previous period's last values
    delta_day         jsonb,                   -- ... minus the latest snapshot at least 24 hours older
    PRIMARY KEY (series, entity_id, period_start)
) WITH (fillfactor = 90);
SELECT pg_catalog.pg_extension_config_dump('conveyor.snapshots', '');

-- {"metric": new - old} for every metric that is a number in both; NULL when there is no old.
CREATE FUNCTION conveyor.metrics_delta(new jsonb, old jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN old IS NULL THEN NULL ELSE COALESCE(
        (SELECT pg_catalog.jsonb_object_agg(n.key, n.value::pg_catalog.numeric OPERATOR(pg_catalog.-) o.value::pg_catalog.numeric)
         FROM pg_catalog.jsonb_each(new) AS n JOIN pg_catalog.jsonb_each(old) AS o ON o.key OPERATOR(pg_catalog.=) n.key
         WHERE pg_catalog.jsonb_typeof(n.value) OPERATOR(pg_catalog.=) 'number'
           AND pg_catalog.jsonb_typeof(o.value) OPERATOR(pg_catalog.=) 'number'),
        '{}'::pg_catalog.jsonb) END;
COMMENT ON FUNCTION conveyor.metrics_delta(jsonb,jsonb) IS 'Returns new minus old for every metric that is a number in both JSON objects; NULL when old is NULL.';

CREATE FUNCTION conveyor.snapshot(series text, entity_id text, metrics jsonb, captured_at timestamptz DEFAULT now(),
                                  period text DEFAULT 'day', tz text DEFAULT 'UTC')
    RETURNS TABLE(snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_snapshot';
COMMENT ON FUNCTION conveyor.snapshot(text,text,jsonb,timestamp with time zone,text,text) IS 'Records a capture of an entity''s metrics in its period''s row and returns the deltas to earlier periods.';
CREATE FUNCTION conveyor.snapshot_batch(series text, captures jsonb, period text DEFAULT 'day', tz text DEFAULT 'UTC')
    RETURNS TABLE(ord int, entity_id text, snapshot_id uuid, is_new_period boolean, delta jsonb, delta_day jsonb)
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_snapshot_batch';
COMMENT ON FUNCTION conveyor.snapshot_batch(text,jsonb,text,text) IS 'Records captures of many entities of one series in one call, all or none.';
CREATE FUNCTION conveyor.snapshot_series(series text, entity_id text, since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL)
    RETURNS TABLE(period_start timestamptz, captured_at timestamptz, metrics jsonb, delta jsonb, delta_day jsonb,
                  captures int, snapshot_id uuid)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_snapshot_series';
COMMENT ON FUNCTION conveyor.snapshot_series(text,text,timestamp with time zone,timestamp with time zone) IS 'Returns the snapshots of one entity of a series whose period starts in [since, until), oldest first.';

-- ---- roles of snapshots ----
GRANT EXECUTE ON FUNCTION conveyor.snapshot_series(text, text, timestamptz, timestamptz), conveyor.metrics_delta(jsonb, jsonb)
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.snapshot(text, text, jsonb, timestamptz, text, text), conveyor.snapshot_batch(text, jsonb, text, text)
    TO conveyor_worker;
-- ===================================================================================================
-- Monitor: settings, the monitoring event log, worker issues, metrics with rollups, health
-- ===================================================================================================

-- ---- settings -------------------------------------------------------------------------------------
-- What an operator changed; every other key has its default (settings() lists keys, defaults and
-- descriptions, which live with their validation in src/monitor/settings.cpp).
CREATE TABLE conveyor.settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.settings', '');

-- Backends cache the settings; a change invalidates the table's relcache entry, which empties them.
CREATE FUNCTION conveyor.settings_changed() RETURNS trigger
    LANGUAGE C AS 'MODULE_PATHNAME', 'conveyor_settings_changed';
COMMENT ON FUNCTION conveyor.settings_changed() IS 'Trigger function on conveyor.settings that makes every backend drop its cached settings; not for calling.';
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON conveyor.settings
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor.settings_changed();

-- ---- the monitoring event log ---------------------------------------------------------------------
-- One log every capability writes to, in the transaction of the change; partitioned by day
-- (events_pYYYYMMDD, each with its own indexes), dropped after retention.events_days.
CREATE SEQUENCE conveyor.event_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.events (
    event_id bigint NOT NULL,
    at       timestamptz NOT NULL,
    event    text NOT NULL,
    source   text NOT NULL,
    subject  text,
    details  jsonb
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.events', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.event_id_seq', '');

-- ---- worker issues --------------------------------------------------------------------------------
-- What workers report about themselves. One open row per (worker, type, message): a repeat bumps
-- occurrences and last_seen. Resolved rows are purged after retention.resolved_issues_days.
CREATE SEQUENCE conveyor.issue_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.worker_issues (
    issue_id    bigint PRIMARY KEY DEFAULT pg_catalog.nextval('conveyor.issue_id_seq'),
    worker_name text NOT NULL,
    issue_type  text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message     text NOT NULL,
    details     jsonb,
    occurrences integer NOT NULL DEFAULT 1,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text
);
CREATE UNIQUE INDEX worker_issues_open ON conveyor.worker_issues (worker_name, issue_type, pg_catalog.md5(message))
    WHERE resolved_at IS NULL;
CREATE INDEX worker_issues_resolved ON conveyor.worker_issues (resolved_at) WHERE resolved_at IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('conveyor.worker_issues', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.issue_id_seq', '');

-- ---- metrics --------------------------------------------------------------------------------------
-- Raw points, partitioned by day (metric_points_pYYYYMMDD), dropped after retention.metric_points_days.
-- xid is the writing transaction: aggregate_metrics re-rolls exactly the buckets that received points
-- its previous run could not see (those of transactions at or after that run's snapshot xmin).
CREATE TABLE conveyor.metric_points (
    metric text NOT NULL,
    value  double precision NOT NULL,
    tags   jsonb NOT NULL,
    at     timestamptz NOT NULL,
    xid    xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_points', '');

-- Hourly and daily rollups per metric and tag set, recomputed from the raw points of a bucket.
CREATE TABLE conveyor.metric_rollups (
    metric       text NOT NULL,
    period       text NOT NULL CHECK (period IN ('hour', 'day')),
    bucket_start timestamptz NOT NULL,
    tag_set      jsonb NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    avg          double precision NOT NULL,
    sum          double precision NOT NULL,
    count        bigint NOT NULL,
    p50          double precision NOT NULL,
    p95          double precision NOT NULL,
    p99          double precision NOT NULL,
    rolled_at    timestamptz NOT NULL,
    PRIMARY KEY (metric, period, bucket_start, tag_set)
);
CREATE INDEX metric_rollups_age ON conveyor.metric_rollups (period, bucket_start);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_rollups', '');

-- Per period: the snapshot xmin of the last rollup (points of transactions before it were all seen).
CREATE TABLE conveyor.metric_rollup_state (
    period    text PRIMARY KEY,
    next_xmin xid8 NOT NULL,
    rolled_at timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.metric_rollup_state', '');

-- ---- settings functions ---------------------------------------------------------------------------
CREATE FUNCTION conveyor.settings()
    RETURNS TABLE(key text, value text, default_value text, description text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_settings';
COMMENT ON FUNCTION conveyor.settings() IS 'Every setting with its value, default and description.';
CREATE FUNCTION conveyor.get_setting(key text) RETURNS text
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_get_setting';
COMMENT ON FUNCTION conveyor.get_setting(text) IS 'The value of one setting (its default unless changed).';
CREATE FUNCTION conveyor.set_setting(key text, value text) RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_set_setting';
COMMENT ON FUNCTION conveyor.set_setting(text,text) IS 'Changes a setting after validating it; NULL restores the default.';

-- ---- events ---------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.events(since timestamptz DEFAULT pg_catalog.now() - interval '1 hour',
                                event_type text DEFAULT NULL, lim int DEFAULT 1000)
    RETURNS TABLE(event_id bigint, at timestamptz, event text, source text, subject text, details jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_events';
COMMENT ON FUNCTION conveyor.events(timestamp with time zone,text,integer) IS 'Monitoring events since a time, oldest first, optionally of one type, at most lim.';

-- ---- worker issues --------------------------------------------------------------------------------
CREATE FUNCTION conveyor.report_issue(worker_name text, issue_type text, severity text, message text,
                                      details jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_report_issue';
COMMENT ON FUNCTION conveyor.report_issue(text,text,text,text,jsonb) IS 'Records a worker issue (or counts a repeat of the same open one) and returns its id.';
CREATE FUNCTION conveyor.resolve_issue(issue_id bigint, resolution text) RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_resolve_issue';
COMMENT ON FUNCTION conveyor.resolve_issue(bigint,text) IS 'Marks an open worker issue resolved; false if it was already resolved.';
CREATE FUNCTION conveyor.worker_issues(resolved boolean DEFAULT false)
    RETURNS TABLE(issue_id bigint, worker_name text, issue_type text, severity text, message text, details jsonb,
                  occurrences int, first_seen timestamptz, last_seen timestamptz, resolved_at timestamptz,
                  resolution text)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_worker_issues';
COMMENT ON FUNCTION conveyor.worker_issues(boolean) IS 'Worker issues, most recent first: open ones (false), resolved ones (true) or all (NULL).';
CREATE FUNCTION conveyor.worker_issue_stats()
    RETURNS TABLE(worker_name text, issue_type text, severity text, open_issues bigint, resolved_issues bigint,
                  occurrences bigint, last_seen timestamptz)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_worker_issue_stats';
COMMENT ON FUNCTION conveyor.worker_issue_stats() IS 'Worker issues counted per worker, type and severity.';

-- ---- metrics --------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.record_metric(name text, value double precision, tags jsonb DEFAULT '{}') RETURNS void
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_record_metric';
COMMENT ON FUNCTION conveyor.record_metric(text,double precision,jsonb) IS 'Records one metric point, now, with its tags.';
CREATE FUNCTION conveyor.record_metrics(points jsonb) RETURNS int
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_record_metrics';
COMMENT ON FUNCTION conveyor.record_metrics(jsonb) IS 'Records an array of {"name", "value", "tags"} points in one statement; returns how many.';
CREATE FUNCTION conveyor.aggregate_metrics(period text DEFAULT 'hour') RETURNS jsonb
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_aggregate_metrics';
COMMENT ON FUNCTION conveyor.aggregate_metrics(text) IS 'Rolls raw points into hourly or daily rollups (only buckets with new points); idempotent.';
CREATE FUNCTION conveyor.metrics(name text, since timestamptz, until timestamptz, period text DEFAULT 'hour',
                                 tags jsonb DEFAULT NULL)
    RETURNS TABLE(bucket_start timestamptz, metric text, tag_set jsonb, min double precision, max double precision,
                  avg double precision, sum double precision, count bigint, p50 double precision,
                  p95 double precision, p99 double precision)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_metrics';
COMMENT ON FUNCTION conveyor.metrics(text,timestamp with time zone,timestamp with time zone,text,jsonb) IS 'Rollups of a metric in [since, until), per bucket and tag set; tags filters by containment.';

-- ---- health ---------------------------------------------------------------------------------------
CREATE FUNCTION conveyor.health() RETURNS jsonb
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off AS 'MODULE_PATHNAME', 'conveyor_health';
COMMENT ON FUNCTION conveyor.health() IS 'One document: queue, lock, entity, worker and cost health, each healthy, warning or critical, and the worst of them.';

-- ===================================================================================================
-- Audit: who called which admin action (and, when audit.worker_calls is on, which worker call), with
-- what arguments and result; written by the call itself, in its transaction (src/monitor/audit.cpp)
-- ===================================================================================================

-- Partitioned by day (audit_log_pYYYYMMDD, each with its own indexes), dropped after
-- retention.audit_days. current_user_name is the role that called (not conveyor's owner, which
-- SECURITY DEFINER functions run as).
CREATE SEQUENCE conveyor.audit_id_seq AS bigint NO CYCLE;
CREATE TABLE conveyor.audit_log (
    audit_id          bigint NOT NULL,
    at                timestamptz NOT NULL,
    session_user_name text NOT NULL,
    current_user_name text NOT NULL,
    client_addr       inet,
    application_name  text,
    function_name     text NOT NULL,
    arguments         jsonb NOT NULL,
    result            jsonb
) PARTITION BY RANGE (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.audit_id_seq', '');

CREATE FUNCTION conveyor.audit(since timestamptz DEFAULT pg_catalog.now() - interval '1 day', actor text DEFAULT NULL,
                               function text DEFAULT NULL)
    RETURNS TABLE(audit_id bigint, at timestamptz, session_user_name text, current_user_name text, client_addr inet,
                  application_name text, function_name text, arguments jsonb, result jsonb)
    LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp SET jit = off AS 'MODULE_PATHNAME', 'conveyor_audit';
COMMENT ON FUNCTION conveyor.audit(timestamp with time zone,text,text) IS 'Audited calls since a time, oldest first, optionally of one session user and of one function.';

-- ---- roles of the monitor ----
GRANT EXECUTE ON FUNCTION conveyor.settings(), conveyor.get_setting(text), conveyor.events(timestamptz, text, int),
    conveyor.worker_issues(boolean), conveyor.worker_issue_stats(),
    conveyor.metrics(text, timestamptz, timestamptz, text, jsonb), conveyor.health()
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.report_issue(text, text, text, text, jsonb), conveyor.resolve_issue(bigint, text),
    conveyor.record_metric(text, double precision, jsonb), conveyor.record_metrics(jsonb)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION conveyor.set_setting(text, text), conveyor.aggregate_metrics(text),
    conveyor.audit(timestamptz, text, text) TO conveyor_admin;
-- ===================================================================================================
-- Maintenance on pg_cron: conveyor.maintain() as one pg_cron job per database
-- ===================================================================================================

-- The job, conveyor-maintain:<database>, belongs to and runs as the extension's owner (SECURITY
-- DEFINER) and its command is always SELECT conveyor.maintain(); callers choose only the schedule.
CREATE FUNCTION conveyor.schedule_maintenance(schedule text DEFAULT '* * * * *') RETURNS bigint
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_schedule_maintenance';
COMMENT ON FUNCTION conveyor.schedule_maintenance(text) IS 'Schedules conveyor.maintain() with pg_cron, or changes its schedule; returns the pg_cron job id.';
CREATE FUNCTION conveyor.unschedule_maintenance() RETURNS boolean
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, conveyor, pg_temp AS 'MODULE_PATHNAME', 'conveyor_unschedule_maintenance';
COMMENT ON FUNCTION conveyor.unschedule_maintenance() IS 'Removes the pg_cron job of conveyor.maintain(); false if there was none.';

-- ---- roles of the maintenance schedule ----
GRANT EXECUTE ON FUNCTION conveyor.schedule_maintenance(text), conveyor.unschedule_maintenance() TO conveyor_admin;
-- ---- last: nothing to PUBLIC ---------------------------------------------------------------------
-- Each module grants its functions to conveyor_reader < conveyor_worker < conveyor_admin beside their
-- declarations; CREATE FUNCTION grants EXECUTE to PUBLIC, which this takes back from every function of
-- the schema (test/pgtap/privileges_map.sql checks the resulting map).
DO $privileges$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'conveyor'::regnamespace LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$privileges$;
GRANT SELECT ON ALL TABLES IN SCHEMA conveyor TO conveyor_admin;
