#!/usr/bin/env bash
# Where a claim + ack spends its instructions: callgrind counts and WAL bytes per job.
#     bash bench/callgrind.sh
#
# Starts a scratch cluster like the test suite (scripts/common.sh) with every server process under
# valgrind's callgrind, synchronous_commit off and autovacuum off, and runs, each on its own pgbench
# connection (-c 1, -M prepared), CG_SMALL and then CG_LARGE transactions of: conveyor's worker
# cycle (dequeue 1, then ack: bench/pgbench/cycle.sql) and its batch cycle (dequeue 100, then
# ack_many: cycle_many.sql) on a queue with the defaults and on one with event_trail 'failures' and
# notify off; and the raw floor of bench/peers (one DELETE ... SKIP LOCKED RETURNING, of 1 and of
# 100). The difference of the two runs of a workload, divided by the jobs between them, is its cost
# per job without the connection's start and end. Prints per job: instructions in total and in the
# parts named below (inclusive counts of the server functions), and WAL bytes (pg_current_wal_lsn
# around each run), by bench/callgrind_diff.py. Deterministic, unlike wall time on a shared machine.
#
# Uses the installed conveyor (build_install first). Environment: CONVEYOR_PGDATA, CONVEYOR_SOCKDIR,
# CONVEYOR_PORT, CONVEYOR_PGBIN as for the test suite (a cluster of its own: it is replaced);
# CG_SMALL, CG_LARGE (cycles of one job; default 100 and 300; batch cycles run a tenth of them);
# CG_TOP=N also lists the N functions with the largest inclusive counts per job;
# CG_SETUP=SQL runs after the set-up (an experiment: drop an index to see what it costs);
# CG_ONLY=TEXT measures only the workloads whose label contains TEXT; CG_KEEP=1 keeps the callgrind
# files (in $(dirname CONVEYOR_PGDATA)/callgrind).
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"

SMALL=${CG_SMALL:-100}
LARGE=${CG_LARGE:-300}
OUT=$(dirname "$CONVEYOR_PGDATA")/callgrind
rm -rf "$OUT"; mkdir -p "$OUT/files"
cat > "$OUT/postgres" <<WRAP
#!/bin/sh
exec valgrind --quiet --tool=callgrind --dump-instr=no --trace-children=no \\
    --callgrind-out-file=$OUT/files/cg.%p $PGBIN/postgres "\$@"
WRAP
chmod 755 "$OUT" "$OUT/postgres"
chown -R postgres:postgres "$OUT"
CONVEYOR_POSTGRES="$OUT/postgres" cluster_start
trap cluster_stop EXIT

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
sql -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET autovacuum = off" -c "SELECT pg_reload_conf()" >/dev/null
sql >/dev/null <<'SQL'
CREATE EXTENSION conveyor;
SELECT conveyor.create_queue('conv');
SELECT conveyor.create_queue('fast', '{"event_trail": "failures", "notify": false}');
CREATE SCHEMA raw;
CREATE TABLE raw.jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SQL
# An experiment's own change to the schema (e.g. an index dropped, to measure what it costs).
[ -z "${CG_SETUP:-}" ] || sql -c "$CG_SETUP" >/dev/null

fill() {  # SYSTEM JOBS
    case $1 in
        raw) sql -c "INSERT INTO raw.jobs (payload) SELECT jsonb_build_object('channel_id', 'UC' || g, 'n', g) FROM generate_series(1, $2) g" >/dev/null ;;
        *) sql -c "SELECT conveyor.enqueue_batch('$1', (SELECT jsonb_agg(jsonb_build_object('payload',
                     jsonb_build_object('channel_id', 'UC' || g, 'n', g))) FROM generate_series(1, $2) g))" >/dev/null ;;
    esac
}

# One run: SYSTEM SCRIPT TRANSACTIONS -> the callgrind file of its backend, and its WAL bytes.
run() {
    local sys=$1 script=$2 n=$3 before after lsn0 lsn1 f
    lsn0=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    before=$(ls "$OUT/files")
    "$PGBIN/pgbench" -n -c 1 -t "$n" -M prepared -f "$script" -D queue="$sys" postgres >"$OUT/pgbench.log" 2>&1 \
        || { cat "$OUT/pgbench.log"; exit 1; }
    for _ in $(seq 1 100); do  # callgrind writes the file when the backend exits
        after=$(comm -13 <(echo "$before") <(ls "$OUT/files"))
        [ -n "$after" ] && break
        sleep 0.2
    done
    sleep 2
    lsn1=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    # The run's backend: the largest of the new files (a psql session's may land among them).
    f=$(cd "$OUT/files" && comm -13 <(echo "$before") <(ls) | xargs grep -m1 -H '^summary:' \
        | sort -t' ' -k2 -n | tail -1 | cut -d: -f1)
    echo "$OUT/files/$f $(sql -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')")"
}

measure() {  # LABEL SYSTEM SCRIPT JOBS_PER_TRANSACTION
    local label=$1 sys=$2 script=$3 per=$4 small=$SMALL large=$LARGE
    [ -z "${CG_ONLY:-}" ] || [[ "$label" == *"$CG_ONLY"* ]] || return 0
    [ "$per" -gt 1 ] && { small=$((SMALL / 10)); large=$((LARGE / 10)); }
    fill "$sys" $(((small + large) * per + 100))
    read -r f1 w1 <<< "$(run "$sys" "$script" "$small")"
    read -r f2 w2 <<< "$(run "$sys" "$script" "$large")"
    local jobs=$(((large - small) * per))
    printf '%s\n' "$label"
    python3 "$HERE/callgrind_diff.py" "$f1" "$f2" "$jobs" "${CG_TOP:-0}"
    printf '  %-50s %10d\n' "WAL bytes" $(( (${w2%.*} - ${w1%.*}) / jobs ))
    [ "${CG_KEEP:-0}" = 1 ] || rm -f "$f1" "$f2"
}

HERE=$ROOT/bench
echo "instructions (callgrind) and WAL bytes per job; difference of $SMALL and $LARGE cycles of one job"
echo "(a tenth of them for batches of 100); synchronous_commit off; inclusive counts of the named functions"
measure "raw floor, claim 1 (DELETE ... SKIP LOCKED)" raw "$HERE/peers/pgbench/raw_claim.sql" 1
measure "conveyor defaults, dequeue 1 + ack" conv "$HERE/pgbench/cycle.sql" 1
measure "conveyor fast, dequeue 1 + ack" fast "$HERE/pgbench/cycle.sql" 1
measure "raw floor, claim 100 (DELETE ... SKIP LOCKED)" raw "$HERE/peers/pgbench/raw_claim_many.sql" 100
measure "conveyor defaults, dequeue 100 + ack_many" conv "$HERE/pgbench/cycle_many.sql" 100
measure "conveyor fast, dequeue 100 + ack_many" fast "$HERE/pgbench/cycle_many.sql" 100
