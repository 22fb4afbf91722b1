#!/usr/bin/env bash
# conveyor.schedule_enqueue / unschedule_enqueue / list_schedules / run_schedule against the real
# pg_cron of the scratch cluster (preloaded, cron.database_name = 'postgres', background workers):
#  * before CREATE EXTENSION pg_cron: 42704 with a hint;
#  * who may call: an admin schedules, a worker and a tenant role (no conveyor role) are refused, and no
#    one but the extension's owner may run a tick by hand;
#  * bad input is refused before anything is written: unknown queue, a job type or payload the queue
#    refuses, a cron text pg_cron refuses, a name too long for pg_cron's job name;
#  * a hostile name (quotes, a statement after them) reaches pg_cron only as a quoted literal, and the
#    job runs as the extension's owner even when a non-superuser admin scheduled it;
#  * pg_cron enqueues the job (waited for by polling cron.job_run_details, at most 150 s: pg_cron 1.4
#    starts jobs on the minute);
#  * a repeated run of the same tick, also one that overlaps the first and one after its job finished,
#    enqueues nothing;
#  * scheduling again keeps one pg_cron job; unschedule removes the job and the schedule;
#  * in another database: 55000 with a hint.
# Everything the test adds to database postgres is removed on exit.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/cron.bash"

CRON_DB=postgres
OTHER_DB=conveyor_shell_sched_other
TMP=$(mktemp -d /tmp/conveyor-sched.XXXXXX)
CREATED_CRON=0
CREATED_CONVEYOR=0
HOSTILE="it's'); DELETE FROM cron.job; --"

cleanup() {
    if [ "$CREATED_CRON" = 1 ] || [ "$CREATED_CONVEYOR" = 1 ]; then
        psql -X -q -d "$CRON_DB" -c "SET client_min_messages = warning" \
            -c "DELETE FROM cron.job_run_details WHERE jobid IN (SELECT jobid FROM cron.job WHERE jobname LIKE 'conveyor-enqueue:%')" \
            -c "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'conveyor-enqueue:%'" >/dev/null 2>&1
    fi
    [ "$CREATED_CONVEYOR" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS conveyor CASCADE" >/dev/null 2>&1
    [ "$CREATED_CRON" = 1 ] && psql -X -q -d "$CRON_DB" -c "DROP EXTENSION IF EXISTS pg_cron" >/dev/null 2>&1
    psql -X -q -d "$CRON_DB" -c "DROP ROLE IF EXISTS cv_sched_admin" -c "DROP ROLE IF EXISTS cv_sched_worker" \
        -c "DROP ROLE IF EXISTS cv_sched_tenant" >/dev/null 2>&1
    drop_test_dbs
    rm -rf "$TMP"
}
trap cleanup EXIT

cron_begin

# A SQL string literal of $1.
lit() { printf "'%s'" "${1//\'/\'\'}"; }

q "$CRON_DB" "CREATE EXTENSION conveyor" >/dev/null || bail "could not create conveyor in $CRON_DB"
CREATED_CONVEYOR=1
q "$CRON_DB" "SELECT conveyor.create_queue('feeds', '{\"job_types\": [\"POLL\"], \"required_keys\": [\"site\"],
              \"payload_schema\": {\"type\": \"object\", \"properties\": {\"site\": {\"type\": \"string\"}}}}')" \
    "SELECT conveyor.create_queue('other', '{}')" >/dev/null || bail "could not create the queues"

# ---- the cron database without pg_cron's extension ------------------------------------------------
if [ -z "$(q "$CRON_DB" "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")" ]; then
    is "$(err "$CRON_DB" "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"site\": \"a\"}', 'POLL')")" \
       "ERROR:  42704: extension pg_cron is not created in database \"$CRON_DB\"
DETAIL:  pg_cron is preloaded and schedules jobs from this database, but its extension is not created here.
HINT:  Run CREATE EXTENSION pg_cron in this database, then call conveyor.schedule_enqueue again." \
       "without pg_cron's extension, schedule_enqueue says to create it"
    is "$(q "$CRON_DB" "SELECT count(*) FROM conveyor.list_schedules()")" 0 "without pg_cron's extension, list_schedules lists nothing"
    q "$CRON_DB" "CREATE EXTENSION pg_cron" >/dev/null || bail "could not create pg_cron in $CRON_DB"
    CREATED_CRON=1
else
    note "pg_cron's extension already exists in $CRON_DB: its absence is not tested"
fi

# ---- who may call ---------------------------------------------------------------------------------
q "$CRON_DB" "CREATE ROLE cv_sched_admin IN ROLE conveyor_admin" "CREATE ROLE cv_sched_worker IN ROLE conveyor_worker" \
    "CREATE ROLE cv_sched_tenant" "GRANT USAGE ON SCHEMA conveyor TO cv_sched_tenant" >/dev/null || bail "could not create the roles"
is "$(err "$CRON_DB" "SET ROLE cv_sched_worker; SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"site\": \"a\"}', 'POLL')" | head -1)" \
   "ERROR:  42501: permission denied for function schedule_enqueue" "a worker may not schedule recurring jobs"
is "$(err "$CRON_DB" "SET ROLE cv_sched_tenant; SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'other', '{}')" | head -1)" \
   "ERROR:  42501: permission denied for function schedule_enqueue" "a tenant role may not schedule into any queue"
is "$(err "$CRON_DB" "SET ROLE cv_sched_tenant; SELECT conveyor.unschedule_enqueue('poll')" | head -1)" \
   "ERROR:  42501: permission denied for function unschedule_enqueue" "nor unschedule"
is "$(err "$CRON_DB" "SET ROLE cv_sched_tenant; SELECT * FROM conveyor.list_schedules()" | head -1)" \
   "ERROR:  42501: permission denied for function list_schedules" "nor list the schedules"
is "$(err "$CRON_DB" "SET ROLE cv_sched_admin; SELECT conveyor.run_schedule('poll')" | head -1)" \
   "ERROR:  42501: permission denied for function run_schedule" "not even an admin may run a tick by hand"

# ---- bad input, refused before anything is written ------------------------------------------------
admin_err() { err "$CRON_DB" "SET ROLE cv_sched_admin; $1" | head -1; }
is "$(admin_err "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'nope', '{}')")" \
   'ERROR:  42704: queue "nope" does not exist' "an unknown queue is 42704"
is "$(admin_err "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"site\": \"a\"}')")" \
   'ERROR:  22023: job_type is required by queue "feeds"' "a job type the queue requires is checked"
is "$(admin_err "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"x\": 1}', 'POLL')")" \
   'ERROR:  22023: payload is missing required key "site"' "a payload without a required key is 22023"
is "$(admin_err "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"site\": 7}', 'POLL')" | cut -c1-40)" \
   'ERROR:  22023: payload does not match th' "a payload against the queue's schema is 22023"
is "$(admin_err "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'feeds', '{\"site\": \"a\"}', 'POLL', priority => 11)")" \
   'ERROR:  22023: priority must be between 1 and 10, not 11' "priority out of range is 22023"
is "$(err "$CRON_DB" "SELECT conveyor.schedule_enqueue('poll', '61 * * * *', 'feeds', '{\"site\": \"a\"}', 'POLL')")" \
   "ERROR:  22023: schedule \"61 * * * *\" is not a cron schedule
DETAIL:  pg_cron accepts five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ...
HINT:  Pass a schedule such as '* * * * *' (every minute) or '*/5 * * * *' (every 5 minutes)." \
   "a schedule pg_cron cannot parse is 22023"
long=$(printf 'n%.0s' $(seq 1 40))
is "$(admin_err "SELECT conveyor.schedule_enqueue('$long', '* * * * *', 'other', '{}')")" \
   "ERROR:  22023: name \"$long\" is too long for a schedule: at most 37 bytes in database \"$CRON_DB\"" \
   "a name too long for pg_cron's job name is 22023"
is "$(q "$CRON_DB" "SELECT (SELECT count(*) FROM conveyor.schedules) || ' ' || (SELECT count(*) FROM cron.job WHERE jobname LIKE 'conveyor-enqueue:%')")" \
   "0 0" "refused calls wrote no schedule and no pg_cron job"

# ---- a hostile name, scheduled by an admin who is not a superuser ----------------------------------
hostile_lit=$(lit "$HOSTILE")
job_id=$(q "$CRON_DB" "SET ROLE cv_sched_admin" \
    "SELECT conveyor.schedule_enqueue($hostile_lit, '* * * * *', 'feeds', '{\"site\": \"a''b\"}', 'POLL', group_key => 'g', priority => 7)")
[ -n "$job_id" ] || bail "schedule_enqueue returned nothing"
is "$(q "$CRON_DB" "SELECT jobname = 'conveyor-enqueue:$CRON_DB:' || $hostile_lit, command = 'SELECT conveyor.run_schedule(' || quote_literal($hostile_lit) || ')',
                           username, database, schedule FROM cron.job WHERE jobid = $job_id")" \
   "t|t|postgres|$CRON_DB|* * * * *" \
   "the pg_cron job: named after the schedule, the name only as a quoted literal, run as the extension's owner"
is "$(q "$CRON_DB" "SET ROLE cv_sched_admin" "SELECT conveyor.schedule_enqueue($hostile_lit, '*/2 * * * *', 'feeds', '{\"site\": \"a''b\"}', 'POLL', group_key => 'g', priority => 7)")" \
   "$job_id" "scheduling again returns the same pg_cron job"
q "$CRON_DB" "SELECT conveyor.schedule_enqueue($hostile_lit, '* * * * *', 'feeds', '{\"site\": \"a''b\"}', 'POLL', group_key => 'g', priority => 7)" >/dev/null
is "$(q "$CRON_DB" "SELECT count(*), min(schedule) FROM cron.job WHERE jobname LIKE 'conveyor-enqueue:%'")" "1|* * * * *" \
   "one pg_cron job, with the newer schedule"
is "$(q "$CRON_DB" "SET ROLE cv_sched_admin" "SELECT name = $hostile_lit, schedule, active, queue, payload, job_type, group_key, priority, max_attempts, cron_job_id
                    FROM conveyor.list_schedules()")" \
   "t|* * * * *|t|feeds|{\"site\": \"a'b\"}|POLL|g|7||$job_id" "list_schedules shows the schedule and what it enqueues"
is "$(q "$CRON_DB" "SELECT string_agg(current_user_name || ' ' || function_name, '; ' ORDER BY audit_id) FROM conveyor.audit(function => 'schedule_enqueue')")" \
   "cv_sched_admin conveyor.schedule_enqueue; cv_sched_admin conveyor.schedule_enqueue; postgres conveyor.schedule_enqueue" "the audit trail records who scheduled"

# ---- pg_cron enqueues the job ---------------------------------------------------------------------
cron_first_run "$job_id"
is "${CRON_RUN%% *}" succeeded "pg_cron ran the schedule and it succeeded"
is "$(q "$CRON_DB" "SELECT j.job_type, j.group_key, j.priority, j.payload::text, j.dedup_key = 'schedule:' || $hostile_lit || '@' || to_char(s.last_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                           s.last_job_id = j.job_id, date_trunc('minute', s.last_tick) = s.last_tick
                    FROM conveyor.schedules s JOIN conveyor.jobs j ON j.dedup_key LIKE 'schedule:%' ORDER BY j.created_at LIMIT 1")" \
   "POLL|g|7|{\"site\": \"a'b\"}|t|t|t" "the job is enqueued as scheduled, its dedup key naming the schedule and its tick (a minute)"

# ---- repeated runs of one tick --------------------------------------------------------------------
# A schedule pg_cron will not run during the test (once a year), whose ticks are run by hand as the
# owner. The runs below must fall in one minute: wait (at most a minute) until 20 s of it are left.
q "$CRON_DB" "SELECT conveyor.schedule_enqueue('burst', '0 3 1 1 *', 'other', '{\"n\": 1}')" >/dev/null
for _ in $(seq 1 70); do [ "$(date +%-S)" -lt 40 ] && break; sleep 1; done
psql -X -q -At -v ON_ERROR_STOP=1 -d "$CRON_DB" -c "BEGIN" -c "SELECT coalesce(conveyor.run_schedule('burst')::text, 'none')" \
    -c "SELECT pg_sleep(2)" -c "COMMIT" >"$TMP/first.out" 2>&1 &
first=$!
for _ in $(seq 1 100); do
    [ "$(q "$CRON_DB" "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)' AND state = 'active'")" = 1 ] && break
    sleep 0.1
done
second=$(q "$CRON_DB" "SELECT coalesce(conveyor.run_schedule('burst')::text, 'none')")
wait "$first"
first_result=$(grep -v '^$' "$TMP/first.out" | head -1)
is "$(q "$CRON_DB" "SELECT last_job_id FROM conveyor.schedules WHERE name = 'burst'")" "$first_result" "the first run of a tick enqueues its job"
is "$second" none "a run overlapping it for the same tick waits for it and enqueues nothing"
is "$(q "$CRON_DB" "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'other'")" 1 \
   "the queue holds one job"
# Its job done (its dedup key no longer holds), the same tick still enqueues nothing.
taken=$(q "$CRON_DB" "SELECT job_id FROM conveyor.dequeue('other', 'w', 1)")
q "$CRON_DB" "SELECT conveyor.ack('$taken', true)" >/dev/null
is "$(q "$CRON_DB" "SELECT conveyor.get_job('$first_result')->>'status'")" completed "the tick's job is completed"
is "$(q "$CRON_DB" "SELECT coalesce(conveyor.run_schedule('burst')::text, 'none')")" none \
   "a later run of the same tick enqueues nothing, though the tick's job has finished"
is "$(q "$CRON_DB" "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'other'")" 0 \
   "the queue holds no job"
is "$(q "$CRON_DB" "SELECT count(*) FROM cron.job")" 2 "the hostile name deleted no pg_cron job"
is "$(q "$CRON_DB" "SELECT conveyor.unschedule_enqueue('burst')")" t "unschedule_enqueue removes a schedule"

# ---- unschedule -----------------------------------------------------------------------------------
is "$(q "$CRON_DB" "SET ROLE cv_sched_admin" "SELECT conveyor.unschedule_enqueue($hostile_lit)")" t "unschedule_enqueue removes the schedule"
is "$(q "$CRON_DB" "SELECT (SELECT count(*) FROM cron.job WHERE jobname LIKE 'conveyor-enqueue:%') || ' ' || (SELECT count(*) FROM conveyor.schedules)")" \
   "0 0" "no pg_cron job and no schedule are left"
is "$(q "$CRON_DB" "SELECT conveyor.unschedule_enqueue($hostile_lit)")" f "unscheduling again finds nothing"
is "$(err "$CRON_DB" "SELECT conveyor.run_schedule($hostile_lit)" | head -1)" \
   "ERROR:  42704: schedule \"$HOSTILE\" does not exist" "a run of a removed schedule fails (pg_cron records it)"

# ---- another database -----------------------------------------------------------------------------
create_db "$OTHER_DB" || bail "could not create database $OTHER_DB"
q "$OTHER_DB" "SELECT conveyor.create_queue('other', '{}')" >/dev/null
is "$(err "$OTHER_DB" "SELECT conveyor.schedule_enqueue('poll', '* * * * *', 'other')")" \
   "ERROR:  55000: pg_cron schedules jobs from database \"$CRON_DB\", not from \"$OTHER_DB\"
DETAIL:  pg_cron keeps its jobs in the database named by cron.database_name.
HINT:  Recurring jobs are kept in the database pg_cron schedules from: create the queue and the schedule in database \"$CRON_DB\", or set cron.database_name = '$OTHER_DB' and restart the server." \
   "in another database, 55000 says where recurring jobs can be scheduled"

finish
