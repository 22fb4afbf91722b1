# The queue stress (test/shell/stress_queue.sh, and through a PL/Proxy front test/shell/proxy_shards.sh):
# its workload and its invariants, shared. Sourced after tap.bash, never run on its own.
#
#   stress_load DB            the tables and procedures of lib/queue_stress.sql (the caller has created
#                             the queue 'stress' and the functions stress_jobs_left, stress_requeue_stuck)
#   stress_run DB             enqueue the first half, then 8 workers, the operator and the producer of
#                             the second half; waits for them (bounded) and reports what they did
#   stress_check DB           the invariants. They read conveyor's tables through JOBS_REL, HISTORY_REL and
#                             COUNTS_REL (conveyor.jobs, conveyor.job_history, conveyor.queue_counts on one
#                             server; copies gathered from the shards behind a front)
# Settings: JOBS NGROUPS BATCH WORKERS CAP_SECONDS (defaults below); TMP and PIDS from use_scratch.

JOBS=${JOBS:-20000}
NGROUPS=${NGROUPS:-200}
BATCH=${BATCH:-2000}
WORKERS=${WORKERS:-8}
CAP_SECONDS=${CAP_SECONDS:-${CONVEYOR_STRESS_CAP:-240}}  # the workers' time cap; the run normally takes far less
JOBS_REL=${JOBS_REL:-conveyor.jobs}
HISTORY_REL=${HISTORY_REL:-conveyor.job_history}
COUNTS_REL=${COUNTS_REL:-conveyor.queue_counts}

stress_load() {
    psql -X -q -v ON_ERROR_STOP=1 -d "$1" -f "$(dirname "${BASH_SOURCE[0]}")/queue_stress.sql" >/dev/null
}

stress_run() {
    local DB=$1
    local half last t0 t_enq t1 t2 worker_rc i producer elapsed attempts requeues
    half=$((JOBS / BATCH / 2))
    last=$((JOBS / BATCH - 1))
    now_ms() { echo $(($(date +%s%N) / 1000000)); }
    t0=$(now_ms)
    q "$DB" "CALL produce(0, $((half - 1)), $BATCH, $NGROUPS, 0)" || bail "enqueueing the first half failed"
    t_enq=$(now_ms)
    note "enqueued $((half * BATCH)) jobs in $(((t_enq - t0) / 1000)).$(((t_enq - t0) % 1000 / 100)) s before starting the workers"

    t1=$(now_ms)
    for i in $(seq 1 $WORKERS); do
        PGOPTIONS='-c synchronous_commit=off' PGAPPNAME="conveyor_stress_w$i" \
            psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL work('w$i', $CAP_SECONDS)" >"$TMP/w$i.log" 2>&1 &
        PIDS+=($!)
    done
    # The second half arrives while the workers run (enqueue_batch racing dequeue and ack on the groups).
    PGAPPNAME=conveyor_stress_operator psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL operate($CAP_SECONDS)" \
        >"$TMP/operator.log" 2>&1 &
    PIDS+=($!)
    (q "$DB" "CALL produce($half, $last, $BATCH, $NGROUPS, 0.5)" && q "$DB" "INSERT INTO producer_done VALUES (true)") \
        >"$TMP/producer.log" 2>&1 &
    producer=$!
    PIDS+=("$producer")

    # Bounded wait: the procedures stop themselves at the cap; the watchdog allows a minute more.
    wait_sessions_bounded "$DB" $((CAP_SECONDS + 60)) "workers"
    t2=$(now_ms)

    worker_rc=0
    for i in $(seq 1 $WORKERS); do
        if [ -s "$TMP/w$i.log" ]; then worker_rc=1; note "worker w$i said:"; sed 's/^/#   /' "$TMP/w$i.log"; fi
    done
    if [ -s "$TMP/operator.log" ]; then worker_rc=1; note "operator said:"; sed 's/^/#   /' "$TMP/operator.log"; fi
    is "$worker_rc" 0 "all $WORKERS worker sessions and the operator ended without an error"
    if [ -s "$TMP/producer.log" ]; then note "producer said:"; sed 's/^/#   /' "$TMP/producer.log"; fi
    is "$(q "$DB" "SELECT count(*) FROM producer_done")" 1 "the producer enqueued every batch"

    elapsed=$((t2 - t1 > 0 ? t2 - t1 : 1))  # ms
    attempts=$(q "$DB" "SELECT count(*) FROM work_log")
    note "workers ran $((elapsed / 1000)).$((elapsed % 1000 / 100)) s: $attempts attempts, $((attempts * 1000 / elapsed)) attempts/s," \
         "$((JOBS * 1000 / elapsed)) jobs/s"
    note "$(q "$DB" "SELECT string_agg(outcome || coalesce(' (ack ' || acked || ')', '') || ': ' || n, ', ' ORDER BY outcome, acked)
                     FROM (SELECT outcome, acked, count(*) n FROM work_log GROUP BY 1, 2) s")"
    requeues=$(q "$DB" "SELECT count(*) FROM requeued")
    note "attempts requeued by the operator: $requeues"
    note "producer retries: $(q "$DB" "SELECT count(*) FROM producer_retries")"
    note "ack retries after 40P01/40001: $(q "$DB" "SELECT count(*) FROM ack_retries")"
    q "$DB" "SELECT sqlstate || ': ' || coalesce(detail, '') FROM ack_retries LIMIT 5" | sed 's/^/#   /'
}

stress_check() {
    local DB=$1 errors overlaps dead completed real requeues expired failed_acks attempts
    attempts=$(q "$DB" "SELECT count(*) FROM work_log")
    requeues=$(q "$DB" "SELECT count(*) FROM requeued")
    # ---- assertions -----------------------------------------------------------------------------------
    q "$DB" "CREATE INDEX ON work_log (job_id, attempt)" "ANALYZE work_log" "ANALYZE enqueued" >/dev/null
    is "$(q "$DB" "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE was_duplicate) FROM enqueued")" \
       "$JOBS|$JOBS|0" "enqueue_batch returned $JOBS distinct new job ids"

    errors=$(q "$DB" "SELECT count(*) FROM worker_errors")
    is "$errors" 0 "workers met no errors from dequeue or ack"
    [ "$errors" = 0 ] || q "$DB" "SELECT sqlstate, message, count(*), min(detail) FROM worker_errors GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10" | sed 's/^/#   /'

    is "$(q "$DB" "SELECT count(*) FROM $JOBS_REL")" 0 "no job is left in conveyor.jobs"
    is "$(q "$DB" "SELECT count(*) FROM enqueued e WHERE (SELECT count(*) FROM $HISTORY_REL h WHERE h.job_id = e.job_id) <> 1")" 0 \
       "every enqueued job is in job_history exactly once"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h WHERE NOT EXISTS (SELECT 1 FROM enqueued e WHERE e.job_id = h.job_id)")" 0 \
       "job_history holds no job that was not enqueued"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL WHERE status NOT IN ('completed', 'dead')")" 0 \
       "every finished job is completed or dead"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h JOIN enqueued e USING (job_id)
                   WHERE h.payload ->> 'n' <> e.n::text OR h.group_key IS DISTINCT FROM e.group_key")" 0 \
       "every history row carries its job's payload and group"
    note "$(q "$DB" "SELECT string_agg(status || ': ' || n, ', ') FROM (SELECT status, count(*) n FROM $HISTORY_REL GROUP BY 1 ORDER BY 1) s")"

    is "$(q "$DB" "SELECT count(*) FROM (SELECT job_id, attempt FROM work_log GROUP BY 1, 2 HAVING count(*) > 1) d")" 0 \
       "no attempt of a job was handed to two workers"
    is "$(q "$DB" "SELECT count(*) FROM (SELECT job_id FROM work_log GROUP BY 1
                                          HAVING min(attempt) <> 1 OR max(attempt) <> count(*)) d")" 0 \
       "each job's attempts were numbered 1, 2, ... without gaps"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h
                   WHERE h.attempt <> (SELECT count(*) FROM work_log w WHERE w.job_id = h.job_id)")" 0 \
       "each finished job's attempt count equals the attempts the workers made"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h
                   WHERE h.status = 'completed'
                     AND (SELECT count(*) FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked) <> 1")" 0 \
       "every completed job has exactly one successful ack"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h
                   WHERE h.status = 'completed'
                     AND NOT EXISTS (SELECT 1 FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked
                                     AND w.worker = h.worker_id AND w.attempt = h.attempt)")" 0 \
       "each completed job records the worker and attempt whose ack succeeded"
    is "$(q "$DB" "SELECT count(*) FROM $HISTORY_REL h
                   WHERE h.status = 'dead' AND (h.attempt < 3 OR EXISTS (
                       SELECT 1 FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked))")" 0 \
       "every dead job used its 3 attempts (more if requeued on its last) and none of them succeeded"
    is "$(q "$DB" "SELECT count(*) FROM work_log w WHERE w.acked AND EXISTS (
                       SELECT 1 FROM work_log l WHERE l.job_id = w.job_id AND l.attempt > w.attempt AND w.outcome = 'succeeded')")" 0 \
       "no job ran again after a successful ack"

    # Per-group serialization. An attempt occupies its group from its start to its finish; if its ack
    # failed to find the lease (acked false) or it never acked, only until its lease ran out, since from
    # then on the job may be reaped and the group move on; a requeued attempt, only until its requeue.
    overlaps=$(q "$DB" "
        WITH iv AS (
            SELECT w.id, w.group_key, w.started,
                   CASE WHEN w.acked THEN w.finished
                        ELSE least(coalesce(w.finished, w.lease_until), w.lease_until, r.at) END AS ended
            FROM work_log w LEFT JOIN requeued r ON r.job_id = w.job_id AND r.attempt = w.attempt),
        w AS (
            SELECT iv.*, max(ended) OVER (PARTITION BY group_key ORDER BY started, id
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS busy_until
            FROM iv)
        SELECT count(*) FROM w WHERE busy_until > started")
    is "$overlaps" 0 "no two attempts of the same group overlapped in time"
    [ "$overlaps" = 0 ] || q "$DB" "
        SELECT a.group_key, a.job_id, a.worker, a.started, a.finished, a.acked, b.job_id, b.worker, b.started, b.finished, b.acked
        FROM work_log a JOIN work_log b ON a.group_key = b.group_key AND a.id < b.id
             AND a.started < b.finished AND b.started < a.finished AND a.acked AND b.acked
        LIMIT 5" | sed 's/^/#   /'
    note "attempts still working after their lease ran out: $(q "$DB" "SELECT count(*) FROM work_log WHERE finished > lease_until")"

    dead=$(q "$DB" "SELECT count(*) FROM $HISTORY_REL WHERE status = 'dead'")
    completed=$(q "$DB" "SELECT count(*) FROM $HISTORY_REL WHERE status = 'completed'")
    is "$(q "$DB" "SELECT pending, scheduled, running, expired_leases, dead FROM conveyor.queue_metrics('stress')")" \
       "0|0|0|0|$dead" "queue_metrics: nothing pending, scheduled or running; dead = $dead as in history"

    # The gauges are deltas summed over all counter rows; they must add up to what the tables hold.
    real=$(q "$DB" "SELECT (SELECT count(*) FROM $JOBS_REL WHERE state IN ('ready', 'waiting')),
                           (SELECT count(*) FROM $JOBS_REL WHERE state = 'scheduled'),
                           (SELECT count(*) FROM $JOBS_REL WHERE state = 'running'),
                           $dead")
    is "$(q "$DB" "SELECT sum(pending), sum(scheduled), sum(running), sum(dead) FROM $COUNTS_REL")" "$real" \
       "queue_counts gauges (pending, scheduled, running, dead) sum to the real counts"
    is "$(q "$DB" "SELECT count(*) FROM requeued r WHERE NOT EXISTS (
                       SELECT 1 FROM work_log w WHERE w.job_id = r.job_id AND w.attempt = r.attempt AND w.acked IS NOT TRUE)")" 0 \
       "every requeued attempt was one whose ack had not succeeded"
    check "the operator requeued stuck attempts ($requeues)" [ "$requeues" -gt 0 ]
    # Lease expiries: attempts never acked or acked too late, except those the operator requeued.
    expired=$(q "$DB" "SELECT count(*) FROM work_log w WHERE (outcome = 'abandoned' OR acked = false)
                       AND NOT EXISTS (SELECT 1 FROM requeued r WHERE r.job_id = w.job_id AND r.attempt = w.attempt)")
    failed_acks=$(q "$DB" "SELECT count(*) FROM work_log WHERE outcome = 'failed' AND acked")
    is "$(q "$DB" "SELECT sum(enqueued), sum(started), sum(completed), sum(expired), sum(failed) FROM $COUNTS_REL")" \
       "$JOBS|$attempts|$completed|$expired|$((failed_acks + expired))" \
       "queue_counts counters: enqueued, started, completed, expired and failed match what happened"
}
