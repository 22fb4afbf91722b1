#!/usr/bin/env bash
# conveyor against its peers:  bash bench/peers/run.sh
#
# Installs the peers from their registries at run time (PgQ from Debian, graphile-worker and pg-boss
# from npm into a scratch directory outside the repository; pgmq only where a registry this machine
# reaches ships it), starts one scratch cluster like the test suite (scripts/common.sh) with
# synchronous_commit = off for every system, and measures, interleaved (every system's repetition 1,
# then every system's repetition 2, ...): single enqueue, claim + ack of one job, enqueue in batches
# of 100, claim + ack in batches of 100, for the raw SQL floor, each peer and conveyor (its defaults,
# and event_trail 'failures' + notify off), plus SELECT 1 as the ceiling. Prints one table: median
# jobs/s, spread (min-max) and the ratio to the floor. See bench/README.md, "Peers".
#
# Environment:
#   PEERS_SECONDS    seconds per measurement (default 10)
#   PEERS_REPS       repetitions of every measurement (default 3)
#   PEERS_CLIENTS    clients (producers or workers) per measurement (default 4)
#   PEERS_NODE_DIR   where npm installs the Node peers (default /tmp/conveyor-peers)
#   PEERS_BACKLOG    ready jobs at the start of a claim run of one job (default 100000), and
#   PEERS_BACKLOG_BATCH  of batches of 100 (default 800000); a system that ran dry gets 3 times more
#   PEERS_SYSTEMS    columns to measure (default "raw pgmq graphile pgq conv fast boss nraw")
#   PEERS_OPS        rows to measure (default "enqueue claim enqueue_batch claim_many")
#   CONVEYOR_PGDATA / CONVEYOR_SOCKDIR / CONVEYOR_PORT / CONVEYOR_PGBIN   which scratch cluster
source "$(dirname "$0")/../../scripts/common.sh"

SECS=${PEERS_SECONDS:-10}
REPS=${PEERS_REPS:-3}
C=${PEERS_CLIENTS:-4}
NODE_DIR=${PEERS_NODE_DIR:-/tmp/conveyor-peers}
GW_VERSION=0.18.0      # graphile-worker: the newest on npm
BOSS_VERSION=10.4.2    # pg-boss: the newest whose engines admit Node 20 (11 and 12 want Node 22)
PGQ_PACKAGE=postgresql-15-pgq3
PGMQ_PACKAGE=postgresql-15-pgmq
HERE=$ROOT/bench/peers
PGBENCH=$PGBIN/pgbench
WORK=$(mktemp -d /tmp/conveyor-peers-run.XXXXXX)
MODULES=$NODE_DIR/node_modules

# ---- the peers, from their registries ----------------------------------------------------------------

dpkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_updated=0
apt_install() {
    [ "$apt_updated" = 1 ] || { as_root apt-get update -qq; apt_updated=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# A Debian extension package installs into /usr; a PostgreSQL elsewhere (CONVEYOR_PGBIN) gets a copy.
copy_extension_files() {  # PACKAGE
    local share lib f
    share=$("$PGBIN/pg_config" --sharedir); lib=$("$PGBIN/pg_config" --pkglibdir)
    [ "$share" = /usr/share/postgresql/15 ] && return 0
    for f in $(dpkg -L "$1" | grep -E '^/usr/share/postgresql/15/extension/.|^/usr/lib/postgresql/15/lib/[^/]+\.so$'); do
        case $f in
            /usr/share/*) as_root install -m 644 "$f" "$share/extension/" ;;
            *) as_root install -m 755 "$f" "$lib/" ;;
        esac
    done
}
npm_version() { node -p "require('$MODULES/$1/package.json').version" 2>/dev/null || true; }

install_peers() {
    if ! dpkg_installed "$PGQ_PACKAGE"; then log "installing $PGQ_PACKAGE"; apt_install "$PGQ_PACKAGE"; fi
    copy_extension_files "$PGQ_PACKAGE"
    PGMQ_MISSING=""
    if dpkg_installed "$PGMQ_PACKAGE" || { [ -n "$(apt-cache policy "$PGMQ_PACKAGE" 2>/dev/null | sed -n 's/^ *Candidate: *\([^(].*\)$/\1/p')" ] \
            && apt_install "$PGMQ_PACKAGE"; }; then
        copy_extension_files "$PGMQ_PACKAGE"
    else
        # Neither Debian (bookworm) nor npm ships pgmq's SQL: npm's "pgmq" is another project and
        # pgmq-js is a client without the extension's SQL.
        PGMQ_MISSING="not installable here"
    fi
    if [ "$(npm_version graphile-worker)" != "$GW_VERSION" ] || [ "$(npm_version pg-boss)" != "$BOSS_VERSION" ]; then
        log "installing graphile-worker@$GW_VERSION and pg-boss@$BOSS_VERSION into $NODE_DIR"
        mkdir -p "$NODE_DIR"
        # graphile-worker 0.18 declares Node >= 22.18; here only its migrations run on Node (20).
        npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
            "graphile-worker@$GW_VERSION" "pg-boss@$BOSS_VERSION" >/dev/null 2>&1 \
            || { log "npm install failed"; exit 1; }
    fi
}

setup_all            # packages (Node among them), conveyor built and installed, a fresh cluster
cleanup_on_exit "$WORK"
install_peers

export PGDATABASE=peers_bench
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
note() { printf '  %-64s %s\n' "$1" "$2" >&2; }

sql -d postgres -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
sql -d postgres -c "CREATE DATABASE peers_bench"

# ---- schemas: conveyor, the raw floor, PgQ, pgmq, graphile-worker, pg-boss ---------------------------

sql >/dev/null <<'SQL'
CREATE EXTENSION conveyor;
SELECT conveyor.create_queue(q) FROM unnest(ARRAY['conv_enqueue', 'conv_enqueue_batch', 'conv_claim', 'conv_claim_many']) q;
SELECT conveyor.create_queue(q, '{"event_trail": "failures", "notify": false}')
  FROM unnest(ARRAY['fast_enqueue', 'fast_enqueue_batch', 'fast_claim', 'fast_claim_many']) q;
-- The raw floor: one table, a key, the payload; nothing else.
CREATE SCHEMA raw;
CREATE TABLE raw.jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE EXTENSION pgq;
SQL
[ -n "$PGMQ_MISSING" ] || sql -c "CREATE EXTENSION pgmq" \
    -c "SELECT pgmq.create(q) FROM unnest(ARRAY['pgmq_enqueue', 'pgmq_enqueue_batch', 'pgmq_claim', 'pgmq_claim_many']) q" >/dev/null
CONNINFO="postgres:///$PGDATABASE?host=$PGHOST&port=$PGPORT&user=$PGUSER"
node "$MODULES/graphile-worker/dist/cli.js" --schema-only -c "$CONNINFO" >/dev/null
sql -c "INSERT INTO graphile_worker._private_tasks (identifier) VALUES ('bench')"
GW_TASKS="{$(sql -c "SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'bench'")}"
node "$HERE/graphile_sql.mjs" "$MODULES" "$WORK"
node "$HERE/node_driver.mjs" "$MODULES" pgboss setup >/dev/null
BATCH=$(sql -c "SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('channel_id', 'UC' || g, 'n', g)))
                FROM generate_series(1, 100) g")

# ---- systems -------------------------------------------------------------------------------------------
# Each system: its pgbench script per operation (or the Node driver), its queue per operation, how to
# prefill it, and how many of its jobs are ready.

SYSTEMS=${PEERS_SYSTEMS:-"raw pgmq graphile pgq conv fast boss nraw"}
declare -A LABEL=([raw]="raw floor" [pgmq]="pgmq" [graphile]="graphile-worker ${GW_VERSION%.*}" [pgq]="PgQ 3.5"
    [conv]="conveyor defaults" [fast]="conveyor fast" [boss]="pg-boss ${BOSS_VERSION%.*}" [nraw]="raw floor (node)")

script_of() {  # SYSTEM OP -> the pgbench script
    case $1 in
        raw) echo "$HERE/pgbench/raw_$2.sql" ;;
        conv|fast) case $2 in enqueue) echo "$ROOT/bench/pgbench/enqueue.sql" ;; enqueue_batch) echo "$ROOT/bench/pgbench/enqueue_batch.sql" ;;
                              claim) echo "$ROOT/bench/pgbench/cycle.sql" ;; claim_many) echo "$ROOT/bench/pgbench/cycle_many.sql" ;; esac ;;
        graphile) case $2 in claim*) echo "$WORK/gw_$2.sql" ;; *) echo "$HERE/pgbench/gw_$2.sql" ;; esac ;;
        pgq) case $2 in claim*) echo "$HERE/pgbench/pgq_claim.sql" ;; *) echo "$HERE/pgbench/pgq_$2.sql" ;; esac ;;
        pgmq) echo "$HERE/pgbench/pgmq_$2.sql" ;;
    esac
}
queue_of() { case $1 in raw|nraw|graphile) echo "-" ;; boss) echo "peers_$2" ;; *) echo "${1}_$2" ;; esac; }

ready_count() {  # SYSTEM QUEUE
    case $1 in
        raw|nraw) sql -c "SELECT count(*) FROM raw.jobs" ;;
        conv|fast) sql -c "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = '$2' AND j.state = 'ready'" ;;
        graphile) sql -c "SELECT count(*) FROM graphile_worker._private_jobs WHERE locked_at IS NULL" ;;
        pgmq) sql -c "SELECT count(*) FROM pgmq.q_$2 WHERE vt <= now()" ;;
        boss) sql -c "SELECT count(*) FROM pgboss.job WHERE name = '$2' AND state = 'created'" ;;
        # Events past the consumer's position: the event sequence at the newest tick less that at the
        # consumer's last tick (every event was ticked by the fill).
        pgq) sql -c "SELECT coalesce((SELECT max(t.tick_event_seq) FROM pgq.tick t WHERE t.tick_queue = q.queue_id) - lt.tick_event_seq, 0)
                     FROM pgq.queue q JOIN pgq.subscription s ON s.sub_queue = q.queue_id
                     JOIN pgq.tick lt ON lt.tick_queue = q.queue_id AND lt.tick_id = s.sub_last_tick WHERE q.queue_name = '$2'" ;;
    esac
}
# Jobs left claimed (leased) after a run: every claim must have been acknowledged.
leased_count() {  # SYSTEM QUEUE
    case $1 in
        conv|fast) sql -c "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = '$2' AND j.state = 'running'" ;;
        graphile) sql -c "SELECT count(*) FROM graphile_worker._private_jobs WHERE locked_at IS NOT NULL" ;;
        boss) sql -c "SELECT count(*) FROM pgboss.job WHERE name = '$2' AND state = 'active'" ;;
        *) echo 0 ;;
    esac
}

# Every measurement starts from empty tables (queues and their options stay), then its prefill, then
# VACUUM ANALYZE and CHECKPOINT: nobody pays for the previous run's garbage or dirty buffers.
reset_all() {
    sql -c "TRUNCATE conveyor.jobs, conveyor.job_history, conveyor.job_events, conveyor.queue_counts, raw.jobs,
                     graphile_worker._private_jobs, graphile_worker._private_job_queues, pgboss.job, pgboss.archive"
    [ -n "$PGMQ_MISSING" ] || sql -c "SELECT pgmq.purge_queue(q) FROM unnest(ARRAY['pgmq_enqueue', 'pgmq_enqueue_batch', 'pgmq_claim', 'pgmq_claim_many']) q" >/dev/null
    # PgQ: new queues with one consumer each; the ticker ticks whenever one event is new (the fill ticks).
    sql >/dev/null <<'SQL'
SELECT pgq.drop_queue(queue_name, true) FROM pgq.queue;
SELECT pgq.create_queue(q), pgq.set_queue_config(q, 'ticker_max_count', '1'), pgq.register_consumer(q, 'bench')
  FROM unnest(ARRAY['pgq_enqueue', 'pgq_enqueue_batch', 'pgq_claim', 'pgq_claim_many']) q;
SQL
}
settle() { sql -c "VACUUM ANALYZE" -c "CHECKPOINT"; }

prefill() {  # SYSTEM QUEUE N PER_BATCH: N ready jobs (not measured)
    local sys=$1 q=$2 n=$3 per=$4
    case $sys in
        raw|nraw) sql -c "INSERT INTO raw.jobs (payload) SELECT jsonb_build_object('channel_id', 'UC' || g, 'n', g) FROM generate_series(1, $n) g" ;;
        conv|fast) sql -c "DO \$\$ DECLARE left_ int := $n; k int; BEGIN
                WHILE left_ > 0 LOOP
                    k := least(left_, 10000);
                    PERFORM conveyor.enqueue_batch('$q', (SELECT jsonb_agg(jsonb_build_object('payload',
                        jsonb_build_object('channel_id', 'UC' || g, 'n', g))) FROM generate_series(1, k) g));
                    COMMIT; left_ := left_ - k;
                END LOOP; END \$\$" ;;
        graphile) sql -c "DO \$\$ DECLARE left_ int := $n; k int; BEGIN
                WHILE left_ > 0 LOOP
                    k := least(left_, 10000);
                    PERFORM graphile_worker.add_jobs(ARRAY(SELECT ROW('bench', json_build_object('channel_id', 'UC' || g, 'n', g),
                        NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec FROM generate_series(1, k) g));
                    COMMIT; left_ := left_ - k;
                END LOOP; END \$\$" ;;
        pgmq) sql -c "DO \$\$ DECLARE left_ int := $n; k int; BEGIN
                WHILE left_ > 0 LOOP
                    k := least(left_, 10000);
                    PERFORM pgmq.send_batch('$q', ARRAY(SELECT jsonb_build_object('channel_id', 'UC' || g, 'n', g) FROM generate_series(1, k) g));
                    COMMIT; left_ := left_ - k;
                END LOOP; END \$\$" ;;
        # PgQ cuts batches at ticks: PER_BATCH events per transaction, then a tick, so that each batch
        # the consumer takes holds 1 or 100 events.
        pgq) sql -c "DO \$\$ DECLARE left_ int := $n; k int; BEGIN
                WHILE left_ > 0 LOOP
                    k := least(left_, $per);
                    PERFORM pgq.insert_event('$q', 'job', jsonb_build_object('channel_id', 'UC' || g, 'n', g)::text) FROM generate_series(1, k) g;
                    COMMIT;
                    PERFORM pgq.ticker('$q');
                    COMMIT; left_ := left_ - k;
                END LOOP; END \$\$" ;;
        boss) PEERS_QUEUE=$q node "$HERE/node_driver.mjs" "$MODULES" pgboss prefill 0 1 "$n" >/dev/null ;;
    esac
}

# ---- one measurement -----------------------------------------------------------------------------------

declare -A VALS DRAINED
record() { VALS[$1]="${VALS[$1]:-} $2"; note "$1" "$2 jobs/s${3:+ $3}"; }

# pgbench SCRIPT CLIENTS ARGS... -> $WORK/pgbench.out; the exit code is pgbench's.
pgb() {
    local script=$1 clients=$2 threads=2
    shift 2
    [ "$clients" -lt 2 ] && threads=1
    "$PGBENCH" -n -M prepared -c "$clients" -j "$threads" -T "$SECS" -f "$script" "$@" > "$WORK/pgbench.out" 2>&1
}
pgb_tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/pgbench.out"; }
pgb_txns() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/pgbench.out"; }
pgb_fail() { log "pgbench failed ($1):"; cat "$WORK/pgbench.out" >&2; exit 1; }

# The backlog each claim run starts from is the same for every system (pg-boss's fetch sorts the
# queue's whole ready backlog, so its rate depends on it): PEERS_BACKLOG / PEERS_BACKLOG_BATCH. Only
# a system whose run ran dry starts its next repetitions from three times as many (and says so).
PGQ_ONE_MAX=30000
declare -A BASE=([claim]=${PEERS_BACKLOG:-100000} [claim_many]=${PEERS_BACKLOG_BATCH:-800000}) BACKLOG RAISED

measure() {  # SYSTEM OP
    local sys=$1 op=$2 key="$1.$2" n q per=1 clients=$C before=0 after rc=0 rate out jobs secs drained=0 n
    q=$(queue_of "$sys" "$op")
    case $op in *batch|claim_many) per=100 ;; esac
    # PgQ: one consumer; its batches are not shared between sessions (competing consumers would each
    # need a registration of their own and then each see every event).
    [ "$sys" = pgq ] && [[ $op == claim* ]] && clients=1
    reset_all
    if [[ $op == claim* ]]; then
        n=${BACKLOG[$key]:-${BASE[$op]}}
        # PgQ's one-job batches need a tick per event, and its ticker slows as the ticks pile up (100,000
        # take many minutes): its one consumer takes about a thousand a second, so 30,000 last the run.
        [ "$sys.$op" = pgq.claim ] && [ "$n" -gt "$PGQ_ONE_MAX" ] && n=$PGQ_ONE_MAX
        prefill "$sys" "$q" "$n" "$per"
    fi
    settle
    [[ $op == claim* ]] && before=$(ready_count "$sys" "$q")
    if [ "$sys" = boss ] || [ "$sys" = nraw ]; then
        out=$(node "$HERE/node_driver.mjs" "$MODULES" "$([ "$sys" = boss ] && echo pgboss || echo raw)" "$op" "$SECS" "$clients") \
            || { log "$key: the Node driver failed"; exit 1; }
        read -r jobs secs _ <<< "$out"
        if [[ $op == claim* ]]; then
            after=$(ready_count "$sys" "$q")
            jobs=$((before - after))
        fi
        rate=$(calc "$jobs / $secs")
    else
        pgb "$(script_of "$sys" "$op")" "$clients" -D queue="$q" -D batch="$BATCH" -D task_ids="$GW_TASKS" || rc=$?
        if [[ $op == claim* ]]; then
            after=$(ready_count "$sys" "$q")
            # A client that found the queue empty may abort (no row to \gset): only when it ran dry.
            [ "$rc" -eq 0 ] || [ "$after" -eq 0 ] || pgb_fail "$key"
            rate=$(calc "($before - $after) * $(pgb_tps) / $(pgb_txns)")
        else
            [ "$rc" -eq 0 ] || pgb_fail "$key"
            rate=$(calc "$(pgb_tps) * $per")
        fi
    fi
    if [[ $op == claim* ]]; then
        [ "$after" -gt 0 ] || drained=1
        [ "$(leased_count "$sys" "$q")" -eq 0 ] || { log "$key: jobs left claimed after the run"; exit 1; }
        [ "$drained" = 1 ] && DRAINED[$key]=1
        if [ "$drained" = 1 ] && [ "$rep" -lt "$REPS" ]; then
            BACKLOG[$key]=$((before * 3))
            RAISED[$key]="${RAISED[$key]:-}${RAISED[$key]:+, }${BACKLOG[$key]} from repetition $((rep + 1))"
        fi
    fi
    record "$key" "$rate" "$([ "$drained" = 1 ] && echo "(backlog $before ran dry)")"
}

measure_select1() {  # SYSTEM: the ceiling, one SELECT 1 per transaction
    local rate out jobs secs drained
    if [ "$1" = nraw ]; then
        out=$(node "$HERE/node_driver.mjs" "$MODULES" select1 select1 "$SECS" "$C")
        read -r jobs secs drained <<< "$out"
        rate=$(calc "$jobs / $secs")
    else
        pgb "$ROOT/bench/pgbench/floor_select1.sql" "$C" || pgb_fail "select1"
        rate=$(calc "$(pgb_tps)")
    fi
    record "$1.select1" "$rate"
}

OPS=${PEERS_OPS:-"enqueue claim enqueue_batch claim_many"}
log "measuring: $REPS repetitions of $SECS s, $C clients, synchronous_commit = off; systems: $SYSTEMS"
for rep in $(seq 1 "$REPS"); do
    log "repetition $rep of $REPS"
    for sys in raw nraw; do measure_select1 "$sys"; done
    for op in $OPS; do
        for sys in $SYSTEMS; do
            [ "$sys" = pgmq ] && [ -n "$PGMQ_MISSING" ] && continue
            measure "$sys" "$op"
        done
    done
done

# ---- report --------------------------------------------------------------------------------------------

stats() {  # KEY -> "median min max" of its repetitions
    tr ' ' '\n' <<< "${VALS[$1]:-}" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit; m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%d %d %d\n", m, v[1], v[NR] }'
}
W=21
cell() { printf "%${W}s" "$1"; }
floor_of() { [ "$1" = boss ] || [ "$1" = nraw ] && echo nraw || echo raw; }

echo
echo "conveyor and its peers: jobs/s, median of $REPS interleaved repetitions of $SECS s, $C clients"
echo "(PgQ's claims: 1 consumer), synchronous_commit = off; [min-max]; x = ratio to the raw floor of the same client"
echo "(pgbench -M prepared, or node-postgres for pg-boss and the raw floor (node)); * = a run whose backlog ran dry"
printf '%-26s' "operation"; for sys in $SYSTEMS; do cell "${LABEL[$sys]}"; done; echo
printf '%s\n' "$(printf -- '-%.0s' $(seq 1 $((26 + W * 8))))"
declare -A OPLABEL=([enqueue]="single enqueue" [claim]="claim + ack, one job" [enqueue_batch]="enqueue, batches of 100"
    [claim_many]="claim + ack, batches of 100")
for op in $OPS; do
    line1=$(printf '%-26s' "${OPLABEL[$op]}"); line2=$(printf '%-26s' ""); line3=$(printf '%-26s' "")
    for sys in $SYSTEMS; do
        if [ "$sys" = pgmq ] && [ -n "$PGMQ_MISSING" ]; then
            line1+=$(cell "not installable"); line2+=$(cell "here"); line3+=$(cell ""); continue
        fi
        read -r m lo hi <<< "$(stats "$sys.$op")"
        fm=""; read -r fm _ _ <<< "$(stats "$(floor_of "$sys").$op")" || true
        line1+=$(cell "$m${DRAINED[$sys.$op]:+*}")
        line2+=$(cell "[$lo-$hi]")
        if [ -n "$fm" ] && [ "$fm" != 0 ]; then
            # Three decimals below 0.1x, so that a small ratio does not print as 0.00x.
            line3+=$(cell "$(calc "$m / $fm" "$(awk -v a="$m" -v b="$fm" 'BEGIN { print (a / b < 0.1 ? 3 : 2) }')")x")
        else line3+=$(cell "-"); fi
    done
    printf '%s\n%s\n%s\n' "$line1" "$line2" "$line3"
done
line1=$(printf '%-26s' "SELECT 1 (ceiling), tx/s"); line2=$(printf '%-26s' "")
for sys in $SYSTEMS; do
    if [ "$sys" = raw ] || [ "$sys" = nraw ]; then
        read -r m lo hi <<< "$(stats "$sys.select1")"; line1+=$(cell "$m"); line2+=$(cell "[$lo-$hi]")
    else line1+=$(cell ""); line2+=$(cell ""); fi
done
printf '%s\n%s\n' "$line1" "$line2"
echo "   claim runs start from ${BASE[claim]} ready jobs (one job) and ${BASE[claim_many]} (batches), every system alike, except:"
case " $SYSTEMS " in *" pgq "*) [ "${BASE[claim]}" -le "$PGQ_ONE_MAX" ] || echo "     PgQ 3.5, claim + ack, one job: $PGQ_ONE_MAX (a tick per event)" ;; esac
for key in "${!RAISED[@]}"; do echo "     ${LABEL[${key%%.*}]}, ${OPLABEL[${key#*.}]}: ${RAISED[$key]} (it ran dry)"; done
echo "   conveyor fast = queues with {\"event_trail\": \"failures\", \"notify\": false}"
[ -z "$PGMQ_MISSING" ] || echo "   pgmq: not installable here (no registry this machine reaches ships its SQL; see docs/benchmarks.md)"
