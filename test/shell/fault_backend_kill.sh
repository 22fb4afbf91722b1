#!/usr/bin/env bash
# A backend killed inside conveyor's C++ frames, after it has warmed its caches and kept statements
# (enqueue, dequeue, ack, upsert, charge, lock_acquire in the same session): pg_terminate_backend
# (SIGTERM: FATAL raised inside the call) and kill -9 (the postmaster ends every backend and recovers),
# each once during an enqueue_batch of 100,000 jobs that has run for half a second and once during
# an upsert of 10,000 rows that waits for a row another session holds (its other rows written).
# Afterwards a new backend's calls of every kind work, nothing of the killed batches is visible, the
# counters agree with the tables, the postmaster is the same process, and the server log shows
# nothing but the expected termination lines: no other signal, no PANIC, no leaked resources.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_backend_kill
use_scratch backend-kill
chmod 755 "$TMP"

LOG=$(server_log)
[ -r "$LOG" ] || bail "cannot read the server log $LOG"
log_start=$(($(stat -c %s "$LOG") + 1))
postmaster=$(head -1 "$CONVEYOR_PGDATA/postmaster.pid")

create_db "$DB" || bail "could not create database $DB"
fault_batches "$DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not set up"
SELECT conveyor.create_queue('kq');
SELECT conveyor.account_create('acct', budget => 1000);
CREATE TABLE channels (channel_id text PRIMARY KEY, title text NOT NULL, views bigint);
SELECT count(*) FROM conveyor.upsert('channels', '[{"channel_id": "UC10000", "title": "held", "views": 0}]', '{channel_id}');
SQL

# The warm-up every victim runs first: each kind of call once, so its statements are kept and its
# caches filled when the kill comes.
WARM="SELECT count(*) FROM conveyor.enqueue_batch('kq', '[{\"payload\": {\"w\": 1}}, {\"payload\": {\"w\": 2}}]');
SELECT count(*) FILTER (WHERE conveyor.ack(job_id, true, worker_id => 'warm')) FROM conveyor.dequeue('kq', 'warm', 2);
SELECT count(*) FROM conveyor.upsert('channels', '[{\"channel_id\": \"UC00000\", \"title\": \"warm\", \"views\": 1}]', '{channel_id}');
SELECT count(*) FROM conveyor.charge('acct', 'warm', 0.5);
SELECT count(*) FROM conveyor.lock_acquire('warm-lock-' || pg_backend_pid(), 'warm', 60);
SELECT 'warm=done';"
ENQUEUE="SELECT count(*) FROM conveyor.enqueue_batch('kq', (SELECT j FROM batches WHERE name = 'jobs'));"
UPSERT="SELECT count(*) FROM conveyor.upsert('channels', (SELECT j FROM batches WHERE name = 'channels')
    || '[{\"channel_id\": \"UC10000\", \"title\": \"new\", \"views\": 1}]', '{channel_id}', '{\"audit\": true}');"

state() {
    q "$DB" "SELECT (SELECT count(*) FROM conveyor.jobs) || '|' || (SELECT count(*) FROM channels)
                    || '|' || (SELECT count(*) FROM conveyor.change_log) || '|' || (SELECT count(*) FROM conveyor.ledger)"
}
wait_server() {  # after kill -9: the postmaster ends every backend, recovers, and accepts connections again
    for _ in $(seq 1 600); do
        q postgres "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
hold() {  # a session that holds the row UC10000 until it is ended
    printf "BEGIN;\nSELECT 1 FROM channels WHERE channel_id = 'UC10000' FOR UPDATE;\nSELECT pg_sleep(300);\nROLLBACK;\n" >"$TMP/holder.sql"
    PGAPPNAME=holder psql -X -At -d "$DB" -f "$TMP/holder.sql" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 600); do
        [ -n "$(q postgres "SELECT pid FROM pg_stat_activity WHERE application_name = 'holder' AND wait_event = 'PgSleep'")" ] && return 0
        sleep 0.1
    done
    bail "the lock holder did not start"
}
end_holder() {
    q postgres "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'" >/dev/null 2>&1 || true
}

kills=0
# kill_in NAME BATCH HOW CONDITION: a victim warms up, then runs BATCH; once pg_stat_activity shows
# CONDITION for it, it is killed by HOW (terminate or kill9).
kill_in() {
    local name=$1 batch=$2 how=$3 cond=$4 before pid victim rc
    printf '%s\nSELECT %s;\n%s\nSELECT %s;\n' "$WARM" "'pid=' || pg_backend_pid()" "$batch" "'survived=yes'" >"$TMP/$name.sql"
    PGAPPNAME=$name psql -X -At -d "$DB" -v ON_ERROR_STOP=1 -f "$TMP/$name.sql" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    victim=$!
    pid=""
    for _ in $(seq 1 600); do
        pid=$(q postgres "SELECT pid FROM pg_stat_activity WHERE application_name = '$name' AND ($cond)")
        [ -n "$pid" ] && break
        sleep 0.1
    done
    if [ -z "$pid" ]; then
        fail "$name: the victim reached its batch"
        kill "$victim" 2>/dev/null
        wait "$victim" 2>/dev/null
        return
    fi
    is "$(grep -c '^warm=done' "$TMP/$name.out")" 1 "$name: the victim warmed every path first"
    before=$(state)  # what is committed: the warm-up, not the batch in progress
    if [ "$how" = terminate ]; then
        is "$(q postgres "SELECT pg_terminate_backend($pid)")" t "$name: pg_terminate_backend of the backend in its batch"
    else
        check "$name: kill -9 of the backend in its batch" kill -9 "$pid"
    fi
    kills=$((kills + 1))
    rc=0
    wait "$victim" || rc=$?
    check "$name: the victim's psql lost its connection (exit $rc)" test "$rc" -ne 0
    is "$(grep -c '^survived=' "$TMP/$name.out")" 0 "$name: the batch never returned"
    if [ "$how" = terminate ]; then
        check "$name: the client was told the connection was terminated (57P01)" \
            grep -q 'terminating connection due to administrator command' "$TMP/$name.err"
    fi
    end_holder
    check "$name: the server accepts connections again" wait_server
    is "$(state)" "$before" "$name: nothing of the killed batch is visible (jobs, rows, change_log, ledger)"
    is "$(head -1 "$CONVEYOR_PGDATA/postmaster.pid")" "$postmaster" "$name: the same postmaster runs"
}

ACTIVE="state = 'active' AND query LIKE '%enqueue_batch(''kq'', (SELECT%' AND now() - query_start > interval '0.5 s'"
kill_in enqueue_terminated "$ENQUEUE" terminate "$ACTIVE"
hold
kill_in upsert_terminated "$UPSERT" terminate "wait_event_type = 'Lock'"
kill_in enqueue_killed "$ENQUEUE" kill9 "$ACTIVE"
hold
kill_in upsert_killed "$UPSERT" kill9 "wait_event_type = 'Lock'"
wait_sessions_bounded "$DB" 30 "the lock holders"

# A new backend: every kind of call works.
out=$(psql -X -At -v ON_ERROR_STOP=1 -d "$DB" 2>&1 <<'SQL'
SELECT 'enqueue=' || count(*) FROM conveyor.enqueue('kq', '{"after": 1}');
SELECT 'batch=' || count(*) FROM conveyor.enqueue_batch('kq', (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', n), 'dedup_key', 'k' || n)) FROM generate_series(1, 1000) n));
SELECT 'acked=' || count(*) FILTER (WHERE conveyor.ack(job_id, true, worker_id => 'after')) FROM conveyor.dequeue('kq', 'after', 10);
SELECT 'lock=' || count(*) FROM conveyor.lock_acquire('after-lock', 'after', 60);
SELECT 'charge=' || total FROM conveyor.charge('acct', 'after', 1.25);
SELECT 'upsert=' || inserted FROM conveyor.upsert_counts('channels', (SELECT j FROM batches WHERE name = 'channels'), '{channel_id}');
SELECT 'health=' || count(*) FROM conveyor.health();
SQL
)
rc=$?
is "$rc" 0 "a new backend's calls all succeed"
[ "$rc" -eq 0 ] || echo "$out" | head -5 | sed 's/^/#   /'
value() { echo "$out" | sed -n "s/^$1=//p" | head -1; }
is "$(value enqueue)|$(value batch)|$(value acked)|$(value lock)" "1|1000|10|1" \
   "enqueue, enqueue_batch (with the killed batch's dedup keys free), dequeue + ack, lock_acquire"
# Four warm-ups charged 0.5 each and committed; the killed batches charged nothing.
is "$(value charge)" "3.250000" "charge: the total counts the committed charges only"
is "$(value upsert)" 9999 "upsert: the killed batches' rows were never there"
check "health() answers" test -n "$(value health)"

# Counters agree with the tables.
is "$(q "$DB" "SELECT sum(pending) + sum(scheduled) + sum(running) FROM conveyor.queue_counts")" \
   "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" "queue_counts gauges sum to the jobs in conveyor.jobs"
is "$(q "$DB" "SELECT pending + running FROM conveyor.queue_metrics('kq')")" \
   "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" "queue_metrics agrees with conveyor.jobs"
is "$(q "$DB" "SELECT sum(enqueued) FROM conveyor.queue_counts")" \
   "$(q "$DB" "SELECT (SELECT count(*) FROM conveyor.jobs) + (SELECT count(*) FROM conveyor.job_history)")" \
   "queue_counts' enqueued counts the committed jobs only"
is "$(q "$DB" "SELECT bool_and(ok) FROM conveyor.ledger_verify('acct')")" t "ledger_verify: totals agree with the ledger"

# The server log: the kills and the recovery, nothing else.
sleep 0.2
tail -c +"$log_start" "$LOG" >"$TMP/log"
is "$(grep -c 'terminated by signal 9' "$TMP/log" || true)" 2 "the log shows the two kill -9 (and the postmaster's recovery)"
is "$(grep 'terminated by signal' "$TMP/log" | grep -vc 'signal 9' || true)" 0 "no backend died of any other signal"
is "$(grep -c 'PANIC' "$TMP/log" || true)" 0 "no PANIC"
is "$(grep -cE 'WARNING: .*(leak|SPI|snapshot|reference|still referenced)' "$TMP/log" || true)" 0 "no leaked-resource warnings"
is "$(grep -c 'terminating connection due to administrator command' "$TMP/log" || true)" 2 \
   "the two pg_terminate_backend calls each logged their FATAL once"
grep -E 'WARNING|PANIC|signal [^9]' "$TMP/log" | head -5 | sed 's/^/#   /'

note "backends killed inside a batch: $kills (2 by pg_terminate_backend, 2 by kill -9)"
finish
