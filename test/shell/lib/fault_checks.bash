# Shared by the fault tests (test/shell/fault_*.sh), sourced after tap.bash; not a test on its own.
# Most run one workload (lib/fault_workload.py: a producer, workers that dequeue and ack jobs, make
# fenced writes under leases and charge accounts) while something breaks underneath, then check here
# that no job was lost or done twice, no write with a superseded token was accepted and no charge was
# lost or made twice. Those that cut one big call short take their batches from fault_batches.

FAULT_PY=/usr/bin/python3
FAULT_WORKLOAD=$(dirname "${BASH_SOURCE[0]}")/fault_workload.py

# fault_setup DB: the database, the workload's queue, accounts and tables; timeouts so that no session
# can hang on a lock forever; the server log's size now (restarts are counted past it).
fault_setup() {
    create_db "$1" || bail "could not create database $1"
    q postgres "ALTER DATABASE \"$1\" SET statement_timeout = '20s'" \
               "ALTER DATABASE \"$1\" SET idle_in_transaction_session_timeout = '20s'" >/dev/null
    "$FAULT_PY" "$FAULT_WORKLOAD" setup "dbname=$1" || bail "the workload's setup failed"
    mkdir -p "$TMP/out"
    chmod 777 "$TMP/out"
    : >"$TMP/out/outages"
    : >"$TMP/out/kills"
    FAULT_LOG_OFFSET=$(stat -c %s "$(server_log)" 2>/dev/null || echo 0)
    FAULT_T0=$(date +%s%N)
}

# fault_start DSN JOBS BATCH WORKERS DEADLINE: the producer and the workers, in the background (PIDS).
fault_start() {
    local dsn=$1 jobs=$2 batch=$3 workers=$4 deadline=$5 i
    FAULT_JOBS=$jobs
    FAULT_BATCH=$batch
    FAULT_WORKERS=$workers
    "$FAULT_PY" "$FAULT_WORKLOAD" producer "$dsn" "$TMP/out" "$jobs" "$batch" "$deadline" >"$TMP/producer.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$workers"); do
        "$FAULT_PY" "$FAULT_WORKLOAD" worker "$dsn" "$TMP/out" "w$i" "$deadline" >"$TMP/w$i.log" 2>&1 &
        PIDS+=($!)
    done
}

# fault_killer_start DB DEADLINE KILL9 TERM INTERVAL: the workload's killer, connected directly to the
# server, in the background: from INTERVAL seconds on it ends backends of DB that are idle in a
# transaction or inside a conveyor call, KILL9 times with kill -9 and TERM times with
# pg_terminate_backend, until DEADLINE seconds or the stop file.
fault_killer_start() {
    "$FAULT_PY" "$FAULT_WORKLOAD" killer "dbname=postgres" "$TMP/out" "$@" >"$TMP/killer.log" 2>&1 &
    FAULT_KILLER=$!
}

# fault_killer_end: waits for the killer, checks that it ended without an error and counts what it did:
# FAULT_KILLS9 (kill -9) and FAULT_TERMS (pg_terminate_backend).
fault_killer_end() {
    wait "$FAULT_KILLER"
    is "$(cat "$TMP/killer.log")" "" "the killer ended without an error"
    FAULT_KILLS9=$(grep -c '^KILL' "$TMP/out/kills")
    FAULT_TERMS=$(grep -c '^TERM' "$TMP/out/kills")
}

# The killer's kills by how and by the victim's state, as a note.
fault_kills_note() {
    note "kills: $(awk '{print $1, $3}' "$TMP/out/kills" | sort | uniq -c | awk '{printf "%s%s %s x%s", (NR>1?", ":""), $2, $3, $1}')"
}

# fault_batches DB: the table batches (name, j) in DB with the batches that the calls cut short take:
# 'jobs' (100,000 jobs for enqueue_batch, 100 groups, each with a dedup key) and 'channels' (9,999
# rows UC00001..UC09999 for upsert into channels). Built once, before any call that is to be cut short.
fault_batches() {
    psql -X -q -v ON_ERROR_STOP=1 -d "$1" -f "$(dirname "${BASH_SOURCE[0]}")/fault_batches.sql" >/dev/null \
        || bail "could not build the batches in $1"
}

# The sum of one counter over every process's stats file.
fault_stat() {
    "$FAULT_PY" -c 'import json, sys, glob
print(sum(json.load(open(f)).get(sys.argv[1], 0) for f in glob.glob(sys.argv[2] + "/stats-*.json")))' "$1" "$TMP/out"
}

# Lines of the server log written since fault_setup that match $1.
fault_log_count() {
    tail -c +$((FAULT_LOG_OFFSET + 1)) "$(server_log)" | grep -c -- "$1" || true
}

# fault_load_confirmed DB: what the processes logged, into tables of database DB: the charges the workers
# attempted and those they saw confirmed, the acks and the producer's batches they saw confirmed (each
# confirmed commit with the client's time and, with FAULT_WAL_POSITION=1, a WAL position at or past its
# commit record; NULL when unknown).
fault_load_confirmed() {
    local db=$1
    q "$db" "CREATE TABLE charge_attempted (key text, account text, amount numeric)" \
            "CREATE TABLE charge_confirmed (key text, account text, amount numeric, entry_id uuid, confirmed_at float8, lsn pg_lsn)" \
            "CREATE TABLE ack_confirmed (job_id uuid, attempt int, success boolean, worker text, confirmed_at float8, lsn pg_lsn)" \
            "CREATE TABLE batch_confirmed (batch int, confirmed_at float8, lsn pg_lsn)" >/dev/null
    cat "$TMP"/out/charges-*.attempted 2>/dev/null | psql -X -q -d "$db" -c "\\copy charge_attempted FROM STDIN" >/dev/null
    cat "$TMP"/out/charges-*.confirmed 2>/dev/null | psql -X -q -d "$db" -c "\\copy charge_confirmed FROM STDIN" >/dev/null
    cat "$TMP"/out/acks-*.confirmed 2>/dev/null | psql -X -q -d "$db" -c "\\copy ack_confirmed FROM STDIN" >/dev/null
    cat "$TMP"/out/batches.confirmed 2>/dev/null | psql -X -q -d "$db" -c "\\copy batch_confirmed FROM STDIN" >/dev/null
}

# fault_checks DB: every assertion, then the figures.
fault_checks() {
    local db=$1 jobs=$FAULT_JOBS i rc
    FAULT_ELAPSED_MS=$((($(date +%s%N) - FAULT_T0) / 1000000))

    # ---- the processes ---------------------------------------------------------------------------
    rc=0
    for f in "$TMP/producer.log" "$TMP"/w*.log; do
        if [ -s "$f" ]; then rc=1; note "$(basename "$f" .log) said:"; head -20 "$f" | sed 's/^/#   /'; fi
    done
    is "$rc" 0 "the producer and the $FAULT_WORKERS workers ended without an uncaught error"
    is "$(ls "$TMP"/out/stats-*.json 2>/dev/null | wc -l)" $((FAULT_WORKERS + 1)) "every process wrote its figures"
    is "$(fault_stat finished)" "$FAULT_WORKERS" "every worker saw the queue drained (none stopped at its deadline)"
    is "$(fault_stat unexpected_errors)" 0 "the workers met no error other than lost connections and 40001/40P01"
    "$FAULT_PY" -c 'import json, glob, sys
for f in glob.glob(sys.argv[1] + "/stats-*.json"):
    for u in json.load(open(f)).get("unexpected", []): print("#   " + u)' "$TMP/out"

    fault_load_confirmed "$db"
    q "$db" "CREATE TABLE outages (t_down float8, t_up float8)" >/dev/null
    tr ' ' '\t' <"$TMP/out/outages" | psql -X -q -d "$db" -c "\\copy outages FROM STDIN" >/dev/null
    q "$db" "CREATE INDEX ON effects (job_id)" "CREATE INDEX ON failures (job_id)" "ANALYZE" >/dev/null

    # ---- jobs: the producer ----------------------------------------------------------------------
    is "$(q "$db" "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE was_duplicate), min(n), max(n) FROM enqueued")" \
       "$jobs|$jobs|0|0|$((jobs - 1))" "the producer enqueued each of its $jobs jobs once (retried batches were not enqueued twice)"
    is "$(q "$db" "SELECT count(*) FROM producer_done")" 1 "the producer finished"
    is "$(q "$db" "SELECT count(DISTINCT batch), count(*) FILTER (WHERE NOT EXISTS (SELECT FROM enqueued e WHERE e.batch = c.batch))
                   FROM batch_confirmed c")" "$(((jobs + FAULT_BATCH - 1) / FAULT_BATCH))|0" \
       "the producer saw each of its batches confirmed, and every batch it saw confirmed is in the database"
    check "the producer lost commit answers and found those batches committed on retry ($(fault_stat batches_found_committed) of $(fault_stat commit_answers_lost))" \
        test "$(fault_stat batches_found_committed)" -ge 1 -a "$(fault_stat batches_found_committed)" -ge "$(fault_stat commit_answers_lost)"

    # ---- jobs: each finished exactly once ----------------------------------------------------------
    is "$(q "$db" "SELECT count(*) FROM conveyor.jobs")" 0 "no job is left in conveyor.jobs"
    is "$(q "$db" "SELECT count(*) FROM enqueued e WHERE (SELECT count(*) FROM conveyor.job_history h WHERE h.job_id = e.job_id) <> 1")" 0 \
       "every enqueued job is in job_history exactly once (none lost, none duplicated)"
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history h WHERE NOT EXISTS (SELECT FROM enqueued e WHERE e.job_id = h.job_id)")" 0 \
       "job_history holds no job the producer did not enqueue"
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history h JOIN enqueued e USING (job_id)
                   WHERE h.status NOT IN ('completed', 'dead') OR (h.payload ->> 'n')::int <> e.n")" 0 \
       "every job ended completed or dead, with its own payload"
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history WHERE (payload ->> 'fail')::boolean AND status <> 'dead'")" 0 \
       "every job that always fails is dead"
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history h WHERE status = 'dead' AND (h.payload ->> 'fail')::boolean
                   AND h.attempt <> 5")" 0 "every dead job used its 5 attempts"

    # ---- jobs: effects ---------------------------------------------------------------------------
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history h WHERE h.status = 'completed'
                   AND (SELECT count(*) FROM effects f WHERE f.job_id = h.job_id) <> 1")" 0 \
       "every completed job has exactly one effect row"
    is "$(q "$db" "SELECT count(*) FROM conveyor.job_history h JOIN effects f USING (job_id)
                   WHERE h.status = 'completed' AND (f.attempt <> h.attempt OR f.worker <> h.worker_id)")" 0 \
       "each completed job's effect is the one of the attempt and worker whose ack completed it"
    is "$(q "$db" "SELECT count(*) FROM effects f WHERE NOT EXISTS (
                       SELECT FROM conveyor.job_history h WHERE h.job_id = f.job_id AND h.status = 'completed')")" 0 \
       "no effect of a job that did not complete (a dead job's, a refused ack's)"
    is "$(q "$db" "SELECT count(*) FROM ack_confirmed a WHERE CASE WHEN a.success
                       THEN NOT EXISTS (SELECT FROM conveyor.job_history h WHERE h.job_id = a.job_id AND h.status = 'completed'
                                          AND h.attempt = a.attempt AND h.worker_id = a.worker)
                         OR NOT EXISTS (SELECT FROM effects f WHERE f.job_id = a.job_id AND f.attempt = a.attempt AND f.worker = a.worker)
                       ELSE NOT EXISTS (SELECT FROM failures x WHERE x.job_id = a.job_id AND x.attempt = a.attempt AND x.worker = a.worker) END")" 0 \
       "every ack a worker saw confirmed ($(q "$db" "SELECT count(*) FROM ack_confirmed")) holds: a success completed its job by that attempt, with its effect; a failure left its row"
    is "$(q "$db" "SELECT count(*) FROM (SELECT job_id FROM ack_confirmed WHERE success GROUP BY 1 HAVING count(*) > 1) d")" 0 \
       "no job was acked with success twice"
    is "$(q "$db" "SELECT count(*) FROM failures x JOIN conveyor.job_history h USING (job_id)
                   WHERE NOT (h.payload ->> 'fail')::boolean OR x.attempt > h.attempt")" 0 \
       "failed acks were made only for jobs that always fail, on attempts the queue handed out"
    # A committed attempt held its group from its dequeue (taken after dequeue had locked the job) to
    # its commit (taken before COMMIT): inner bounds, so an overlap here is a real one.
    overlaps=$(q "$db" "
        WITH iv AS (SELECT f.*, h.group_key FROM effects f JOIN conveyor.job_history h USING (job_id)),
        w AS (SELECT iv.*, max(committed_at) OVER (PARTITION BY group_key ORDER BY dequeued_at, job_id
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS busy_until
              FROM iv)
        SELECT count(*) FROM w WHERE busy_until > dequeued_at")
    is "$overlaps" 0 "no two committed attempts of one group overlapped in time"

    # ---- jobs: the counters ------------------------------------------------------------------------
    local completed dead failed_acks attempts expired
    completed=$(q "$db" "SELECT count(*) FROM conveyor.job_history WHERE status = 'completed'")
    dead=$(q "$db" "SELECT count(*) FROM conveyor.job_history WHERE status = 'dead'")
    failed_acks=$(q "$db" "SELECT count(*) FROM failures")
    attempts=$(q "$db" "SELECT sum(attempt) FROM conveyor.job_history")
    expired=$(q "$db" "SELECT sum(expired) FROM conveyor.queue_counts")
    is "$(q "$db" "SELECT pending, scheduled, running, expired_leases, dead FROM conveyor.queue_metrics('faults')")" \
       "0|0|0|0|$dead" "queue_metrics after the faults: nothing pending, scheduled or running; dead = $dead as in history"
    is "$(q "$db" "SELECT sum(pending), sum(scheduled), sum(running), sum(dead) FROM conveyor.queue_counts")" "0|0|0|$dead" \
       "queue_counts gauges agree with the tables"
    is "$(q "$db" "SELECT sum(enqueued), sum(started), sum(completed), sum(failed) FROM conveyor.queue_counts")" \
       "$jobs|$attempts|$completed|$((failed_acks + expired))" \
       "queue_counts counters: enqueued, started (= the attempts in history), completed, failed (= failed acks + expired leases)"
    is "$((completed + failed_acks + expired))" "$attempts" "every attempt ended once: completed, failed by its worker, or its lease expired"

    # ---- leases ----------------------------------------------------------------------------------
    is "$(q "$db" "SELECT count(*) FROM (SELECT kind, token, max(token) OVER (PARTITION BY key ORDER BY seq) AS top
                                         FROM lease_events) e WHERE kind = 'write' AND token <> top")" 0 \
       "per key, in commit order, every accepted fenced write carried the greatest token issued so far (none superseded)"
    is "$(q "$db" "SELECT count(*) FROM lease_events WHERE kind = 'write' AND prev_token > token")" 0 \
       "no accepted write overwrote data written with a greater token"
    is "$(q "$db" "SELECT count(*) FROM (SELECT token FROM lease_events WHERE kind = 'acquire' GROUP BY token
                                         HAVING count(DISTINCT owner) > 1 OR count(DISTINCT key) > 1) d")" 0 \
       "no token was issued to two owners or for two keys"
    is "$(q "$db" "SELECT count(*) FROM lease_data d WHERE d.seq <> (SELECT count(*) FROM lease_events e WHERE e.key = d.key)
                      OR d.token <> COALESCE((SELECT max(token) FROM lease_events e WHERE e.key = d.key AND kind = 'write'), 0)")" 0 \
       "each guarded row counts exactly its events and holds its greatest accepted token"
    is "$(q "$db" "SELECT count(*) FROM outages o CROSS JOIN lease_data d
                   WHERE (SELECT max(token) FROM lease_events e WHERE e.key = d.key AND e.at < to_timestamp(o.t_down))
                      >= (SELECT min(token) FROM lease_events e WHERE e.key = d.key AND e.at > to_timestamp(o.t_up))")" 0 \
       "per key, every token issued after an outage is greater than every token issued before it"

    # ---- charges ---------------------------------------------------------------------------------
    is "$(q "$db" "SELECT bool_and(ok) FROM conveyor.ledger_verify()")" t "ledger_verify() is ok on every account"
    is "$(q "$db" "SELECT count(*) FROM charge_confirmed c WHERE (SELECT count(*) FROM conveyor.ledger l
                   WHERE l.metadata ->> 'key' = c.key AND l.account = c.account AND l.amount = c.amount
                     AND l.entry_id = c.entry_id) <> 1")" 0 \
       "every confirmed charge is in the ledger exactly once, with its account, amount and entry"
    check "workers lost charge answers and asked again with the same key ($(fault_stat charge_answers_lost) times)" \
        test "$(fault_stat charge_answers_lost)" -ge 1
    is "$(q "$db" "SELECT count(*) FROM (SELECT metadata ->> 'key' FROM conveyor.ledger WHERE account <> 'jobs'
                                         GROUP BY 1 HAVING count(*) > 1) d")" 0 "no idempotency key was charged twice"
    is "$(q "$db" "SELECT count(*) FROM conveyor.ledger l WHERE account <> 'jobs' AND NOT EXISTS (
                       SELECT FROM charge_attempted a WHERE a.key = l.metadata ->> 'key' AND a.account = l.account AND a.amount = l.amount)")" 0 \
       "the ledger holds no charge the workers did not attempt"
    is "$(q "$db" "SELECT count(*) FROM conveyor.account_status() s
                   WHERE s.total <> (SELECT COALESCE(sum(amount), 0) FROM conveyor.ledger l WHERE l.account = s.account)
                      OR s.entries <> (SELECT count(*) FROM conveyor.ledger l WHERE l.account = s.account)")" 0 \
       "every account's total and entry count equal its ledger rows"
    is "$(q "$db" "SELECT count(*), count(DISTINCT metadata ->> 'job') FROM conveyor.ledger WHERE account = 'jobs'")" \
       "$completed|$completed" "one job-keyed charge per completed job"
    is "$(q "$db" "SELECT count(*) FROM conveyor.ledger l WHERE account = 'jobs' AND NOT EXISTS (
                       SELECT FROM conveyor.job_history h WHERE h.job_id::text = l.metadata ->> 'job' AND h.status = 'completed')")" 0 \
       "no job-keyed charge of a job that did not complete"

    # ---- figures ---------------------------------------------------------------------------------
    FAULT_COMPLETED=$completed
    FAULT_DEAD=$dead
    FAULT_ATTEMPTS=$attempts
    FAULT_RECONNECTS=$(fault_stat reconnects)
    FAULT_CHARGES=$(q "$db" "SELECT count(*) FROM charge_confirmed")
    FAULT_WRITES=$(q "$db" "SELECT count(*) FROM lease_events WHERE kind = 'write'")
    note "jobs: $jobs enqueued, $completed completed, $dead dead; $attempts attempts ($expired leases expired," \
         "$(fault_stat acks_refused) acks refused for a lost lease); producer batches retried: $(fault_stat batches_retried), found committed: $(fault_stat batches_found_committed)"
    note "leases: $(q "$db" "SELECT count(*) FROM lease_events WHERE kind = 'acquire'") acquired, $FAULT_WRITES fenced writes accepted," \
         "$(fault_stat fenced_refused) refused, $(q "$db" "SELECT count(*) FROM conveyor.lock_events WHERE event = 'takeover'") takeovers"
    note "charges: $(q "$db" "SELECT count(*) FROM charge_attempted") attempted, $FAULT_CHARGES confirmed," \
         "$(fault_stat charge_retries_after_error) retried after a lost connection; ledger rows: $(q "$db" "SELECT count(*) FROM conveyor.ledger")"
    note "connections lost, by first message line: $("$FAULT_PY" -c 'import json, glob, sys, collections
c = collections.Counter()
for f in glob.glob(sys.argv[1] + "/stats-*.json"): c.update(json.load(open(f)).get("lost_kinds", {}))
print("; ".join("%s x%d" % kv for kv in c.most_common(6)))' "$TMP/out")"
    note "connections: $FAULT_RECONNECTS reconnects ($(($(fault_stat commit_answers_lost) + $(fault_stat charge_answers_lost))) of them after a simulated lost answer), $(fault_stat failed_connects) refused connection tries," \
         "$(fault_stat retries) retries after 40001/40P01/55000; elapsed $((FAULT_ELAPSED_MS / 1000)).$((FAULT_ELAPSED_MS % 1000 / 100)) s"
}

# The verdict for the summary line: what the checks proved, or how many failed.
fault_verdict() {
    if [ "$TESTS_FAILED" -eq 0 ]; then
        echo "none lost, none duplicated; $FAULT_WRITES fenced writes in token order; $FAULT_CHARGES confirmed charges each in the ledger once"
    else
        echo "$TESTS_FAILED checks FAILED"
    fi
}
