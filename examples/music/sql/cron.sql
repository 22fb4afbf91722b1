-- The schedules of seed 003 (and seed 001's maintenance jobs that 003 does not replace), registered with
-- pg_cron by schedule_pipeline_jobs(). Queue processors, edge functions in the specification, become
-- recurring conveyor jobs (conveyor.schedule_enqueue) in the queue music_processor_ticks: each tick
-- names a queue and a batch size, and a worker consuming that queue processes one batch of it. The
-- maintenance jobs run SQL. conveyor.maintain() runs every minute (conveyor.schedule_maintenance).
CREATE FUNCTION music.pipeline_jobs()
RETURNS TABLE(jobname text, schedule text, kind text, command text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES
    ('cron-queue-processor-job', '*/2 * * * *', 'tick', '{"queue": "*", "batch_size": 10, "function": "cronQueueProcessor"}'),
    ('artist-discovery-queue-job', '*/3 * * * *', 'tick', '{"queue": "artist_discovery", "batch_size": 15, "function": "artistDiscovery"}'),
    ('album-discovery-queue-job', '1-59/4 * * * *', 'tick', '{"queue": "album_discovery", "batch_size": 15, "function": "albumDiscovery"}'),
    ('track-discovery-queue-job', '2-59/4 * * * *', 'tick', '{"queue": "track_discovery", "batch_size": 20, "function": "trackDiscovery"}'),
    ('producer-identification-queue-job', '*/5 * * * *', 'tick', '{"queue": "producer_identification", "batch_size": 10, "function": "producerIdentification"}'),
    ('social-enrichment-queue-job', '*/7 * * * *', 'tick', '{"queue": "social_enrichment", "batch_size": 10, "function": "socialEnrichment"}'),
    ('queue-monitor-job', '*/5 * * * *', 'sql', 'SELECT count(*) FROM music.monitor_queues(true, 10)'),
    ('processing-states-monitor-job', '10 * * * *', 'sql', 'SELECT count(*) FROM music.reset_entity_processing_state(NULL, 120)'),
    ('maintenance-clear-stale-entities', '*/30 * * * *', 'sql', 'SELECT count(*) FROM music.maintenance_clear_stale_entities(60)'),
    ('cron-cleanup-stale-entities', '0 * * * *', 'sql', 'SELECT music.cleanup_stale_entities(60)'),
    ('stale-locks-cleanup-job', '*/10 * * * *', 'sql', 'SELECT count(*) FROM music.cleanup_stale_locks(300)'),
    ('purge-old-monitoring-events', '0 0 * * 0', 'sql', 'SELECT music.purge_old_monitoring_events(30)'),
    ('hourly-metrics-aggregation', '5 * * * *', 'sql', 'SELECT music_monitoring.aggregate_hourly_metrics()'),
    ('daily-metrics-aggregation', '15 0 * * *', 'sql', 'SELECT music_monitoring.aggregate_daily_metrics()'),
    ('conveyor-maintain', '* * * * *', 'maintain', 'SELECT conveyor.maintain()')
$$;

-- Registers every job of pipeline_jobs() and returns their pg_cron ids; a second call updates them.
-- pg_cron keeps its jobs in the database named by cron.database_name: anywhere else this raises 55000
-- saying where to run it.
CREATE FUNCTION music.schedule_pipeline_jobs() RETURNS TABLE(jobname text, schedule text, jobid bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cron_db text := current_setting('cron.database_name', true);
    j record;
    id bigint;
BEGIN
    IF cron_db IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not loaded: no pipeline job was scheduled' USING ERRCODE = '55000',
            HINT = 'Add pg_cron to shared_preload_libraries, restart, CREATE EXTENSION pg_cron in cron.database_name, and install music there.';
    END IF;
    IF cron_db <> current_database() THEN
        RAISE EXCEPTION 'pg_cron schedules jobs from database "%", not from "%": no pipeline job was scheduled', cron_db, current_database()
            USING ERRCODE = '55000', DETAIL = 'pg_cron keeps its jobs in the database named by cron.database_name.',
                  HINT = format('Install music in database "%s" and run SELECT * FROM music.schedule_pipeline_jobs() there, or run a worker that consumes music_processor_ticks and schedule music.pipeline_jobs() yourself.', cron_db);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is loaded but its extension is not created in database "%"', cron_db USING ERRCODE = '55000',
            HINT = 'CREATE EXTENSION pg_cron;';
    END IF;
    FOR j IN SELECT * FROM music.pipeline_jobs() LOOP
        IF j.kind = 'tick' THEN
            id := conveyor.schedule_enqueue(j.jobname, j.schedule, 'music_processor_ticks', j.command::jsonb, 'tick');
        ELSIF j.kind = 'maintain' THEN
            id := conveyor.schedule_maintenance(j.schedule);
        ELSE
            EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO id USING j.jobname, j.schedule, j.command;
        END IF;
        jobname := j.jobname; schedule := j.schedule; jobid := id;
        RETURN NEXT;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION music.pipeline_jobs(), music.schedule_pipeline_jobs() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION music.pipeline_jobs(), music.schedule_pipeline_jobs() TO music_admin;
