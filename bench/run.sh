#!/usr/bin/env bash
# conveyor benchmark:  bash bench/run.sh
#
# Sets up like the test suite (scripts/common.sh: packages, build, install, a fresh scratch cluster),
# then measures with pgbench, on that one cluster and in one run, conveyor against "the floor": a
# minimal hand-written queue table (floor.jobs) driven by plain SQL. Prints one table of jobs/s and
# the ratio conveyor/floor, then the backlog-scaling ratios, the lease cycles and health() at scale.
# See bench/README.md.
#
# Environment:
#   BENCH_SECONDS        seconds per measurement (default 20)
#   BENCH_CLIENTS        clients/workers for a-e (default 4)
#   BENCH_ONLY           space-separated subset of phases to run: "a b c d e f g h i j k l m n" (default all)
#   BENCH_LOCK_CLIENTS   clients for g (default 8)
#   BENCH_H_BATCHES      batches of 1,000 rows per measurement in phase h (default 200)
#   BENCH_BACKLOG_MAX    largest ready backlog in phase f: 1k, 100k, 1M, 10M up to it (default 10000000)
#   BENCH_FILL_SESSIONS  parallel sessions filling phase f's backlogs (default 2)
#   BENCH_PROFILE=1      also load pg_stat_statements and print where conveyor's time goes per phase
#   CONVEYOR_PGDATA / CONVEYOR_SOCKDIR / CONVEYOR_PORT   which scratch cluster (see scripts/common.sh)
source "$(dirname "$0")/../scripts/common.sh"

BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
SCALE_TARGET=1.5
PHASES=${BENCH_ONLY:-"a b c d e f g h i j k l m n"}
LOCK_CLIENTS=${BENCH_LOCK_CLIENTS:-8}
LOCK_TARGET=0.8
PROFILE=${BENCH_PROFILE:-0}
PGBENCH=$PGBIN/pgbench
HERE=$ROOT/bench
WORK=$(mktemp -d /tmp/conveyor-bench.XXXXXX)

setup_all
cleanup_on_exit "$WORK"

export PGDATABASE=conveyor_bench
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
phase() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }

# ---- schema: conveyor, its queues, and the floor -----------------------------------------------------

psql -X -q -d postgres -c "CREATE DATABASE conveyor_bench" >/dev/null
if [ "$PROFILE" = 1 ]; then
    cat >> "$CONVEYOR_PGDATA/postgresql.conf" <<'CONF'
shared_preload_libraries = 'pg_cron,pg_stat_statements'
pg_stat_statements.track = 'all'
pg_stat_statements.track_planning = on
CONF
    pg_as "$PGBIN/pg_ctl" -D "$CONVEYOR_PGDATA" -l "$(dirname "$CONVEYOR_PGDATA")/server.log" -w restart >/dev/null
    sql -c "CREATE EXTENSION pg_stat_statements"
fi
sql >/dev/null <<'SQL'
CREATE EXTENSION conveyor;
SELECT conveyor.create_queue('bench_enqueue');
SELECT conveyor.create_queue('bench_enqueue_quiet', '{"notify": false}');
SELECT conveyor.create_queue('bench_enqueue_failures', '{"event_trail": "failures"}');
SELECT conveyor.create_queue('bench_enqueue_waiting');
SELECT conveyor.create_queue('bench_enqueue_plain');
SELECT conveyor.create_queue('bench_enqueue_schema', '{"payload_schema": {"type": "object",
    "required": ["channel_id", "n", "url"], "additionalProperties": false, "properties": {
    "channel_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "n": {"type": "integer", "minimum": 0},
    "url": {"type": "string", "maxLength": 2048},
    "kind": {"enum": ["video", "channel", "playlist"]},
    "tags": {"type": "array", "maxItems": 10, "items": {"type": "string"}}}}}');
SELECT conveyor.create_queue('bench_batch');
SELECT conveyor.create_queue('bench_cycle');                              -- event_trail 'all' (default)
SELECT conveyor.create_queue('bench_cycle_failures', '{"event_trail": "failures"}');
SELECT conveyor.create_queue('bench_many');
SELECT conveyor.create_queue('scale_backlog');
SELECT conveyor.create_queue('scale_groups');
SELECT conveyor.create_queue('bench_audit');
SELECT conveyor.create_queue('bench_status_off');
SELECT conveyor.create_queue('bench_status_on', '{"status_notify": true}');
SELECT conveyor.create_queue('bench_status_check', '{"status_notify": true}');

-- The floor: what a hand-written queue needs at the least. Same storage options as conveyor.jobs,
-- one partial index for the dequeue order, bigserial ids.
CREATE SCHEMA floor;
CREATE TABLE floor.jobs (
    id          bigserial PRIMARY KEY,
    queue       text NOT NULL,
    status      text NOT NULL DEFAULT 'pending',
    priority    smallint NOT NULL DEFAULT 5,
    run_at      timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    worker_id   text,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX jobs_pending ON floor.jobs (queue, priority DESC, run_at, id) WHERE status = 'pending';

-- i. Charges: conveyor's accounts, the floor's and the seed's, 8 of each, with the same storage
-- options as conveyor.accounts and a ledger indexed by account and time like conveyor.ledger.
-- conveyor's bench_ accounts have no budget, like the floor's and the seed's; hard_0 has a hard one
-- (never reached), so every charge is decided on its one row.
SELECT conveyor.account_create('bench_' || n) FROM generate_series(0, 7) n;
SELECT conveyor.account_create('hard_0', 1000000000);
CREATE TABLE floor.accounts (account text PRIMARY KEY, total numeric(30, 6) NOT NULL DEFAULT 0) WITH (fillfactor = 50);
CREATE TABLE floor.ledger (id bigserial PRIMARY KEY, account text NOT NULL, service text NOT NULL,
                           amount numeric(24, 6) NOT NULL, items integer NOT NULL,
                           created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON floor.ledger (account, created_at);
CREATE SCHEMA seed;
CREATE TABLE seed.accounts (LIKE floor.accounts INCLUDING ALL) WITH (fillfactor = 50);
CREATE TABLE seed.ledger (id bigserial PRIMARY KEY, account text NOT NULL, service text NOT NULL,
                          amount numeric(24, 6) NOT NULL, items integer NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON seed.ledger (account, created_at);
INSERT INTO floor.accounts (account) SELECT 'bench_' || n FROM generate_series(0, 7) n;
INSERT INTO seed.accounts (account) SELECT 'bench_' || n FROM generate_series(0, 7) n;
SQL

# ---- helpers -------------------------------------------------------------------------------------------

# Empties both sides (queues and their options stay), then VACUUM ANALYZE and CHECKPOINT so that no
# measurement pays for the previous one's garbage or dirty buffers.
reset_data() {
    sql -c "TRUNCATE conveyor.jobs, conveyor.job_history, conveyor.job_events, conveyor.queue_counts, conveyor.audit_log, floor.jobs RESTART IDENTITY"
}
settle() { sql -c "VACUUM ANALYZE" -c "CHECKPOINT"; }

# fill_conveyor QUEUE N: N ungrouped ready jobs through conveyor.enqueue_batch, 10,000 per call and
# transaction; two sessions in parallel for large fills. Not measured.
fill_conveyor_one() {
    sql -c "DO \$\$
        DECLARE left_ int := $2; n int;
        BEGIN
            WHILE left_ > 0 LOOP
                n := least(left_, 10000);
                PERFORM conveyor.enqueue_batch('$1', (SELECT jsonb_agg(jsonb_build_object('payload',
                            jsonb_build_object('channel_id', 'UC' || g, 'n', g))) FROM generate_series(1, n) g));
                COMMIT;
                left_ := left_ - n;
            END LOOP;
        END \$\$"
}
fill_conveyor() {
    local sessions=${3:-2} i pids=() share
    if [ "$2" -lt 200000 ]; then fill_conveyor_one "$1" "$2"; return; fi
    for ((i = 0; i < sessions; i++)); do
        share=$(($2 / sessions))
        [ "$i" = 0 ] && share=$((share + $2 % sessions))
        fill_conveyor_one "$1" "$share" & pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
}
fill_floor() {
    sql -c "INSERT INTO floor.jobs (queue, payload)
            SELECT '$1', jsonb_build_object('channel_id', 'UC' || g, 'n', g) FROM generate_series(1, $2) g"
}
conveyor_count() {  # QUEUE STATE
    sql -c "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id)
            WHERE q.name = '$1' AND j.state = '$2'"
}
floor_count() { sql -c "SELECT count(*) FROM floor.jobs WHERE queue = '$1' AND status = '$2'"; }
side_count() {  # SIDE QUEUE pending|running
    if [ "$1" = conveyor ]; then conveyor_count "$2" "$( [ "$3" = pending ] && echo ready || echo running)"
    else floor_count "$2" "$3"; fi
}

# pgb SCRIPT CLIENTS ARGS...: one pgbench run; output in $WORK/pgbench.out. Fails if any client aborted.
pgb() {
    local script=$1 clients=$2 threads=2
    shift 2
    [ "$clients" -lt 2 ] && threads=1
    [ "$PROFILE" = 1 ] && sql -c "SELECT pg_stat_statements_reset()" >/dev/null
    "$PGBENCH" -n -M prepared -c "$clients" -j "$threads" -T "${PGB_SECONDS:-$BENCH_SECONDS}" -f "$HERE/pgbench/$script" "$@" \
        > "$WORK/pgbench.out" 2>&1
}
pgb_tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/pgbench.out"; }
pgb_txns() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/pgbench.out"; }
# The average latency (ms) of the Nth command of the script, from pgbench -r.
pgb_latency() { awk -v n="$1" '/^statement latencies/ { on = 1; next } on && $1 ~ /^[0-9.]+$/ && ++k == n { print $1 }' "$WORK/pgbench.out"; }
pgb_fail() { log "pgbench failed ($1):"; cat "$WORK/pgbench.out" >&2; exit 1; }

profile() {  # where conveyor spent its time in the last run (BENCH_PROFILE=1)
    [ "$PROFILE" = 1 ] || return 0
    psql -X -q -P pager=off -c "
        SELECT calls, round((total_plan_time / calls)::numeric, 3) AS plan_ms, round(mean_exec_time::numeric, 3) AS exec_ms,
               CASE WHEN toplevel THEN 'top' ELSE 'nested' END AS level,
               left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
        FROM pg_stat_statements WHERE calls > 10 AND query NOT LIKE '%pg_stat_statements%'
        ORDER BY total_exec_time + total_plan_time DESC LIMIT 8" | sed 's/^/    /'
}

declare -A CONV FLOOR
# keep_best KEY SIDE RATE: a side's figure is its best round (load from other processes only ever
# lowers a figure; interleaving the sides' rounds spreads a burst of it over both).
keep_best() {
    local best
    if [ "$2" = conveyor ]; then best=${CONV[$1]:-0}; else best=${FLOOR[$1]:-0}; fi
    best=$(awk -v a="$3" -v b="$best" 'BEGIN { print (a > b ? a : b) }')
    if [ "$2" = conveyor ]; then CONV[$1]=$best; else FLOOR[$1]=$best; fi
}
note() { printf '  %-58s %s\n' "$1" "$2" >&2; }

# measure_enqueue KEY SIDE SCRIPT QUEUE CLIENTS JOBS_PER_TXN [pgbench args]: jobs/s into CONV/FLOOR[KEY].
measure_enqueue() {
    local key=$1 side=$2 script=$3 queue=$4 clients=$5 per=$6
    shift 6
    reset_data; settle
    pgb "$script" "$clients" -D queue="$queue" "$@" || pgb_fail "$key $side"
    local rate; rate=$(calc "$(pgb_tps) * $per")
    # Every transaction must have added its jobs.
    local want have
    want=$(($(pgb_txns) * per))
    have=$(side_count "$side" "$queue" pending)
    [ "$have" -ge "$want" ] || { log "$key $side: $want jobs enqueued, $have found"; exit 1; }
    keep_best "$key" "$side" "$rate"
    note "$key $side $script" "$rate jobs/s"
    [ "$side" = conveyor ] && profile
    return 0
}

# measure_drain KEY SIDE SCRIPT QUEUE CLIENTS PREFILL: workers drain a prefilled queue; jobs/s (from
# the backlog consumed) into CONV/FLOOR[KEY]. A backlog that runs dry is refilled three times larger
# and the measurement repeated.
measure_drain() {
    local key=$1 side=$2 script=$3 queue=$4 clients=$5 prefill=$6 try before after rc running
    for try in 1 2 3; do
        reset_data
        if [ "$side" = conveyor ]; then fill_conveyor "$queue" "$prefill"; else fill_floor "$queue" "$prefill"; fi
        settle
        before=$(side_count "$side" "$queue" pending)
        rc=0
        pgb "$script" "$clients" -D queue="$queue" || rc=$?
        after=$(side_count "$side" "$queue" pending)
        if [ "$rc" -eq 0 ] && [ "$after" -gt 0 ]; then break; fi
        if [ "$after" -gt 0 ]; then pgb_fail "$key $side"; fi
        [ "$try" -lt 3 ] || pgb_fail "$key $side: the backlog ran dry even with $prefill jobs"
        log "$key $side: $prefill jobs ran dry; again with $((prefill * 3))"
        prefill=$((prefill * 3))
    done
    running=$(side_count "$side" "$queue" running)
    [ "$running" -eq 0 ] || { log "$key $side: $running jobs left running after the run"; exit 1; }
    # jobs / elapsed, elapsed = transactions / tps
    local rate; rate=$(calc "($before - $after) * $(pgb_tps) / $(pgb_txns)")
    keep_best "$key" "$side" "$rate"
    note "$key $side $script (backlog $before -> $after)" "$rate jobs/s"
    [ "$side" = conveyor ] && profile
    return 0
}

# ---- measurements --------------------------------------------------------------------------------------

log "measuring: $BENCH_SECONDS s each, $BENCH_CLIENTS clients, phases: $PHASES"
C=$BENCH_CLIENTS
# a.-e. run each pair of sides in 3 interleaved rounds of BENCH_SECONDS; each side keeps its best
# round (keep_best). Rounds stay full length: a short round favors the floor, whose table has not
# yet filled with dead rows (c. measured 0.67x in rounds of 6 s, 0.72x in rounds of 20 s).
T=$BENCH_SECONDS
ROUNDS="1 2 3"

if phase a; then
    for _ in $ROUNDS; do
        PGB_SECONDS=$T measure_enqueue a conveyor enqueue.sql bench_enqueue "$C" 1
        PGB_SECONDS=$T measure_enqueue a floor floor_enqueue.sql bench_enqueue "$C" 1
        PGB_SECONDS=$T measure_enqueue a_quiet conveyor enqueue.sql bench_enqueue_quiet "$C" 1
        PGB_SECONDS=$T measure_enqueue a_failures conveyor enqueue.sql bench_enqueue_failures "$C" 1
        # The same 5-property payload into a queue with a payload_schema over it and into one without.
        PGB_SECONDS=$T measure_enqueue a_schema conveyor enqueue_schema.sql bench_enqueue_schema "$C" 1
        PGB_SECONDS=$T measure_enqueue a_plain conveyor enqueue_schema.sql bench_enqueue_plain "$C" 1
    done
    # A worker that LISTENs and found its queue empty waits on it through the whole run, so every
    # enqueue notifies: what producers pay while a worker sleeps (a. has no waiting worker).
    psql -X -q -c "LISTEN conveyor" -c "SELECT count(*) FROM conveyor.dequeue('bench_enqueue_waiting', 'idle', 1)" \
        -c "SELECT pg_sleep($((BENCH_SECONDS * 3 + 60)))" >/dev/null 2>&1 &
    WAITER=$!
    for _ in $(seq 1 100); do
        [ "$(sql -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 6 AND mode = 'ShareLock'")" = 1 ] && break
        sleep 0.1
    done
    PGB_SECONDS=$T measure_enqueue a_waiting conveyor enqueue.sql bench_enqueue_waiting "$C" 1
    kill "$WAITER" 2>/dev/null || true
fi

if phase b; then
    BATCH=$(sql -c "SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('channel_id', 'UC' || g, 'n', g)))
                    FROM generate_series(1, 100) g")
    for _ in $ROUNDS; do
        PGB_SECONDS=$T measure_enqueue b conveyor enqueue_batch.sql bench_batch "$C" 100 -D batch="$BATCH"
        PGB_SECONDS=$T measure_enqueue b floor floor_enqueue_batch.sql bench_batch "$C" 100 -D batch="$BATCH"
    done
fi

# Prefill: a generous guess of what a round consumes (jobs/s x seconds); measure_drain grows it if not.
for _ in $ROUNDS; do
    if phase c; then
        PGB_SECONDS=$T measure_drain c conveyor cycle.sql bench_cycle "$C" $((4000 * T))
        PGB_SECONDS=$T measure_drain c floor floor_cycle.sql bench_cycle "$C" $((12000 * T))
    fi
    if phase e; then
        PGB_SECONDS=$T measure_drain e conveyor cycle.sql bench_cycle_failures "$C" $((4000 * T))
        phase c || PGB_SECONDS=$T measure_drain c floor floor_cycle.sql bench_cycle "$C" $((12000 * T))
    fi
    if phase d; then
        PGB_SECONDS=$T measure_drain d conveyor cycle_many.sql bench_many "$C" $((30000 * T))
        PGB_SECONDS=$T measure_drain d floor floor_cycle_many.sql bench_many "$C" $((80000 * T))
    fi
done
phase e && FLOOR[e]=${FLOOR[c]}

# i. Charges: 8 clients on 8 accounts (one each) and on one hot account, conveyor.charge against the
#    floor and the seed's SERIALIZABLE recipe (pgbench retries its 40001s). Each side starts from empty
#    ledgers and zero totals; charges/s = successful transactions per second; every one must be in
#    its ledger. The sides run in 3 interleaved rounds of a third of BENCH_SECONDS (at least 5 s) and
#    each keeps its best round: load from other processes only ever lowers a figure, and interleaving
#    spreads a burst of it over all sides instead of one.
declare -A SEED
reset_charges() {
    sql -c "TRUNCATE conveyor.ledger, floor.ledger, seed.ledger RESTART IDENTITY" \
        -c "TRUNCATE conveyor.account_slots" -c "UPDATE conveyor.accounts SET total = 0, entries = 0" \
        -c "UPDATE floor.accounts SET total = 0" -c "UPDATE seed.accounts SET total = 0"
}
measure_charge() {  # KEY SIDE SCRIPT ACCOUNTS [pgbench args]
    local key=$1 side=$2 script=$3 accounts=$4 table want have retries
    shift 4
    reset_charges; settle
    pgb "$script" 8 -D accounts="$accounts" "$@" || pgb_fail "$key $side"
    case $side in conveyor) table=conveyor.ledger ;; floor) table=floor.ledger ;; seed) table=seed.ledger ;; esac
    want=$(pgb_txns)
    have=$(sql -c "SELECT count(*) FROM $table")
    [ "$have" -eq "$want" ] || { log "$key $side: $want charges committed, $have in the ledger"; exit 1; }
    [ "$side" = conveyor ] && { [ "$(sql -c "SELECT bool_and(ok) FROM conveyor.ledger_verify()")" = t ] ||
        { log "$key conveyor: ledger_verify failed"; exit 1; }; }
    local rate best; rate=$(calc "$(pgb_tps)")
    retries=$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' "$WORK/pgbench.out")
    case $side in conveyor) best=${CONV[$key]:-0} ;; floor) best=${FLOOR[$key]:-0} ;; seed) best=${SEED[$key]:-0} ;; esac
    best=$(awk -v a="$rate" -v b="$best" 'BEGIN { print (a > b ? a : b) }')
    case $side in conveyor) CONV[$key]=$best ;; floor) FLOOR[$key]=$best ;; seed) SEED[$key]=$best ;; esac
    note "$key $side $script ($accounts accounts)${retries:+, $retries transactions retried}" "$rate charges/s"
    [ "$side" = conveyor ] && profile
    return 0
}
ISECS=$((BENCH_SECONDS / 3))
[ "$ISECS" -ge 5 ] || ISECS=5
if phase i; then
    for round in 1 2 3; do
        log "i. round $round of 3, $ISECS s per measurement"
        PGB_SECONDS=$ISECS measure_charge i8 conveyor charge.sql 8 -D prefix=bench_
        PGB_SECONDS=$ISECS measure_charge i8 floor floor_charge.sql 8
        PGB_SECONDS=$ISECS measure_charge i8 seed seed_charge.sql 8 --max-tries=1000000
        PGB_SECONDS=$ISECS measure_charge i1 conveyor charge.sql 1 -D prefix=bench_
        PGB_SECONDS=$ISECS measure_charge i1 floor floor_charge.sql 1
        PGB_SECONDS=$ISECS measure_charge i1 seed seed_charge.sql 1 --max-tries=1000000
        PGB_SECONDS=$ISECS measure_charge i1h conveyor charge.sql 1 -D prefix=hard_
    done
fi

# f. Backlog scaling: one worker enqueues one job (so the backlog stays where it is), dequeues one and
#    acknowledges it; pgbench -r gives the dequeue's latency. Commands in scaling.sql: 1 \set,
#    2 enqueue, 3 dequeue, 4 ack. These sessions run with synchronous_commit = off: the WAL flush
#    at commit costs the same at any backlog and would only hide (and add disk noise to) the work
#    that does depend on it. Each backlog is measured in 3 runs of a third of BENCH_SECONDS (at least
#    5 s); the lowest latency counts, as noise from other processes only ever adds to it.
declare -A DEQ CYC
measure_scaling() {
    local key=$1 queue=$2 ready d c secs=$((BENCH_SECONDS / 3))
    [ "$secs" -ge 5 ] || secs=5
    settle
    for _ in 1 2 3; do
        PGB_SECONDS=$secs PGOPTIONS="-c synchronous_commit=off" pgb scaling.sql 1 -r -D queue="$queue" ||
            pgb_fail "scaling $key"
        d=$(pgb_latency 3)
        c=$(calc "$(pgb_latency 3) + $(pgb_latency 4)" 3)
        if [ -z "${DEQ[$key]:-}" ] || awk -v a="$d" -v b="${DEQ[$key]}" 'BEGIN { exit !(a < b) }'; then DEQ[$key]=$d; fi
        if [ -z "${CYC[$key]:-}" ] || awk -v a="$c" -v b="${CYC[$key]}" 'BEGIN { exit !(a < b) }'; then CYC[$key]=$c; fi
    done
    ready=$(conveyor_count "$queue" ready)
    note "f $key (ready backlog after: $ready)" "dequeue ${DEQ[$key]} ms, dequeue+ack ${CYC[$key]} ms (best of 3)"
    profile
}
BACKLOG_MAX=${BENCH_BACKLOG_MAX:-10000000}
FILL_SESSIONS=${BENCH_FILL_SESSIONS:-2}
declare -A FILLED   # KEY -> "jobs seconds" of the fill that grew the backlog to that size
BACKLOG_SKIPPED=""
backlog_size() { case $1 in 1k) echo 1000 ;; 100k) echo 100000 ;; 1m) echo 1000000 ;; 10m) echo 10000000 ;; esac; }
if phase f; then
    # One queue grows from 1,000 to BACKLOG_MAX ready jobs, measured at each size: each fill adds
    # only the difference (enqueue_batch, 10,000 per call, FILL_SESSIONS sessions), and the
    # measurement itself keeps the backlog where it is.
    reset_data
    have=0
    for key in 1k 100k 1m 10m; do
        size=$(backlog_size "$key")
        [ "$size" -le "$BACKLOG_MAX" ] || continue
        add=$((size - have))
        if [ "$size" -gt 1000000 ]; then
            # Room for the table, its indexes and the WAL the fill writes (about the table again), with
            # 10 GB to spare for everyone else on this disk.
            per_job=$(sql -c "SELECT pg_total_relation_size('conveyor.jobs') / greatest(count(*), 1) FROM conveyor.jobs")
            need_kb=$((per_job * add * 2 / 1024 + 10 * 1024 * 1024))
            free_kb=$(df -k --output=avail "$CONVEYOR_PGDATA" | tail -1)
            if [ "$free_kb" -lt "$need_kb" ]; then
                BACKLOG_SKIPPED="$BACKLOG_SKIPPED $key: $((free_kb / 1048576)) GB free, $((need_kb / 1048576)) GB needed ($per_job bytes per job x 2 + 10 GB spare);"
                log "f: skipping the $key backlog:$BACKLOG_SKIPPED"
                continue
            fi
            log "f: $((free_kb / 1048576)) GB free, about $((need_kb / 1048576)) GB needed for $key jobs: filling"
        fi
        t0=$(date +%s.%N)
        fill_conveyor scale_backlog "$add" "$FILL_SESSIONS"
        FILLED[$key]="$add $(calc "$(date +%s.%N) - $t0" 1)"
        have=$size
        [ "$add" -ge 10000 ] && note "f fill +$add jobs ($FILL_SESSIONS sessions)" "$(cut -d' ' -f2 <<< "${FILLED[$key]}") s"
        measure_scaling "$key" scale_backlog
    done

    # 1,000 groups, each with one running job (leased for a day to a worker that never comes back)
    # and 100 waiting behind it; then the 1,000 ungrouped jobs the worker dequeues.
    reset_data
    sql -c "DO \$\$
        BEGIN
            FOR c IN 0..9 LOOP
                PERFORM conveyor.enqueue_batch('scale_groups', (SELECT jsonb_agg(jsonb_build_object(
                            'group_key', 'channel-' || g, 'payload', jsonb_build_object('channel_id', 'UC' || g, 'k', k)))
                        FROM generate_series(c * 100 + 1, c * 100 + 100) g, generate_series(1, 101) k));
                COMMIT;
            END LOOP;
        END \$\$"
    sql -c "SELECT count(*) FROM conveyor.dequeue('scale_groups', 'bench-holder', 1000, 86400)" >/dev/null
    fill_conveyor scale_groups 1000
    counts=$(sql -c "SELECT string_agg(state || '=' || n, ' ' ORDER BY state) FROM (
                         SELECT state, count(*) AS n FROM conveyor.jobs GROUP BY state) s")
    [ "$counts" = "ready=1000 running=1000 waiting=100000" ] || { log "groups setup: $counts"; exit 1; }
    measure_scaling groups scale_groups
fi

# h. Upserts: batches of 1,000 rows with 20 columns through conveyor.upsert_counts, against the plain
#    SQL upsert (INSERT ... SELECT FROM jsonb_populate_recordset ... ON CONFLICT DO UPDATE) of the same
#    batches. One client, BENCH_H_BATCHES batches per side and kind, run in 4 alternating pgbench runs
#    per side (pgbench -t), each batch read from a table (plain storage, so neither side pays
#    decompression). Kinds of batch:
#      new      1,000 keys never seen (batch n holds keys n*1000+1 .. n*1000+1000)
#      changed  the keys 1..1000 again, 10% of rows with a new view_count in each batch, the rest as
#               the previous batch left them (so every batch really changes exactly 100 rows)
#      same     the keys 1..1000 exactly as stored
declare -A UPS
H_BATCHES=${BENCH_H_BATCHES:-200}
if phase h; then
    log "h: generating $H_BATCHES batches of each kind"
    sql >/dev/null <<SQL
CREATE SCHEMA bench_h;
CREATE TABLE bench_h.conv (
    id text PRIMARY KEY, title text NOT NULL, description text, channel_id text NOT NULL, published_at timestamptz,
    duration_s integer, view_count bigint, like_count bigint, comment_count bigint, favorite_count bigint,
    category_id integer, language text, privacy text, license text, embeddable boolean, made_for_kids boolean,
    tags jsonb, thumbnail text, rating numeric, updated_at timestamptz);
CREATE TABLE bench_h.plain (LIKE bench_h.conv INCLUDING ALL);
CREATE SEQUENCE bench_h.seq_conv;
CREATE SEQUENCE bench_h.seq_plain;
CREATE TABLE bench_h.batches (kind text, n integer, rows jsonb, PRIMARY KEY (kind, n));
ALTER TABLE bench_h.batches ALTER rows SET STORAGE EXTERNAL;
-- One video as JSON; v is the view count.
CREATE FUNCTION bench_h.video(k integer, v bigint) RETURNS jsonb LANGUAGE sql IMMUTABLE AS \$\$
    SELECT jsonb_build_object('id', 'vid' || k, 'title', 'Video number ' || k, 'description', repeat('words ', 20) || k,
        'channel_id', 'UC' || (k % 50), 'published_at', '2026-01-01T00:00:00Z', 'duration_s', 60 + k % 600,
        'view_count', v, 'like_count', k % 1000, 'comment_count', k % 100, 'favorite_count', 0,
        'category_id', 10, 'language', 'en', 'privacy', 'public', 'license', 'youtube', 'embeddable', true,
        'made_for_kids', false, 'tags', jsonb_build_array('music', 'k' || k % 7), 'thumbnail',
        'https://i.ytimg.com/vi/vid' || k || '/hq.jpg', 'rating', 4.5)
\$\$;
INSERT INTO bench_h.batches
SELECT 'new', n, (SELECT jsonb_agg(bench_h.video(n * 1000 + k, k)) FROM generate_series(1, 1000) k)
FROM generate_series(1, $H_BATCHES) n;
-- changed: in batch n, row k carries the number of the last batch (<= n) whose turn was k % 10.
INSERT INTO bench_h.batches
SELECT 'changed', n, (SELECT jsonb_agg(bench_h.video(k, n - (((n - k) % 10) + 10) % 10)) FROM generate_series(1, 1000) k)
FROM generate_series(0, $H_BATCHES) n;
INSERT INTO bench_h.batches SELECT 'same', n, (SELECT rows FROM bench_h.batches WHERE kind = 'changed' AND n = 0)
FROM generate_series(1, $H_BATCHES) n;
SQL
    # h_reset BASE: empty both tables; BASE=1 loads the keys 1..1000 (batch changed/0) into both.
    h_reset() {
        sql -c "TRUNCATE bench_h.conv, bench_h.plain" >/dev/null
        sql -c "SELECT setval('bench_h.seq_conv', 1, false), setval('bench_h.seq_plain', 1, false)" >/dev/null
        if [ "$1" = 1 ]; then
            sql -c "SELECT 1 FROM conveyor.upsert_counts('bench_h.conv', (SELECT rows FROM bench_h.batches WHERE kind = 'changed' AND n = 0), '{id}')" >/dev/null
            sql -c "INSERT INTO bench_h.plain SELECT * FROM jsonb_populate_recordset(NULL::bench_h.plain,
                        (SELECT rows FROM bench_h.batches WHERE kind = 'changed' AND n = 0))" >/dev/null
        fi
        sql -c "VACUUM ANALYZE bench_h.conv" -c "VACUUM ANALYZE bench_h.plain" -c "CHECKPOINT" >/dev/null
    }
    # h_measure KEY KIND BASE: BENCH_H_BATCHES batches per side, in H_CHUNKS alternating pgbench runs
    # (conveyor, plain, conveyor, ...) so that a change in the machine's load hits both sides alike;
    # rows/s and the table's growth into UPS[KEY.SIDE] and UPS[KEY.SIDE.growth].
    H_CHUNKS=4
    h_measure() {
        local key=$1 kind=$2 side script chunk per=$((H_BATCHES / H_CHUNKS)) txns tps
        declare -A secs=([conv]=0 [plain]=0) rows=([conv]=0 [plain]=0) before
        h_reset "$3"
        for side in conv plain; do before[$side]=$(sql -c "SELECT pg_relation_size('bench_h.$side')"); done
        for chunk in $(seq 1 $H_CHUNKS); do
            for side in conv plain; do
                script=upsert.sql; [ "$side" = plain ] && script=floor_upsert.sql
                "$PGBENCH" -n -M prepared -c 1 -t "$per" -f "$HERE/pgbench/$script" -D kind="$kind" -D seq="bench_h.seq_$side" \
                    > "$WORK/pgbench.out" 2>&1 || pgb_fail "h $key $side"
                txns=$(pgb_txns); tps=$(pgb_tps)
                rows[$side]=$(( ${rows[$side]} + txns * 1000 ))
                secs[$side]=$(calc "${secs[$side]} + $txns / $tps" 6)
            done
        done
        for side in conv plain; do
            UPS[$key.$side]=$(calc "${rows[$side]} / ${secs[$side]}")
            UPS[$key.$side.growth]=$(( $(sql -c "SELECT pg_relation_size('bench_h.$side')") - before[$side] ))
            note "h $key $side ($kind, $((per * H_CHUNKS)) x 1,000 rows)" "${UPS[$key.$side]} rows/s, table +${UPS[$key.$side.growth]} bytes"
        done
    }
    h_measure new new 0
    h_measure changed changed 1
    h_measure same same 1
    # Every batch must have left both tables alike: same rows, same values.
    diff=$(sql -c "SELECT count(*) FROM (SELECT id, view_count FROM bench_h.conv EXCEPT SELECT id, view_count FROM bench_h.plain) d")
    [ "$diff" = 0 ] || { log "h: conveyor and plain SQL disagree on $diff rows"; exit 1; }
fi


# g. Leases: acquire + release cycles per second with LOCK_CLIENTS clients, on distinct keys (one per
#    client) and on one hot key: conveyor against the same cycle in plain SQL on a minimal table, and
#    pg_try_advisory_lock/pg_advisory_unlock as the floor. The three sides alternate in 3 rounds of a
#    third of BENCH_SECONDS (at least 5 s) each, each run from empty lease tables; each side's best
#    round counts, as noise from other processes only ever takes throughput away.
declare -A LOCKS
measure_locks() {  # KEY SCRIPT HOT SECONDS
    local rate
    sql -c "TRUNCATE conveyor.locks, conveyor.lock_events, floor.locks" >/dev/null
    settle
    # Every side plans on the primary key, as conveyor's functions do: after the TRUNCATE the planner
    # would otherwise keep a sequential scan for the plain-SQL DELETE while its heap fills with
    # dead rows.
    PGB_SECONDS=$4 PGOPTIONS="-c enable_seqscan=off" pgb "$2" "$LOCK_CLIENTS" -D hot="$3" || pgb_fail "g $1"
    rate=$(calc "$(pgb_tps)")
    note "g $1 ($2)" "$rate cycles/s"
    if [ -z "${LOCKS[$1]:-}" ] || [ "$rate" -gt "${LOCKS[$1]}" ]; then LOCKS[$1]=$rate; fi
    [ "$2" = lock_cycle.sql ] && profile
    return 0
}
if phase g; then
    sql >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS floor.locks (
    key text PRIMARY KEY, owner text NOT NULL, token bigint NOT NULL, ttl_seconds integer NOT NULL,
    acquired_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE SEQUENCE IF NOT EXISTS floor.lock_token_seq;
SQL
    lock_secs=$((BENCH_SECONDS / 3))
    [ "$lock_secs" -ge 5 ] || lock_secs=5
    for mode in distinct hot; do
        hot=0
        [ "$mode" = hot ] && hot=1
        for _ in 1 2 3; do
            measure_locks "${mode}_conveyor" lock_cycle.sql "$hot" "$lock_secs"
            measure_locks "${mode}_sql" floor_lock_cycle.sql "$hot" "$lock_secs"
            measure_locks "${mode}_advisory" floor_advisory_cycle.sql "$hot" "$lock_secs"
        done
    done
fi

# j. The audit of worker calls: enqueue and dequeue 1 + ack (cycle.sql) with audit.worker_calls off
#    and on, on one queue, in 3 interleaved rounds of BENCH_SECONDS; each setting keeps its best
#    round. The ratio on / off is the price of one audit row per call.
audit_worker_calls() { sql -c "SELECT conveyor.set_setting('audit.worker_calls', '$1')" >/dev/null; }
if phase j; then
    for _ in $ROUNDS; do
        audit_worker_calls off
        PGB_SECONDS=$T measure_enqueue j_enqueue_off conveyor enqueue.sql bench_audit "$C" 1
        audit_worker_calls on
        PGB_SECONDS=$T measure_enqueue j_enqueue_on conveyor enqueue.sql bench_audit "$C" 1
        audit_worker_calls off
        PGB_SECONDS=$T measure_drain j_cycle_off conveyor cycle.sql bench_audit "$C" $((4000 * T))
        audit_worker_calls on
        PGB_SECONDS=$T measure_drain j_cycle_on conveyor cycle.sql bench_audit "$C" $((4000 * T))
    done
    audit_worker_calls off
fi

# k. health() at scale: conveyor.health() on a database holding 1,000,000 finished jobs (in their daily
#    partitions), 100,000 entities and a realistic hot set (bench/health_fixture.sql), in a database of
#    its own. Latency of single calls (pgbench -t, one client, per-call log) in 3 interleaved rounds
#    against two floors: count(*) over the history, what health() must never do, and SELECT 1, a bare
#    round trip. Then auto_explain prints the plan of every statement health() runs (nested ones
#    too) and the phase fails if any reads job_history or scans all of entities.
declare -A HEALTH
HEALTH_TARGET_MS=50
# k_calls KEY SCRIPT CALLS: CALLS calls in one session; their latencies (ms) appended to $WORK/k_KEY.
k_calls() {
    rm -f "$WORK"/klog.*
    PGDATABASE=conveyor_health "$PGBENCH" -n -M prepared -c 1 -t "$3" -f "$HERE/pgbench/$2" -l --log-prefix="$WORK/klog" \
        > "$WORK/pgbench.out" 2>&1 || pgb_fail "k $1"
    awk '{ printf "%.3f\n", $3 / 1000 }' "$WORK"/klog.* >> "$WORK/k_$1"
}
# k_stat KEY: "median p95 max" (ms) of the calls so far.
k_stat() {
    sort -n "$WORK/k_$1" | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = int(NR * 0.95 + 0.999999); printf "%.3f %.3f %.3f %d\n", m, v[p], v[NR], NR }'
}
if phase k; then
    log "k: building the fixture (1,000,000 finished jobs, 100,000 entities, the hot set)"
    psql -X -q -d postgres -c "CREATE DATABASE conveyor_health" >/dev/null
    PGDATABASE=conveyor_health sql -c "CREATE EXTENSION conveyor"
    PGDATABASE=conveyor_health sql -f "$HERE/health_fixture.sql" >/dev/null
    PGDATABASE=conveyor_health settle >/dev/null
    # The fixture is what it claims, and health() reports it: its dead gauge is the history's dead
    # jobs, its failed and dead entities the table's (capped as documented).
    check=$(PGDATABASE=conveyor_health sql -c "
        WITH h AS (SELECT conveyor.health() AS d)
        SELECT (SELECT count(*) FROM conveyor.job_history) || ' history rows in '
               || (SELECT count(*) FROM pg_inherits WHERE inhparent = 'conveyor.job_history'::regclass) || ' partitions, '
               || (SELECT count(*) FROM conveyor.entities) || ' entities, '
               || (SELECT count(*) FROM conveyor.jobs) || ' hot jobs, '
               || (SELECT count(*) FROM conveyor.locks) || ' leases; health() disagrees on:'
               || concat_ws(' ', '',
                  CASE WHEN (h.d #>> '{queues,dead}')::bigint
                            <> (SELECT count(*) FROM conveyor.job_history WHERE status = 'dead') THEN 'dead jobs' END,
                  CASE WHEN (h.d #>> '{queues,pending}')::bigint + (h.d #>> '{queues,running}')::bigint
                            <> (SELECT count(*) FROM conveyor.jobs WHERE state <> 'scheduled' OR run_at <= now())
                       THEN 'pending + running' END,
                  CASE WHEN (h.d #>> '{entities,failed}')::bigint <> least((SELECT count(*) FROM conveyor.entities
                            WHERE state = 'FAILED'), (h.d #>> '{entities,counts_capped_at}')::bigint) THEN 'failed entities' END,
                  CASE WHEN (h.d #>> '{entities,dead}')::bigint <> least((SELECT count(*) FROM conveyor.entities
                            WHERE state = 'DEAD'), (h.d #>> '{entities,counts_capped_at}')::bigint) THEN 'dead entities' END,
                  CASE WHEN (h.d #>> '{locks,held}')::bigint <> (SELECT count(*) FROM conveyor.locks) THEN 'leases' END)
        FROM h")
    note "k fixture" "$check"
    case $check in *"disagrees on:") ;; *) log "k: health() disagrees with the fixture's tables"; exit 1 ;; esac
    for round in 1 2 3; do
        k_calls health health.sql 50
        k_calls count floor_count_history.sql 10
        k_calls select1 floor_select1.sql 50
    done
    for key in health count select1; do
        HEALTH[$key]=$(k_stat "$key")
        note "k $key (median p95 max ms, calls)" "${HEALTH[$key]}"
    done
    # Every statement health() runs, with its plan: none may read job_history or scan all of entities.
    log "k: plans of the statements health() runs (auto_explain, second call in the session)"
    PGDATABASE=conveyor_health psql -X -q -v ON_ERROR_STOP=1 > /dev/null 2> "$WORK/k_plans" <<'SQL'
SELECT conveyor.health() IS NOT NULL;
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_format = json;
SET client_min_messages = log;
SELECT conveyor.health() IS NOT NULL;
SQL
    HEALTH[plans]=ok
    python3 "$HERE/plan_check.py" "job_history,entities=Seq Scan" < "$WORK/k_plans" > "$WORK/k_plans.txt" || HEALTH[plans]=MISSED
    sed 's/^/    /' "$WORK/k_plans.txt" >&2
    psql -X -q -d postgres -c "DROP DATABASE conveyor_health" >/dev/null
fi

# l. status_notify off and on: one job's enqueue, dequeue and ack (three transactions, bench/pgbench/
#    status_cycle.sql), C clients, 3 interleaved rounds of T s; a queue with the option sends three
#    notifications per job (no session listens: PostgreSQL queues them all the same).
l_measure() {  # KEY QUEUE
    reset_data; settle
    pgb status_cycle.sql "$C" -D queue="$2" || pgb_fail "$1"
    local rate; rate=$(calc "$(pgb_tps)")
    keep_best "$1" conveyor "$rate"
    note "$1 status_cycle.sql ($2)" "$rate jobs/s"
}
if phase l; then
    for _ in $ROUNDS; do
        PGB_SECONDS=$T l_measure l_off bench_status_off
        PGB_SECONDS=$T l_measure l_on bench_status_on
    done
    # The notifications are there: a listener that takes one job's life receives its three changes.
    LISTEN_CHECK=$(psql -X -q -At -c "LISTEN conveyor_status" \
        -c "SELECT count(*) FROM conveyor.enqueue('bench_status_check', '{}')" \
        -c "SELECT count(conveyor.ack(job_id, true)) FROM conveyor.dequeue('bench_status_check', 'check', 1000)" 2>&1 |
        grep -c 'notification "conveyor_status"')
fi

# m. list_jobs at scale: the newest 100 jobs of one group out of 1,000,000 finished jobs (10,000
#    groups, bench/listing_fixture.sql), in a database of its own. Latency of single calls (pgbench -t,
#    one client, per-call log, a random group each call), 3 rounds; the median against the target.
declare -A LISTING
LISTING_TARGET_MS=10
if phase m; then
    log "m: building the fixture (1,000,000 finished jobs in 10,000 groups)"
    psql -X -q -d postgres -c "CREATE DATABASE conveyor_listing" >/dev/null
    PGDATABASE=conveyor_listing sql -c "CREATE EXTENSION conveyor"
    PGDATABASE=conveyor_listing sql -f "$HERE/listing_fixture.sql" >/dev/null
    PGDATABASE=conveyor_listing settle >/dev/null
    LISTING[rows]=$(PGDATABASE=conveyor_listing sql -c "SELECT (SELECT count(*) FROM conveyor.job_history) || ' history rows in '
        || (SELECT count(*) FROM pg_inherits WHERE inhparent = 'conveyor.job_history'::regclass) || ' partitions; group g4242 lists '
        || (SELECT count(*) FROM conveyor.list_jobs('listing', group_key => 'g4242', lim => 1000)) || ' jobs'")
    note "m fixture" "${LISTING[rows]}"
    rm -f "$WORK/m_list"
    for round in 1 2 3; do
        rm -f "$WORK"/mlog.*
        PGDATABASE=conveyor_listing "$PGBENCH" -n -M prepared -c 1 -t 200 -f "$HERE/pgbench/list_jobs_group.sql" -l \
            --log-prefix="$WORK/mlog" > "$WORK/pgbench.out" 2>&1 || pgb_fail "m list_jobs"
        awk '{ printf "%.3f\n", $3 / 1000 }' "$WORK"/mlog.* >> "$WORK/m_list"
    done
    LISTING[stat]=$(sort -n "$WORK/m_list" | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = int(NR * 0.95 + 0.999999); printf "%.3f %.3f %.3f %d\n", m, v[p], v[NR], NR }')
    note "m list_jobs (median p95 max ms, calls)" "${LISTING[stat]}"
    psql -X -q -d postgres -c "DROP DATABASE conveyor_listing" >/dev/null
fi

# n. snapshot_batch and snapshot_top's metric rows: 100 captures of 3 numeric metrics per call, 1
#    client, in a database at 0.2 (no snapshot_metrics) and one at the current version, the same
#    conveyor.so, 3 alternating rounds each: captures of new entities (each opens its period) and
#    captures that update today's row of one of 10,000 entities. Ratio = current / 0.2.
declare -A SNAP
n_measure() {  # DB SCRIPT KEY
    PGDATABASE=$1 settle >/dev/null
    PGDATABASE=$1 pgb "$2" 1 || pgb_fail "n $2"
    local rate; rate=$(calc "$(pgb_tps) * 100")
    SNAP[$3]=$(awk -v a="$rate" -v b="${SNAP[$3]:-0}" 'BEGIN { print (a > b ? a : b) }')
    note "n $1 $2" "$rate captures/s"
}
if phase n; then
    for v in 0.2 cur; do
        db=conveyor_snap_${v/./}
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
        if [ "$v" = 0.2 ]; then PGDATABASE=$db sql -c "CREATE EXTENSION conveyor VERSION '0.2'"
        else PGDATABASE=$db sql -c "CREATE EXTENSION conveyor"; fi
        # Today's rows of the 10,000 entities the update script captures again.
        PGDATABASE=$db sql -c "SELECT count(*) FROM conveyor.snapshot_batch('bench_snap', (SELECT jsonb_agg(jsonb_build_object(
            'entity_id', 'v' || i, 'metrics', jsonb_build_object('views', i, 'likes', i, 'comments', i)))
            FROM generate_series(1, 10000) i))" >/dev/null
    done
    for _ in $ROUNDS; do
        for v in 02 cur; do
            PGB_SECONDS=$T n_measure conveyor_snap_$v snapshot_new.sql "new_$v"
            PGB_SECONDS=$T n_measure conveyor_snap_$v snapshot_update.sql "upd_$v"
        done
    done
    for v in 02 cur; do psql -X -q -d postgres -c "DROP DATABASE conveyor_snap_$v" >/dev/null; done
fi

# ---- report --------------------------------------------------------------------------------------------

row() {  # KEY LABEL TARGET   (TARGET: "r0.8" = ratio at least 0.8, "a50000" = at least 50,000 jobs/s, "" = info)
    local key=$1 label=$2 spec=${3:-} c=${CONV[$1]:-} f=${FLOOR[$1]:-} ratio="-" verdict="" target="(info)"
    [ -n "$c" ] || return 0
    [ -n "$f" ] && ratio=$(calc "$c / $f" 2)
    case $spec in
        r*) target=">= ${spec#r}x"
            [ -n "$f" ] && verdict=$(awk -v r="$ratio" -v t="${spec#r}" 'BEGIN { print (r >= t ? "ok" : "MISSED") }') ;;
        a*) target=">= ${spec#a}/s"
            verdict=$(awk -v r="$c" -v t="${spec#a}" 'BEGIN { print (r >= t ? "ok" : "MISSED") }') ;;
    esac
    printf '%-52s %14s %14s %8s   %-10s %s\n' "$label" "$c" "${f:--}" "${ratio}x" "$target" "$verdict"
}

if [ -n "${CONV[a]:-}${CONV[b]:-}${CONV[c]:-}${CONV[d]:-}${CONV[e]:-}" ]; then
    echo
    echo "conveyor vs floor: best of 3 interleaved rounds of $T s, pgbench -M prepared -c $C -j 2; ratio = conveyor / floor"
    printf '%-52s %14s %14s %8s   %s\n' "operation" "conveyor jobs/s" "floor jobs/s" "ratio" "target"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    [ -n "${FLOOR[a]:-}" ] && FLOOR[a_quiet]=${FLOOR[a]} && FLOOR[a_failures]=${FLOOR[a]} && FLOOR[a_waiting]=${FLOOR[a]}
    row a "a. enqueue, 1 job/call, $C clients" r0.8
    row a_quiet "   same, queue option notify = false" ""
    row a_failures "   same, queue option event_trail = 'failures'" ""
    row a_waiting "   same, a listening worker waiting (all notify)" ""
    [ -n "${CONV[a_plain]:-}" ] && FLOOR[a_schema]=${CONV[a_plain]}
    row a_schema "   same, 5-property payload_schema (vs none)" r0.85
    row b "b. enqueue_batch, 100 jobs/call, $C clients" a50000
    row c "c. dequeue 1 + ack, $C workers, event_trail 'all'" r0.7
    row e "e. dequeue 1 + ack, $C workers, event_trail 'failures'" ""
    row d "d. dequeue 100 + ack_many, $C workers" a20000
    [ -n "${CONV[e]:-}" ] && echo "   (e. is compared with the floor of c.: the floor has no event trail)"
    [ -n "${CONV[a_schema]:-}" ] && echo "   (the payload_schema row is compared with the same enqueue into a queue without a schema, not with the floor)"
fi

if [ -n "${CONV[i8]:-}" ]; then
    echo
    echo "i. charges: best of 3 interleaved rounds of $ISECS s, pgbench -M prepared -c 8 -j 2; charges/s"
    printf '%-40s %10s %10s %10s %12s %12s\n' "operation" "conveyor" "floor" "seed" "conv/floor" "conv/seed"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    [ -n "${CONV[i1h]:-}" ] && { FLOOR[i1h]=${FLOOR[i1]}; SEED[i1h]=${SEED[i1]}; }
    irow() {  # KEY LABEL SEED_TARGET FLOOR_TARGET
        local c=${CONV[$1]} f=${FLOOR[$1]} sd=${SEED[$1]} rf rs vf vs
        rf=$(calc "$c / $f" 2); rs=$(calc "$c / $sd" 2)
        vf="info"
        [ -n "${4:-}" ] && vf=$(awk -v r="$rf" -v t="$4" 'BEGIN { print (r >= t ? "ok" : "MISSED") }')
        vs="(info)"
        [ -n "$3" ] && vs=$(awk -v r="$rs" -v t="$3" 'BEGIN { print (r >= t ? "ok" : "MISSED") }')
        printf '%-40s %10s %10s %10s %7sx %-4s %7sx %s\n' "$2" "$c" "$f" "$sd" "$rf" "$vf" "$rs" "$vs"
    }
    irow i8 "8 clients, 8 accounts (one each)" "" 0.8
    irow i1 "8 clients, one hot account" 3 0.8
    irow i1h "8 clients, one hot account, hard budget" ""
    echo "   (the hard-budget row: every charge is decided on the account's one row; its floor and seed"
    echo "    columns repeat the row above)"
    echo "   targets: conveyor >= 0.8x the floor; >= 3x the seed's SERIALIZABLE recipe on the hot account"
fi

if [ -n "${DEQ[1k]:-}" ]; then
    echo
    echo "f. backlog scaling: 1 worker, enqueue 1 + dequeue 1 + ack per cycle (backlog held constant),"
    echo "   synchronous_commit = off, latency per job (best of 3 runs); ratios to the 1,000-job backlog"
    printf '%-58s %11s %11s %10s %10s   %s\n' "backlog" "dequeue ms" "deq+ack ms" "deq ratio" "d+a ratio" "target"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    srow() {  # KEY LABEL
        local rd ra verdict="" target=""
        if [ -z "${DEQ[$1]:-}" ]; then
            printf '%-58s %11s %11s %10s %10s   %s\n' "$2" - - - - "not measured"
            return 0
        fi
        rd=$(calc "${DEQ[$1]} / ${DEQ[1k]}" 2)
        ra=$(calc "${CYC[$1]} / ${CYC[1k]}" 2)
        if [ "$1" != 1k ]; then
            target="<= ${SCALE_TARGET}x"
            verdict=$(awk -v a="$rd" -v b="$ra" -v t="$SCALE_TARGET" 'BEGIN { print (a <= t && b <= t ? "ok" : "MISSED") }')
        fi
        printf '%-58s %11s %11s %10s %10s   %-9s %s\n' "$2" "${DEQ[$1]}" "${CYC[$1]}" "${rd}x" "${ra}x" "$target" "$verdict"
    }
    srow 1k "1,000 ready jobs"
    for k in 100k 1m 10m; do
        [ "$(backlog_size "$k")" -le "$BACKLOG_MAX" ] || continue
        srow "$k" "$(backlog_size "$k" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') ready jobs"
    done
    srow groups "1,000 ready + 100,000 waiting behind 1,000 busy groups"
    [ "$BACKLOG_MAX" -ge 10000000 ] || echo "   largest backlog: $BACKLOG_MAX (BENCH_BACKLOG_MAX; 10000000 by default)"
    [ -z "$BACKLOG_SKIPPED" ] || echo "   skipped for lack of disk:$BACKLOG_SKIPPED"
    for k in 100k 1m 10m; do
        [ -n "${FILLED[$k]:-}" ] || continue
        read -r n secs <<< "${FILLED[$k]}"
        printf '   fill to %s: %s jobs in %s s (%s jobs/s; enqueue_batch, 10,000 per call, %s sessions)\n' \
            "$k" "$n" "$secs" "$(calc "$n / $secs")" "$FILL_SESSIONS"
    done
fi


if [ -n "${UPS[new.conv]:-}" ]; then
    echo
    echo "h. upserts: batches of 1,000 rows x 20 columns, 1 client, $H_BATCHES batches each;"
    echo "   conveyor.upsert_counts vs INSERT ... SELECT FROM jsonb_populate_recordset ... ON CONFLICT DO UPDATE"
    printf '%-40s %14s %14s %8s   %-22s %s\n' "batch" "conveyor rows/s" "plain rows/s" "ratio" "target" ""
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    hrow() {  # KEY LABEL OP TARGET [ABS]
        local c=${UPS[$1.conv]} p=${UPS[$1.plain]} ratio verdict target=$3$4
        ratio=$(calc "$c / $p" 2)
        verdict=$(awk -v r="$ratio" -v t="$4" -v op="$3" 'BEGIN { print ((op == ">=" ? r >= t : r > t) ? "ok" : "MISSED") }')
        if [ -n "${5:-}" ]; then
            target="$target, >= $5/s"
            [ "$(awk -v c="$c" -v a="$5" 'BEGIN { print (c >= a) }')" = 1 ] || verdict=MISSED
        fi
        printf '%-40s %14s %14s %8s   %-22s %s\n' "$2" "$c" "$p" "${ratio}x" "$target" "$verdict"
    }
    hrow new "all new" ">=" 0.9
    hrow changed "10% changed" ">" 1.0
    hrow same "0% changed" ">" 1.0 100000
    growth=${UPS[same.conv.growth]}
    echo "   table growth over the 0% run (pg_relation_size after - before): conveyor $growth bytes" \
        "(target 0: $([ "$growth" = 0 ] && echo ok || echo MISSED)), plain ${UPS[same.plain.growth]} bytes"
fi

if [ -n "${LOCKS[distinct_conveyor]:-}" ]; then
    echo
    echo "g. leases: acquire + release cycles/s (two transactions each), $LOCK_CLIENTS clients, pgbench -M prepared,"
    echo "   best of 3 alternating rounds of $lock_secs s; ratio = conveyor / plain SQL; floor = pg_try_advisory_lock + pg_advisory_unlock"
    printf '%-34s %12s %12s %12s %8s %10s   %s\n' "keys" "conveyor" "plain SQL" "advisory" "ratio" "vs floor" "target"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    for mode in distinct hot; do
        c=${LOCKS[${mode}_conveyor]} f=${LOCKS[${mode}_sql]} a=${LOCKS[${mode}_advisory]}
        ratio=$(calc "$c / $f" 2)
        verdict=$(awk -v r="$ratio" -v t="$LOCK_TARGET" 'BEGIN { print (r >= t ? "ok" : "MISSED") }')
        label="distinct keys (one per client)"
        [ "$mode" = hot ] && label="one hot key"
        printf '%-34s %12s %12s %12s %8s %10s   %-9s %s\n' "$label" "$c" "$f" "$a" "${ratio}x" "$(calc "$c / $a" 2)x" \
            ">= ${LOCK_TARGET}x" "$verdict"
    done
fi

if [ -n "${CONV[j_enqueue_on]:-}${CONV[j_cycle_on]:-}" ]; then
    echo
    echo "j. auditing worker calls: audit.worker_calls off and on, best of 3 interleaved rounds of $T s,"
    echo "   pgbench -M prepared -c $C -j 2; ratio = on / off"
    printf '%-40s %14s %14s %8s\n' "operation" "off jobs/s" "on jobs/s" "ratio"
    printf '%s\n' "$(printf -- '-%.0s' {1..80})"
    jrow() {  # KEY LABEL
        [ -n "${CONV[$1_on]:-}" ] || return 0
        printf '%-40s %14s %14s %7sx\n' "$2" "${CONV[$1_off]}" "${CONV[$1_on]}" "$(calc "${CONV[$1_on]} / ${CONV[$1_off]}" 2)"
    }
    jrow j_enqueue "enqueue, 1 job/call, $C clients"
    jrow j_cycle "dequeue 1 + ack, $C workers"
fi

if [ -n "${HEALTH[health]:-}" ]; then
    read -r hm hp hx hn <<< "${HEALTH[health]}"
    echo
    echo "k. health() with 1,000,000 jobs in history, 100,000 entities, a hot set (bench/health_fixture.sql);"
    echo "   latency of single calls, 1 client, pgbench -M prepared, 3 interleaved rounds; ratio = health() / row (medians)"
    printf '%-52s %10s %10s %10s %7s %8s   %s\n' "call" "median ms" "p95 ms" "max ms" "calls" "ratio" "target"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    krow() {  # KEY LABEL
        local m p x n target="" verdict="" ratio
        read -r m p x n <<< "${HEALTH[$1]}"
        ratio="$(calc "$hm / $m" 3)x"
        if [ "$1" = health ]; then
            ratio="-"
            target="< $HEALTH_TARGET_MS ms"
            verdict=$(awk -v a="$m" -v t="$HEALTH_TARGET_MS" 'BEGIN { print (a < t ? "ok" : "MISSED") }')
        fi
        printf '%-52s %10s %10s %10s %7s %8s   %-9s %s\n' "$2" "$m" "$p" "$x" "$n" "$ratio" "$target" "$verdict"
    }
    krow health "conveyor.health()"
    krow count "floor: SELECT count(*) FROM conveyor.job_history"
    krow select1 "floor: SELECT 1"
    echo "   plans of every statement health() runs (auto_explain): no read of job_history, no Seq Scan on entities: ${HEALTH[plans]}"
fi

if [ -n "${CONV[l_on]:-}" ]; then
    echo
    echo "l. status_notify: enqueue + dequeue + ack of one job (three transactions), $C clients, best of 3"
    echo "   interleaved rounds of $T s, pgbench -M prepared; ratio = on / off"
    printf '%-40s %14s %14s %8s\n' "operation" "off jobs/s" "on jobs/s" "ratio"
    printf '%s\n' "$(printf -- '-%.0s' {1..80})"
    printf '%-40s %14s %14s %7sx\n' "enqueue + dequeue + ack, $C clients" "${CONV[l_off]}" "${CONV[l_on]}" \
        "$(calc "${CONV[l_on]} / ${CONV[l_off]}" 2)"
    echo "   a listener taking one job's life received ${LISTEN_CHECK:-?} notifications (expected 3)"
fi

if [ -n "${SNAP[upd_cur]:-}" ]; then
    echo
    echo "n. snapshot_batch, 100 captures of 3 metrics per call, 1 client, best of 3 alternating rounds of $T s;"
    echo "   a database at 0.2 (no snapshot_metrics) against one at the current version; ratio = current / 0.2"
    printf '%-52s %14s %14s %8s\n' "captures" "0.2 /s" "current /s" "ratio"
    printf '%s\n' "$(printf -- '-%.0s' {1..95})"
    printf '%-52s %14s %14s %7sx\n' "of new entities (each opens its period)" "${SNAP[new_02]}" "${SNAP[new_cur]}" \
        "$(calc "${SNAP[new_cur]} / ${SNAP[new_02]}" 2)"
    printf '%-52s %14s %14s %7sx\n' "updating today's row of one of 10,000 entities" "${SNAP[upd_02]}" "${SNAP[upd_cur]}" \
        "$(calc "${SNAP[upd_cur]} / ${SNAP[upd_02]}" 2)"
fi

if [ -n "${LISTING[stat]:-}" ]; then
    read -r lm lp lx ln <<< "${LISTING[stat]}"
    echo
    echo "m. list_jobs: the newest 100 jobs of one group, ${LISTING[rows]};"
    echo "   latency of single calls, 1 client, pgbench -M prepared, a random group per call"
    printf '%-52s %10s %10s %10s %7s   %s\n' "call" "median ms" "p95 ms" "max ms" "calls" "target"
    printf '%s\n' "$(printf -- '-%.0s' {1..110})"
    printf '%-52s %10s %10s %10s %7s   %-9s %s\n' "list_jobs('listing', group_key => ..., lim => 100)" "$lm" "$lp" "$lx" "$ln" \
        "< $LISTING_TARGET_MS ms" "$(awk -v a="$lm" -v t="$LISTING_TARGET_MS" 'BEGIN { print (a < t ? "ok" : "MISSED") }')"
fi
