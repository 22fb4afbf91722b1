#!/usr/bin/env bash
# Where conveyor's queue calls spend their instructions, counted by valgrind's callgrind on one backend
# (deterministic, unlike wall time on a shared machine), and the WAL bytes they write:
#     bash bench/callgrind.sh [claim|enqueue]      (or CG_WORKLOAD=claim|enqueue; default claim)
#
# Builds and installs conveyor, then starts a scratch cluster like the test suite (scripts/common.sh)
# with every server process under callgrind, synchronous_commit off and autovacuum off, a queue 'conv'
# with the defaults, a queue 'fast' with event_trail 'failures' and notify off, and the raw floor's
# table of bench/peers. Each workload runs twice, each run on a pgbench connection of its own (-c 1,
# -M prepared): the difference of the two backends' counts over the difference of calls is the cost
# of one call or job without the connection's start and end (plans made once cancel out too), and so
# for the WAL written (pg_current_wal_insert_lsn() around each run).
#
# claim: conveyor's worker cycle (dequeue 1, then ack: bench/pgbench/cycle.sql) and its batch cycle
#   (dequeue 100, then ack_many: cycle_many.sql) on both queues, and the raw floor (one DELETE ... SKIP
#   LOCKED RETURNING, of 1 and of 100). Prints per job: instructions in total and in named parts
#   (inclusive counts of server functions, by bench/callgrind_diff.py), and WAL bytes.
#   CG_SMALL, CG_LARGE  cycles of one job (default 100 and 300; batch cycles run a tenth of them)
#   CG_TOP=N            also lists the N functions with the largest inclusive counts per job
#   CG_ONLY=TEXT        measures only the workloads whose label contains TEXT
#   CG_KEEP=1           keeps the callgrind files
# enqueue: conveyor.enqueue and enqueue_batch (bench/pgbench/enqueue.sql, enqueue_batch.sql, batches of
#   100) on both queues, and the raw floor's INSERTs (bench/peers/pgbench/raw_enqueue*.sql). Prints per
#   case: instructions and WAL bytes per call and per job, then the functions whose inclusive
#   instructions per call grow most between the two runs. The callgrind files are kept.
#   CG_CASES   cases to run (default "raw_enqueue conv_enqueue fast_enqueue raw_batch conv_batch fast_batch")
#   CG_N1, CG_N2              calls of one job (default 200 and 600)
#   CG_BATCH_N1, CG_BATCH_N2  calls of a batch of 100 (default 20 and 60)
#   CG_TOP     functions listed per case (default 25)
#
# Both: CONVEYOR_PGDATA, CONVEYOR_SOCKDIR, CONVEYOR_PORT, CONVEYOR_PGBIN as for the test suite (a
# cluster of its own: it is replaced); CG_SETUP=SQL runs after the set-up (an experiment: drop an index
# to see what it costs); CG_DIR is where the callgrind files go (default
# $(dirname CONVEYOR_PGDATA)/callgrind; callgrind_annotate --inclusive=yes FILE reads one).
source "$(dirname "$0")/../scripts/common.sh"

WORKLOAD=${1:-${CG_WORKLOAD:-claim}}
case $WORKLOAD in
    claim|enqueue) ;;
    *) echo "usage: bash bench/callgrind.sh [claim|enqueue]" >&2; exit 2 ;;
esac
HERE=$ROOT/bench
CG=${CG_DIR:-$(dirname "$CONVEYOR_PGDATA")/callgrind}
rm -rf "$CG"; mkdir -p "$CG/out"
cat > "$CG/postgres" <<WRAP
#!/bin/sh
exec valgrind --quiet --tool=callgrind --dump-instr=no --trace-children=no \\
    --callgrind-out-file=$CG/out/cg.%p $PGBIN/postgres "\$@"
WRAP
chmod 755 "$CG" "$CG/postgres"; chown -R postgres:postgres "$CG"
ensure_packages
build_install
CONVEYOR_POSTGRES="$CG/postgres" cluster_start
trap cluster_stop EXIT
LOG=$(dirname "$CONVEYOR_PGDATA")/server.log

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
# Only the measured backends leave profiles that matter (a disconnection's log line, with the
# application name, says which); autovacuum would add noise to the WAL.
sql -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET autovacuum = off" \
    -c "ALTER SYSTEM SET log_disconnections = on" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '" \
    -c "SELECT pg_reload_conf()" >/dev/null
sql >/dev/null <<'SQL'
CREATE EXTENSION conveyor;
SELECT conveyor.create_queue('conv');
SELECT conveyor.create_queue('fast', '{"event_trail": "failures", "notify": false}');
CREATE SCHEMA raw;
CREATE TABLE raw.jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SQL
# An experiment's own change to the schema (e.g. an index dropped, to measure what it costs).
[ -z "${CG_SETUP:-}" ] || sql -c "$CG_SETUP" >/dev/null

# run NAME SCRIPT CALLS QUEUE [pgbench options] -> "FILE WAL_BYTES": one backend running CALLS
# transactions of SCRIPT, its callgrind file (kept as $CG/NAME.CALLS.callgrind) and the WAL it wrote.
run() {
    local name=$1 script=$2 calls=$3 queue=$4 lsn0 lsn1 pid f
    shift 4
    lsn0=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    PGAPPNAME="cg_$name" "$PGBIN/pgbench" -n -M prepared -c 1 -t "$calls" -f "$script" -D queue="$queue" "$@" \
        >"$CG/pgbench.out" 2>&1 || { cat "$CG/pgbench.out" >&2; exit 1; }
    lsn1=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    for _ in $(seq 1 600); do  # callgrind writes the file when the backend exits
        pid=$(sed -n "s/^.* \[\([0-9]*\)\] cg_$name LOG:  disconnection: .*/\1/p" "$LOG" | tail -1)
        f=$CG/out/cg.$pid
        [ -n "$pid" ] && [ -s "$f" ] && grep -q '^totals:\|^summary:' "$f" && break
        sleep 0.5
    done
    mv "$f" "$CG/$name.$calls.callgrind"
    echo "$CG/$name.$calls.callgrind $(sql -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")"
}

claim_fill() {  # QUEUE JOBS (QUEUE raw: the raw floor's table)
    case $1 in
        raw) sql -c "INSERT INTO raw.jobs (payload) SELECT jsonb_build_object('channel_id', 'UC' || g, 'n', g) FROM generate_series(1, $2) g" >/dev/null ;;
        *) sql -c "SELECT conveyor.enqueue_batch('$1', (SELECT jsonb_agg(jsonb_build_object('payload',
                     jsonb_build_object('channel_id', 'UC' || g, 'n', g))) FROM generate_series(1, $2) g))" >/dev/null ;;
    esac
}

claim_measure() {  # LABEL NAME QUEUE SCRIPT JOBS_PER_TRANSACTION
    local label=$1 name=$2 queue=$3 script=$4 per=$5 small=$SMALL large=$LARGE f1 f2 w1 w2
    [ -z "${CG_ONLY:-}" ] || [[ "$label" == *"$CG_ONLY"* ]] || return 0
    [ "$per" -gt 1 ] && { small=$((SMALL / 10)); large=$((LARGE / 10)); }
    claim_fill "$queue" $(((small + large) * per + 100))
    read -r f1 w1 <<< "$(run "$name" "$script" "$small" "$queue")"
    read -r f2 w2 <<< "$(run "$name" "$script" "$large" "$queue")"
    local jobs=$(((large - small) * per))
    printf '%s\n' "$label"
    python3 "$HERE/callgrind_diff.py" "$f1" "$f2" "$jobs" "${CG_TOP:-0}"
    printf '  %-50s %10d\n' "WAL bytes" $(( (w2 - w1) / jobs ))
    [ "${CG_KEEP:-0}" = 1 ] || rm -f "$f1" "$f2"
}

claim_workload() {
    SMALL=${CG_SMALL:-100}
    LARGE=${CG_LARGE:-300}
    echo "instructions (callgrind) and WAL bytes per job; difference of $SMALL and $LARGE cycles of one job"
    echo "(a tenth of them for batches of 100); synchronous_commit off; inclusive counts of the named functions"
    claim_measure "raw floor, claim 1 (DELETE ... SKIP LOCKED)" raw_claim raw "$HERE/peers/pgbench/raw_claim.sql" 1
    claim_measure "conveyor defaults, dequeue 1 + ack" conv_cycle conv "$HERE/pgbench/cycle.sql" 1
    claim_measure "conveyor fast, dequeue 1 + ack" fast_cycle fast "$HERE/pgbench/cycle.sql" 1
    claim_measure "raw floor, claim 100 (DELETE ... SKIP LOCKED)" raw_claim_many raw "$HERE/peers/pgbench/raw_claim_many.sql" 100
    claim_measure "conveyor defaults, dequeue 100 + ack_many" conv_cycle_many conv "$HERE/pgbench/cycle_many.sql" 100
    claim_measure "conveyor fast, dequeue 100 + ack_many" fast_cycle_many fast "$HERE/pgbench/cycle_many.sql" 100
}

enqueue_script() {
    case $1 in
        raw_enqueue) echo "$HERE/peers/pgbench/raw_enqueue.sql" ;;
        raw_batch) echo "$HERE/peers/pgbench/raw_enqueue_batch.sql" ;;
        *_enqueue) echo "$HERE/pgbench/enqueue.sql" ;;
        *_batch) echo "$HERE/pgbench/enqueue_batch.sql" ;;
    esac
}

enqueue_workload() {
    local cases=${CG_CASES:-"raw_enqueue conv_enqueue fast_enqueue raw_batch conv_batch fast_batch"}
    local n1=${CG_N1:-200} n2=${CG_N2:-600} bn1=${CG_BATCH_N1:-20} bn2=${CG_BATCH_N2:-60} top=${CG_TOP:-25}
    local batch c a b per q f1 f2 w1 w2 i1 i2
    batch=$(sql -c "SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('channel_id', 'UC' || g, 'n', g)))
                    FROM generate_series(1, 100) g")
    printf '%-14s %14s %14s %12s %12s\n' case "instr/call" "instr/job" "WAL B/call" "WAL B/job"
    for c in $cases; do
        case $c in *_batch) a=$bn1; b=$bn2; per=100 ;; *) a=$n1; b=$n2; per=1 ;; esac
        case $c in conv_*) q=conv ;; fast_*) q=fast ;; *) q=- ;; esac
        read -r f1 w1 <<< "$(run "$c" "$(enqueue_script "$c")" "$a" "$q" -D batch="$batch")"
        read -r f2 w2 <<< "$(run "$c" "$(enqueue_script "$c")" "$b" "$q" -D batch="$batch")"
        i1=$(sed -n 's/^\(totals\|summary\): *\([0-9]*\).*/\2/p' "$f1" | head -1)
        i2=$(sed -n 's/^\(totals\|summary\): *\([0-9]*\).*/\2/p' "$f2" | head -1)
        awk -v c="$c" -v i1="$i1" -v i2="$i2" -v w1="$w1" -v w2="$w2" -v n="$((b - a))" -v per="$per" 'BEGIN {
            printf "%-14s %14d %14d %12d %12d\n", c, (i2 - i1) / n, (i2 - i1) / n / per, (w2 - w1) / n, (w2 - w1) / n / per }'
    done
    # The functions whose inclusive cost per call differs most between the two runs of each case.
    for c in $cases; do
        case $c in *_batch) a=$bn1; b=$bn2 ;; *) a=$n1; b=$n2 ;; esac
        echo
        echo "$c: inclusive instructions per call (difference of $b and $a calls), top $top"
        python3 "$HERE/callgrind_diff.py" --top-only "$CG/$c.$a.callgrind" "$CG/$c.$b.callgrind" "$((b - a))" "$top"
    done
}

"${WORKLOAD}_workload"
