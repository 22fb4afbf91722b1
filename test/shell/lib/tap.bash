# Shared by the shell tests (test/shell/*.sh); sourced, never run on its own. It is not a test: the
# runner only picks test/shell/*.sh.
#
# The runner exports PGHOST/PGPORT/PGUSER of the scratch cluster (and CONVEYOR_PGDATA). Each test
# prints TAP-style lines, "ok - ..." or "not ok - ...", and exits non-zero when anything failed.
set -uo pipefail

TESTS_FAILED=0
TESTS_RUN=0
TEST_NAME=$(basename "$0" .sh)

pass() { TESTS_RUN=$((TESTS_RUN + 1)); echo "ok - $*"; }
fail() { TESTS_RUN=$((TESTS_RUN + 1)); TESTS_FAILED=$((TESTS_FAILED + 1)); echo "not ok - $*"; }
note() { echo "# $*"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then pass "$desc"; else fail "$desc"; fi
}

# is GOT EXPECTED DESCRIPTION
is() {
    if [ "$1" = "$2" ]; then
        pass "$3"
    else
        fail "$3"
        note "  got:      '$1'"
        note "  expected: '$2'"
    fi
}

# Stops the test right away (setup failed): one failing line, then exit.
bail() {
    fail "$TEST_NAME: $*"
    exit 1
}

# Exit status for the end of a test.
finish() {
    note "$TEST_NAME: $((TESTS_RUN - TESTS_FAILED)) of $TESTS_RUN passed"
    [ "$TESTS_FAILED" -eq 0 ] && [ "$TESTS_RUN" -gt 0 ]
}

# q DB SQL...: runs SQL (one -c per argument) unaligned, tuples only, stopping at the first error.
q() {
    local db=$1
    shift
    local args=()
    local s
    for s in "$@"; do args+=(-c "$s"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "${args[@]}"
}

# The cluster's server log (scripts/common.sh starts the server with -l $(dirname PGDATA)/server.log).
server_log() {
    local data=${CONVEYOR_PGDATA:-}
    [ -n "$data" ] || data=$(q postgres "SHOW data_directory")
    echo "$(dirname "$data")/server.log"
}

# restart_server: a fast restart of the scratch cluster. pg_cron's launcher keeps its jobs' state for
# the server's lifetime, across DROP EXTENSION pg_cron (whose job ids start again at 1); after tests that
# created and dropped the extension while their jobs ran, pg_cron 1.4.2's launcher was seen to start no
# job at all until a restart. Tests that wait for pg_cron to run a job restart first.
# The restart runs the server binary or wrapper scripts/common.sh started it with (CONVEYOR_POSTGRES):
# without -p, pg_ctl restart takes the binary from postmaster.opts, which names the real postgres
# even when a wrapper (the sanitizer's, valgrind's) started it.
restart_server() {
    local data=${CONVEYOR_PGDATA:-}
    [ -n "$data" ] || data=$(q postgres "SHOW data_directory")
    runuser -u postgres -- "${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}/pg_ctl" -D "$data" -l "$(server_log)" \
        ${CONVEYOR_POSTGRES:+-p "$CONVEYOR_POSTGRES"} -m fast -t 300 -w restart >/dev/null
}

# start_server DATA: start a stopped cluster (after a crash a test made), with the same server binary
# or wrapper scripts/common.sh started it with (CONVEYOR_POSTGRES: the sanitizer's or valgrind's).
start_server() {
    runuser -u postgres -- "${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}/pg_ctl" -D "$1" -l "$(dirname "$1")/server.log" \
        ${CONVEYOR_POSTGRES:+-p "$CONVEYOR_POSTGRES"} -t 300 -w start
}

# Databases this test created; dropped on exit (WITH (FORCE): a stuck worker cannot keep them alive).
TEST_DBS=()
create_db() {  # create_db NAME: a fresh database with conveyor installed
    local db=$1
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$db\"" >/dev/null || return 1
    TEST_DBS+=("$db")
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION conveyor" >/dev/null
}
drop_test_dbs() {
    local db
    for db in "${TEST_DBS[@]}"; do
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    TEST_DBS=()
}

# For tests that run background sessions: a scratch directory in $TMP, background pids collected in
# PIDS, and on exit those sessions killed, the test's databases dropped and $TMP removed.
use_scratch() {  # use_scratch NAME
    TMP=$(mktemp -d "/tmp/conveyor-$1.XXXXXX")
    PIDS=()
    trap scratch_cleanup EXIT
}
scratch_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    drop_test_dbs
    rm -rf "$TMP"
}

# wait_statement DB APP PATTERN: waits until one session of application APP in database DB runs a
# statement LIKE PATTERN; returns 1 when none does within 10 s.
wait_statement() {
    local _
    for _ in $(seq 1 100); do
        [ "$(q "$1" "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$2'
                     AND datname = current_database() AND state = 'active' AND query LIKE '$3'")" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# wait_sessions: waits for every session in PIDS and empties it; returns 1 if any of them failed.
wait_sessions() {
    local p rc=0
    for p in "${PIDS[@]}"; do wait "$p" || rc=1; done
    PIDS=()
    return $rc
}

# wait_sessions_bounded DB SECONDS WHAT: waits at most SECONDS for the sessions in PIDS to end; past
# that, records a failure naming WHAT, stops them and ends their backends in database DB. Their exit
# statuses are not looked at (the test checks what they left behind); PIDS is emptied.
wait_sessions_bounded() {
    local db=$1 limit=$2 what=$3 deadline alive p
    deadline=$(($(date +%s) + limit))
    while :; do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
        [ "$alive" -eq 0 ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail "$what still running $limit s after the start; stopping them"
            for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
            q postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()" >/dev/null
            break
        fi
        sleep 0.5
    done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

# pgbouncer in transaction pooling mode in front of database $1, pool size $2, listening on port
# $BPORT with its socket, config, log and pid file in $TMP (which the postgres user must be able to
# write). stop_pgbouncer ends it; call it from the test's exit trap. PGBOUNCER_EXTRA: more settings lines.
start_pgbouncer() {  # start_pgbouncer DB POOL_SIZE [USER...]: $PGUSER and the other login roles named
    command -v pgbouncer >/dev/null || bail "pgbouncer is not installed (scripts/common.sh installs the Debian package)"
    cat >"$TMP/pgbouncer.ini" <<INI
[databases]
$1 = host=$PGHOST port=$PGPORT dbname=$1

[pgbouncer]
listen_port = $BPORT
unix_socket_dir = $TMP
auth_type = trust
auth_file = $TMP/userlist.txt
admin_users = $PGUSER
pool_mode = transaction
default_pool_size = $2
max_client_conn = 100
server_lifetime = 3600
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer.pid
${PGBOUNCER_EXTRA:-}
INI
    local user
    for user in "$PGUSER" "${@:3}"; do echo "\"$user\" \"\""; done >"$TMP/userlist.txt"
    chown postgres:postgres "$TMP/pgbouncer.ini" "$TMP/userlist.txt"
    runuser -u postgres -- pgbouncer -d -q "$TMP/pgbouncer.ini" || bail "pgbouncer did not start"
    for _ in $(seq 1 50); do [ -S "$TMP/.s.PGSQL.$BPORT" ] && break; sleep 0.1; done
    [ -S "$TMP/.s.PGSQL.$BPORT" ] || { sed 's/^/#   /' "$TMP/pgbouncer.log"; bail "pgbouncer's socket did not appear"; }
}
stop_pgbouncer() {
    if [ -s "$TMP/pgbouncer.pid" ]; then
        local pid
        pid=$(cat "$TMP/pgbouncer.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        rm -f "$TMP/pgbouncer.pid"
    fi
}

# pg_dump -Fc of database $1, restored with pg_restore into a fresh database $2 (dropped by
# drop_test_dbs); asserts that both succeed and shows the restore's output when it does not.
dump_and_restore() {  # dump_and_restore SRC DST
    local rc=0
    pg_dump -Fc -f "$TMP/src.dump" "$1" 2>"$TMP/dump.err" || rc=$?
    is "$rc" 0 "pg_dump -Fc succeeds"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS $2 WITH (FORCE)" -c "CREATE DATABASE $2" >/dev/null || bail "could not create $2"
    TEST_DBS+=("$2")
    rc=0
    pg_restore -d "$2" "$TMP/src.dump" >"$TMP/restore.out" 2>&1 || rc=$?
    is "$rc" 0 "pg_restore into a fresh database exits 0"
    [ "$rc" -eq 0 ] || sed 's/^/#   /' "$TMP/restore.out"
}
