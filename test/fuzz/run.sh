#!/usr/bin/env bash
# A longer fuzz run than the suite's, on a scratch cluster of its own (built and started as
# scripts/test.sh does):
#   bash test/fuzz/run.sh                              # 30 minutes, a random seed (printed first)
#   FUZZ_SECONDS=7200 bash test/fuzz/run.sh            # two hours
#   FUZZ_SEED=1234 FUZZ_CALLS=5000 bash test/fuzz/run.sh   # replay a seed's first 5000 calls
# CONVEYOR_PGBIN, CONVEYOR_PGDATA, CONVEYOR_SOCKDIR and CONVEYOR_PORT pick the cluster as for
# scripts/test.sh. Exit status 0 only when no failure was found.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/scripts/common.sh"
setup_all
set +e
export FUZZ_SEED=${FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
export FUZZ_SECONDS=${FUZZ_SECONDS:-1800}
export FUZZ_CALLS=${FUZZ_CALLS:-100000000}
log "fuzzing for at most $FUZZ_SECONDS s / $FUZZ_CALLS calls with seed $FUZZ_SEED"
bash "$ROOT/test/shell/fuzz.sh"
