#!/usr/bin/env bash
# The Node.js client (clients/node): its node --test suite runs against a fresh database, first with
# every call on direct connections, then with producers' and workers' calls through pgbouncer in
# transaction pooling mode (workers keep one direct session each for wait_for). Each test is one TAP
# line; the suite covers four worker processes working 2,000 jobs with failures, a killed worker and
# lost leases (every job completed once or dead), release of unstarted jobs at shutdown, the abort of
# a handler whose lease was lost, a wakeup by an enqueue long before the poll interval, progress,
# failures, dedup, batches and retries after a dropped connection.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_node_client
POOL_SIZE=4
CLIENT=$(cd "$(dirname "$0")/../../clients/node" && pwd)
TMP=$(mktemp -d /tmp/conveyor-node.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1002))  # the socket lives in our own directory, so the number cannot collide
cleanup() {
    stop_pgbouncer
    drop_test_dbs
    rm -rf "$TMP"
}
trap cleanup EXIT

command -v node >/dev/null || bail "node is not installed (scripts/common.sh installs nodejs)"
command -v npm >/dev/null || bail "npm is not installed (scripts/common.sh installs it where nodejs lacks it)"
(cd "$CLIENT" && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.out" 2>&1 \
    || { sed 's/^/#   /' "$TMP/npm.out"; bail "npm ci in clients/node failed"; }
create_db "$DB" || bail "could not create database $DB"

# failure_of LABEL LINE: right under a failed test's line, the start of its TAP diagnostics (the error
# and its message, without the stack).
failure_of() {
    awk -v l="$2" '
        $0 == l { inside = 1; next }
        inside && /^(not )?ok [0-9]+ - |^# Subtest|^ *stack: |^ *\.\.\.$/ { exit }
        inside && !/^\s*at / && shown < 30 { print; shown++ }' "$TMP/$1.out" | sed 's/^/#   /'
}

# run_node_tests LABEL POOL_URL: one TAP line per test, named LABEL: test.
run_node_tests() {
    local label=$1 pool_url=$2 rc=0 line
    (cd "$CLIENT" && CONVEYOR_TEST_URL="postgresql://$PGUSER@/$DB?host=$PGHOST&port=$PGPORT" \
        CONVEYOR_TEST_POOL_URL="$pool_url" \
        node --test --test-reporter=tap --test-concurrency=1 tests/*.test.js) >"$TMP/$label.out" 2>&1 || rc=$?
    while read -r line; do
        case $line in
            "ok "*) pass "$label: ${line#ok * - }" ;;
            "not ok "*) fail "$label: ${line#not ok * - }"
                        failure_of "$label" "$line" ;;
        esac
    done < <(grep -E '^(not )?ok [0-9]+ - ' "$TMP/$label.out")
    is "$rc" 0 "$label: node --test exits 0"
    [ "$rc" -eq 0 ] || sed 's/^/#   /' "$TMP/$label.out" | grep -v '^#   \s*at ' | tail -120
}

run_node_tests direct "postgresql://$PGUSER@/$DB?host=$PGHOST&port=$PGPORT"

start_pgbouncer "$DB" "$POOL_SIZE"
xacts() { psql -X -At -h "$TMP" -p "$BPORT" -d pgbouncer -c "SHOW STATS" | awk -F'|' -v db="$DB" '$1 == db {print $2}'; }
before=$(xacts)
run_node_tests pgbouncer "postgresql://$PGUSER@/$DB?host=$TMP&port=$BPORT"
after=$(xacts)
# Each of the 2,000 jobs' acks alone is one transaction through pgbouncer.
check "pgbouncer carried the clients' calls ($((after - before)) transactions)" test $((after - before)) -ge 2000

finish
