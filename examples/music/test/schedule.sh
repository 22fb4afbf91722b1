#!/usr/bin/env bash
# schedule_pipeline_jobs() on both sides of pg_cron: in a database that is not cron.database_name it
# raises 55000 naming the cron database and schedules nothing; installed in the cron database (postgres
# in the scratch cluster, where pg_cron is preloaded) it registers every job of pipeline_jobs() - the
# queue processors as conveyor schedules enqueueing ticks, the maintenance as SQL jobs, conveyor.maintain
# every minute - and a second call keeps one job per name. Then a visibility timeout that really passes:
# pg_dequeue reads a message again once its timeout is over, and 0-minute thresholds reset it at once.
# Everything the test adds to database postgres is removed on exit.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

HERE=$(cd "$(dirname "$0")/.." && pwd)
CRON_DB=postgres
OTHER_DB=conveyor_example_music_sched
CREATED_CRON=0
CREATED_CONVEYOR=0
MAINTAIN_EXISTED=0
cleanup() {
    [ "$MAINTAIN_EXISTED" = 0 ] && psql -X -q -d "$CRON_DB" -c "SELECT conveyor.unschedule_maintenance()" >/dev/null 2>&1
    psql -X -q -d "$CRON_DB" -c "SET client_min_messages = warning" \
        -c "SELECT conveyor.unschedule_enqueue(jobname) FROM music.pipeline_jobs() WHERE kind = 'tick'" \
        -c "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname IN (SELECT jobname FROM music.pipeline_jobs() WHERE kind = 'sql')" \
        -c "SELECT conveyor.drop_queue(queue_name, true) FROM music.queue_registry" \
        -c "DROP SCHEMA IF EXISTS music, music_monitoring, music_queue_mgmt CASCADE" >/dev/null 2>&1
    [ "$CREATED_CONVEYOR" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS conveyor CASCADE" >/dev/null 2>&1
    [ "$CREATED_CRON" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS pg_cron" >/dev/null 2>&1
    drop_test_dbs
}
trap cleanup EXIT

[ "$(q postgres "SELECT current_setting('cron.database_name', true)")" = "$CRON_DB" ] || bail "pg_cron is not preloaded with cron.database_name = $CRON_DB"
q "$CRON_DB" "SELECT 1 FROM pg_namespace WHERE nspname = 'music'" | grep -q 1 && bail "schema music already exists in $CRON_DB"

# Not the cron database: a clear error, nothing scheduled.
create_db "$OTHER_DB" || bail "could not create $OTHER_DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$OTHER_DB" -f "$HERE/install.sql" >/dev/null 2>&1 || bail "install.sql failed in $OTHER_DB"
err=$(psql -X -q -d "$OTHER_DB" -v VERBOSITY=verbose -c "SELECT * FROM music.schedule_pipeline_jobs()" 2>&1)
case "$err" in
    *"55000"*"pg_cron schedules jobs from database \"$CRON_DB\", not from \"$OTHER_DB\""*) pass "elsewhere: 55000 naming the cron database" ;;
    *) fail "elsewhere: 55000 naming the cron database"; note "$err" ;;
esac
case "$err" in
    *"HINT:"*"Install music in database \"$CRON_DB\""*) pass "... with a hint saying where to run it" ;;
    *) fail "... with a hint saying where to run it"; note "$err" ;;
esac

# The cron database.
if [ -z "$(q "$CRON_DB" "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")" ]; then
    q "$CRON_DB" "CREATE EXTENSION pg_cron" >/dev/null && CREATED_CRON=1
fi
if [ -z "$(q "$CRON_DB" "SELECT 1 FROM pg_extension WHERE extname = 'conveyor'")" ]; then
    q "$CRON_DB" "CREATE EXTENSION conveyor" >/dev/null && CREATED_CONVEYOR=1
fi
[ -n "$(q "$CRON_DB" "SELECT 1 FROM cron.job WHERE jobname = 'conveyor-maintain:$CRON_DB'")" ] && MAINTAIN_EXISTED=1
psql -X -q -v ON_ERROR_STOP=1 -d "$CRON_DB" -f "$HERE/install.sql" >/dev/null 2>&1 || bail "install.sql failed in $CRON_DB"
is "$(q "$CRON_DB" "SELECT count(*) FROM music.schedule_pipeline_jobs() WHERE jobid IS NOT NULL")" 15 "schedule_pipeline_jobs: 15 jobs"
is "$(q "$CRON_DB" "SELECT count(*) FROM music.schedule_pipeline_jobs()")" 15 "a second call"
is "$(q "$CRON_DB" "SELECT count(*) FROM cron.job j JOIN music.pipeline_jobs() p ON j.jobname = p.jobname AND j.schedule = p.schedule AND j.command = p.command")" \
   8 "the 8 maintenance jobs run their SQL on their schedules, once each"
is "$(q "$CRON_DB" "SELECT string_agg(name || '=' || schedule || '>' || (payload ->> 'queue') || ':' || (payload ->> 'batch_size'), ',' ORDER BY name)
                   FROM conveyor.list_schedules() WHERE queue = 'music_processor_ticks' AND active AND cron_job_id IS NOT NULL")" \
   "album-discovery-queue-job=1-59/4 * * * *>album_discovery:15,artist-discovery-queue-job=*/3 * * * *>artist_discovery:15,cron-queue-processor-job=*/2 * * * *>*:10,producer-identification-queue-job=*/5 * * * *>producer_identification:10,social-enrichment-queue-job=*/7 * * * *>social_enrichment:10,track-discovery-queue-job=2-59/4 * * * *>track_discovery:20" \
   "the 6 queue processors: conveyor schedules enqueueing ticks, seed 003's intervals and batch sizes"
is "$(q "$CRON_DB" "SELECT schedule || ' ' || command FROM cron.job WHERE jobname = 'conveyor-maintain:$CRON_DB'")" "* * * * * SELECT conveyor.maintain()" \
   "conveyor.maintain() every minute"
is "$(q "$CRON_DB" "SELECT count(*) FROM cron.job WHERE jobname IN (SELECT jobname FROM music.pipeline_jobs() WHERE kind = 'sql')")" 8 \
   "one pg_cron job per name after two calls"
# what the processor ticks and the SQL jobs run works as scheduled
is "$(q "$CRON_DB" "SELECT conveyor.run_schedule('track-discovery-queue-job') IS NOT NULL")" t "a tick is enqueued"
is "$(q "$CRON_DB" "SELECT message ->> 'queue' FROM music.pg_dequeue('music_processor_ticks', 5, 60)")" track_discovery \
   "... and read from music_processor_ticks by a worker"
runs() { q "$CRON_DB" "$1" >/dev/null; }
while IFS='|' read -r job cmd; do
    check "job $job's command runs: $cmd" runs "$cmd"
done < <(q "$CRON_DB" "SELECT jobname, command FROM music.pipeline_jobs() WHERE kind = 'sql'")

# A real visibility timeout (autocommit, the clock moves): read again once it passed, read_ct 2.
q "$OTHER_DB" "SELECT music.pg_enqueue('artist_discovery', '{\"artistName\": \"Air\"}')" >/dev/null
is "$(q "$OTHER_DB" "SELECT read_ct FROM music.pg_dequeue('artist_discovery', 5, 1)")" 1 "read with a 1 s visibility timeout"
is "$(q "$OTHER_DB" "SELECT count(*) FROM music.pg_dequeue('artist_discovery', 5, 1)")" 0 "invisible while it lasts"
sleep 1.2
is "$(q "$OTHER_DB" "SELECT read_ct FROM music.pg_dequeue('artist_discovery', 5, 60)")" 2 "visible again once it passed, with no backoff"
is "$(q "$OTHER_DB" "SELECT count(*) FROM music.list_stuck_messages('artist_discovery', 0)")" 1 "list_stuck_messages with 0 minutes: the message being read"
is "$(q "$OTHER_DB" "SELECT music.reset_stuck_messages('artist_discovery', 0)")" 1 "reset_stuck_messages with 0 minutes makes it visible at once"
is "$(q "$OTHER_DB" "SELECT read_ct FROM music.pg_dequeue('artist_discovery', 5, 60)")" 3 "... read again"
q "$OTHER_DB" "INSERT INTO music.processing_locks (entity_type, entity_id, worker_id) VALUES ('artist', 'air', 'w1')" >/dev/null
is "$(q "$OTHER_DB" "SELECT count(*) FROM music.cleanup_stale_locks(0)")" 1 "cleanup_stale_locks(0): every lease without a heartbeat since the call"
finish
