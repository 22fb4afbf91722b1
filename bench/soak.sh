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
#   SOAK_PIN         compare: run the load twice, SOAK_MINUTES each, first as above, then from emptied
#                    tables with one session idle in a REPEATABLE READ transaction holding its snapshot
#                    (so the oldest xmin stays pinned) for the whole run; prints throughput pinned /
#                    unpinned per 30 s and overall (target >= SOAK_PIN_TARGET, default 0.8)
#   CONVEYOR_PGDATA / CONVEYOR_SOCKDIR / CONVEYOR_PORT   which scratch cluster (see scripts/common.sh)
source "$(dirname "$0")/../scripts/common.sh"

MINUTES=${SOAK_MINUTES:-10}
RATE=${SOAK_RATE:-300}
ENQUEUERS=${SOAK_ENQUEUERS:-3}
WORKERS=${SOAK_WORKERS:-4}
PIN=${SOAK_PIN:-off}
PIN_TARGET=${SOAK_PIN_TARGET:-0.8}
TICK=30                  # seconds between load lines
GROWTH_FACTOR=2          # a hot table may end at most this many times its size at the reference minute
GROWTH_SLACK_KB=256      # plus this much (small tables move by whole pages)
HERE=$ROOT/bench
WORK=$(mktemp -d /tmp/conveyor-soak.XXXXXX)
[ "$MINUTES" -ge 2 ] || { log "SOAK_MINUTES must be at least 2"; exit 2; }
case $PIN in off | compare) ;; *) log "SOAK_PIN must be off or compare"; exit 2 ;; esac

setup_all
cleanup_on_exit "$WORK"

export PGDATABASE=conveyor_soak
sql() { psql -X -q -v ON_ERROR_STOP=1 -At -F ' ' "$@"; }

psql -X -q -d postgres -c "CREATE DATABASE conveyor_soak" >/dev/null
sql -c "CREATE EXTENSION conveyor"
sql -f "$HERE/soak.sql" >/dev/null

# ---- figures -------------------------------------------------------------------------------------------

# Counters summed over every row of queue_counts (maintain() folds rows but keeps their sums).
totals() { sql -c "SELECT sum(completed), sum(failed), sum(expired) FROM conveyor.queue_counts"; }
partitions() {  # TABLE: "n pFIRST..pLAST"
    sql -c "SELECT count(*) || ' ' || COALESCE(min(right(c.relname, 9)) || '..' || max(right(c.relname, 9)), '-')
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'conveyor.$1'::regclass"
}
# kB of the hot tables: jobs' heap, its dequeue index, its lease index, jobs in all (heap, indexes,
# toast), queue_counts, job_events and job_history (every partition), locks, entities.
sizes() {
    sql -c "WITH part(t, kb) AS (
                SELECT p.t, (SELECT COALESCE(sum(pg_total_relation_size(r.relid)), 0)::bigint / 1024 FROM pg_partition_tree(p.t) r)
                FROM unnest('{conveyor.job_events, conveyor.job_history}'::regclass[]) p(t))
            SELECT pg_relation_size('conveyor.jobs') / 1024, pg_relation_size('conveyor.jobs_ready') / 1024,
                   pg_relation_size('conveyor.jobs_running') / 1024, pg_total_relation_size('conveyor.jobs') / 1024,
                   pg_total_relation_size('conveyor.queue_counts') / 1024,
                   (SELECT kb FROM part WHERE t = 'conveyor.job_events'::regclass),
                   (SELECT kb FROM part WHERE t = 'conveyor.job_history'::regclass),
                   pg_total_relation_size('conveyor.locks') / 1024, pg_total_relation_size('conveyor.entities') / 1024"
}
# What the workers' finished calls report so far, summed: jobs dequeued, dequeue calls, their ms.
dequeue_totals() {
    sed -n 's/.*NOTICE:  worker .* dequeued \([0-9]*\) jobs in \([0-9]*\) calls taking \([0-9.]*\) ms/\1 \2 \3/p' \
        "$WORK"/worker-*.log | awk '{ j += $1; c += $2; ms += $3 } END { printf "%d %d %.1f\n", j, c, ms }'
}
# Sessions idle in a transaction that holds a snapshot.
pinned_sessions() {
    sql -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND state = 'idle in transaction' AND backend_xmin IS NOT NULL"
}
# Age in transactions of the oldest snapshot any session of this database holds (the pinned xmin).
xmin_age() {
    sql -c "SELECT COALESCE(max(age(backend_xmin)), 0) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()"
}

# ---- one run: load for SOAK_MINUTES, a line every 30 s, a day passing and maintain() every minute -------

declare -A DONE_T DEQ_MS_T DEQ_CALLS_T JOBS_KB COUNTS_KB LOCKS_KB ENTITIES_KB DONE HISTORY_PARTS DROPPED_TOTAL SKIPPED
FAILS=()
# soak_run RUN: RUN is "unpinned" or "pinned"; with "pinned" one session holds a snapshot throughout.
soak_run() {
    local run=$1 secs=$((MINUTES * 60)) start w queue left enqueue_pid pin_pid="" worker_pids=() t tick m
    DROPPED_TOTAL[$run]=0 SKIPPED[$run]=0
    rm -f "$WORK"/worker-*.log "$WORK"/worker-*.sql
    if [ "$run" = pinned ]; then
        # Idle in transaction, as an application that forgot to commit: the snapshot taken by SELECT 1
        # stays until COMMIT, and with it the oldest xmin of this database. The session reads its
        # statements from a pipe this script holds open (fd 7) until the run ends.
        mkfifo "$WORK/pin"
        psql -X -q -At < "$WORK/pin" > "$WORK/pin.out" 2>&1 &
        pin_pid=$!
        exec 7> "$WORK/pin"
        printf 'BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT 1;\n' >&7
        for _ in $(seq 1 100); do [ "$(pinned_sessions)" = 1 ] && break; sleep 0.1; done
        [ "$(pinned_sessions)" = 1 ] || { log "the pinning session holds no snapshot"; exit 1; }
    fi
    log "soak ($run): $MINUTES minutes, $ENQUEUERS producers at $RATE jobs/s together, $WORKERS workers"
    start=$(date +%s)
    "$PGBIN/pgbench" -n -M prepared -c "$ENQUEUERS" -j 1 -R "$RATE" -T "$secs" -f "$HERE/pgbench/soak_enqueue.sql" \
        > "$WORK/enqueue.out" 2>&1 7>&- &
    enqueue_pid=$!
    for w in $(seq 1 "$WORKERS"); do
        queue=soak_crawl
        [ $((w % 2)) = 0 ] && queue=soak_groups
        # In calls of 10 s, one session: between calls the backend is idle and reports its table statistics,
        # as a real worker's backend does between statements. Inside one long CALL it never would, and
        # autovacuum, which reads those statistics, would never vacuum the leases and entities it churns.
        for ((left = secs; left > 0; left -= 10)); do
            echo "CALL soak.work('worker-$w', '$queue', $((left < 10 ? left : 10)));"
        done > "$WORK/worker-$w.sql"
        psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/worker-$w.sql" > "$WORK/worker-$w.log" 2>&1 7>&- &
        worker_pids+=($!)
    done

    local prev_done prev_failed prev_expired tick_done deq_jobs deq_calls deq_ms
    local p_done p_jobs=0 p_calls=0 p_ms=0 day aged ms dropped skipped jobs counts locks entities backlog done failed expired
    read -r prev_done prev_failed prev_expired <<< "$(totals)"
    p_done=$prev_done
    echo
    echo "$run: every $TICK s the load (jobs completed, and the dequeue calls the workers finished in that"
    echo "time: their mean ms and the share of the workers' time they took) and the hot tables' sizes in kB;"
    echo "every minute a day passes and maintain() runs (the indented lines)"
    printf '%5s %7s %7s %8s %6s %8s %9s %9s %8s %9s %7s %9s %9s %7s %8s %8s\n' s done "jobs/s" "deq ms" "deq %" \
        "xmin age" "jobs heap" jobs_ready jobs_run "jobs all" counts job_events history locks entities backlog
    for ((tick = 1; tick <= secs / TICK; tick++)); do
        t=$((tick * TICK))
        wait_s=$((start + t - $(date +%s)))
        [ "$wait_s" -gt 0 ] && sleep "$wait_s"
        if [ $((t % 60)) = 0 ]; then
            m=$((t / 60))
            # The pinned run's days follow the unpinned run's (their partitions are gone by then).
            day=$(date -u -d "2000-01-01 + $(( $([ "$run" = pinned ] && echo "$MINUTES" || echo 0) + m )) days" +%F)
            aged=$(sql -c "SELECT soak.age('job_history', 'purge_at', 'finished_at', '$day')
                                + soak.age('job_events', 'at', 'at', '$day')
                                + soak.age('events', 'at', 'at', '$day')
                                + soak.age('metric_points', 'at', 'at', '$day')")
            read -r ms dropped skipped <<< "$(sql -c "SELECT round((r->>'ms')::numeric, 1), COALESCE(r->>'partitions_dropped', '0'),
                                                             COALESCE(r->>'skipped', 'false') FROM conveyor.maintain() r")"
            [ "$skipped" = true ] && SKIPPED[$run]=$((SKIPPED[$run] + 1))
            DROPPED_TOTAL[$run]=$((DROPPED_TOTAL[$run] + dropped))
        fi
        read -r jheap jready jrun jobs counts events history locks entities <<< "$(sizes)"
        backlog=$(sql -c "SELECT sum(pending) FROM conveyor.queue_metrics()")
        read -r done failed expired <<< "$(totals)"
        read -r deq_jobs deq_calls deq_ms <<< "$(dequeue_totals)"
        tick_done=$((done - p_done))
        DONE_T[$run.$tick]=$tick_done
        local dc=$((deq_calls - p_calls)) dms mean share
        dms=$(awk -v a="$deq_ms" -v b="$p_ms" 'BEGIN { printf "%.1f", a - b }')
        mean=$(awk -v ms="$dms" -v c="$dc" 'BEGIN { printf (c > 0 ? "%.2f" : "-"), (c > 0 ? ms / c : 0) }')
        share=$(awk -v ms="$dms" -v w="$WORKERS" -v s="$TICK" 'BEGIN { printf "%.1f", 100 * ms / (w * s * 1000) }')
        DEQ_MS_T[$run.$tick]=$dms DEQ_CALLS_T[$run.$tick]=$dc
        printf '%5s %7s %7s %8s %6s %8s %9s %9s %8s %9s %7s %9s %9s %7s %8s %8s\n' "$t" "$tick_done" \
            "$(awk -v d="$tick_done" -v s="$TICK" 'BEGIN { printf "%.0f", d / s }')" "$mean" "$share" "$(xmin_age)" \
            "$jheap" "$jready" "$jrun" "$jobs" "$counts" "$events" "$history" "$locks" "$entities" "$backlog"
        p_done=$done p_calls=$deq_calls p_ms=$deq_ms
        if [ $((t % 60)) = 0 ]; then
            JOBS_KB[$run.$m]=$jobs COUNTS_KB[$run.$m]=$counts LOCKS_KB[$run.$m]=$locks ENTITIES_KB[$run.$m]=$entities
            DONE[$run.$m]=$((done - prev_done))
            HISTORY_PARTS[$run.$m]=$(partitions job_history)
            printf '      minute %s: completed %s, failed %s, expired %s; maintain() %s ms, dropped %s partitions; %s rows aged;\n' \
                "$m" "${DONE[$run.$m]}" "$((failed - prev_failed))" "$((expired - prev_expired))" "$ms" "$dropped" "$aged"
            printf '      partitions: job_history %s, job_events %s, events %s, metric_points %s\n' "${HISTORY_PARTS[$run.$m]}" \
                "$(partitions job_events)" "$(partitions events)" "$(partitions metric_points)"
            prev_done=$done prev_failed=$failed prev_expired=$expired
        fi
    done

    # The load stops; the pin (if any) is released.
    local enqueue_rc=0 rc i
    wait "$enqueue_pid" || enqueue_rc=$?
    [ "$enqueue_rc" = 0 ] || FAILS+=("$run: producers: pgbench exited $enqueue_rc ($(grep -m1 -i 'error\|abort' "$WORK/enqueue.out" || true))")
    for i in "${!worker_pids[@]}"; do
        rc=0
        wait "${worker_pids[$i]}" || rc=$?
        w=$((i + 1))
        if [ "$rc" != 0 ] || grep -q ERROR "$WORK/worker-$w.log"; then
            FAILS+=("$run: worker-$w: $(grep -m1 ERROR "$WORK/worker-$w.log" || echo "exited $rc")")
        fi
    done
    if [ -n "$pin_pid" ]; then
        [ "$(pinned_sessions)" = 1 ] || FAILS+=("$run: the pinning session lost its snapshot before the end")
        printf 'COMMIT;\n' >&7
        exec 7>&-
        wait "$pin_pid" || FAILS+=("$run: the pinning session failed: $(head -c 300 "$WORK/pin.out")")
    fi
    echo
    # Each call reports "worker W settled N jobs, retried R transactions, ...": summed per worker.
    sed -n 's/.*NOTICE:  //p' "$WORK"/worker-*.log |
        awk '{ s[$2] += $4; r[$2] += $7; c[$2] += $13; ms[$2] += $16 } END {
            for (w in s) printf "  worker %s settled %d jobs, retried %d transactions; %d dequeue calls, mean %.2f ms\n",
                               w, s[w], r[w], c[w], (c[w] ? ms[w] / c[w] : 0) }' | sort
    sed -n 's/^\(number of transactions actually processed\|latency average\|tps\) /  producers: \1 /p' "$WORK/enqueue.out"

    # The counters behind queue_metrics against the tables, with the load stopped.
    local mismatch
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
    [ -z "$mismatch" ] || FAILS+=("$run: counters disagree with the tables: $mismatch")
}

# checks RUN: hot tables flat, partitions rolling, every minute completing jobs (appends to FAILS).
checks() {
    local run=$1 ref=2 m
    [ "$MINUTES" -ge 3 ] || ref=1
    REF=$ref
    flat() {  # LABEL REF_KB END_KB
        local limit=$(($2 * GROWTH_FACTOR + GROWTH_SLACK_KB))
        [ "$3" -le "$limit" ] || FAILS+=("$run: $1 grew from $2 kB (minute $ref) to $3 kB (minute $MINUTES), over $limit kB")
    }
    flat conveyor.jobs "${JOBS_KB[$run.$ref]}" "${JOBS_KB[$run.$MINUTES]}"
    flat conveyor.queue_counts "${COUNTS_KB[$run.$ref]}" "${COUNTS_KB[$run.$MINUTES]}"
    flat conveyor.locks "${LOCKS_KB[$run.$ref]}" "${LOCKS_KB[$run.$MINUTES]}"
    flat conveyor.entities "${ENTITIES_KB[$run.$ref]}" "${ENTITIES_KB[$run.$MINUTES]}"
    [ "${DROPPED_TOTAL[$run]}" -ge "$((4 * MINUTES))" ] ||
        FAILS+=("$run: maintain() dropped ${DROPPED_TOTAL[$run]} partitions, expected at least $((4 * MINUTES)) (4 a minute)")
    [ "${HISTORY_PARTS[$run.$MINUTES]%% *}" -le "${HISTORY_PARTS[$run.1]%% *}" ] ||
        FAILS+=("$run: job_history partitions grew from ${HISTORY_PARTS[$run.1]} to ${HISTORY_PARTS[$run.$MINUTES]}")
    [ "${SKIPPED[$run]}" = 0 ] || FAILS+=("$run: maintain() skipped ${SKIPPED[$run]} runs")
    for m in $(seq 1 "$MINUTES"); do
        [ "${DONE[$run.$m]}" -gt 0 ] || FAILS+=("$run: minute $m completed no job")
    done
}
total_done() { local m s=0; for m in $(seq 1 "$MINUTES"); do s=$((s + DONE[$1.$m])); done; echo "$s"; }

if [ "$PIN" = off ]; then
    soak_run unpinned
    checks unpinned
    echo
    if [ ${#FAILS[@]} = 0 ]; then
        echo "verdict: PASS: $(total_done unpinned) jobs completed in $MINUTES minutes; conveyor.jobs ${JOBS_KB[unpinned.$REF]} kB at minute $REF," \
             "${JOBS_KB[unpinned.$MINUTES]} kB at the end (limit ${GROWTH_FACTOR}x + $GROWTH_SLACK_KB kB); ${DROPPED_TOTAL[unpinned]} partitions dropped;" \
             "no worker or producer errors; counters agree with the tables"
    else
        echo "verdict: FAIL"
        printf '  - %s\n' "${FAILS[@]}"
        exit 1
    fi
    exit 0
fi

# ---- compare: the same load unpinned, then pinned, from the same empty start ----------------------------

soak_run unpinned
checks unpinned
# Back to the start: empty tables (the queues stay), vacuumed, so the second run starts where the first did.
sql -c "TRUNCATE conveyor.jobs, conveyor.job_history, conveyor.job_events, conveyor.queue_counts, conveyor.locks,
                 conveyor.entities, conveyor.events, conveyor.metric_points" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
soak_run pinned
# The pinned run's hot tables may grow (that is what it measures); its other checks stand.
PINNED_GROWTH=()
before=${#FAILS[@]}
checks pinned
after=${#FAILS[@]}   # fixed before the loop: unset shrinks ${#FAILS[@]} while the indices stay
for ((i = before; i < after; i++)); do
    case ${FAILS[$i]} in *" grew from "*) PINNED_GROWTH+=("${FAILS[$i]}"); unset 'FAILS[i]' ;; esac
done
FAILS=("${FAILS[@]}")

echo
echo "pinned / unpinned, per $TICK s: jobs completed, and the mean dequeue call's ms"
printf '%5s %10s %10s %8s %12s %12s %8s\n' s unpinned pinned ratio "deq ms unp." "deq ms pin." ratio
ticks=$((MINUTES * 60 / TICK))
worst=""
for ((tick = 1; tick <= ticks; tick++)); do
    u=${DONE_T[unpinned.$tick]} p=${DONE_T[pinned.$tick]}
    r=$(awk -v p="$p" -v u="$u" 'BEGIN { printf (u > 0 ? "%.2f" : "-"), (u > 0 ? p / u : 0) }')
    mu=$(awk -v ms="${DEQ_MS_T[unpinned.$tick]}" -v c="${DEQ_CALLS_T[unpinned.$tick]}" 'BEGIN { printf (c > 0 ? "%.2f" : "-"), (c > 0 ? ms / c : 0) }')
    mp=$(awk -v ms="${DEQ_MS_T[pinned.$tick]}" -v c="${DEQ_CALLS_T[pinned.$tick]}" 'BEGIN { printf (c > 0 ? "%.2f" : "-"), (c > 0 ? ms / c : 0) }')
    rm_=$(awk -v a="$mp" -v b="$mu" 'BEGIN { printf (b + 0 > 0 && a != "-" ? "%.1fx" : "-"), (b + 0 > 0 ? a / b : 0) }')
    printf '%5s %10s %10s %7sx %12s %12s %8s\n' "$((tick * TICK))" "$u" "$p" "$r" "$mu" "$mp" "$rm_"
    worst=$(awk -v r="$r" -v w="$worst" 'BEGIN { print (w == "" || (r != "-" && r < w) ? r : w) }')
done
tu=$(total_done unpinned) tp=$(total_done pinned)
overall=$(awk -v p="$tp" -v u="$tu" 'BEGIN { printf "%.2f", (u > 0 ? p / u : 0) }')
echo "overall: $tp jobs pinned / $tu unpinned = ${overall}x; worst interval ${worst}x; target >= ${PIN_TARGET}x each"
[ ${#PINNED_GROWTH[@]} = 0 ] || { echo "pinned run's growth (expected while the snapshot is held, not a failure):"; printf '  - %s\n' "${PINNED_GROWTH[@]}"; }
awk -v o="$overall" -v w="$worst" -v t="$PIN_TARGET" 'BEGIN { exit !(o >= t && w >= t) }' ||
    FAILS+=("throughput pinned / unpinned: overall ${overall}x, worst interval ${worst}x, below ${PIN_TARGET}x")
echo
if [ ${#FAILS[@]} = 0 ]; then
    echo "verdict: PASS: pinned / unpinned ${overall}x overall, ${worst}x at worst; no worker or producer errors; counters agree with the tables"
else
    echo "verdict: FAIL"
    printf '  - %s\n' "${FAILS[@]}"
    exit 1
fi
