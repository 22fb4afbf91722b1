#!/usr/bin/env bash
# The campaigns example's functions against their contract's time budgets:  bash bench/campaigns.sh
# Sets up like the test suite (scripts/common.sh), installs examples/campaigns into a fresh database
# and runs bench/campaigns.py there (BENCH_RUNS calls per measurement, median; default 7).
source "$(dirname "$0")/../scripts/common.sh"
setup_all
DB=conveyor_bench_campaigns
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
psql -X -q -d "$DB" -c "CREATE EXTENSION conveyor" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$ROOT/examples/campaigns/install.sql" >/dev/null 2>&1
/usr/bin/python3 "$ROOT/bench/campaigns.py" "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$DB" "${BENCH_RUNS:-7}"
