#!/usr/bin/env bash
# libFuzzer inside a PostgreSQL backend, on conveyor's argument readers, JSON readers and option
# parsers (queue, upsert, lock and entity, account and quota, snapshot and idempotency options):
#     bash test/libfuzzer/backend/run.sh [seconds]        fuzz for that long (default 60)
#     bash test/libfuzzer/backend/run.sh repro FILE...    run the given inputs once each
# Builds and installs conveyor (plain) and the test-only extension conveyor_fuzz (conveyor's objects
# and the harness, clang-14 -fsanitize=fuzzer-no-link,address,undefined, libFuzzer's runtime without
# main), starts the scratch cluster with clang's ASan runtime preloaded, creates both extensions and a
# few objects to act on, and runs libFuzzer in one backend: conveyor_fuzz.run(). A finding (XX000, a
# broken reader property, a crash, an ASan or UBSan report, a backend that never finishes) makes the
# exit status non-zero and leaves the input in $WORK/crash-* (or timeout-*); the log is $WORK/fuzz.log.
# The corpus ($WORK/corpus) is kept between runs.
#
# What libFuzzer needs to live in a backend (see README, "Sanitizers and fuzzing"):
#  -timeout=0       libFuzzer's per-input timeout re-arms ITIMER_REAL, the timer PostgreSQL's own
#                   timeouts (statement, lock, deadlock check) run on; this script watches the whole
#                   run instead and calls a backend that outlives it by 120 s a hang.
#  -rss_limit_mb=0 -malloc_limit_mb=0   no RSS-watching thread inside a backend.
#  -handle_int/term/usr1/usr2/fpe/xfsz=0   those signals are PostgreSQL's; libFuzzer keeps SEGV,
#                   BUS, ILL and ABRT (the harness aborts on a finding).
#  -detect_leaks=0  a backend frees by memory context, not by free().
#  -fork=0 (the default): one process, the backend; libFuzzer ends it with exit(0) when the time is up
#                   (PostgreSQL's atexit hook then releases its shared state), so the SQL call never
#                   returns and psql reports a closed connection: the outcome is read from the log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
source "$ROOT/scripts/common.sh"

MODE=fuzz
if [ "${1:-}" = repro ]; then
    MODE=repro
    shift
    [ $# -gt 0 ] || { echo "usage: $0 repro FILE..." >&2; exit 2; }
    REPRO=()
    for f in "$@"; do REPRO+=("$(readlink -f "$f")"); done
else
    SECONDS_TOTAL=${1:-60}
fi
WORK=${CONVEYOR_FUZZ_DIR:-/tmp/conveyor-libfuzzer}/backend
CLANG=clang++-14
ensure_packages
RT=$($CLANG -print-resource-dir)/lib/linux
for f in libclang_rt.asan-x86_64.so libclang_rt.fuzzer_no_main-x86_64.a; do
    [ -f "$RT/$f" ] || { echo "fuzz: $RT/$f is missing (Debian: libclang-rt-14-dev)" >&2; exit 1; }
done

mkdir -p "$WORK/corpus"
rm -f "$WORK/fuzz.log" "$WORK/setup.log"

log "building conveyor and conveyor_fuzz (clang-14, fuzzer-no-link + ASan + UBSan)"
build_install
(
    flock 9
    make -C "$HERE" -s PG_CONFIG=$PGBIN/pg_config >/dev/null
    as_root make -C "$HERE" -s PG_CONFIG=$PGBIN/pg_config install >/dev/null
) 9>/tmp/conveyor-build.lock

# The server, with clang's ASan runtime (which carries UBSan's handlers) and san-preload.so preloaded.
gcc -shared -fPIC -O2 -fno-builtin -o "$WORK/san-preload.so" "$HERE/san-preload.c" -ldl
SYMBOLIZER=$(command -v llvm-symbolizer-14 || true)
cat > "$WORK/postgres" <<WRAP
#!/bin/sh
export ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0:handle_abort=0${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
LD_PRELOAD="$RT/libclang_rt.asan-x86_64.so $WORK/san-preload.so" exec $PGBIN/postgres "\$@"
WRAP
chmod 755 "$WORK/postgres"
chown -R postgres:postgres "$WORK"
chmod 755 "$(dirname "$WORK")"
if ! runuser -u postgres -- timeout 20 "$WORK/postgres" --version >/dev/null; then
    echo "fuzz: the server with the ASan runtime preloaded does not start" >&2
    exit 1
fi
export CONVEYOR_POSTGRES="$WORK/postgres"
SERVER_LOG=$(dirname "$CONVEYOR_PGDATA")/server.log
[ -f "$SERVER_LOG" ] && : > "$SERVER_LOG"
cluster_start
trap cluster_stop EXIT

# The objects the option parsers act on: a queue to alter and enqueue into, an account, a quota, a
# lease (for upsert's fence), an entity, an idempotency key.
psql -X -q -v ON_ERROR_STOP=1 > "$WORK/setup.log" 2>&1 <<'SQL'
CREATE EXTENSION conveyor;
CREATE EXTENSION conveyor_fuzz;
SELECT conveyor.create_queue('fz', '{"job_types": ["a", "b"], "required_keys": ["id"]}');
SELECT conveyor.account_create('acct', 1000, 'USD', true, '{"team": "t"}');
SELECT conveyor.quota_define('qz', 100, 'day', 'UTC', '{"search": 2}');
SELECT conveyor.lock_acquire('L', 'owner-1', 600);
SELECT conveyor.entity_acquire('page', 'https://example.com/1', 600);
SELECT conveyor.idempotency_begin('key-1', '{"a": 1}', 600);
SQL

# Seeds (seeds.txt) and a dictionary: JSON tokens and every option name the sources compare a key
# with (so options added later are in it without a change here). The instrumented comparisons of
# strings go through memcmp, whose interceptor sits in the preloaded runtime and cannot reach
# libFuzzer's hook in this library: without the dictionary libFuzzer would have to guess the names.
i=0
while IFS= read -r line; do
    case "$line" in '#'*|'') continue ;; esac
    i=$((i + 1))
    printf '%s' "$line" | tr '|' '\000' > "$WORK/corpus/seed-$i"
done < "$HERE/seeds.txt"
{
    for t in '{' '}' '[' ']' ':' ',' '"' 'null' 'true' 'false' '-1' '0' '1e308' '2147483647' '2147483648' \
             '-2147483649' '9223372036854775807' '9223372036854775808' '0.5' 'NaN' 'infinity' '-infinity' \
             '1e-400' '\\u0000' '\\ud800' '{}' '[]'; do
        printf '"%s"\n' "$(printf '%s' "$t" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    done
    printf '"\\x00"\n'
    grep -ohE '\b[fg]\.key == "[A-Za-z_]+"' "$ROOT"/src/*/*.cpp | sed -E 's/.*== //' | sort -u
} > "$WORK/conveyor.dict"
chown -R postgres:postgres "$WORK"

FLAGS=(-timeout=0 -rss_limit_mb=0 -malloc_limit_mb=0 -handle_int=0 -handle_term=0 -handle_usr1=0
       -handle_usr2=0 -handle_fpe=0 -handle_xfsz=0 -detect_leaks=0 -print_final_stats=1
       "-artifact_prefix=$WORK/")
if [ $MODE = fuzz ]; then
    FLAGS+=("-max_total_time=$SECONDS_TOTAL" -max_len=4096 "-dict=$WORK/conveyor.dict" "$WORK/corpus")
    log "fuzzing for ${SECONDS_TOTAL}s (log: $WORK/fuzz.log)"
    LIMIT=$((SECONDS_TOTAL + 120))
else
    FLAGS+=("${REPRO[@]}")
    log "replaying ${#REPRO[@]} input(s) (log: $WORK/fuzz.log)"
    LIMIT=300
fi
ARGS=$(printf '%s\n' "${FLAGS[@]}" | python3 -c 'import sys; print("ARRAY[" + ",".join("$q$" + l.rstrip("\n") + "$q$" for l in sys.stdin) + "]")')
rm -f "$WORK"/crash-* "$WORK"/timeout-* "$WORK"/oom-* "$WORK"/leak-* 2>/dev/null || true
started=$(date +%s)
set +e
timeout -k 10 $LIMIT psql -X -q -c "SET search_path = pg_catalog, conveyor, pg_temp" \
    -c "SELECT conveyor_fuzz.run($ARGS, '$WORK/fuzz.log')" > "$WORK/psql.log" 2>&1
psql_rc=$?
set -e
elapsed=$(( $(date +%s) - started ))

finding=0
if [ $psql_rc = 124 ]; then
    # The backend outlived the time it was given: it is stuck in one input. Ending it with
    # pg_terminate_backend makes libFuzzer write that input (its exit hook runs inside the callback).
    echo "fuzz: FINDING: the fuzzing backend is still running after ${LIMIT}s (a hang)"
    psql -X -q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%conveyor_fuzz.run%' AND pid <> pg_backend_pid()" >/dev/null || true
    sleep 2
    finding=1
fi
shopt -s nullglob
artifacts=("$WORK"/crash-* "$WORK"/timeout-* "$WORK"/oom-* "$WORK"/leak-*)
if [ ${#artifacts[@]} -gt 0 ] || grep -qE 'FINDING|ERROR: (AddressSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|runtime error:' "$WORK/fuzz.log" 2>/dev/null; then
    finding=1
fi
if [ $MODE = fuzz ] && ! grep -qE '^Done [0-9]+ runs in' "$WORK/fuzz.log" 2>/dev/null; then
    finding=1
fi
# Any other process of the server that died or reported (a conveyor.so a trigger loaded, pg_cron).
SERVER_BAD='server process .*(terminated by signal|exited with exit code)|ERROR: AddressSanitizer|runtime error:'
if grep -qE "$SERVER_BAD" "$SERVER_LOG"; then
    echo "fuzz: the server log has a crash or a sanitizer report:"
    grep -E "$SERVER_BAD" "$SERVER_LOG" | head -10
    finding=1
fi

runs=$(grep -E '^stat::number_of_executed_units' "$WORK/fuzz.log" 2>/dev/null | awk '{print $2}' | tail -1)
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$WORK/fuzz.log" 2>/dev/null | tail -1)
if [ $finding = 0 ]; then
    echo "conveyor_fuzz: ${runs:-?} runs in ${elapsed}s, ${cov:-no coverage line}, no finding"
    exit 0
fi
echo "conveyor_fuzz: FINDING after ${runs:-?} runs (${elapsed}s); log $WORK/fuzz.log"
grep -E 'FINDING|ERROR:|runtime error|SUMMARY|Test unit written|artifact_prefix|exited' "$WORK/fuzz.log" | head -20 || true
for a in "${artifacts[@]}"; do
    echo "--- input $a (replay: bash $0 repro $a)"
    od -c "$a" | head -8
done
exit 1
