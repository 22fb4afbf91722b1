-- ===================================================================================================
-- Maintenance on pg_cron: conveyor.maintain() as one pg_cron job per database
-- ===================================================================================================

-- The job, conveyor-maintain:<database>, belongs to and runs as the extension's owner (SECURITY
-- DEFINER) and its command is always SELECT conveyor.maintain(); callers choose only the schedule.
CREATE FUNCTION conveyor.schedule_maintenance(schedule text DEFAULT '* * * * *') RETURNS bigint
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_schedule_maintenance';
COMMENT ON FUNCTION conveyor.schedule_maintenance(text) IS 'Schedules conveyor.maintain() with pg_cron, or changes its schedule; returns the pg_cron job id.';
CREATE FUNCTION conveyor.unschedule_maintenance() RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_unschedule_maintenance';
COMMENT ON FUNCTION conveyor.unschedule_maintenance() IS 'Removes the pg_cron job of conveyor.maintain(); false if there was none.';

-- ---- roles of the maintenance schedule ----
GRANT EXECUTE ON FUNCTION conveyor.schedule_maintenance(text), conveyor.unschedule_maintenance() TO conveyor_admin;

-- ===================================================================================================
-- Recurring jobs on pg_cron: one pg_cron job per schedule, named conveyor-enqueue:<database>:<name>
-- ===================================================================================================

-- What each schedule enqueues, checked as enqueue checks it when the schedule is made. Its pg_cron job
-- belongs to and runs as the extension's owner, and its command is SELECT conveyor.run_schedule('<name>'):
-- the name is the only caller text in it, as a quoted literal. last_tick is the latest tick that
-- enqueued: a run for that tick or an earlier one enqueues nothing.
CREATE TABLE conveyor.schedules (
    name         text PRIMARY KEY,
    queue        text NOT NULL,
    payload      jsonb NOT NULL,
    job_type     text,
    group_key    text,
    priority     int NOT NULL,
    max_attempts int,
    last_tick    timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.schedules', '');

CREATE FUNCTION conveyor.schedule_enqueue(name text, schedule text, queue text, payload jsonb DEFAULT '{}',
                                          job_type text DEFAULT NULL, group_key text DEFAULT NULL,
                                          priority int DEFAULT 5, max_attempts int DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_schedule_enqueue';
COMMENT ON FUNCTION conveyor.schedule_enqueue(text,text,text,jsonb,text,text,integer,integer) IS 'Schedules a job to be enqueued with pg_cron at most once per tick, or changes that schedule; returns the pg_cron job id.';
CREATE FUNCTION conveyor.unschedule_enqueue(name text) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_unschedule_enqueue';
COMMENT ON FUNCTION conveyor.unschedule_enqueue(text) IS 'Removes a recurring job''s schedule and its pg_cron job; false if there was none.';
CREATE FUNCTION conveyor.list_schedules()
    RETURNS TABLE(name text, schedule text, active boolean, queue text, payload jsonb, job_type text,
                  group_key text, priority int, max_attempts int, last_tick timestamptz, last_job_id uuid,
                  cron_job_id bigint, created_at timestamptz, updated_at timestamptz)
    LANGUAGE C STABLE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_list_schedules';
COMMENT ON FUNCTION conveyor.list_schedules() IS 'Lists the recurring jobs with their pg_cron schedule, what they enqueue and the last tick that enqueued.';
-- What pg_cron runs; only the extension's owner (as whom the jobs run) may call it.
CREATE FUNCTION conveyor.run_schedule(name text) RETURNS uuid
    LANGUAGE C VOLATILE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_run_schedule';
COMMENT ON FUNCTION conveyor.run_schedule(text) IS 'Enqueues a schedule''s job for the current tick unless that tick already enqueued; pg_cron calls it.';

-- ---- roles of recurring jobs ----
GRANT EXECUTE ON FUNCTION conveyor.list_schedules() TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.schedule_enqueue(text, text, text, jsonb, text, text, int, int),
    conveyor.unschedule_enqueue(text) TO conveyor_admin;
