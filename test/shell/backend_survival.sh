#!/usr/bin/env bash
# The C++/PostgreSQL boundary under fire: conveyor_test.boundary_selftest raises every kind of error
# (conveyor::Error, std::exception, std::bad_alloc, a non-standard throw, and PostgreSQL errors from
# SQL run through SPI) in ONE psql session with ON_ERROR_STOP off. Each must reach the client as an
# ordinary ERROR with the right SQLSTATE, message, DETAIL and HINT; the backend must survive (same
# pid afterwards, nothing "terminated by signal" in the server log, no leak warnings), C++
# destructors must run on the way out, and the session must go on working, conveyor included.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_survival
TMP=$(mktemp -d /tmp/conveyor-survival.XXXXXX)
trap 'drop_test_dbs; [ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT

LOG=$(server_log)
[ -r "$LOG" ] || bail "cannot read the server log $LOG"
log_start=$(($(stat -c %s "$LOG") + 1))

create_db "$DB" || bail "could not create database $DB"
psql -X -q -d "$DB" -c "CREATE EXTENSION conveyor_selftest" || bail "could not create extension conveyor_selftest"

# One session. Markers (\echo) split stdout; errors go to stderr with \set VERBOSITY verbose, which
# prints "ERROR:  <SQLSTATE>: message", DETAIL, HINT, CONTEXT and LOCATION lines.
psql -X -At -d "$DB" -v ON_ERROR_STOP=0 >"$TMP/out" 2>"$TMP/err" <<'SQL'
\set VERBOSITY verbose
\set ON_ERROR_STOP off
SELECT 'pid_before=' || pg_backend_pid();
SELECT 'destructors_before=' || conveyor_test.boundary_selftest('destructors');
\echo mode error
SELECT conveyor_test.boundary_selftest('error');
\echo mode std
SELECT conveyor_test.boundary_selftest('std');
\echo mode bad_alloc
SELECT conveyor_test.boundary_selftest('bad_alloc');
\echo mode unknown
SELECT conveyor_test.boundary_selftest('unknown');
\echo mode sql
SELECT conveyor_test.boundary_selftest('sql', 'SELECT 1/0');
\echo mode sql_raise
SELECT conveyor_test.boundary_selftest('sql', $q$DO $do$ BEGIN
    RAISE EXCEPTION 'custom failure from plpgsql' USING ERRCODE = 'P0099',
        DETAIL = 'custom detail 7f3a', HINT = 'custom hint 9c1e';
END $do$$q$);
\echo mode sql_in_transaction
BEGIN;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT * FROM no_such_table');
SELECT 'after_error_in_transaction';
ROLLBACK;
\echo mode sql_savepoint
BEGIN;
SAVEPOINT s;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT 1/0');
ROLLBACK TO SAVEPOINT s;
SELECT 'savepoint_rows=' || conveyor_test.boundary_selftest('sql', 'SELECT generate_series(1, 3)');
COMMIT;
\echo mode repeat
SELECT conveyor_test.boundary_selftest(m) FROM unnest(ARRAY['error', 'std', 'bad_alloc', 'unknown']) m;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT 1/0');
SELECT conveyor_test.boundary_selftest('error');
SELECT conveyor_test.boundary_selftest('std');
SELECT conveyor_test.boundary_selftest('bad_alloc');
SELECT conveyor_test.boundary_selftest('unknown');
\echo mode conveyor_error
SELECT * FROM conveyor.enqueue('no such queue');
\echo mode after
SELECT 'sql_ok=' || conveyor_test.boundary_selftest('sql', 'SELECT generate_series(1, 5)');
SELECT 'destructors_after=' || conveyor_test.boundary_selftest('destructors');
SELECT 'queue=' || count(*) FROM (SELECT conveyor.create_queue('survivor')) s;
SELECT 'enqueued=' || count(*) FROM conveyor.enqueue_batch('survivor', '[{"payload": {"a": 1}}, {"payload": {"a": 2}}]');
SELECT 'acked=' || count(*) FILTER (WHERE conveyor.ack(job_id, true, worker_id => 'w')) FROM conveyor.dequeue('survivor', 'w', 5);
SELECT 'pid_after=' || pg_backend_pid();
SQL
note "psql exited with status $?"

value() { sed -n "s/^$1=//p" "$TMP/out" | head -1; }
pid_before=$(value pid_before)
pid_after=$(value pid_after)
check "the session reported its backend pid before the errors" test -n "$pid_before"
is "$pid_after" "$pid_before" "the same backend answers after every kind of error (pid $pid_before)"

# Failing statements: error, std, bad_alloc, unknown (4); sql 1/0 and sql RAISE (2); the failing
# call in a transaction block and the statement after it ("current transaction is aborted", 2); the
# one under a savepoint (1); the unnest statement, which stops at its first row's error (1); the five
# repeats (5); enqueue into a missing queue (1).
errors=$(grep -c '^ERROR:' "$TMP/err" || true)
is "$errors" 16 "every failing statement reached the client as an ERROR (16 in all)"

expect_err() {  # expect_err DESCRIPTION REGEX: stderr has a line matching the extended regex
    if grep -Eq -- "$2" "$TMP/err"; then pass "$1"; else fail "$1"; note "  no line matches: $2"; fi
}
expect_err "mode error: SQLSTATE 22023 with the message"           '^ERROR:  22023: conveyor error from C\+\+$'
expect_err "mode error: its DETAIL reaches the client"              '^DETAIL:  detail from C\+\+$'
expect_err "mode error: its HINT reaches the client"                '^HINT:  hint from C\+\+$'
expect_err "mode std: std::exception becomes XX000 with its what()" '^ERROR:  XX000: std::runtime_error from C\+\+$'
expect_err "mode bad_alloc: std::bad_alloc becomes 53200 out of memory" '^ERROR:  53200: out of memory$'
expect_err "mode unknown: a non-standard throw becomes XX000"       '^ERROR:  XX000: unknown C\+\+ exception$'
expect_err "mode sql: division by zero keeps its SQLSTATE 22012"    '^ERROR:  22012: division by zero$'
expect_err "mode sql: a custom RAISE keeps its SQLSTATE P0099 and message" '^ERROR:  P0099: custom failure from plpgsql$'
expect_err "mode sql: the custom DETAIL reaches the client"         '^DETAIL:  custom detail 7f3a$'
expect_err "mode sql: the custom HINT reaches the client"           '^HINT:  custom hint 9c1e$'
expect_err "mode sql: the error keeps its CONTEXT (the PL/pgSQL line)" '^CONTEXT:  PL/pgSQL function inline_code_block line 2 at RAISE'
expect_err "mode sql: undefined table keeps its SQLSTATE 42P01"     '^ERROR:  42P01: relation "no_such_table" does not exist'
expect_err "after an error the transaction is aborted, as for any error" '^ERROR:  25P02: current transaction is aborted'
expect_err "a conveyor error keeps its SQLSTATE 42704 and hint"     '^ERROR:  42704: queue "no such queue" does not exist$'
is "$(grep -c '^WARNING' "$TMP/err" || true)" 0 "no WARNING reached the client (no leaked SPI connections, snapshots or resources)"
is "$(value savepoint_rows)" 3 "after ROLLBACK TO SAVEPOINT the boundary runs SQL again"
is "$(value sql_ok)" 5 "mode sql with valid SQL returns its row count afterwards"
check "a statement after the error inside a transaction block did not run" bash -c "! grep -q after_error_in_transaction '$TMP/out'"

d0=$(value destructors_before)
d1=$(value destructors_after)
# Between the two readings: the witness of the first 'destructors' call (destroyed after it
# returned), one witness per failing error/std/bad_alloc/unknown call (4 + 1 in the unnest + 4
# repeats), two per 'sql' call that failed (outer and inner witness: 5 calls) or succeeded (2 calls).
if [ -n "$d0" ] && [ -n "$d1" ]; then
    is "$((d1 - d0))" $((1 + 9 + 2 * 5 + 2 * 2)) "C++ destructors ran for every exit, normal or by error"
else
    fail "C++ destructors ran for every exit, normal or by error (no counts)"
fi
is "$(value queue)|$(value enqueued)|$(value acked)" "1|2|2" "conveyor keeps working in the session: create_queue, enqueue_batch, dequeue, ack"

# The server log: the backend never died, nothing leaked.
sleep 0.2
tail -c +"$log_start" "$LOG" >"$TMP/log"
is "$(grep -c 'terminated by signal' "$TMP/log" || true)" 0 "the server log has no 'terminated by signal'"
is "$(grep -cE 'PANIC|server process .* (was terminated|exited with exit code)|terminating any other active server processes' "$TMP/log" || true)" 0 \
   "the server log shows no crash or restart"
is "$(grep -cE 'WARNING: .*(leak|SPI|snapshot|reference)' "$TMP/log" || true)" 0 "the server log has no leak warnings"
grep -E 'terminated by signal|PANIC|WARNING' "$TMP/log" | head -5 | sed 's/^/#   /'

finish
