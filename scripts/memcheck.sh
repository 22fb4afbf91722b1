#!/usr/bin/env bash
# The regression, isolation and pgTAP suites with the server under valgrind memcheck:
#     bash scripts/memcheck.sh
# Every backend runs under memcheck; an error report whose stack passes through conveyor.so fails the
# run. The same suites under AddressSanitizer + UBSan: scripts/sanitize.sh (which explains and works
# around the start-up hang of a server with libasan preloaded on Debian 12).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/common.sh"
ensure_packages
VG=/tmp/conveyor-memcheck
rm -rf "$VG"
mkdir -p "$VG/logs"
# PostgreSQL's regular expression cache moves its entries with memmove, which this build reaches
# through __memcpy_chk: memcheck calls that an overlap. The server's own `'a' ~ 'b'` shows it too;
# conveyor meets it through RE_compile_and_execute (payload_schema patterns).
cat > "$VG/server.supp" <<'SUPP'
{
   postgres-regex-cache-memmove
   Memcheck:Overlap
   fun:__memcpy_chk
   fun:RE_compile_and_cache
}
SUPP
cat > "$VG/postgres" <<WRAP
#!/bin/sh
exec valgrind --quiet --error-limit=no --leak-check=no --num-callers=30 --trace-children=no \\
    --suppressions=$VG/server.supp --log-file=$VG/logs/vg.%p.log $PGBIN/postgres "\$@"
WRAP
chmod 755 "$VG" "$VG/postgres"
chown -R postgres:postgres "$VG"
export CONVEYOR_POSTGRES="$VG/postgres"
rc=0
CONVEYOR_SUITES=${CONVEYOR_SUITES:-"regress isolation pgtap"} bash "$ROOT/scripts/test.sh" || rc=$?
# Reports whose stack mentions conveyor's code are ours; the rest are the server's own.
ours=$(grep -l 'conveyor\.so\|conveyor::' "$VG"/logs/vg.*.log 2>/dev/null || true)
total=$(cat "$VG"/logs/vg.*.log 2>/dev/null | grep -c '^==[0-9]*== [A-Z]' || true)
if [ -n "$ours" ]; then
    echo "valgrind memcheck: errors in conveyor's code:"
    cat $ours | head -200
    echo "memcheck: 0 passed, 1 failed"
    exit 1
fi
echo "valgrind memcheck: no error report passes through conveyor ($total report lines from the server itself)"
exit $rc
