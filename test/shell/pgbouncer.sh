#!/usr/bin/env bash
# conveyor behind pgbouncer in transaction pooling mode: many short psql clients share a pool of 3
# server connections, so one client's consecutive transactions land on different backends. enqueue,
# enqueue_batch, dequeue, heartbeat and ack must all work through it: every job completes exactly
# once, by the worker that acked it, and acks with the right worker_id return true.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_pgbouncer
POOL_SIZE=3
WORKERS=6
PRODUCERS=6
TMP=$(mktemp -d /tmp/conveyor-pgbouncer.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1000))  # the socket lives in our own directory, so the number cannot collide
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_pgbouncer
    drop_test_dbs
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

create_db "$DB" || bail "could not create database $DB"
q "$DB" "SELECT conveyor.create_queue('pool', '{\"lease_seconds\": 30, \"backoff_base_seconds\": 0}')" >/dev/null \
    || bail "could not create the queue"

# ---- pgbouncer --------------------------------------------------------------------------------------
start_pgbouncer "$DB" "$POOL_SIZE"

# bq SQL...: one short client session through pgbouncer.
bq() {
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$BPORT" -d "$DB" "${args[@]}"
}
is "$(bq "SELECT current_database()")" "$DB" "a client connects through pgbouncer"
is "$(psql -X -At -h "$TMP" -p "$BPORT" -d pgbouncer -c "SHOW CONFIG" 2>/dev/null | grep '^pool_mode|' | cut -d'|' -f2)" "transaction" \
   "pgbouncer runs in transaction pooling mode"

# ---- producers: short clients, one statement (one transaction) each ------------------------------
for p in $(seq 1 $PRODUCERS); do
    (
        for i in $(seq 1 10); do
            n=$((p * 100 + i))
            if [ $((i % 2)) = 0 ]; then g="'g$((n % 5))'"; else g=NULL; fi
            bq "SELECT pg_backend_pid() || ' ' || job_id FROM conveyor.enqueue('pool', '{\"n\": $n}', group_key => $g)" || exit 1
        done
    ) >"$TMP/producer$p.out" 2>"$TMP/producer$p.err" &
    PIDS+=($!)
done
bq "SELECT pg_backend_pid() || ' ' || job_id FROM conveyor.enqueue_batch('pool',
        (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', 1000 + i), 'group_key', 'b' || (i % 3)))
         FROM generate_series(1, 20) i))" >"$TMP/batch.out" 2>"$TMP/batch.err" || fail "enqueue_batch through pgbouncer failed"
rc=0
wait_sessions || rc=1
is "$rc" 0 "$PRODUCERS concurrent producer clients enqueued through pgbouncer without errors"
cat "$TMP"/producer*.err "$TMP/batch.err" | head -5 | sed 's/^/#   /'
JOBS=$((PRODUCERS * 10 + 20))
is "$(cat "$TMP"/producer*.out "$TMP/batch.out" | awk '{print $2}' | sort -u | wc -l)" "$JOBS" "$JOBS distinct job ids came back"
is "$(q "$DB" "SELECT pending, running FROM conveyor.queue_metrics('pool')")" "$JOBS|0" "all $JOBS jobs are pending"

# ---- one worker in an explicit transaction: it stays on one server connection -------------------
out=$(psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$BPORT" -d "$DB" 2>&1 <<'SQL'
BEGIN;
SELECT job_id AS jid, lease_until AS lease FROM conveyor.dequeue('pool', 'wt', 1) \gset
SELECT conveyor.heartbeat(:'jid', 'wt', 120) > :'lease'::timestamptz;
SELECT conveyor.ack(:'jid', true, worker_id => 'wt');
COMMIT;
SQL
)
is "$(echo $out)" "t t" "in one transaction through pgbouncer: dequeue, heartbeat (extends the lease), ack => true"

# ---- workers: a new short client for every dequeue, heartbeat and ack -----------------------------
worker() {
    local w=$1 out pid id hb ack left
    for _ in $(seq 1 100); do
        out=$(bq "SELECT pg_backend_pid() || ' ' || job_id || ' ' || lease_until FROM conveyor.dequeue('pool', '$w', 3)") || return 1
        if [ -z "$out" ]; then
            left=$(bq "SELECT count(*) FROM conveyor.jobs WHERE queue_id = (SELECT queue_id FROM conveyor.queues WHERE name = 'pool')") || return 1
            [ "$left" = 0 ] && return 0
            sleep 0.05
            continue
        fi
        while read -r pid id lease; do
            echo "pid $pid"
            hb=$(bq "SELECT pg_backend_pid() || ' ' || (conveyor.heartbeat('$id', '$w', 60) > '$lease'::timestamptz)") || return 1
            echo "pid ${hb% *}"
            ack=$(bq "SELECT pg_backend_pid() || ' ' || conveyor.ack('$id', true, worker_id => '$w')") || return 1
            echo "pid ${ack% *}"
            echo "job $id $w ${hb#* } ${ack#* }"
        done <<<"$out"
    done
    echo "gave up"
    return 1
}
for k in $(seq 1 $WORKERS); do
    worker "w$k" >"$TMP/worker$k.out" 2>"$TMP/worker$k.err" &
    PIDS+=($!)
done
rc=0
wait_sessions || rc=1
is "$rc" 0 "$WORKERS concurrent worker clients drained the queue through pgbouncer without errors"
cat "$TMP"/worker*.err | head -5 | sed 's/^/#   /'

cat "$TMP"/worker*.out | grep '^job ' >"$TMP/jobs"
is "$(wc -l <"$TMP/jobs")" $((JOBS - 1)) "the workers processed the other $((JOBS - 1)) jobs"
is "$(awk '$4 != "true"' "$TMP/jobs" | wc -l)" 0 "every heartbeat through pgbouncer extended the lease"
is "$(awk '$5 != "true"' "$TMP/jobs" | wc -l)" 0 "every ack with worker_id through pgbouncer returned true"
is "$(awk '{print $2}' "$TMP/jobs" | sort | uniq -d | wc -l)" 0 "no job was handed out twice"
pids=$(cat "$TMP"/worker*.out | awk '$1 == "pid" {print $2}' | sort -u | wc -l)
check "the clients' transactions were multiplexed over at most $POOL_SIZE server connections (saw $pids backends)" \
    test "$pids" -ge 1 -a "$pids" -le "$POOL_SIZE"
note "worker clients: $(cat "$TMP"/worker*.out | grep -c '^pid ') transactions on $pids server backends"

# ---- the outcome, checked directly on the server -------------------------------------------------
is "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" 0 "no job is left pending or running"
is "$(q "$DB" "SELECT count(*), count(DISTINCT job_id) FROM conveyor.job_history WHERE status = 'completed'")" "$JOBS|$JOBS" \
   "all $JOBS jobs completed, each once"
awk '{print $2 "|" $3}' "$TMP/jobs" | sort >"$TMP/acked"
q "$DB" "SELECT job_id || '|' || worker_id FROM conveyor.job_history WHERE worker_id <> 'wt'" | sort >"$TMP/history"
check "each job's history names the worker whose ack returned true" cmp -s "$TMP/acked" "$TMP/history"
is "$(q "$DB" "SELECT pending, scheduled, running, dead, completed_1h FROM conveyor.queue_metrics('pool')")" "0|0|0|0|$JOBS" \
   "queue_metrics: nothing pending or running, $JOBS completed"
is "$(q "$DB" "SELECT sum(pending), sum(running), sum(enqueued), sum(started), sum(completed) FROM conveyor.queue_counts")" \
   "0|0|$JOBS|$JOBS|$JOBS" "queue_counts, written from many backends, add up"

# Lease checks still hold through the pooler.
id=$(bq "SELECT job_id FROM conveyor.enqueue('pool', '{\"late\": true}')")
bq "SELECT count(*) FROM conveyor.dequeue('pool', 'owner', 1)" >/dev/null
is "$(bq "SELECT conveyor.heartbeat('$id', 'intruder') IS NULL")" t "through pgbouncer: heartbeat by another worker returns NULL"
is "$(bq "SELECT conveyor.ack('$id', true, worker_id => 'intruder')")" f "through pgbouncer: ack by another worker returns false"
is "$(bq "SELECT conveyor.ack('$id', true, worker_id => 'owner')")" t "through pgbouncer: ack by the owner returns true"
is "$(bq "SELECT conveyor.ack('$id', true, worker_id => 'owner')")" f "through pgbouncer: a second ack returns false"
err=$(bq "SELECT conveyor.ack('$id', true)" 2>&1 >/dev/null)
check "through pgbouncer: a second ack without worker_id raises 'already finished'" \
    grep -q "job $id is already finished (completed)" <<<"$err"

stop_pgbouncer
check "pgbouncer stopped" test ! -S "$TMP/.s.PGSQL.$BPORT"
finish
