#!/usr/bin/env bash
# Fault: backends killed mid-transaction. A producer enqueues 20,000 jobs (200 groups, 2-second leases,
# 5 attempts, 1-second backoff; 1 in 10 always fails) while 6 workers dequeue them and ack each in one
# transaction with its effect row and a charge keyed by the job, make fenced writes under 1-2 s leases
# on 20 keys and charge four accounts with their own idempotency keys (lib/fault_workload.py). A
# killer picks a backend of the workload that is idle in a transaction or inside a conveyor call and
# ends it: 12 times with kill -9 (the postmaster then ends every backend and recovers: every session
# is cut) and 4 times with pg_terminate_backend. Every process reconnects and goes on.
# Afterwards (lib/fault_checks.bash): every job finished exactly once, completed jobs have exactly the
# acked attempt's effect, no group ran two committed attempts at once, the queue's counters agree;
# no fenced write with a superseded token was accepted and tokens kept growing across every reset;
# the ledger verifies, and every confirmed charge is in it exactly once.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_fault_kill
JOBS=20000
WORKERS=6
KILL9=12
TERM=4
CAP=${CONVEYOR_FAULT_CAP:-420}   # the processes' deadline in seconds: they stop as soon as the work is done (about 115 s
                                 # on a quiet machine); the margin is for a machine that other work slows down
use_scratch fault-kill
trap 'touch "$TMP/out/stop" 2>/dev/null; scratch_cleanup' EXIT

fault_setup "$DB"
fault_start "dbname=$DB" "$JOBS" 250 "$WORKERS" "$CAP"
fault_killer_start "$DB" "$CAP" "$KILL9" "$TERM" 2

wait_sessions_bounded "$DB" $((CAP + 30)) "the producer and the workers"
touch "$TMP/out/stop"
fault_killer_end
restarts=$(fault_log_count 'all server processes terminated; reinitializing')
check "the killer ended backends with kill -9 ($FAULT_KILLS9 times)" test "$FAULT_KILLS9" -ge 10
check "and with pg_terminate_backend ($FAULT_TERMS times)" test "$FAULT_TERMS" -ge 2
is "$restarts" "$FAULT_KILLS9" "the server reset and recovered after each kill -9 (counted in its log)"
fault_kills_note

fault_checks "$DB"
note "fault_kill: $JOBS jobs ($FAULT_COMPLETED completed, $FAULT_DEAD dead, $FAULT_ATTEMPTS attempts) through $FAULT_KILLS9 kill -9 and" \
     "$FAULT_TERMS pg_terminate_backend, $restarts server resets, $FAULT_RECONNECTS reconnects: $(fault_verdict);" \
     "$((FAULT_ELAPSED_MS / 1000)) s"
finish
