#!/usr/bin/env bash
# Fault: the whole cluster stopped with pg_ctl stop -m immediate (a crash: no checkpoint, every
# session cut, recovery from the WAL at the next start) three times while the workload of
# lib/fault_workload.py runs (a producer enqueueing 20,000 jobs, 6 workers acking each job in one
# transaction with its effect and a job-keyed charge, fenced writes under 1-2 s leases, charges with
# idempotency keys; see fault_kill.sh). The server is started again a second later; every process
# reconnects by itself and goes on. Afterwards the checks of lib/fault_checks.bash: every job finished
# exactly once with exactly its acked attempt's effect, the counters agree with the tables, no fenced
# write with a superseded token was accepted and tokens issued after each crash are greater than those
# before, the ledger verifies and holds every confirmed charge exactly once.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_fault_crash
JOBS=20000
WORKERS=6
CRASHES=3
CAP=${CONVEYOR_FAULT_CAP:-420}
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
DATA=${CONVEYOR_PGDATA:-$(q postgres "SHOW data_directory")}
use_scratch fault-crash

server_start() {
    start_server "$DATA" >>"$TMP/pg_ctl.out" 2>&1
}
# Whatever happens, the cluster is up again for the tests that follow.
trap 'q postgres "SELECT 1" >/dev/null 2>&1 || server_start; scratch_cleanup' EXIT

fault_setup "$DB"
fault_start "dbname=$DB" "$JOBS" 250 "$WORKERS" "$CAP"

crashes=0
for c in $(seq 1 $CRASHES); do
    sleep $((6 + c * 2))
    t_down=$(date +%s.%N)
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >>"$TMP/pg_ctl.out" 2>&1 ||
        { fail "pg_ctl stop -m immediate ($c)"; break; }
    sleep 1
    server_start || { sed 's/^/#   /' "$TMP/pg_ctl.out"; bail "the server did not start again after crash $c"; }
    echo "$t_down $(date +%s.%N)" >>"$TMP/out/outages"
    crashes=$((crashes + 1))
done
is "$crashes" "$CRASHES" "the cluster was stopped with -m immediate and started again $CRASHES times while the workload ran"

wait_sessions_bounded "$DB" $((CAP + 30)) "the producer and the workers"
recoveries=$(fault_log_count 'database system was not properly shut down; automatic recovery in progress')
is "$recoveries" "$CRASHES" "each start after a crash ran crash recovery (counted in the server log)"

fault_checks "$DB"
note "fault_crash: $JOBS jobs ($FAULT_COMPLETED completed, $FAULT_DEAD dead, $FAULT_ATTEMPTS attempts) through $crashes" \
     "immediate shutdowns and restarts, $FAULT_RECONNECTS reconnects: $(fault_verdict); $((FAULT_ELAPSED_MS / 1000)) s"
finish
