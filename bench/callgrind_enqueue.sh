#!/usr/bin/env bash
# What one call of conveyor's enqueue paths costs, against the raw floor's statements, counted on one
# backend under callgrind (deterministic, unlike wall time on a shared machine):
#     bash bench/callgrind_enqueue.sh
# Starts the scratch cluster (scripts/common.sh) with every server process under callgrind. For each
# case, pgbench -M prepared -c 1 runs N1 calls and then N2 calls, each run on a backend of its own;
# the difference of the two backends' instruction counts over N2 - N1 is the cost of one call
# (connecting, warming caches and planning cancel out), and so for the WAL written (pg_current_wal_lsn).
# Prints per case: instructions and WAL bytes per call and per job, and the functions whose inclusive
# instructions per call differ most between the two runs. The profiles stay in $CG_DIR
# (callgrind_annotate --inclusive=yes FILE).
#
# Environment:
#   CG_CASES   cases to run (default "raw_enqueue conv_enqueue fast_enqueue raw_batch conv_batch fast_batch")
#   CG_N1, CG_N2              calls of one job (default 200 and 600)
#   CG_BATCH_N1, CG_BATCH_N2  calls of a batch of 100 (default 20 and 60)
#   CG_TOP     functions listed per case (default 25)
#   CG_DIR     where the profiles go (default /tmp/conveyor-callgrind)
#   CONVEYOR_PGDATA / CONVEYOR_SOCKDIR / CONVEYOR_PORT / CONVEYOR_PGBIN   which scratch cluster
source "$(dirname "$0")/../scripts/common.sh"

CASES=${CG_CASES:-"raw_enqueue conv_enqueue fast_enqueue raw_batch conv_batch fast_batch"}
N1=${CG_N1:-200}; N2=${CG_N2:-600}; BN1=${CG_BATCH_N1:-20}; BN2=${CG_BATCH_N2:-60}
TOP=${CG_TOP:-25}
CG=${CG_DIR:-/tmp/conveyor-callgrind}
rm -rf "$CG"; mkdir -p "$CG/out"
cat > "$CG/postgres" <<WRAP
#!/bin/sh
exec valgrind --quiet --tool=callgrind --trace-children=no --callgrind-out-file=$CG/out/cg.%p $PGBIN/postgres "\$@"
WRAP
chmod 755 "$CG" "$CG/postgres"; chown -R postgres:postgres "$CG"
export CONVEYOR_POSTGRES="$CG/postgres"
ensure_packages
build_install
cluster_start
trap cluster_stop EXIT
LOG=$(dirname "$CONVEYOR_PGDATA")/server.log

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
# Only the measured backends leave profiles that matter; autovacuum would add noise to the WAL.
sql -c "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET autovacuum = off" \
    -c "ALTER SYSTEM SET log_disconnections = on" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '" \
    -c "SELECT pg_reload_conf()" >/dev/null
sql >/dev/null <<'SQL'
CREATE EXTENSION conveyor;
SELECT conveyor.create_queue('cg_all');
SELECT conveyor.create_queue('cg_fast', '{"event_trail": "failures", "notify": false}');
CREATE SCHEMA raw;
CREATE TABLE raw.jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SQL
BATCH=$(sql -c "SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('channel_id', 'UC' || g, 'n', g)))
                FROM generate_series(1, 100) g")

# run NAME SCRIPT CALLS QUEUE -> "instructions wal_bytes" of one backend running CALLS calls
run() {
    local name=$1 script=$2 calls=$3 queue=$4 lsn0 lsn1 pid f
    lsn0=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    PGAPPNAME="cg_$name" "$PGBIN/pgbench" -n -M prepared -c 1 -t "$calls" -f "$script" \
        -D queue="$queue" -D batch="$BATCH" >"$CG/pgbench.out" 2>&1 || { cat "$CG/pgbench.out" >&2; exit 1; }
    lsn1=$(sql -c "SELECT pg_current_wal_insert_lsn()")
    for _ in $(seq 1 600); do
        pid=$(sed -n "s/^.* \[\([0-9]*\)\] cg_$name LOG:  disconnection: .*/\1/p" "$LOG" | tail -1)
        f=$CG/out/cg.$pid
        [ -n "$pid" ] && [ -s "$f" ] && grep -q '^totals:\|^summary:' "$f" && break
        sleep 0.5
    done
    mv "$f" "$CG/$name.$calls.callgrind"
    echo "$(sed -n 's/^\(totals\|summary\): *\([0-9]*\).*/\2/p' "$CG/$name.$calls.callgrind" | head -1)" \
         "$(sql -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")"
}

script_of() {
    case $1 in
        raw_enqueue) echo "$ROOT/bench/peers/pgbench/raw_enqueue.sql" ;;
        raw_batch) echo "$ROOT/bench/peers/pgbench/raw_enqueue_batch.sql" ;;
        *_enqueue) echo "$ROOT/bench/pgbench/enqueue.sql" ;;
        *_batch) echo "$ROOT/bench/pgbench/enqueue_batch.sql" ;;
    esac
}

printf '%-14s %14s %14s %12s %12s\n' case "instr/call" "instr/job" "WAL B/call" "WAL B/job"
for c in $CASES; do
    case $c in *_batch) a=$BN1; b=$BN2; per=100 ;; *) a=$N1; b=$N2; per=1 ;; esac
    case $c in conv_*) q=cg_all ;; fast_*) q=cg_fast ;; *) q=- ;; esac
    read -r i1 w1 <<< "$(run "$c" "$(script_of "$c")" "$a" "$q")"
    read -r i2 w2 <<< "$(run "$c" "$(script_of "$c")" "$b" "$q")"
    awk -v c="$c" -v i1="$i1" -v i2="$i2" -v w1="$w1" -v w2="$w2" -v n="$((b - a))" -v per="$per" 'BEGIN {
        printf "%-14s %14d %14d %12d %12d\n", c, (i2 - i1) / n, (i2 - i1) / n / per, (w2 - w1) / n, (w2 - w1) / n / per }'
done

# The functions whose inclusive cost per call differs most between the two runs of each case.
for c in $CASES; do
    case $c in *_batch) a=$BN1; b=$BN2 ;; *) a=$N1; b=$N2 ;; esac
    echo
    echo "$c: inclusive instructions per call (difference of $b and $a calls), top $TOP"
    python3 - "$CG/$c.$a.callgrind" "$CG/$c.$b.callgrind" "$((b - a))" "$TOP" <<'PY'
import re, subprocess, sys
def inclusive(path):  # the table of functions (the lines after its "file:function" header) only
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", path],
                         capture_output=True, text=True).stdout.splitlines()
    start = next(i for i, l in enumerate(out) if l.rstrip().endswith("file:function")) + 2
    cost = {}
    for line in out[start:]:
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*?)(?: \[[^\]]*\])?$", line)
        if not m:
            break
        fn = m.group(2).split(":", 1)[1] if ":" in m.group(2) else m.group(2)
        cost[fn] = max(cost.get(fn, 0), int(m.group(1).replace(",", "")))
    return cost
a, b = inclusive(sys.argv[1]), inclusive(sys.argv[2])
n, top = int(sys.argv[3]), int(sys.argv[4])
diff = sorted(((b.get(f, 0) - a.get(f, 0)) / n, f) for f in set(a) | set(b))
for d, f in list(reversed(diff))[:top]:
    print(f"  {d:12,.0f}  {f[:110]}")
PY
done
