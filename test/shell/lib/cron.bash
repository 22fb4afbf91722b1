# Shared by the tests of conveyor's pg_cron calls (pg_cron.sh, schedule_enqueue.sh), sourced after
# tap.bash; not a test on its own. CRON_DB names the database of the cluster's cron.database_name.

# err DB SQL: the error psql printed (VERBOSITY verbose, LOCATION dropped), or nothing when it succeeded.
err() {
    psql -X -q -At -d "$1" -v VERBOSITY=verbose -c "$2" 2>&1 >/dev/null | grep -v '^LOCATION:'
}

# cron_begin: a fresh pg_cron launcher (earlier tests created and dropped pg_cron; see restart_server),
# on a cluster whose cron.database_name is CRON_DB, in which conveyor is not installed yet.
cron_begin() {
    restart_server || bail "the scratch server did not restart"
    [ "$(q postgres "SHOW cron.database_name")" = "$CRON_DB" ] || bail "the cluster's cron.database_name is not $CRON_DB"
    [ -z "$(q "$CRON_DB" "SELECT 1 FROM pg_extension WHERE extname = 'conveyor'")" ] ||
        bail "conveyor is already installed in database $CRON_DB (left by another test?)"
}

# cron_first_run JOBID: waits (at most 150 s: pg_cron starts jobs on the minute) until pg_cron's first
# run of the job has ended; sets CRON_RUN to "<status> <return message>" (empty when none ended).
cron_first_run() {
    local started
    started=$(date +%s)
    CRON_RUN=
    while [ $(($(date +%s) - started)) -lt 150 ]; do
        CRON_RUN=$(q "$CRON_DB" "SELECT status || ' ' || coalesce(return_message, '') FROM cron.job_run_details
                                 WHERE jobid = $1 AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1")
        [ -n "$CRON_RUN" ] && break
        sleep 2
    done
    note "pg_cron's first run of the job ended after about $(($(date +%s) - started)) s: ${CRON_RUN:-none}"
}
