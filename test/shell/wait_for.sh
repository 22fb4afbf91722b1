#!/usr/bin/env bash
# wait_for behind pgbouncer in transaction mode: the worker's listening session is a direct connection
# that calls conveyor.wait_for, while producers and the worker's dequeue and ack go through the pool
# (whose sessions cannot LISTEN). A job enqueued through the pool wakes the listener; after
# stop_waiting an enqueue into that queue notifies no one, while a queue still waited on does.
#
# The listener runs one psql script: wait_for twice (the first call starts its LISTEN and returns
# every queue), then waits inside a statement until the test moves to phase 1, stops waiting on one
# queue, and waits again until phase 2. psql prints the notifications each statement received after
# it, and the script echoes a marker after each phase.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_wait_for
POOL_SIZE=2
TMP=$(mktemp -d /tmp/conveyor-wait-for.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1001))  # the socket lives in our own directory, so the number cannot collide
LISTENER=
cleanup() {
    [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null
    stop_pgbouncer
    drop_test_dbs
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

create_db "$DB" || bail "could not create database $DB"
q "$DB" "CREATE TABLE phase (n int)" "GRANT SELECT ON phase TO PUBLIC" \
        "SELECT conveyor.create_queue('pooled')" \
        "SELECT conveyor.create_queue('still')" >/dev/null || bail "could not create the queues"

start_pgbouncer "$DB" "$POOL_SIZE"
# bq SQL...: one short client session through pgbouncer.
bq() {
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$BPORT" -d "$DB" "${args[@]}"
}
is "$(psql -X -At -h "$TMP" -p "$BPORT" -d pgbouncer -c "SHOW CONFIG" 2>/dev/null | grep '^pool_mode|' | cut -d'|' -f2)" "transaction" \
   "pgbouncer runs in transaction pooling mode"

# ---- the listener: a direct connection ---------------------------------------------------------------
await_phase() {  # the SQL that waits (at most 30 s) until the test reaches phase $1
    echo "DO \$\$ BEGIN
              FOR i IN 1 .. 300 LOOP
                  EXIT WHEN EXISTS (SELECT 1 FROM phase WHERE n = $1);
                  PERFORM pg_sleep(0.1);
              END LOOP;
          END \$\$"
}
PGAPPNAME=conveyor_wait_for_listener psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" \
    -c "SELECT 'first ' || conveyor.wait_for(ARRAY['pooled', 'still'])::text" \
    -c "SELECT 'second ' || conveyor.wait_for(ARRAY['pooled', 'still'])::text" \
    -c "$(await_phase 1)" -c '\echo end of phase 1' \
    -c "SELECT 'stopped ' || conveyor.stop_waiting(ARRAY['pooled'])" \
    -c "$(await_phase 2)" -c '\echo end of phase 2' \
    -c "SELECT 'stopped all ' || conveyor.stop_waiting()" >"$TMP/listener.out" 2>&1 &
LISTENER=$!
listener_in_phase() {  # waits until the listener is inside the statement that waits for phase $1
    wait_statement "$DB" conveyor_wait_for_listener "%n = $1)%"
}
listener_in_phase 1 || bail "the listener did not start waiting"
listener_pid=$(q "$DB" "SELECT pid FROM pg_stat_activity WHERE application_name = 'conveyor_wait_for_listener' AND datname = current_database()")
wake_locks() {  # the queues whose wake lock backend $1 holds
    q "$DB" "SELECT coalesce(string_agg(q.name, ' ' ORDER BY q.name), '') FROM pg_locks l
             JOIN conveyor.queues q ON l.classid = 0 AND l.objid = q.queue_id::oid
             WHERE l.locktype = 'advisory' AND l.objsubid = 6 AND l.mode = 'ShareLock' AND l.pid = $1"
}
is "$(wake_locks "$listener_pid")" "pooled still" "the listening session holds the wake lock of both queues"

# ---- phase 1: a job enqueued through the pool wakes the listener; the worker takes it through the pool --
producer=$(bq "SELECT pg_backend_pid() || ' ' || job_id FROM conveyor.enqueue('pooled', '{\"n\": 1}')") \
    || fail "enqueue through pgbouncer failed"
check "the producer's backend is a pooled one, not the listener" test "${producer% *}" != "$listener_pid"
job=$(bq "SELECT job_id FROM conveyor.dequeue('pooled', 'w1', 10)")
is "$job" "${producer#* }" "the worker dequeues the job through pgbouncer"
is "$(bq "SELECT conveyor.ack('$job', true, worker_id => 'w1')")" t "and acks it through pgbouncer"
is "$(bq "SELECT count(*) FROM conveyor.dequeue('pooled', 'w1', 10)")" 0 "the queue is drained"
is "$(q "$DB" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 6 AND pid <> $listener_pid")" 0 \
   "the pooled sessions' empty dequeues wait on nothing (they do not listen)"
q "$DB" "INSERT INTO phase VALUES (1)" >/dev/null
listener_in_phase 2 || bail "the listener did not reach phase 2"
is "$(wake_locks "$listener_pid")" "still" "after stop_waiting(ARRAY['pooled']) the listener waits on the other queue only"

# ---- phase 2: the listener no longer waits on pooled: its enqueue notifies no one ----------------------
bq "SELECT count(*) FROM conveyor.enqueue('pooled', '{\"n\": 2}')" >/dev/null || fail "enqueue through pgbouncer failed"
bq "SELECT count(*) FROM conveyor.enqueue('still', '{\"n\": 3}')" >/dev/null || fail "enqueue through pgbouncer failed"
is "$(bq "SELECT count(*) FROM conveyor.dequeue('pooled', 'w1', 10)")" 1 "the job enqueued meanwhile is there for the next dequeue"
q "$DB" "INSERT INTO phase VALUES (2)" >/dev/null
for _ in $(seq 1 100); do kill -0 "$LISTENER" 2>/dev/null || break; sleep 0.1; done
kill "$LISTENER" 2>/dev/null && fail "the listener did not finish in time"
wait "$LISTENER"
is "$?" 0 "the listener's script ran without errors"
LISTENER=

note "listener said:"
sed 's/^/#   /' "$TMP/listener.out"
phase1=$(sed -n '1,/^end of phase 1$/p' "$TMP/listener.out")
phase2=$(sed -n '/^end of phase 1$/,/^end of phase 2$/p' "$TMP/listener.out")
received() { grep -cF "Asynchronous notification \"conveyor\" with payload \"$2\" received" <<<"$1"; }
is "$(grep '^first ' "$TMP/listener.out")" "first {pooled,still}" "the first wait_for (its LISTEN not yet committed) returns both queues"
is "$(grep '^second ' "$TMP/listener.out")" "second {}" "the second returns none: both are empty"
is "$(received "$phase1" pooled)" 1 "phase 1: the job enqueued through pgbouncer woke the listener (payload \"pooled\")"
check "the notification came from the producer's pooled backend" \
    grep -qF "with payload \"pooled\" received from server process with PID ${producer% *}." <<<"$phase1"
is "$(received "$phase1" still)" 0 "phase 1: nothing for the other queue"
is "$(grep '^stopped ' "$TMP/listener.out" | grep -v all)" "stopped 1" "stop_waiting(ARRAY['pooled']) ended one wait"
is "$(received "$phase2" pooled)" 0 "phase 2: after stop_waiting an enqueue into pooled sent no notification"
is "$(received "$phase2" still)" 1 "phase 2: the queue still waited on notified (the listener still hears)"
is "$(grep '^stopped all ' "$TMP/listener.out")" "stopped all 1" "stop_waiting() ended the last wait"

stop_pgbouncer
finish
