#!/usr/bin/env bash
# conveyor soak:  bash bench/soak.sh        (by hand; not part of the test suite)
#
# Sets up like bench/run.sh (scripts/common.sh: build, install, a fresh scratch cluster), then keeps
# conveyor under load for SOAK_MINUTES: producers (pgbench at a fixed rate) and workers (soak.work in
# bench/soak.sql: dequeue, acknowledge, some failures, some abandoned leases, groups, leases and
# entities) run in the background while this script, once a minute, lets a day pass (soak.age moves
# the rows finished more than 30 s ago into a partition of a past day), runs conveyor.maintain() and
# prints the hot tables' sizes, the daily partitions present, the throughput and maintain()'s time.
# At the end it prints a verdict computed from those figures and exits 1 if the soak failed: hot
# tables grew, partitions did not roll, a minute completed nothing, a worker or producer failed, or
# the counters behind queue_metrics disagree with the tables. See bench/README.md.
#
# Environment:
#   SOAK_MINUTES     minutes under load (default 10; 2 is a quick check)
#   SOAK_RATE        jobs enqueued per second, all producers together (default 300)
#   SOAK_ENQUEUERS   producer sessions (default 3)
#   SOAK_WORKERS     worker sessions, odd ones on soak_crawl, even ones on soak_groups (default 4)
#   CONVEYOR_PGDATA / CONVEYOR_SOCKDIR / CONVEYOR_PORT   which scratch cluster (see scripts/common.sh)
source "$(dirname "$0")/../scripts/common.sh"

MINUTES=${SOAK_MINUTES:-10}
RATE=${SOAK_RATE:-300}
ENQUEUERS=${SOAK_ENQUEUERS:-3}
WORKERS=${SOAK_WORKERS:-4}
GROWTH_FACTOR=2          # a hot table may end at most this many times its size at the reference minute
GROWTH_SLACK_KB=256      # plus this much (small tables move by whole pages)
HERE=$ROOT/bench
WORK=$(mktemp -d /tmp/conveyor-soak.XXXXXX)
[ "$MINUTES" -ge 2 ] || { log "SOAK_MINUTES must be at least 2"; exit 2; }

setup_all
cleanup_on_exit "$WORK"

export PGDATABASE=conveyor_soak
sql() { psql -X -q -v ON_ERROR_STOP=1 -At -F ' ' "$@"; }

psql -X -q -d postgres -c "CREATE DATABASE conveyor_soak" >/dev/null
sql -c "CREATE EXTENSION conveyor"
sql -f "$HERE/soak.sql" >/dev/null

# ---- load ----------------------------------------------------------------------------------------------

SECS=$((MINUTES * 60))
log "soak: $MINUTES minutes, $ENQUEUERS producers at $RATE jobs/s together, $WORKERS workers"
START=$(date +%s)
"$PGBIN/pgbench" -n -M prepared -c "$ENQUEUERS" -j 1 -R "$RATE" -T "$SECS" -f "$HERE/pgbench/soak_enqueue.sql" \
    > "$WORK/enqueue.out" 2>&1 &
ENQUEUE_PID=$!
WORKER_PIDS=()
for w in $(seq 1 "$WORKERS"); do
    queue=soak_crawl
    [ $((w % 2)) = 0 ] && queue=soak_groups
    # In calls of 10 s, one session: between calls the backend is idle and reports its table statistics,
    # as a real worker's backend does between statements. Inside one long CALL it never would, and
    # autovacuum, which reads those statistics, would never vacuum the leases and entities it churns.
    for ((left = SECS; left > 0; left -= 10)); do
        echo "CALL soak.work('worker-$w', '$queue', $((left < 10 ? left : 10)));"
    done > "$WORK/worker-$w.sql"
    psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/worker-$w.sql" > "$WORK/worker-$w.log" 2>&1 &
    WORKER_PIDS+=($!)
done

# ---- once a minute: a day passes, maintain(), the figures ----------------------------------------------

# Counters summed over every row of queue_counts (maintain() folds rows but keeps their sums).
totals() { sql -c "SELECT sum(completed), sum(failed), sum(expired) FROM conveyor.queue_counts"; }
partitions() {  # TABLE: "n pFIRST..pLAST"
    sql -c "SELECT count(*) || ' ' || COALESCE(min(right(c.relname, 9)) || '..' || max(right(c.relname, 9)), '-')
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'conveyor.$1'::regclass"
}
declare -A JOBS_KB COUNTS_KB LOCKS_KB ENTITIES_KB DONE HISTORY_PARTS
DROPPED_TOTAL=0
SKIPPED=0
read -r prev_done prev_failed prev_expired <<< "$(totals)"
printf '%6s %9s %9s %9s %11s %10s %8s %8s %8s %12s %8s %9s\n' minute "jobs kB" "counts kB" "locks kB" "entities kB" \
    "completed" failed expired backlog "maintain ms" dropped "aged rows"
for m in $(seq 1 "$MINUTES"); do
    wait_s=$((START + 60 * m - $(date +%s)))
    [ "$wait_s" -gt 0 ] && sleep "$wait_s"
    day=$(date -u -d "2000-01-01 + $m days" +%F)
    aged=$(sql -c "SELECT soak.age('job_history', 'purge_at', 'finished_at', '$day')
                        + soak.age('job_events', 'at', 'at', '$day')
                        + soak.age('events', 'at', 'at', '$day')
                        + soak.age('metric_points', 'at', 'at', '$day')")
    read -r ms dropped skipped <<< "$(sql -c "SELECT round((r->>'ms')::numeric, 1), COALESCE(r->>'partitions_dropped', '0'),
                                                     COALESCE(r->>'skipped', 'false') FROM conveyor.maintain() r")"
    [ "$skipped" = true ] && SKIPPED=$((SKIPPED + 1))
    DROPPED_TOTAL=$((DROPPED_TOTAL + dropped))
    read -r jobs counts locks entities backlog <<< "$(sql -c "
        SELECT pg_total_relation_size('conveyor.jobs') / 1024, pg_total_relation_size('conveyor.queue_counts') / 1024,
               pg_total_relation_size('conveyor.locks') / 1024, pg_total_relation_size('conveyor.entities') / 1024,
               (SELECT sum(pending) FROM conveyor.queue_metrics())")"
    read -r done failed expired <<< "$(totals)"
    JOBS_KB[$m]=$jobs COUNTS_KB[$m]=$counts LOCKS_KB[$m]=$locks ENTITIES_KB[$m]=$entities
    DONE[$m]=$((done - prev_done))
    HISTORY_PARTS[$m]=$(partitions job_history)
    printf '%6s %9s %9s %9s %11s %10s %8s %8s %8s %12s %8s %9s\n' "$m" "$jobs" "$counts" "$locks" "$entities" \
        "${DONE[$m]}" "$((failed - prev_failed))" "$((expired - prev_expired))" "$backlog" "$ms" "$dropped" "$aged"
    printf '%6s partitions: job_history %s, job_events %s, events %s, metric_points %s\n' "" "${HISTORY_PARTS[$m]}" \
        "$(partitions job_events)" "$(partitions events)" "$(partitions metric_points)"
    prev_done=$done prev_failed=$failed prev_expired=$expired
done

# ---- the end: load stops, then the verdict ---------------------------------------------------------------

FAILS=()
enqueue_rc=0
wait "$ENQUEUE_PID" || enqueue_rc=$?
[ "$enqueue_rc" = 0 ] || FAILS+=("producers: pgbench exited $enqueue_rc ($(grep -m1 -i 'error\|abort' "$WORK/enqueue.out" || true))")
for i in "${!WORKER_PIDS[@]}"; do
    rc=0
    wait "${WORKER_PIDS[$i]}" || rc=$?
    w=$((i + 1))
    if [ "$rc" != 0 ] || grep -q ERROR "$WORK/worker-$w.log"; then
        FAILS+=("worker-$w: $(grep -m1 ERROR "$WORK/worker-$w.log" || echo "exited $rc")")
    fi
done
echo
# Each call reports "worker W settled N jobs, retried R transactions": summed per worker.
sed -n 's/.*NOTICE:  //p' "$WORK"/worker-*.log |
    awk '{ s[$2] += $4; r[$2] += $8 } END { for (w in s) printf "  worker %s settled %d jobs, retried %d transactions\n", w, s[w], r[w] }' | sort
sed -n 's/^\(number of transactions actually processed\|latency average\|tps\) /  producers: \1 /p' "$WORK/enqueue.out"

# The counters behind queue_metrics against the tables, with the load stopped.
mismatch=$(sql -c "
    SELECT string_agg(format('%s: metrics %s/%s/%s/%s, tables %s/%s/%s/%s', m.queue, m.pending, m.scheduled, m.running, m.dead,
                             t.pending, t.scheduled, t.running, t.dead), '; ')
    FROM conveyor.queue_metrics() m
    JOIN conveyor.queues q ON q.name = m.queue
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE state IN ('ready', 'waiting') OR (state = 'scheduled' AND run_at <= now())) AS pending,
               count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled,
               count(*) FILTER (WHERE state = 'running') AS running,
               (SELECT count(*) FROM conveyor.job_history h WHERE h.queue_id = q.queue_id AND h.status = 'dead') AS dead
        FROM conveyor.jobs j WHERE j.queue_id = q.queue_id) t
    WHERE (m.pending, m.scheduled, m.running, m.dead) IS DISTINCT FROM (t.pending, t.scheduled, t.running, t.dead)")
[ -z "$mismatch" ] || FAILS+=("counters disagree with the tables: $mismatch")

# Hot tables flat: the last minute against minute 2 (minute 1 in a 2-minute soak: the first minute fills them).
ref=2
[ "$MINUTES" -ge 3 ] || ref=1
flat() {  # LABEL REF_KB END_KB
    local limit=$(($2 * GROWTH_FACTOR + GROWTH_SLACK_KB))
    [ "$3" -le "$limit" ] || FAILS+=("$1 grew from $2 kB (minute $ref) to $3 kB (minute $MINUTES), over $limit kB")
}
flat conveyor.jobs "${JOBS_KB[$ref]}" "${JOBS_KB[$MINUTES]}"
flat conveyor.queue_counts "${COUNTS_KB[$ref]}" "${COUNTS_KB[$MINUTES]}"
flat conveyor.locks "${LOCKS_KB[$ref]}" "${LOCKS_KB[$MINUTES]}"
flat conveyor.entities "${ENTITIES_KB[$ref]}" "${ENTITIES_KB[$MINUTES]}"
# Partitions rolled: the aged partitions of every minute dropped, the history's count no higher at the end.
[ "$DROPPED_TOTAL" -ge "$((4 * MINUTES))" ] || FAILS+=("maintain() dropped $DROPPED_TOTAL partitions, expected at least $((4 * MINUTES)) (4 a minute)")
[ "${HISTORY_PARTS[$MINUTES]%% *}" -le "${HISTORY_PARTS[1]%% *}" ] ||
    FAILS+=("job_history partitions grew from ${HISTORY_PARTS[1]} to ${HISTORY_PARTS[$MINUTES]}")
[ "$SKIPPED" = 0 ] || FAILS+=("maintain() skipped $SKIPPED runs")
for m in $(seq 1 "$MINUTES"); do
    [ "${DONE[$m]}" -gt 0 ] || FAILS+=("minute $m completed no job")
done

total_done=0
for m in $(seq 1 "$MINUTES"); do total_done=$((total_done + DONE[$m])); done
echo
if [ ${#FAILS[@]} = 0 ]; then
    echo "verdict: PASS: $total_done jobs completed in $MINUTES minutes; conveyor.jobs ${JOBS_KB[$ref]} kB at minute $ref," \
         "${JOBS_KB[$MINUTES]} kB at the end (limit ${GROWTH_FACTOR}x + $GROWTH_SLACK_KB kB); $DROPPED_TOTAL partitions dropped;" \
         "no worker or producer errors; counters agree with the tables"
else
    echo "verdict: FAIL"
    printf '  - %s\n' "${FAILS[@]}"
    exit 1
fi
