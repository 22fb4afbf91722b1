#!/usr/bin/env bash
# Concurrency of the campaigns functions, each caller on its own connection (test/concurrency.py):
# 10 and 100 concurrent costs (none lost, totals = ledger), costs racing for a budget, 20 concurrent
# overlapping business batches (no duplicate place_id, counts add up), 5 concurrent recounts, and the
# retried SQLSTATEs 55P03 and 40001 seen through the envelope and the client's retry.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

DB=conveyor_example_campaigns_concurrency
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp)
trap 'drop_test_dbs; rm -f "$OUT"' EXIT
create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/../install.sql" >/dev/null 2>&1 || bail "install.sql failed"

/usr/bin/python3 "$HERE/concurrency.py" "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB" >"$OUT" 2>&1
rc=$?
while read -r line; do
    case $line in
        "ok - "*) pass "${line#ok - }" ;;
        "not ok - "*) fail "${line#not ok - }" ;;
        *) echo "$line" ;;
    esac
done <"$OUT"
is "$rc" 0 "concurrency.py ran to its end"
finish
