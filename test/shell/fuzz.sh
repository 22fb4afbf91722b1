#!/usr/bin/env bash
# The SQL-level fuzzer (test/fuzz/fuzz.py), bounded for the suite: a fixed seed, a call budget and a
# time cap. It calls every function of extension conveyor with adversarial arguments, as every role,
# with hostile upsert targets and a look-alike schema ahead of pg_catalog, and checks the health calls
# after every batch. TAP lines: one per failure class (crash, internal error, timeout, escalation,
# poisoned state, message encoding); a reproducer per distinct failure is printed as "# " lines.
#   FUZZ_SEED (default 1), FUZZ_CALLS (default 20000), FUZZ_SECONDS (default 120) override the bounds.
# A longer, random-seeded run: bash test/fuzz/run.sh (see test/fuzz/README.md).
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_fuzz
PY=/usr/bin/python3     # Debian's: python3-psycopg is installed for it (a pyenv python3 would not see it)
FUZZ_DIR="$(cd "$(dirname "$0")/../fuzz" && pwd)"
trap 'drop_test_dbs; drop_fuzz_roles' EXIT

drop_fuzz_roles() {
    local r
    for r in reader worker admin none super; do
        psql -X -q -d postgres -c "DROP ROLE IF EXISTS cvfuzz_$r" >/dev/null 2>&1 || true
    done
}

"$PY" -c 'import psycopg' 2>/dev/null || bail "$PY cannot import psycopg (scripts/common.sh installs python3-psycopg)"
LOG=$(server_log)
[ -r "$LOG" ] || bail "cannot read the server log $LOG"
offset=$(stat -c %s "$LOG")
create_db "$DB" || bail "could not create database $DB"

rc=0
"$PY" "$FUZZ_DIR/fuzz.py" --db "$DB" --seed "${FUZZ_SEED:-1}" --calls "${FUZZ_CALLS:-20000}" \
    --seconds "${FUZZ_SECONDS:-120}" --server-log "$LOG" --server-log-offset "$offset" || rc=$?
# fuzz.py prints its own "ok"/"not ok" lines; a non-zero status without one of them (it died) fails here.
case $rc in
    0|1) ;;
    *) fail "fuzz.py exited with status $rc" ;;
esac
[ "$rc" -eq 0 ] && [ "$TESTS_FAILED" -eq 0 ]
