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
