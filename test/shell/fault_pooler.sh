#!/usr/bin/env bash
# Fault: the workload of lib/fault_workload.py (a producer enqueueing 12,000 jobs, 6 workers acking each
# job in one transaction with its effect and a job-keyed charge, fenced writes under 1-2 s leases,
# charges with idempotency keys; see fault_kill.sh) through pgbouncer in transaction mode with a pool
# of 4 server connections, so consecutive transactions of a worker land on different backends. The
# pooler is stopped (SIGTERM: an immediate shutdown, every client and server connection cut) and
# started again twice mid-run, and a killer connected directly ends server backends behind it that are
# inside a transaction or a conveyor call: twice with kill -9 (the postmaster resets every backend,
# pgbouncer's included) and twice with pg_terminate_backend. Every process reconnects by itself.
# Afterwards the checks of lib/fault_checks.bash, as for fault_kill.sh and fault_crash.sh.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_fault_pooler
JOBS=12000   # slower through the pooler: kept well inside the deadline
WORKERS=6
POOL_SIZE=4
RESTARTS=2
CAP=${CONVEYOR_FAULT_CAP:-420}
BPORT=$((PGPORT + 1100))  # the socket lives in our own directory, so the number cannot collide
# After a server reset pgbouncer refuses clients for server_login_retry (15 s by default): 1 s here.
PGBOUNCER_EXTRA="server_login_retry = 1"
use_scratch fault-pooler
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
trap 'touch "$TMP/out/stop" 2>/dev/null; stop_pgbouncer; scratch_cleanup' EXIT

fault_setup "$DB"
start_pgbouncer "$DB" "$POOL_SIZE"
is "$(psql -X -At -h "$TMP" -p "$BPORT" -d pgbouncer -c "SHOW CONFIG" 2>/dev/null | grep '^pool_mode|' | cut -d'|' -f2)" \
   "transaction" "pgbouncer runs in transaction pooling mode"

export FAULT_POOLED=1
fault_start "host=$TMP port=$BPORT dbname=$DB" "$JOBS" 250 "$WORKERS" "$CAP"
fault_killer_start "$DB" "$CAP" 2 2 4

restarts=0
for r in $(seq 1 $RESTARTS); do
    sleep $((7 + r * 3))
    stop_pgbouncer
    sleep 1
    start_pgbouncer "$DB" "$POOL_SIZE"
    restarts=$((restarts + 1))
done
is "$restarts" "$RESTARTS" "pgbouncer was stopped and started again $RESTARTS times while the workload ran"

wait_sessions_bounded "$DB" $((CAP + 30)) "the producer and the workers"
touch "$TMP/out/stop"
fault_killer_end
check "the killer ended server backends behind the pooler with kill -9 ($FAULT_KILLS9 times)" test "$FAULT_KILLS9" -eq 2
check "and with pg_terminate_backend ($FAULT_TERMS times)" test "$FAULT_TERMS" -eq 2
is "$(fault_log_count 'all server processes terminated; reinitializing')" "$FAULT_KILLS9" "the server reset after each kill -9"
fault_kills_note

fault_checks "$DB"
note "fault_pooler: $JOBS jobs ($FAULT_COMPLETED completed, $FAULT_DEAD dead, $FAULT_ATTEMPTS attempts) through pgbouncer" \
     "(transaction mode, pool of $POOL_SIZE) stopped and started $restarts times, $FAULT_KILLS9 kill -9 and $FAULT_TERMS pg_terminate_backend" \
     "behind it, $FAULT_RECONNECTS reconnects: $(fault_verdict); $((FAULT_ELAPSED_MS / 1000)) s"
finish
