#!/usr/bin/env bash
# The test suite against an AddressSanitizer build of conveyor:  bash scripts/asan.sh
# The server preloads libasan; any report in the server log fails the run. Leak detection is off
# (PostgreSQL frees memory by context, not by free()). The normal build is restored at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/common.sh"
ensure_packages
restore() { make -C "$ROOT" -s clean; build_install; }
trap restore EXIT
make -C "$ROOT" -s clean
export CONVEYOR_CXXFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1"
export CONVEYOR_LDFLAGS="-fsanitize=address"
export with_llvm=no
libasan=$(g++ -print-file-name=libasan.so)
export CONVEYOR_SERVER_ENV="LD_PRELOAD=$libasan ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:log_path=/tmp/conveyor-pg/asan"
rm -f /tmp/conveyor-pg/asan.*
rc=0
bash "$ROOT/scripts/test.sh" || rc=$?
if ls /tmp/conveyor-pg/asan.* >/dev/null 2>&1 || grep -q AddressSanitizer /tmp/conveyor-pg/server.log; then
    echo "AddressSanitizer reported errors:"
    cat /tmp/conveyor-pg/asan.* 2>/dev/null | head -100
    grep -A40 AddressSanitizer /tmp/conveyor-pg/server.log | head -100 || true
    rc=1
else
    echo "AddressSanitizer: no reports"
fi
exit $rc
