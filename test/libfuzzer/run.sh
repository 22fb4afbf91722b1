#!/usr/bin/env bash
# Every libFuzzer harness of conveyor:  bash test/libfuzzer/run.sh [seconds]
# Builds every harness in test/libfuzzer/*.cpp (the PostgreSQL-free C++ helpers) with clang-14
# (-fsanitize=fuzzer,address,undefined) and runs each for the given time (default 60 s); then runs
# test/libfuzzer/backend/run.sh for the same time (conveyor's readers and option parsers inside a
# backend of the scratch cluster; CONVEYOR_FUZZ_BACKEND=0 skips it). A crash, sanitizer report or
# failed property makes the status non-zero and leaves the input in $WORK/<harness>/crash-*.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SECONDS_EACH=${1:-60}
WORK=${CONVEYOR_FUZZ_DIR:-/tmp/conveyor-libfuzzer}
CXX=${CONVEYOR_FUZZ_CXX:-clang++-14}
command -v "$CXX" >/dev/null || { echo "$CXX is needed (Debian: clang-14 libclang-rt-14-dev)" >&2; exit 1; }
mkdir -p "$WORK"
rc=0
for src in "$HERE"/*.cpp; do
    name=$(basename "$src" .cpp)
    mkdir -p "$WORK/$name/corpus"
    echo "==> $name: building"
    "$CXX" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -Wall -Wextra -Werror "$src" -o "$WORK/$name/fuzzer"
    echo "==> $name: fuzzing for ${SECONDS_EACH}s"
    if (cd "$WORK/$name" && ./fuzzer -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 \
            -artifact_prefix="$WORK/$name/" corpus > run.log 2>&1); then
        echo "$name: $(grep -E '^stat::number_of_executed_units' "$WORK/$name/run.log" | awk '{print $2}') runs, no finding"
    else
        rc=1
        echo "$name: FINDING (see $WORK/$name/run.log and the crash-* input there)"
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$WORK/$name/run.log" | head -20
    fi
done
if [ "${CONVEYOR_FUZZ_BACKEND:-1}" != 0 ]; then
    echo "==> backend: conveyor_fuzz (test/libfuzzer/backend/run.sh)"
    CONVEYOR_FUZZ_DIR="$WORK" bash "$HERE/backend/run.sh" "$SECONDS_EACH" || rc=1
fi
exit $rc
