#!/usr/bin/env bash
# Lock order: conveyor's header promises that its group locks are "taken ... in ascending key order:
# no deadlocks between them". These two interleavings are driven step by step (each session is
# started, then the test waits until it blocks or finishes) and must end without 40P01:
#   A. dequeue reaps an expired job of group a and then promotes a due job of group b, while
#      enqueue_batch takes the locks of b and a (in ascending order: b < a);
#   B. a worker heartbeats its job (lease already expired) and acks it in the same transaction while
#      a dequeue, conveyor.reap() or conveyor.maintain() reaps that job;
#   C. a worker dequeues and acks a grouped job in one transaction while an operator cancels it.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_lock_order
use_scratch lockorder

create_db "$DB" || bail "could not create database $DB"
q "$DB" "CREATE TABLE flags (name text PRIMARY KEY)" \
        "SELECT conveyor.create_queue('lo', '{\"lease_seconds\": 1, \"backoff_base_seconds\": 0}')" >/dev/null \
    || bail "could not create the queue"

# session NAME SQL...: runs the statements in one background psql session named NAME.
session() {
    local name=$1
    shift
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    PGAPPNAME="lo_$name" psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "${args[@]}" >"$TMP/$name.out" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}
# wait_for NAME CONDITION: waits (at most 10 s) until session NAME's pg_stat_activity row meets the
# condition, or the session has ended. Returns 1 on timeout.
wait_for() {
    local name=$1 cond=$2
    for _ in $(seq 1 100); do
        [ "$(q "$DB" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lo_$name' AND datname = current_database()
                      AND ($cond)")" = 1 ] && return 0
        [ "$(q "$DB" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lo_$name' AND datname = current_database()")" = 0 ] \
            && return 0
        sleep 0.1
    done
    return 1
}
blocked="wait_event_type = 'Lock'"
# finished NAME: waits (at most 15 s) for the session to end; its exit status.
finished() {
    local pid_var="PID_$1"
    local pid=${!pid_var}
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    wait "$pid"
}
# A statement that waits, inside the session's transaction, until flags holds NAME (at most 20 s).
wait_flag() { echo "DO \$\$ BEGIN FOR i IN 1 .. 200 LOOP EXIT WHEN EXISTS (SELECT 1 FROM flags WHERE name = '$1'); PERFORM pg_sleep(0.1); END LOOP; END \$\$"; }
set_flag() { q "$DB" "INSERT INTO flags VALUES ('$1')" >/dev/null; }

# The unsigned 64-bit lock key of a group, as conveyor computes it (read back from pg_locks).
group_key_of() {
    psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" <<SQL | tail -1
BEGIN;
SELECT count(*) FROM conveyor.enqueue('lo', '{}', group_key => '$1') \g /dev/null
SELECT classid::bigint::numeric * 4294967296 + objid::bigint FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 3 AND pid = pg_backend_pid();
ROLLBACK;
SQL
}

# ---- A. dequeue (reap a, then promote b) against enqueue_batch (b, then a) -------------------------
k1=$(group_key_of alpha)
k2=$(group_key_of beta)
[ -n "$k1" ] && [ -n "$k2" ] || bail "could not read the group lock keys"
if [ "$(q "$DB" "SELECT $k1::numeric < $k2::numeric")" = t ]; then A=beta; B=alpha; else A=alpha; B=beta; fi
note "group lock keys: alpha $k1, beta $k2; a = $A, b = $B"

q "$DB" "SELECT count(*) FROM conveyor.enqueue('lo', '{\"job\": \"Ja\"}', group_key => '$A')" \
        "SELECT count(*) FROM conveyor.dequeue('lo', 'wx', 1)" \
        "SELECT count(*) FROM conveyor.enqueue('lo', '{\"job\": \"Jb\"}', group_key => '$B', run_at => now() + interval '1 second')" >/dev/null
sleep 1.3  # Ja's lease has run out; Jb is due
is "$(q "$DB" "SELECT string_agg(payload->>'job' || ':' || state, ' ' ORDER BY payload->>'job') FROM conveyor.jobs
               WHERE (state = 'running' AND lease_until < now()) OR (state = 'scheduled' AND run_at <= now())")" \
   "Ja:running Jb:scheduled" "A: Ja (group a) has an expired lease and Jb (group b) is due"

session t0 "BEGIN" "SELECT count(*) FROM conveyor.enqueue('lo', '{\"job\": \"T0\"}', group_key => '$A')" "$(wait_flag a_release)" "ROLLBACK"
wait_for t0 "query LIKE 'DO %'" || fail "A: session t0 did not take group a"
session t1 "SELECT count(*) FROM conveyor.dequeue('lo', 'w1', 5)"
wait_for t1 "$blocked" || fail "A: the dequeue neither blocked nor finished"
session t2 "BEGIN" "SELECT count(*) FROM conveyor.enqueue_batch('lo', '[{\"group_key\": \"$B\"}, {\"group_key\": \"$A\"}]')" "COMMIT"
wait_for t2 "$blocked" || fail "A: enqueue_batch neither blocked nor finished"
set_flag a_release
finished t0
rc1=0; finished t1 || rc1=$?
rc2=0; finished t2 || rc2=$?
check "A: dequeue does not deadlock against enqueue_batch (no 40P01)" bash -c "! grep -q 'deadlock detected' '$TMP/t1.out' '$TMP/t2.out'"
is "$rc1 $rc2" "0 0" "A: both the dequeue and enqueue_batch succeed"
for s in t1 t2; do grep -q ERROR "$TMP/$s.out" && sed "s/^/#   $s: /" "$TMP/$s.out" | head -3; done
q "$DB" "SELECT conveyor.ack_many(array_agg(job_id), true) FROM conveyor.jobs WHERE state = 'running'" \
        "SELECT count(*) FROM (SELECT conveyor.cancel(job_id) FROM conveyor.jobs) c" >/dev/null

# ---- B. heartbeat + ack in one transaction against the reaper ------------------------------------
# The reaper is dequeue's housekeeping, conveyor.reap() or conveyor.maintain() (pg_cron runs it
# every minute, so it meets workers all the time).
scenario_b() {  # scenario_b LABEL GROUP REAPER_SQL
    local label=$1 group=$2 reaper=$3 J rcw rcr s
    J=$(q "$DB" "SELECT job_id FROM conveyor.enqueue('lo', '{\"job\": \"J\"}', group_key => '$group')")
    q "$DB" "SELECT count(*) FROM conveyor.dequeue('lo', 'wx', 1)" >/dev/null
    sleep 1.3  # J's lease has run out
    q "$DB" "DELETE FROM flags WHERE name = 'b_ack'" >/dev/null
    session tw "BEGIN" "SELECT conveyor.heartbeat('$J', 'wx', 60) IS NOT NULL" "$(wait_flag b_ack)" \
               "SELECT conveyor.ack('$J', true, worker_id => 'wx')" "COMMIT"
    wait_for tw "query LIKE 'DO %'" || fail "$label: the worker did not heartbeat"
    session tr "$reaper"
    wait_for tr "$blocked" || fail "$label: the reaper neither blocked nor finished"
    set_flag b_ack
    rcw=0; finished tw || rcw=$?
    rcr=0; finished tr || rcr=$?
    check "$label: heartbeat + ack in one transaction does not deadlock against the reaper (no 40P01)" \
        bash -c "! grep -q 'deadlock detected' '$TMP/tw.out' '$TMP/tr.out'"
    is "$rcw $rcr" "0 0" "$label: both the worker's transaction and the reaper succeed"
    for s in tw tr; do grep -q ERROR "$TMP/$s.out" && sed "s/^/#   $s: /" "$TMP/$s.out" | head -3; done
    is "$(tr '\n' ' ' <"$TMP/tw.out")" "t t " "$label: the heartbeat renewed the lease, so the worker's ack returns true"
    is "$(q "$DB" "SELECT status || ' ' || worker_id FROM conveyor.job_history WHERE job_id = '$J'")" "completed wx" \
       "$label: the job completed, by its worker"
}
scenario_b "B (dequeue)" gamma "SELECT count(*) FROM conveyor.dequeue('lo', 'w1', 5)"
scenario_b "B (reap)" delta "SELECT conveyor.reap('lo')"
scenario_b "B (maintain)" epsilon "SELECT conveyor.maintain() IS NOT NULL"

# ---- C. dequeue + ack in one transaction against cancel -------------------------------------------
J=$(q "$DB" "SELECT job_id FROM conveyor.enqueue('lo', '{\"job\": \"C\"}', group_key => 'zeta')")
q "$DB" "DELETE FROM flags WHERE name = 'c_ack'" >/dev/null
session tw "BEGIN" "SELECT count(*) FROM conveyor.dequeue('lo', 'wc', 1)" "$(wait_flag c_ack)" \
           "SELECT conveyor.ack('$J', true, worker_id => 'wc')" "COMMIT"
wait_for tw "query LIKE 'DO %'" || fail "C: the worker did not dequeue"
session tc "SELECT conveyor.cancel('$J', 'operator')"
wait_for tc "$blocked" || fail "C: cancel neither blocked nor finished"
set_flag c_ack
rcw=0; finished tw || rcw=$?
finished tc
check "C: dequeue + ack in one transaction does not deadlock against cancel (no 40P01)" \
    bash -c "! grep -q 'deadlock detected' '$TMP/tw.out' '$TMP/tc.out'"
for s in tw tc; do grep -q ERROR "$TMP/$s.out" && sed "s/^/#   $s: /" "$TMP/$s.out" | head -3; done
is "$rcw $(tr '\n' ' ' <"$TMP/tw.out")" "0 1 t " "C: the worker's transaction commits and its ack returns true"
check "C: cancel either cancelled the job or says it already finished" \
    grep -Eq "^t$|is already finished \(completed\)" "$TMP/tc.out"
is "$(q "$DB" "SELECT status || ' ' || worker_id FROM conveyor.job_history WHERE job_id = '$J'")" "completed wc" \
   "C: the job completed, by its worker"

finish
