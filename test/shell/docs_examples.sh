#!/usr/bin/env bash
# The SQL examples of README.md and docs/*.md run as written: every ```sql block of a file runs in
# order, in one psql session on a fresh database of its own (conveyor installed unless the file's first
# statement installs it), and each result a block shows is compared with what psql printed; one TAP
# line per block, naming file and line. The convention (how results, errors, placeholders and skipped
# blocks are written) is in docs/testing.md, "Examples in the documentation"; the runner is
# test/shell/lib/docs_examples.py. A block marked "database NAME" runs on NAME: postgres as it is, any
# other name on a fresh empty database the test creates for the file. Roles the examples create, and
# what blocks marked "database postgres" add there (extensions, pg_cron jobs), are removed after each
# file, and the last TAP line checks that database postgres and the roles are as they were before.
source "$(dirname "$0")/lib/tap.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

command -v python3 >/dev/null || bail "python3 is not installed (scripts/common.sh installs it)"
# What the examples must leave as they found it (other shell tests use database postgres and pg_cron).
cluster_state() {
    q postgres "SELECT 'extension ' || extname FROM pg_extension ORDER BY 1" \
               "SELECT 'role ' || rolname FROM pg_roles ORDER BY 1"
    if [ -n "$(q postgres "SELECT to_regclass('cron.job')")" ]; then
        q postgres "SELECT format('cron job %s %s %L %L in %s as %s', jobid, jobname, schedule, command, database, username)
                    FROM cron.job ORDER BY jobid"
    fi
}
state_before=$(cluster_state)
roles_before=$(q postgres "SELECT string_agg(quote_literal(rolname), ',') FROM pg_roles")
cron_before=$(q postgres "SELECT coalesce(max(jobid), 0) FROM cron.job" 2>/dev/null || echo 0)
exts_before=$(q postgres "SELECT string_agg(quote_literal(extname), ',') FROM pg_extension")

cleanup() {
    # Jobs go through cron.unschedule, even when pg_cron's extension is dropped next: its trigger tells
    # the running scheduler, which otherwise keeps running the jobs it had loaded.
    if [ -n "$(q postgres "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")" ]; then
        q postgres "DELETE FROM cron.job_run_details WHERE jobid > $cron_before" \
                   "SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobid > $cron_before" >/dev/null
    fi
    drop_test_dbs
    local e
    for e in $(q postgres "SELECT extname FROM pg_extension WHERE extname NOT IN ($exts_before) ORDER BY extname = 'pg_cron'"); do
        q postgres "DROP EXTENSION \"$e\" CASCADE" >/dev/null
    done
    local r
    for r in $(q postgres "SELECT rolname FROM pg_roles WHERE rolname NOT IN ($roles_before) ORDER BY oid DESC"); do
        q postgres "DROP ROLE \"$r\"" >/dev/null || note "could not drop role $r"
    done
}
trap cleanup EXIT

for file in README.md docs/*.md; do
    grep -q '^```sql' "$file" || continue
    db="conveyor_docs_$(basename "$file" .md | tr 'A-Z.-' 'a-z__')"
    if grep -m1 -v '^\s*\(--.*\)\?$' <(awk '/^```sql/{f=1; next} /^```/{f=0} f' "$file") | grep -qi '^CREATE EXTENSION conveyor'; then
        psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
            -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\"" >/dev/null || bail "could not create $db"
        TEST_DBS+=("$db")
    else
        create_db "$db" || bail "could not create $db"
    fi
    for other in $(sed -n 's/^\s*<!--\s*docs-test:\s*database \(\S*\)\s*-->\s*$/\1/p' "$file" | sort -u); do
        [ "$other" = postgres ] && continue
        psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
            -c "DROP DATABASE IF EXISTS \"$other\" WITH (FORCE)" -c "CREATE DATABASE \"$other\"" >/dev/null ||
            bail "could not create $other"
        TEST_DBS+=("$other")
    done
    while IFS= read -r line; do
        case $line in
            'ok - '*) pass "${line#ok - }" ;;
            'not ok - '*) fail "${line#not ok - }" ;;
            *) echo "$line" ;;
        esac
    done < <(/usr/bin/python3 test/shell/lib/docs_examples.py "$file" "$db")
    cleanup   # each file starts from the same cluster: no role or pg_cron job of an earlier one
done
state_after=$(cluster_state)
if [ "$state_after" = "$state_before" ]; then
    pass "database postgres (extensions, pg_cron jobs) and the roles are as before the examples"
else
    fail "database postgres (extensions, pg_cron jobs) and the roles are as before the examples"
    diff <(echo "$state_before") <(echo "$state_after") | sed 's/^/# /'
fi
finish
