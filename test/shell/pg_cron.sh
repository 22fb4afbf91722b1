#!/usr/bin/env bash
# conveyor.schedule_maintenance / unschedule_maintenance against the real pg_cron of the scratch cluster
# (preloaded, cron.database_name = 'postgres', jobs run in background workers):
#  * in database postgres before CREATE EXTENSION pg_cron: 42704 with a hint; unschedule finds nothing;
#  * a job whose 1-second lease has lapsed is put back by maintain() once pg_cron has run the scheduled
#    job (waited for by polling cron.job_run_details, at most 150 s: pg_cron starts jobs on the minute);
#  * scheduling twice (also from two sessions at once) keeps one job, with the newer schedule, running
#    as the extension's owner even when an admin who is not a superuser schedules it; unscheduling
#    removes it;
#  * in another database: 55000 whose hint is the statement to run in database postgres;
#  * on a server that does not preload pg_cron (a second, small cluster): 55000 "pg_cron is not loaded".
# Everything the test adds to database postgres (the extensions, the job and its run details, the
# roles) is removed on exit.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/cron.bash"

CRON_DB=postgres
OTHER_DB=conveyor_shell_cron_other
JOB_NAME="conveyor-maintain:$CRON_DB"
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
TMP=$(mktemp -d /tmp/conveyor-cron.XXXXXX)
chmod 755 "$TMP"
CREATED_CRON=0
CREATED_CONVEYOR=0
CRON_JOBS=0  # ids of the pg_cron jobs this test made: their run details are deleted on exit

cleanup() {
    if [ "$CREATED_CRON" = 1 ] || [ "$CREATED_CONVEYOR" = 1 ]; then
        psql -X -q -d "$CRON_DB" -c "SET client_min_messages = warning" \
            -c "DELETE FROM cron.job_run_details WHERE jobid IN ($CRON_JOBS)" \
            -c "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid IN ($CRON_JOBS)" >/dev/null 2>&1
    fi
    [ "$CREATED_CONVEYOR" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS conveyor CASCADE" >/dev/null 2>&1
    [ "$CREATED_CRON" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS pg_cron" >/dev/null 2>&1
    psql -X -q -d "$CRON_DB" -c "DROP ROLE IF EXISTS cv_cron_admin" -c "DROP ROLE IF EXISTS cv_cron_worker" >/dev/null 2>&1
    if [ -f "$TMP/nocron/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/nocron/data" -m immediate -w stop >/dev/null 2>&1
    fi
    drop_test_dbs
    rm -rf "$TMP"
}
trap cleanup EXIT

cron_begin

# ---- the cron database without pg_cron's extension ------------------------------------------------
if [ -z "$(q "$CRON_DB" "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")" ]; then
    q "$CRON_DB" "CREATE EXTENSION conveyor" >/dev/null || bail "could not create conveyor in $CRON_DB"
    CREATED_CONVEYOR=1
    is "$(err "$CRON_DB" "SELECT conveyor.schedule_maintenance()")" \
       "ERROR:  42704: extension pg_cron is not created in database \"$CRON_DB\"
DETAIL:  pg_cron is preloaded and schedules jobs from this database, but its extension is not created here.
HINT:  Run CREATE EXTENSION pg_cron in this database, then call conveyor.schedule_maintenance again." \
       "without pg_cron's extension, schedule_maintenance says to create it"
    is "$(q "$CRON_DB" "SELECT conveyor.unschedule_maintenance()")" f \
       "without pg_cron's extension, unschedule_maintenance removes nothing"
    q "$CRON_DB" "CREATE EXTENSION pg_cron" >/dev/null || bail "could not create pg_cron in $CRON_DB"
    CREATED_CRON=1
else
    note "pg_cron's extension already exists in $CRON_DB: its absence is not tested"
    q "$CRON_DB" "CREATE EXTENSION conveyor" >/dev/null || bail "could not create conveyor in $CRON_DB"
    CREATED_CONVEYOR=1
fi

# ---- a job whose lease lapses (before anything is scheduled, so nothing expires it early) ----------
q "$CRON_DB" "SELECT conveyor.create_queue('cron_q')" >/dev/null || bail "could not create queue cron_q"
lapsed=$(q "$CRON_DB" "SELECT job_id FROM conveyor.enqueue('cron_q', '{\"n\": 1}')")
is "$(q "$CRON_DB" "SELECT count(*) FROM conveyor.dequeue('cron_q', 'w1', 1, 1)")" 1 "a worker takes the job with a 1-second lease"
sleep 1.5
is "$(q "$CRON_DB" "SELECT conveyor.get_job('$lapsed')->>'status'")" running "its lapsed lease is still held before maintenance runs"

# ---- schedule, reschedule, who runs it ------------------------------------------------------------
q "$CRON_DB" "CREATE ROLE cv_cron_admin IN ROLE conveyor_admin" "CREATE ROLE cv_cron_worker IN ROLE conveyor_worker" >/dev/null || bail "could not create the roles"
is "$(err "$CRON_DB" "SET ROLE cv_cron_worker; SELECT conveyor.schedule_maintenance()" | head -1)" \
   "ERROR:  42501: permission denied for function schedule_maintenance" "a worker may not schedule maintenance"

job_id=$(q "$CRON_DB" "SET ROLE cv_cron_admin" "SELECT conveyor.schedule_maintenance('*/5 * * * *')")
[ -n "$job_id" ] || bail "schedule_maintenance returned nothing"
CRON_JOBS="$CRON_JOBS, $job_id"
again=$(q "$CRON_DB" "SELECT conveyor.schedule_maintenance('* * * * *')")
is "$again" "$job_id" "scheduling again returns the same job id"
is "$(q "$CRON_DB" "SELECT count(*) || ' ' || min(schedule) || ' | ' || min(command) || ' | ' || min(database) || ' ' || min(username) || ' ' || bool_and(active)
                    FROM cron.job WHERE command LIKE '%conveyor.maintain%'")" \
   "1 * * * * * | SELECT conveyor.maintain() | $CRON_DB postgres true" \
   "one job, with the newer schedule, the constant command, run as the extension's owner (not the admin who scheduled it)"
is "$(q "$CRON_DB" "SELECT string_agg(current_user_name || ' ' || arguments::text || ' ' || result::text, '; ' ORDER BY audit_id)
                    FROM conveyor.audit(function => 'schedule_maintenance')")" \
   "cv_cron_admin {\"schedule\": \"*/5 * * * *\"} $job_id; postgres {\"schedule\": \"* * * * *\"} $job_id" \
   "the audit trail records each scheduling: who, the schedule, the job id"
is "$(err "$CRON_DB" "SELECT conveyor.schedule_maintenance('61 * * * *')")" \
   "ERROR:  22023: schedule \"61 * * * *\" is not a cron schedule
DETAIL:  pg_cron accepts five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ...
HINT:  Pass a schedule such as '* * * * *' (every minute) or '*/5 * * * *' (every 5 minutes)." \
   "a schedule pg_cron cannot parse is 22023"
is "$(q "$CRON_DB" "SELECT schedule FROM cron.job WHERE jobid = $job_id")" "* * * * *" "a refused schedule leaves the job as it was"

# A paused job is resumed by scheduling it again.
q "$CRON_DB" "SELECT cron.alter_job($job_id, active => false)" >/dev/null
q "$CRON_DB" "SELECT conveyor.schedule_maintenance('* * * * *')" >/dev/null
is "$(q "$CRON_DB" "SELECT active FROM cron.job WHERE jobid = $job_id")" t "scheduling a paused job makes it active again"

# ---- pg_cron runs maintain(): the lapsed lease is expired ------------------------------------------
cron_first_run "$job_id"
is "${CRON_RUN%% *}" succeeded "pg_cron ran conveyor.maintain() and it succeeded"
is "$(q "$CRON_DB" "SELECT (j->>'status') || ' ' || coalesce(j->>'worker_id', '-') || ' ' || (j->>'last_error') FROM conveyor.get_job('$lapsed') j")" \
   "pending - lease expired" "the scheduled maintain() expired the lapsed lease: the job is pending again"

# ---- unschedule -----------------------------------------------------------------------------------
is "$(q "$CRON_DB" "SET ROLE cv_cron_admin" "SELECT conveyor.unschedule_maintenance()")" t "unschedule_maintenance removes the job"
is "$(q "$CRON_DB" "SELECT count(*) FROM cron.job WHERE jobname = '$JOB_NAME'")" 0 "no job is left"
is "$(q "$CRON_DB" "SELECT conveyor.unschedule_maintenance()")" f "unscheduling again finds nothing"

# ---- two admins at once ---------------------------------------------------------------------------
# The first holds its new job uncommitted while the second schedules: the second waits for it and
# then updates that job (pg_cron's INSERT ... ON CONFLICT on job name and user) instead of adding one.
psql -X -q -At -v ON_ERROR_STOP=1 -d "$CRON_DB" -c "BEGIN" -c "SELECT conveyor.schedule_maintenance('*/2 * * * *')" \
    -c "SELECT pg_sleep(2)" -c "COMMIT" >"$TMP/first.out" 2>&1 &
first=$!
for _ in $(seq 1 100); do
    [ "$(q "$CRON_DB" "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(2)' AND state = 'active'")" = 1 ] && break
    sleep 0.1
done
second=$(q "$CRON_DB" "SELECT conveyor.schedule_maintenance('*/3 * * * *')")
wait "$first"
first_id=$(grep -E '^[0-9]+$' "$TMP/first.out")
CRON_JOBS="$CRON_JOBS, ${first_id:-0}, ${second:-0}"
is "$second" "$first_id" "two admins scheduling at once get the same job"
is "$(q "$CRON_DB" "SELECT count(*) || ' ' || min(schedule) FROM cron.job WHERE command LIKE '%conveyor.maintain%'")" "1 */3 * * * *" \
   "one job, with the schedule of the one that committed last"
q "$CRON_DB" "SELECT conveyor.unschedule_maintenance()" >/dev/null

# ---- another database -----------------------------------------------------------------------------
create_db "$OTHER_DB" || bail "could not create database $OTHER_DB"
is "$(err "$OTHER_DB" "SELECT conveyor.schedule_maintenance('*/2 * * * *')")" \
   "ERROR:  55000: pg_cron schedules jobs from database \"$CRON_DB\", not from \"$OTHER_DB\"
DETAIL:  pg_cron keeps its jobs in the database named by cron.database_name.
HINT:  Run this in database \"$CRON_DB\": SELECT cron.schedule_in_database('conveyor-maintain:$OTHER_DB', '*/2 * * * *', 'SELECT conveyor.maintain()', '$OTHER_DB')" \
   "in another database, the hint is the statement to run in the cron database"
is "$(err "$OTHER_DB" "SELECT conveyor.unschedule_maintenance()" | tail -1)" \
   "HINT:  Run this in database \"$CRON_DB\": SELECT cron.unschedule('conveyor-maintain:$OTHER_DB')" \
   "unschedule_maintenance too"
# The statement of the hint does schedule that database's maintenance (and is removed again).
hint_sql=$(err "$OTHER_DB" "SELECT conveyor.schedule_maintenance('*/2 * * * *')" | sed -n 's/^HINT:  Run this in database "[^"]*": //p')
other_job=$(q "$CRON_DB" "$hint_sql")
[ -n "$other_job" ] && CRON_JOBS="$CRON_JOBS, $other_job"
is "$(q "$CRON_DB" "SELECT database || ' ' || schedule || ' ' || command FROM cron.job WHERE jobid = ${other_job:-0}")" \
   "$OTHER_DB */2 * * * * SELECT conveyor.maintain()" "the hint's statement schedules maintain() in that database"
q "$CRON_DB" "SELECT cron.unschedule('conveyor-maintain:$OTHER_DB')" >/dev/null

# ---- a server without pg_cron ---------------------------------------------------------------------
# Its own socket directory, so it may use any port; cron.database_name is set but pg_cron is not
# preloaded (the setting is then a mere placeholder).
mkdir -p "$TMP/nocron"
chown postgres:postgres "$TMP/nocron"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/nocron/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null ||
    bail "initdb of the server without pg_cron failed"
cat >>"$TMP/nocron/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$TMP/nocron'
port = 5432
cron.database_name = 'postgres'
CONF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/nocron/data" -l "$TMP/nocron/server.log" \
    ${CONVEYOR_POSTGRES:+-p "$CONVEYOR_POSTGRES"} -w start >/dev/null ||
    bail "the server without pg_cron did not start"
PGHOST=$TMP/nocron PGPORT=5432 q postgres "CREATE EXTENSION conveyor" >/dev/null || bail "could not create conveyor without pg_cron"
is "$(PGHOST=$TMP/nocron PGPORT=5432 err postgres "SELECT conveyor.schedule_maintenance()")" \
   "ERROR:  55000: pg_cron is not loaded
DETAIL:  conveyor.maintain() is scheduled with pg_cron, which runs only when the server preloads it.
HINT:  Add pg_cron to shared_preload_libraries and set cron.database_name = 'postgres' in postgresql.conf, restart the server, then run CREATE EXTENSION pg_cron in database \"postgres\"." \
   "on a server that does not preload pg_cron, 55000 says how to set it up"
is "$(PGHOST=$TMP/nocron PGPORT=5432 err postgres "SELECT conveyor.unschedule_maintenance()" | head -1)" \
   "ERROR:  55000: pg_cron is not loaded" "unschedule_maintenance too"

finish
