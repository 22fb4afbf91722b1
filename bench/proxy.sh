#!/usr/bin/env bash
# Shards behind PL/Proxy:  bash bench/proxy.sh
#
# The cost of the proxy hop, as ratios measured in one run: the same pgbench scripts against one
# conveyor shard directly and through a conveyor_proxy front (BENCH_SHARDS shards behind it, 1 by
# default: then both sides end on the same server and the ratio is the hop alone). Three workloads:
# enqueue without a key (round robin), enqueue with a group key (the directory lookup), and the
# worker cycle dequeue + ack. Rounds alternate direct and front; each side's median is reported.
# See bench/README.md, "Shards behind PL/Proxy", for the figures and the scaling argument.
#
# Environment:
#   BENCH_SECONDS   seconds per measurement (default 10)
#   BENCH_CLIENTS   pgbench clients (default 4)
#   BENCH_ROUNDS    rounds per side (default 3)
#   BENCH_SHARDS    shards behind the front (default 1)
#   CONVEYOR_PROXY_PORTS  "FRONT SHARD1 ..." (default 55620 ...)
source "$(dirname "$0")/../scripts/common.sh"
set +e
source "$ROOT/test/shell/lib/tap.bash"
source "$ROOT/test/shell/lib/shards.bash"
set -e

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_SHARDS=${BENCH_SHARDS:-1}
PGBENCH=$PGBIN/pgbench
HERE=$ROOT/bench
DB=conveyor_bench_proxy

ensure_packages
build_install
WORK=$(mktemp -d /tmp/conveyor-bench-proxy.XXXXXX)
chmod 755 "$WORK"
SHARD_BASE=$WORK
trap 'stop_shard_clusters; rm -rf "$WORK"' EXIT
# As bench/run.sh's cluster: durable commits on every server.
SHARD_EXTRA_CONF=("fsync = on" "synchronous_commit = on" "shared_buffers = 256MB" "max_connections = 100")
log "starting $BENCH_SHARDS shard(s) and a front"
start_sharded "$BENCH_SHARDS" "$DB" || { echo "could not start the clusters" >&2; exit 1; }

front() { psql -X -q -At -v ON_ERROR_STOP=1 -U postgres -h "$SHARD_BASE/front/sock" -p "$(cluster_port front)" -d $DB "$@"; }
front -c "SELECT conveyor.create_queue('bench')" >/dev/null

# pgbench TARGET SCRIPT: jobs/s (transactions/s of the script; a cycle is two transactions).
run_pgbench() {
    local target=$1 script=$2 host port
    host=$SHARD_BASE/$target/sock
    port=$(cluster_port "$target")
    "$PGBENCH" -n -M prepared -j 2 -c "$BENCH_CLIENTS" -T "$BENCH_SECONDS" -U postgres -h "$host" -p "$port" \
        -D queue=bench -f "$script" $DB 2>&1 | sed -nE 's/^tps = ([0-9.]+) .*/\1/p'
}
# Empties the queue on every shard between measurements, so each starts alike.
reset_queue() {
    local i
    for i in $(seq 1 "$BENCH_SHARDS"); do
        sq shard$i $DB "SELECT conveyor.drop_queue('bench', true)" "SELECT conveyor.create_queue('bench')" >/dev/null
    done
    front -c "TRUNCATE conveyor_proxy.groups" >/dev/null
}
# Fills every shard with N ready jobs each (directly, in batches).
fill() {
    local i
    for i in $(seq 1 "$BENCH_SHARDS"); do
        sq shard$i $DB "SELECT count(*) FROM generate_series(0, $1 / 5000 - 1) b,
                        conveyor.enqueue_batch('bench', (SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', b * 5000 + n)))
                                                         FROM generate_series(1, 5000) n))" >/dev/null
    done
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }

declare -A RESULT
measure() {  # measure NAME SCRIPT CYCLE(0/1)
    local name=$1 script=$2 cycle=$3 r side tps fill_n d=() p=()
    # A backlog larger than the fastest side can drain in BENCH_SECONDS (per shard).
    fill_n=$((BENCH_SECONDS * 3000 + 5000))
    for r in $(seq 1 "$BENCH_ROUNDS"); do
        for side in shard1 front; do
            reset_queue
            [ "$cycle" = 1 ] && fill $fill_n
            tps=$(run_pgbench $side "$script")
            [ "$cycle" = 1 ] && tps=$(calc "$tps / 2" 1)   # two transactions per job
            if [ $side = shard1 ]; then d+=("$tps"); else p+=("$tps"); fi
            log "$name round $r $side: $(calc "$tps" 1) jobs/s"
        done
    done
    RESULT[$name,direct]=$(calc "$(printf '%s\n' "${d[@]}" | median)" 1)
    RESULT[$name,front]=$(calc "$(printf '%s\n' "${p[@]}" | median)" 1)
}

measure "enqueue, no key" "$HERE/pgbench/enqueue.sql" 0
measure "enqueue, group key" "$HERE/pgbench/proxy_enqueue_group.sql" 0
measure "dequeue + ack" "$HERE/pgbench/cycle.sql" 1

echo
echo "Shards behind PL/Proxy: $BENCH_CLIENTS clients, ${BENCH_SECONDS} s x $BENCH_ROUNDS rounds per side (medians),"
echo "one shard direct against a front with $BENCH_SHARDS shard(s) behind it, all on this machine ($(nproc) cores)"
printf '%-22s %14s %14s %10s\n' "workload" "direct jobs/s" "front jobs/s" "front/direct"
for name in "enqueue, no key" "enqueue, group key" "dequeue + ack"; do
    printf '%-22s %14s %14s %9sx\n' "$name" "${RESULT[$name,direct]}" "${RESULT[$name,front]}" \
        "$(calc "${RESULT[$name,front]} / ${RESULT[$name,direct]}" 2)"
done
