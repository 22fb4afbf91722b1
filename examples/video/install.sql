-- video: the video generation job service (jobs, composition elements, processing timeline, S3
-- operations, URL access logs, metrics) on conveyor. Run with psql -v ON_ERROR_STOP=1 -f install.sql in
-- a database where CREATE EXTENSION conveyor was done, as a role holding conveyor_admin.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Roles are cluster-wide: created only where missing.
--   video_client   the public API's role: sees and acts on the jobs of its own client IP only
--   video_service  the service account and the render workers: every job, every write, the queue
--   video_admin    everything video_service may, plus analytics, retention and the audit trail
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'video_client') THEN
        CREATE ROLE video_client NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'video_service') THEN
        CREATE ROLE video_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'video_admin') THEN
        CREATE ROLE video_admin NOLOGIN;
    END IF;
END $$;
GRANT conveyor_worker TO video_service;   -- the worker leases, heartbeats and acks the queue's jobs
GRANT video_service TO video_admin;
GRANT conveyor_admin TO video_admin;      -- conveyor.audit(), dead_jobs and the queue's administration

CREATE SCHEMA video;
REVOKE ALL ON SCHEMA video FROM PUBLIC;
GRANT USAGE ON SCHEMA video TO video_client, video_service;

------------------------------------------------------------------------------------------------------
-- Tables

CREATE TABLE video.jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'processing', 'uploading', 'completed', 'failed', 'cancelled')),
    output_format      text NOT NULL CHECK (output_format IN ('mp4', 'webm', 'mov', 'gif')),
    width              integer NOT NULL CHECK (width BETWEEN 16 AND 7680),
    height             integer NOT NULL CHECK (height BETWEEN 16 AND 4320),
    estimated_duration numeric(10, 3) CHECK (estimated_duration > 0),
    actual_duration    numeric(10, 3) CHECK (actual_duration >= 0),
    response_type      text NOT NULL DEFAULT 'async' CHECK (response_type IN ('sync', 'async')),
    request            jsonb NOT NULL DEFAULT '{}',     -- the video request as the API received it
    progress           numeric(5, 2) NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    current_step       text,
    client_ip          inet,
    user_agent         text,
    result_url         text,
    file_size          bigint CHECK (file_size >= 0),
    error_message      text,
    error_code         text,
    queue_job_id       uuid UNIQUE,                     -- the conveyor job that renders it
    attempts           integer NOT NULL DEFAULT 0,      -- times it entered processing
    version            bigint NOT NULL DEFAULT 1,       -- +1 on every change; in every notification
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    processing_time_ms bigint GENERATED ALWAYS AS ((extract(epoch FROM completed_at - started_at) * 1000)::bigint) STORED
);
CREATE INDEX jobs_client_ip ON video.jobs (client_ip, created_at DESC);
CREATE INDEX jobs_created_at ON video.jobs (created_at DESC, id DESC);
CREATE INDEX jobs_active ON video.jobs (status, updated_at) WHERE status IN ('pending', 'processing', 'uploading');

CREATE TABLE video.elements (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id        uuid NOT NULL REFERENCES video.jobs ON DELETE CASCADE,
    type          text NOT NULL CHECK (type IN ('video', 'image', 'audio')),
    source_url    text NOT NULL,
    element_order integer NOT NULL CHECK (element_order BETWEEN 0 AND 999),
    track         integer NOT NULL DEFAULT 0 CHECK (track BETWEEN 0 AND 99),
    x_position    text NOT NULL DEFAULT '0%',
    y_position    text NOT NULL DEFAULT '0%',
    width         text NOT NULL DEFAULT '100%',
    height        text NOT NULL DEFAULT '100%',
    fit_mode      text NOT NULL DEFAULT 'contain' CHECK (fit_mode IN ('contain', 'cover', 'fill', 'none')),
    start_time    numeric(10, 3) NOT NULL DEFAULT 0 CHECK (start_time >= 0),
    duration      numeric(10, 3) CHECK (duration > 0),
    downloaded    boolean NOT NULL DEFAULT false,
    processed     boolean NOT NULL DEFAULT false,
    local_path    text,
    source_size   bigint CHECK (source_size >= 0),
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, element_order),
    CHECK (downloaded OR NOT processed)
);

CREATE TABLE video.processing_timeline (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id              uuid NOT NULL REFERENCES video.jobs ON DELETE CASCADE,
    step                text NOT NULL CHECK (step IN ('validation', 'download', 'processing', 'encoding', 'upload', 'cleanup')),
    step_order          integer NOT NULL CHECK (step_order BETWEEN 0 AND 999),
    attempt             integer NOT NULL,
    status              text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    progress_percentage numeric(5, 2) CHECK (progress_percentage BETWEEN 0 AND 100),
    details             jsonb NOT NULL DEFAULT '{}',
    cpu_usage           numeric(7, 2) CHECK (cpu_usage BETWEEN 0 AND 12800),
    memory_usage        bigint CHECK (memory_usage >= 0),
    error_message       text,
    started_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at        timestamptz,
    duration_ms         bigint GENERATED ALWAYS AS ((extract(epoch FROM completed_at - started_at) * 1000)::bigint) STORED
);
CREATE INDEX timeline_job ON video.processing_timeline (job_id, started_at);
CREATE INDEX timeline_started_at ON video.processing_timeline (started_at);

CREATE TABLE video.storage_operations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        uuid REFERENCES video.jobs ON DELETE CASCADE,
    operation     text NOT NULL CHECK (operation IN ('upload', 'download', 'delete', 'head', 'copy')),
    bucket        text NOT NULL,
    key           text NOT NULL,
    region        text NOT NULL,
    success       boolean NOT NULL,
    file_size     bigint CHECK (file_size >= 0),
    duration_ms   integer CHECK (duration_ms >= 0),
    error_message text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX storage_operations_job ON video.storage_operations (job_id, created_at);
CREATE INDEX storage_operations_created_at ON video.storage_operations (created_at);

CREATE TABLE video.url_access_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid REFERENCES video.jobs ON DELETE CASCADE,
    url              text NOT NULL,
    client_ip        inet,
    user_agent       text,
    status_code      integer NOT NULL CHECK (status_code BETWEEN 100 AND 599),
    response_time_ms integer CHECK (response_time_ms >= 0),
    accessed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX url_access_logs_job ON video.url_access_logs (job_id);
CREATE INDEX url_access_logs_accessed_at ON video.url_access_logs (accessed_at);

-- The state machine: update_job_status accepts exactly these transitions.
CREATE TABLE video.status_transitions (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    why         text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO video.status_transitions VALUES
    ('pending', 'processing', 'a worker starts an attempt'),
    ('pending', 'cancelled', 'the client or an operator cancels'),
    ('pending', 'failed', 'refused before any attempt (invalid request)'),
    ('processing', 'uploading', 'rendering done, the output goes to S3'),
    ('processing', 'completed', 'done without an upload step'),
    ('processing', 'failed', 'a permanent error, or the last attempt failed'),
    ('processing', 'cancelled', 'cancelled while rendering'),
    ('processing', 'pending', 'the attempt failed and will be retried'),
    ('uploading', 'completed', 'the output is stored'),
    ('uploading', 'failed', 'the upload failed on the last attempt'),
    ('uploading', 'pending', 'the upload failed and will be retried');

-- Tunables (README, "Settings").
CREATE TABLE video.config (
    key   text PRIMARY KEY,
    value numeric NOT NULL
);
INSERT INTO video.config VALUES
    ('create_job_per_minute', 60),         -- create_job calls per client IP per minute
    ('stalled_after_seconds', 600);        -- an active job unchanged this long is 'stalled' (active_jobs)

------------------------------------------------------------------------------------------------------
-- Who is calling, and from where

-- The caller's client IP: the session setting request.client_ip, else the first address of
-- x-forwarded-for in request.headers (PostgREST's JSON of the request's headers). NULL when neither
-- holds a valid address. Behind pgbouncer in transaction mode, set it in the call's own transaction:
-- SELECT set_config('request.client_ip', '203.0.113.7', true).
CREATE FUNCTION video.request_client_ip() RETURNS inet
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text := nullif(btrim(current_setting('request.client_ip', true)), '');
BEGIN
    IF v IS NULL THEN
        BEGIN
            v := nullif(btrim(split_part(nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-forwarded-for', ',', 1)), '');
        EXCEPTION WHEN data_exception THEN
            RETURN NULL;
        END;
    END IF;
    RETURN v::inet;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;

-- The calling role's scope: 'admin', 'service', 'client' or NULL. The calling role is the one SET ROLE
-- chose (PostgREST's SET LOCAL ROLE), else the session user; SECURITY DEFINER does not change it.
CREATE FUNCTION video.caller_scope() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_has_role(r, 'video_admin', 'MEMBER') THEN 'admin'
                WHEN pg_has_role(r, 'video_service', 'MEMBER') THEN 'service'
                WHEN pg_has_role(r, 'video_client', 'MEMBER') THEN 'client' END
    FROM (SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text ELSE current_setting('role') END AS r) c
$$;

ALTER TABLE video.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.elements ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.processing_timeline ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.storage_operations ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.url_access_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.status_transitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE video.config ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON ALL TABLES IN SCHEMA video FROM PUBLIC;
-- Reads only: every write goes through the functions. A client sees the rows of its own IP's jobs,
-- the service (and the admin, a member of it) every row.
GRANT SELECT ON video.jobs, video.elements, video.processing_timeline, video.storage_operations,
    video.url_access_logs, video.status_transitions TO video_client, video_service;
GRANT SELECT ON video.config TO video_client, video_service;
CREATE POLICY client_own_ip ON video.jobs FOR SELECT TO video_client
    USING (client_ip = (SELECT video.request_client_ip()));
CREATE POLICY client_own_jobs ON video.elements FOR SELECT TO video_client USING (job_id IN (SELECT id FROM video.jobs));
CREATE POLICY client_own_jobs ON video.processing_timeline FOR SELECT TO video_client USING (job_id IN (SELECT id FROM video.jobs));
CREATE POLICY client_own_jobs ON video.storage_operations FOR SELECT TO video_client USING (job_id IN (SELECT id FROM video.jobs));
CREATE POLICY client_own_jobs ON video.url_access_logs FOR SELECT TO video_client USING (job_id IN (SELECT id FROM video.jobs));
CREATE POLICY everyone_reads ON video.status_transitions FOR SELECT TO video_client, video_service USING (true);
CREATE POLICY service_reads_all ON video.jobs FOR SELECT TO video_service USING (true);
CREATE POLICY service_reads_all ON video.elements FOR SELECT TO video_service USING (true);
CREATE POLICY service_reads_all ON video.processing_timeline FOR SELECT TO video_service USING (true);
CREATE POLICY service_reads_all ON video.storage_operations FOR SELECT TO video_service USING (true);
CREATE POLICY service_reads_all ON video.url_access_logs FOR SELECT TO video_service USING (true);
CREATE POLICY everyone_reads ON video.config FOR SELECT TO video_client, video_service USING (true);

-- The render queue: one RENDER_VIDEO job per video job (worker/README).
SELECT conveyor.create_queue('video', '{
    "lease_seconds": 120, "max_attempts": 3, "backoff_base_seconds": 2, "backoff_max_seconds": 30,
    "job_types": ["RENDER_VIDEO"],
    "payload_schema": {"type": "object", "additionalProperties": false, "required": ["video_job_id"],
                       "properties": {"video_job_id": {"type": "string",
                           "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}}},
    "display_name": "video rendering", "description": "one job per video job: download, render, encode, upload"}');

\ir sql/helpers.sql
\ir sql/jobs.sql
\ir sql/views.sql
\ir sql/service.sql
\ir sql/grants.sql

-- Retention of the service's own rows, applied by conveyor.maintain() as these tables' owner (the role
-- running this script): URL access logs after 30 days; finished jobs 90 days after they finished, with
-- their elements, timeline, storage operations and access logs (ON DELETE CASCADE); storage operations
-- without a job after 90 days. Each maintain() run deletes at most 10000 rows per table.
SELECT conveyor.retention_define('video.url_access_logs', 'accessed_at', interval '30 days');
SELECT conveyor.retention_define('video.jobs', 'completed_at', interval '90 days');
SELECT conveyor.retention_define('video.storage_operations', 'created_at', interval '90 days');
