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
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    stats_retention_days integer NOT NULL DEFAULT 400,  -- how long job_stats keeps the queue's hours
    dead_retention_days  integer NOT NULL DEFAULT 30,
    payload_schema       jsonb,
    display_name         text,
    description          text,
    metadata             jsonb,
    status_notify        boolean NOT NULL DEFAULT false
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
    created_at   timestamptz NOT NULL,
    percent      numeric,  -- progress reported by the worker (conveyor.progress), 0 to 100
    step         text,     -- the step it reported last
    -- The run_at the job was enqueued with, when its queue's event_trail was 'all' then: the trail's
    -- 'enqueued' event (job_events) is read from the job rather than stored. NULL: no such event, or
    -- one stored in job_events (jobs enqueued before 0.3).
    enqueued_run_at timestamptz
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
    purge_at     timestamptz NOT NULL,
    xid          xid8 DEFAULT pg_catalog.pg_current_xact_id(),  -- the finishing transaction (job_stats' fold)
    -- why an operator ended the job (dead_letter, cancel) or why it died, and dead_letter's details
    reason       text,
    details      jsonb,
    -- a dead job handled (resolve_dead): when, how, and by which session user
    resolved_at  timestamptz,
    resolution   text,
    resolved_by  text,
    percent      numeric,  -- the job's last progress when it finished
    step         text,
    enqueued_run_at timestamptz  -- as in conveyor.jobs
) PARTITION BY RANGE (purge_at);
-- Each partition carries its own indexes, created with it (not inherited from here) so that pg_dump
-- restores partitions without name clashes, and only those a reader needs (each costs every finished
-- job its upkeep): (job_id); (xid), by which maintain() finds the jobs finished since its last statistics fold;
-- (queue_id, finished_at DESC, job_id DESC) WHERE status = 'dead' (dead_jobs' pages); and those
-- list_jobs reads in job id order per filter ((queue_id, job_id), (status, job_id) WHERE status <>
-- 'completed', (group_key, job_id), (job_type, job_id)). Dead jobs are purged after their queue's
-- dead_retention_days, the others after its retention_days.

-- The trail of every state change, partitioned by day. A job's 'enqueued' event is not stored here
-- (since 0.3): conveyor.job_events() reads it from the job (enqueued_run_at above).
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
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_create_queue';
COMMENT ON FUNCTION conveyor.create_queue(text,jsonb) IS 'Creates a queue; options set its lease, attempts, backoff, allowed job types, required payload keys and retention.';
CREATE FUNCTION conveyor.alter_queue(queue text, options jsonb) RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_alter_queue';
COMMENT ON FUNCTION conveyor.alter_queue(text,jsonb) IS 'Changes the given options of a queue; options not named keep their values.';
CREATE FUNCTION conveyor.drop_queue(queue text, force boolean DEFAULT false) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_drop_queue';
COMMENT ON FUNCTION conveyor.drop_queue(text,boolean) IS 'Drops a queue with its history and counters; refuses while jobs are pending or running unless forced.';
CREATE FUNCTION conveyor.pause_queue(queue text) RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_pause_queue';
COMMENT ON FUNCTION conveyor.pause_queue(text) IS 'Pauses a queue: enqueue still accepts jobs, dequeue hands out none until resume_queue.';
CREATE FUNCTION conveyor.resume_queue(queue text) RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_resume_queue';
COMMENT ON FUNCTION conveyor.resume_queue(text) IS 'Resumes a paused queue and wakes its listening workers.';
CREATE FUNCTION conveyor.list_queues()
    RETURNS TABLE(queue text, paused boolean, options jsonb, created_at timestamptz)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_list_queues';
COMMENT ON FUNCTION conveyor.list_queues() IS 'Lists every queue with its paused flag, its options as JSON and its creation time.';

-- ---- producing ---------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.enqueue(queue text, payload jsonb DEFAULT '{}', job_type text DEFAULT NULL,
                                 group_key text DEFAULT NULL, priority int DEFAULT 5,
                                 run_at timestamptz DEFAULT now(), dedup_key text DEFAULT NULL,
                                 max_attempts int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, was_duplicate boolean)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_enqueue';
COMMENT ON FUNCTION conveyor.enqueue(text,jsonb,text,text,integer,timestamp with time zone,text,integer) IS 'Adds one job to a queue, or returns the pending or running job that holds the same dedup key.';
CREATE FUNCTION conveyor.enqueue_batch(queue text, jobs jsonb)
    RETURNS TABLE(ord int, job_id uuid, was_duplicate boolean)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_enqueue_batch';
COMMENT ON FUNCTION conveyor.enqueue_batch(text,jsonb) IS 'Adds many jobs in one statement, all or none; each element may carry any of enqueue''s arguments.';

-- ---- consuming ---------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.dequeue(queue text, worker_id text, max_count int DEFAULT 1, lease_seconds int DEFAULT NULL)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, priority int, attempt int,
                  lease_until timestamptz)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_dequeue';
COMMENT ON FUNCTION conveyor.dequeue(text,text,integer,integer) IS 'Leases up to max_count due jobs of a queue to a worker, by priority, then run_at, then enqueue order.';
CREATE FUNCTION conveyor.ack(job_id uuid, success boolean, error_message text DEFAULT NULL,
                             stats jsonb DEFAULT NULL, worker_id text DEFAULT NULL, retry boolean DEFAULT true,
                             attempt int DEFAULT NULL)
    RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_ack';
COMMENT ON FUNCTION conveyor.ack(uuid,boolean,text,jsonb,text,boolean,integer) IS 'Acknowledges a running job: success completes it; failure retries it later, or makes it dead (at once with retry false).';
CREATE FUNCTION conveyor.ack_many(job_ids uuid[], success boolean, error_message text DEFAULT NULL,
                                  worker_id text DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_ack_many';
COMMENT ON FUNCTION conveyor.ack_many(uuid[],boolean,text,text) IS 'Acknowledges several running jobs at once with the same outcome; returns how many were acknowledged.';
CREATE FUNCTION conveyor.heartbeat(job_id uuid, worker_id text, extend_seconds int DEFAULT NULL,
                                   attempt int DEFAULT NULL) RETURNS timestamptz
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_heartbeat';
COMMENT ON FUNCTION conveyor.heartbeat(uuid,text,integer,integer) IS 'Extends the lease of a running job held by worker_id; NULL when the worker no longer holds it.';
CREATE FUNCTION conveyor.release(job_id uuid, worker_id text, delay_seconds int DEFAULT 0,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_release';
COMMENT ON FUNCTION conveyor.release(uuid,text,integer,integer) IS 'Gives a running job back to the queue without counting the attempt, due after delay_seconds.';

-- ---- waiting for jobs on a session of its own (0.3) --------------------------------------------------

CREATE FUNCTION conveyor.wait_for(queues text[]) RETURNS text[]
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_wait_for';
COMMENT ON FUNCTION conveyor.wait_for(text[]) IS 'Makes this session LISTEN and wait on these queues; returns those with due jobs already, to dequeue at once.';
CREATE FUNCTION conveyor.stop_waiting(queues text[] DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_stop_waiting';
COMMENT ON FUNCTION conveyor.stop_waiting(text[]) IS 'Ends this session''s waits on these queues (all when NULL), so producers stop notifying it; returns how many it ended.';
GRANT EXECUTE ON FUNCTION conveyor.wait_for(text[]), conveyor.stop_waiting(text[]) TO conveyor_worker;

-- ---- operating -------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.dead_letter(job_id uuid, reason text, details jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_dead_letter';
COMMENT ON FUNCTION conveyor.dead_letter(uuid,text,jsonb) IS 'Moves a pending or running job to history as dead, with a reason and optional details.';
CREATE FUNCTION conveyor.cancel(job_id uuid, reason text DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_cancel';
COMMENT ON FUNCTION conveyor.cancel(uuid,text) IS 'Cancels a pending or running job: it moves to history as cancelled.';
CREATE FUNCTION conveyor.reap(queue text DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_reap';
COMMENT ON FUNCTION conveyor.reap(text) IS 'Expires the lapsed leases of one queue, or of all, now; returns how many jobs it expired.';
CREATE FUNCTION conveyor.maintain() RETURNS jsonb
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_maintain';
COMMENT ON FUNCTION conveyor.maintain() IS 'Runs all upkeep: partitions, retention, counters, expired leases, keys, lock events, reservations, rate limits.';

-- ---- operator actions and dead letters (0.3) -------------------------------------------------------

CREATE FUNCTION conveyor.requeue(job_id uuid, delay_seconds int DEFAULT 0) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_requeue';
COMMENT ON FUNCTION conveyor.requeue(uuid,integer) IS 'Gives a running job back to the queue without its worker, due after delay_seconds; false when the job is not running.';
CREATE FUNCTION conveyor.requeue_stuck(queue text, older_than interval) RETURNS SETOF uuid
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_requeue_stuck';
COMMENT ON FUNCTION conveyor.requeue_stuck(text,interval) IS 'Requeues every job of a queue that has been running longer than older_than; returns their ids.';
CREATE FUNCTION conveyor.reschedule(job_id uuid, run_at timestamptz) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_reschedule';
COMMENT ON FUNCTION conveyor.reschedule(uuid,timestamp with time zone) IS 'Moves a pending or scheduled job to run at run_at; false when the job is running or finished.';
CREATE FUNCTION conveyor.retry(job_id uuid, delay_seconds int DEFAULT NULL, reset_attempts boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_retry';
COMMENT ON FUNCTION conveyor.retry(uuid,integer,boolean) IS 'Runs a dead or cancelled job again, or a job in backoff now; keeps its attempt count unless reset_attempts.';
CREATE FUNCTION conveyor.dead_jobs(queue text, since timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, job_type text, group_key text, payload jsonb, attempt int, max_attempts int,
                  last_error text, reason text, details jsonb, worker_id text, created_at timestamptz,
                  finished_at timestamptz, resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_dead_jobs';
COMMENT ON FUNCTION conveyor.dead_jobs(text,timestamp with time zone,integer,uuid) IS 'Lists the dead jobs of a queue newest first, a page at a time, with their last error, reason, details and resolution.';
CREATE FUNCTION conveyor.resolve_dead(job_id uuid, resolution text) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_resolve_dead';
COMMENT ON FUNCTION conveyor.resolve_dead(uuid,text) IS 'Marks a dead job handled with a resolution, when and by whom; false when it is not dead or already resolved.';

-- ---- observing -------------------------------------------------------------------------------------

CREATE FUNCTION conveyor.get_job(job_id uuid) RETURNS jsonb
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_get_job';
COMMENT ON FUNCTION conveyor.get_job(uuid) IS 'Returns one job, pending, running or finished, as a JSON object.';
CREATE FUNCTION conveyor.job_events(job_id uuid)
    RETURNS TABLE(at timestamptz, event text, worker_id text, details jsonb)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_job_events';
COMMENT ON FUNCTION conveyor.job_events(uuid) IS 'Returns the event trail of a job in time order.';
CREATE FUNCTION conveyor.queue_metrics(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, pending bigint, scheduled bigint, running bigint, expired_leases bigint,
                  completed_1h bigint, failed_24h bigint, dead bigint, avg_queue_seconds numeric,
                  jobs_per_hour numeric, oldest_pending_seconds numeric)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_queue_metrics';
COMMENT ON FUNCTION conveyor.queue_metrics(text) IS 'Returns counts and timings of one queue or of every queue, read from counters, never by counting jobs.';
-- Totals since each queue was created: they only grow (folding keeps their sums), so monitoring
-- systems take rates from them (Prometheus counters).
CREATE FUNCTION conveyor.queue_totals(queue text DEFAULT NULL)
    RETURNS TABLE(queue text, enqueued bigint, started bigint, completed bigint, failed bigint, expired bigint,
                  cancelled bigint)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_queue_totals';
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
    conveyor.ack(uuid, boolean, text, jsonb, text, boolean, int),
    conveyor.ack_many(uuid[], boolean, text, text),
    conveyor.heartbeat(uuid, text, int, int),
    conveyor.release(uuid, text, int, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.create_queue(text, jsonb), conveyor.alter_queue(text, jsonb), conveyor.drop_queue(text, boolean),
    conveyor.pause_queue(text), conveyor.resume_queue(text),
    conveyor.dead_letter(uuid, text, jsonb), conveyor.cancel(uuid, text),
    conveyor.reap(text), conveyor.maintain()
    TO conveyor_admin;
-- operator actions and dead letters (0.3)
GRANT EXECUTE ON FUNCTION conveyor.dead_jobs(text, timestamptz, int, uuid) TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.requeue(uuid, int), conveyor.requeue_stuck(text, interval), conveyor.reschedule(uuid, timestamptz),
    conveyor.retry(uuid, int, boolean), conveyor.resolve_dead(uuid, text)
    TO conveyor_admin;

-- ---- payload schemas (0.3) -------------------------------------------------------------------------

CREATE FUNCTION conveyor.validate_payload(queue text, payload jsonb)
    RETURNS TABLE(valid boolean, errors jsonb)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_validate_payload';
COMMENT ON FUNCTION conveyor.validate_payload(text,jsonb) IS 'Checks a payload against a queue''s payload_schema and required keys without enqueuing; lists each violation.';
GRANT EXECUTE ON FUNCTION conveyor.validate_payload(text, jsonb) TO conveyor_reader;

-- ---- progress, custom trail events, status notifications and job listing ------------------------------

CREATE FUNCTION conveyor.progress(job_id uuid, worker_id text, percent numeric DEFAULT NULL, step text DEFAULT NULL,
                                  details jsonb DEFAULT NULL, attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_progress';
COMMENT ON FUNCTION conveyor.progress(uuid,text,numeric,text,jsonb,integer) IS 'Records the percent and step of a running job held by worker_id; a new step joins the trail; false if the lease is lost.';
CREATE FUNCTION conveyor.job_log(job_id uuid, worker_id text, event text, details jsonb DEFAULT NULL,
                                 attempt int DEFAULT NULL) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_job_log';
COMMENT ON FUNCTION conveyor.job_log(uuid,text,text,jsonb,integer) IS 'Appends a custom event, stored as log:<event>, to the trail of a job held by worker_id; false if the lease is lost.';
CREATE FUNCTION conveyor.list_jobs(queue text DEFAULT NULL, status text[] DEFAULT NULL, group_key text DEFAULT NULL,
                                   job_type text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                   until timestamptz DEFAULT NULL, lim int DEFAULT 100, after uuid DEFAULT NULL)
    RETURNS TABLE(job_id uuid, queue text, status text, state text, job_type text, group_key text, dedup_key text,
                  payload jsonb, priority int, attempt int, max_attempts int, run_at timestamptz, worker_id text,
                  started_at timestamptz, lease_until timestamptz, last_error text, created_at timestamptz,
                  finished_at timestamptz, percent numeric, step text, reason text, details jsonb,
                  resolved_at timestamptz, resolution text, resolved_by text)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_list_jobs';
COMMENT ON FUNCTION conveyor.list_jobs(text,text[],text,text,timestamp with time zone,timestamp with time zone,integer,uuid) IS 'Lists pending, running and finished jobs, newest first, by queue, status, group, type and creation time; pages by id.';

GRANT EXECUTE ON FUNCTION
    conveyor.list_jobs(text, text[], text, text, timestamptz, timestamptz, int, uuid)
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.progress(uuid, text, numeric, text, jsonb, int),
    conveyor.job_log(uuid, text, text, jsonb, int)
    TO conveyor_worker;

-- ---- long-term job statistics -------------------------------------------------------------------------

-- One row per queue and UTC hour for the whole queue (grouped = false, group_key = ''), and one per
-- group that finished jobs in that hour (grouped = true). maintain() recomputes from job_history every
-- hour that received finished jobs since its last fold (found by xid), so figures are exact at the
-- hour and the row outlives the history it came from; rows older than the queue's
-- stats_retention_days are purged. Longer buckets are combined at read time (job_stats).
CREATE TABLE conveyor.job_stats (
    queue_id          integer NOT NULL,
    grouped           boolean NOT NULL,
    group_key         text NOT NULL,
    bucket_start      timestamptz NOT NULL,
    completed         bigint NOT NULL,
    failed            bigint NOT NULL,            -- failed attempts of the jobs that finished
    dead              bigint NOT NULL,
    cancelled         bigint NOT NULL,
    run_count         bigint NOT NULL,            -- completed jobs with a start time
    run_seconds       double precision NOT NULL,  -- their total run time (started_at to finished_at)
    p95_run_seconds   double precision,           -- percentile_disc(0.95) of those run times
    queued_count      bigint NOT NULL,            -- finished jobs with a start time
    queue_seconds     double precision NOT NULL,  -- their total wait (run_at to started_at)
    last_completed_at timestamptz,
    trailing_dead     bigint NOT NULL,            -- dead jobs finished after last_completed_at
    PRIMARY KEY (queue_id, grouped, group_key, bucket_start)
);
CREATE INDEX job_stats_bucket ON conveyor.job_stats (bucket_start);

-- The snapshot xmin of the last fold: jobs of transactions before it were all seen.
CREATE TABLE conveyor.job_stats_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_xmin xid8 NOT NULL,
    folded_at timestamptz NOT NULL
);
-- Per fold: a transaction id every job finished after taken_at has at least (the xmax of a snapshot
-- taken after taken_at), so an hour's jobs are found by an xid range rather than a history scan.
CREATE TABLE conveyor.job_stats_marks (
    taken_at timestamptz PRIMARY KEY,
    snapshot_xmax xid8 NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats_state', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.job_stats_marks', '');

CREATE FUNCTION conveyor.job_stats(queue text, since timestamptz, until timestamptz, bucket text DEFAULT 'day',
                                   group_key text DEFAULT NULL)
    RETURNS TABLE(bucket_start timestamptz, completed bigint, failed bigint, dead bigint, cancelled bigint,
                  avg_run_seconds numeric, p95_run_seconds numeric, avg_queue_seconds numeric,
                  last_completed_at timestamptz, consecutive_failures bigint)
    LANGUAGE C STABLE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_job_stats';
COMMENT ON FUNCTION conveyor.job_stats(text,timestamp with time zone,timestamp with time zone,text,text) IS 'Counts the finished, failed and dead jobs of a queue or group per hour, day, week or month, with run and wait times.';
GRANT EXECUTE ON FUNCTION conveyor.job_stats(text, timestamptz, timestamptz, text, text) TO conveyor_reader;
