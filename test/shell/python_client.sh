#!/usr/bin/env bash
# The Python client (clients/python, conveyor_client): its pytest suite runs against a fresh database,
# first with every call on direct connections, then with producers' and workers' calls through
# pgbouncer in transaction pooling mode (workers keep one direct session each for wait_for). Each
# pytest test is one TAP line; the suite covers four worker processes working 2,000 jobs with failures,
# lost leases and a killed process (every job completed once or dead), a pooled worker woken by an
# enqueue long before its poll, release of unstarted jobs at shutdown, cancellation of a handler whose
# lease was lost, progress, failures, retries and dedup, and the `conveyor` command-line tool.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_python_client
POOL_SIZE=4
CLIENT=$(cd "$(dirname "$0")/../../clients/python" && pwd)
PYTHON=/usr/bin/python3  # Debian's, which has python3-psycopg and python3-pytest
TMP=$(mktemp -d /tmp/conveyor-python.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1000))  # the socket lives in our own directory, so the number cannot collide
cleanup() {
    stop_pgbouncer
    drop_test_dbs
    rm -rf "$TMP"
}
trap cleanup EXIT

$PYTHON -c "import psycopg, pytest" 2>/dev/null || bail "python3-psycopg and python3-pytest are needed (scripts/common.sh installs them)"
create_db "$DB" || bail "could not create database $DB"

# failure_of LABEL TEST: right under a failed test's line, what failed: its "E" lines (the assertion
# and its message) and pytest's one-line summary of it.
failure_of() {
    awk -v t="$2" '
        /^_+ .* _+$/ { inside = ($2 == t) ; next }
        /^=+ .* =+$/ { inside = 0 }
        inside && /^E / && shown < 20 { print; shown++ }' "$TMP/$1.out" | sed 's/^/#   /'
    grep -E "^(FAILED|ERROR) [^ ]*::$2( |$)" "$TMP/$1.out" | cut -c1-600 | sed 's/^/#   /'
}

# run_pytest LABEL POOL_DSN: one TAP line per pytest test, named LABEL: test.
run_pytest() {
    local label=$1 pool_dsn=$2 rc=0 line name outcome
    (cd "$CLIENT" && CONVEYOR_TEST_DSN="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB" \
        CONVEYOR_TEST_POOL_DSN="$pool_dsn" \
        COLUMNS=400 $PYTHON -m pytest -v -rfE -p no:cacheprovider --basetemp="$TMP/pytest-$label" tests) >"$TMP/$label.out" 2>&1 || rc=$?
    while read -r line; do
        name=${line%% *}
        outcome=${line##* }
        case $outcome in
            PASSED) pass "$label: ${name#tests/}" ;;
            *) fail "$label: ${name#tests/} $outcome"
               failure_of "$label" "${name##*::}" ;;
        esac
    done < <(grep -oE '^tests/[^ ]+ (PASSED|FAILED|ERROR)' "$TMP/$label.out")
    is "$rc" 0 "$label: pytest exits 0"
    [ "$rc" -eq 0 ] || sed 's/^/#   /' "$TMP/$label.out" | tail -80
}

run_pytest direct "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB"

# `pip install ./clients/python` gives the `conveyor` command (offline: setuptools and psycopg are
# Debian's, seen through --system-site-packages). Built from a copy so the source tree stays clean.
cp -r "$CLIENT" "$TMP/src"
if /usr/bin/python3 -m venv --system-site-packages --without-pip "$TMP/venv" >"$TMP/pip.out" 2>&1 &&
   /usr/bin/python3 -m pip --python "$TMP/venv/bin/python" install -q --no-build-isolation --no-deps --no-index \
       "$TMP/src" >>"$TMP/pip.out" 2>&1; then
    pass "pip install ./clients/python"
    installed=$("$TMP/venv/bin/conveyor" --dsn "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB" status --json 2>&1)
    is "$(/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["health"]["overall_status"] in ("healthy", "warning", "critical"))' <<<"$installed" 2>&1)" \
       "True" "the installed conveyor command prints status as JSON"
else
    fail "pip install ./clients/python"
    sed 's/^/#   /' "$TMP/pip.out"
fi

start_pgbouncer "$DB" "$POOL_SIZE"
xacts() { psql -X -At -h "$TMP" -p "$BPORT" -d pgbouncer -c "SHOW STATS" | awk -F'|' -v db="$DB" '$1 == db {print $2}'; }
before=$(xacts)
run_pytest pgbouncer "host=$TMP port=$BPORT user=$PGUSER dbname=$DB"
after=$(xacts)
# Each of the 2,000 jobs' acks alone is one transaction through pgbouncer.
check "pgbouncer carried the clients' calls ($((after - before)) transactions)" test $((after - before)) -ge 2000

finish
