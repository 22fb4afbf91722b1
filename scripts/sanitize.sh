#!/usr/bin/env bash
# The regression, isolation and pgTAP suites against a conveyor.so built with AddressSanitizer and
# UBSan (`make sanitize`):
#     bash scripts/sanitize.sh
# The server runs with gcc's ASan runtime preloaded (conveyor.so needs it in the process); every
# ASan or UBSan report is written to a log directory, and a report that mentions conveyor's code
# fails the run, as does a failing test. CONVEYOR_SUITES picks other suites, as in scripts/test.sh.
# The instrumented conveyor.so stays installed afterwards; the next scripts/test.sh rebuilds a plain
# one (the Makefile rebuilds when the flags change).
#
# Why a second preloaded library (san-preload.so) beside libasan: without it the server hangs
# before main. The ASan runtime, preloaded, is the last library whose constructor runs; libgpg-error
# (pulled in by libsystemd -> libgcrypt) runs its constructor earlier and calls bindtextdomain, which
# takes glibc's gettext lock (_nl_state_lock) for writing and calls malloc. That first malloc
# initializes ASan lazily; ASan's initialization looks up swift_demangle with dlsym and clears the
# failure with dlerror, which translates its message with dcgettext, which takes the same lock for
# reading (EDEADLK, ignored) and then unlocks it: the writer's lock is released under it. The outer
# bindtextdomain's unlock then underflows the reader count (0xfffffff8), and the next bindtextdomain
# (PostgreSQL's set_pglocale_pgservice in main) waits on the lock forever. Locale settings and
# ASAN_OPTIONS cannot avoid it (the lock is taken before the locale is looked at, and the dlsym and
# dlerror calls are unconditional); clang's runtime does the same. san-preload.so interposes
# bindtextdomain: it calls malloc once, so that ASan initializes with no glibc lock held, and then
# calls glibc's bindtextdomain.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/common.sh"
ensure_packages
export CONVEYOR_SANITIZE=1

# Beside the cluster, so that two runs on their own clusters do not remove each other's wrapper and logs.
SAN=$(dirname "$CONVEYOR_PGDATA")/sanitize
rm -rf "$SAN"
mkdir -p "$SAN/logs"
LIBASAN=$(readlink -f "$(g++ -print-file-name=libasan.so)")
[ -f "$LIBASAN" ] || { echo "sanitize: gcc's libasan.so not found" >&2; exit 1; }
SYMBOLIZER=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)

# detect_leaks=0: a backend exits without freeing what it allocated, by design.
ASAN_OPTS="detect_leaks=0:log_path=$SAN/logs/asan:detect_odr_violation=0${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
UBSAN_OPTS="print_stacktrace=1:log_path=$SAN/logs/ubsan${SYMBOLIZER:+:external_symbolizer_path=$SYMBOLIZER}"
cat > "$SAN/san-preload.c" <<SRC
/* Preloaded after the ASan runtime: makes ASan initialize outside glibc's gettext lock, and gives
   UBSan its options (gcc's UBSan runtime, libubsan, loads with conveyor.so and initializes at the
   first report, after PostgreSQL has overwritten its environment for the process title: it cannot
   read UBSAN_OPTIONS any more). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

const char *__ubsan_default_options(void) { return "$UBSAN_OPTS"; }

char *bindtextdomain(const char *domainname, const char *dirname) {
    static char *(*real)(const char *, const char *);
    void *volatile p = malloc(1); /* initializes ASan, if it is not yet, with no lock held */
    free(p);
    if (!real) real = (char *(*)(const char *, const char *))dlsym(RTLD_NEXT, "bindtextdomain");
    return real(domainname, dirname);
}
SRC
gcc -shared -fPIC -O2 -fno-builtin -o "$SAN/san-preload.so" "$SAN/san-preload.c" -ldl

cat > "$SAN/postgres" <<WRAP
#!/bin/sh
LD_PRELOAD="$LIBASAN $SAN/san-preload.so" ASAN_OPTIONS="$ASAN_OPTS" exec $PGBIN/postgres "\$@"
WRAP
chmod 755 "$SAN" "$SAN/postgres"
chown -R postgres:postgres "$SAN"

# The wrapped server must get past its start-up (this is where the hang showed).
if ! runuser -u postgres -- timeout 20 "$SAN/postgres" --version >/dev/null; then
    echo "sanitize: the server with the ASan runtime preloaded does not start" >&2
    exit 1
fi

export CONVEYOR_POSTGRES="$SAN/postgres"
# Reports a runtime could not write to its log_path go to the server's stderr, the server log.
SERVER_LOG=$(dirname "$CONVEYOR_PGDATA")/server.log
[ -f "$SERVER_LOG" ] && : > "$SERVER_LOG"
rc=0
CONVEYOR_SUITES=${CONVEYOR_SUITES:-"regress isolation pgtap"} bash "$ROOT/scripts/test.sh" || rc=$?
so=$("$PGBIN/pg_config" --pkglibdir)/conveyor.so
[ "$(nm -D "$so" | grep -c __asan_init)" -gt 0 ] || { echo "sanitize: $so is not instrumented" >&2; exit 1; }

# Each report in the server log (from its first line to the next line of the server's own) becomes
# a file beside the others.
[ -f "$SERVER_LOG" ] && awk -v dir="$SAN/logs" '
    /runtime error:|^==[0-9]+==(ERROR|WARNING): / { n++; out = sprintf("%s/server-report.%d", dir, n) }
    /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] / { out = "" }
    out != "" { print > out }' "$SERVER_LOG"

# Reports that mention conveyor's code are ours; the rest come from the server or its libraries.
shopt -s nullglob
logs=("$SAN"/logs/*)
ours=()
for f in "${logs[@]}"; do
    # A frame names conveyor's file as /path/src/x/y.cpp:N, src/x/y.cpp:N, or " in f src/x/y.cpp:N".
    if grep -qE 'conveyor|(^|[ /(])src/([A-Za-z0-9_]+/)?[A-Za-z0-9_]+\.(cpp|hpp)' "$f"; then ours+=("$f"); fi
done
asan=$(cat "${logs[@]}" /dev/null | grep -c 'ERROR: AddressSanitizer' || true)
ubsan=$(cat "${logs[@]}" /dev/null | grep -c 'runtime error:' || true)
echo "sanitize: ${#logs[@]} report files ($asan AddressSanitizer errors, $ubsan UBSan runtime errors), ${#ours[@]} mentioning conveyor"
if [ ${#ours[@]} -gt 0 ]; then
    echo "sanitize: reports in conveyor's code:"
    for f in "${ours[@]}"; do echo "--- $f"; head -60 "$f"; done
    exit 1
fi
if [ ${#logs[@]} -gt 0 ]; then
    echo "sanitize: reports outside conveyor (first 40 lines each):"
    for f in "${logs[@]}"; do echo "--- $f"; head -40 "$f"; done
fi
exit $rc
