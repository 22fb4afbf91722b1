#!/usr/bin/env bash
# prometheus-postgres-exporter (the Debian binary) with conveyor's queries file, as installed by
# `make install`, scraping a database over the scratch cluster's unix socket as a login role that is
# only a member of conveyor_reader. After a known state is set up, /metrics must carry conveyor's
# series with the right values: queue depth by state, recent completions and failures, expired leases,
# held and stale leases, spend against budget, quota use and exhaustion, and, where conveyor.health()
# and worker_issue_stats() are installed, open worker issues by severity and the health gauges, with
# the figures of the xmin horizon (here held by a prepared transaction).
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_exporter
ROLE=conveyor_exporter_test
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
EXPORTER=/usr/bin/prometheus-postgres-exporter
QUERIES="$("$PGBIN/pg_config" --sharedir)/extension/conveyor_postgres_exporter.yaml"
use_scratch exporter
EXPORTER_PID=
stop_exporter() {
    if [ -n "$EXPORTER_PID" ]; then
        kill "$EXPORTER_PID" 2>/dev/null
        wait "$EXPORTER_PID" 2>/dev/null
        EXPORTER_PID=
    fi
}
# The prepared transaction goes before the database can be dropped.
trap 'stop_exporter; psql -X -q -d "$DB" -c "ROLLBACK PREPARED '"'"'conveyor_exporter_horizon'"'"'" >/dev/null 2>&1; scratch_cleanup; psql -X -q -d postgres -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1' EXIT

[ -x "$EXPORTER" ] || bail "$EXPORTER is missing (scripts/common.sh installs prometheus-postgres-exporter)"
[ -f "$QUERIES" ] || bail "$QUERIES is missing: make install puts it there"

create_db "$DB" || bail "could not create database $DB"
q postgres "SET client_min_messages = warning" "DROP ROLE IF EXISTS $ROLE" "CREATE ROLE $ROLE LOGIN IN ROLE conveyor_reader" >/dev/null || bail "could not create role $ROLE"
is "$(q postgres "SELECT string_agg(r.rolname, ',') FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                  WHERE m.member = '$ROLE'::regrole")" conveyor_reader "the exporter's role is a member of conveyor_reader only"

# ---- the state --------------------------------------------------------------------------------------
# q1: 3 due jobs and 1 running; q2: 1 completed and 1 failed attempt (due again later); q3: a running
# job whose 1-second lease has lapsed. Accounts: acme spent 2.5 of a budget of 10, open without
# budget. Quotas: api used up (5 of 5), api2 10 of 100. Leases: one held, one stale (1-second ttl).
psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not set up the state"
SELECT conveyor.create_queue('q1');
SELECT conveyor.create_queue('q2');
SELECT conveyor.create_queue('q3');
SELECT count(*) FROM generate_series(1, 4) i, LATERAL conveyor.enqueue('q1', jsonb_build_object('i', i));
SELECT count(*) FROM conveyor.dequeue('q1', 'w1', 1);
SELECT count(*) FROM generate_series(1, 2) i, LATERAL conveyor.enqueue('q2', jsonb_build_object('i', i));
SELECT conveyor.ack(job_id, true) FROM conveyor.dequeue('q2', 'w2', 1);
SELECT conveyor.ack(job_id, false, 'boom') FROM conveyor.dequeue('q2', 'w2', 1);
SELECT count(*) FROM conveyor.enqueue('q3', '{}');
SELECT count(*) FROM conveyor.dequeue('q3', 'w3', 1, 1);
SELECT conveyor.account_create('acme', budget => 10);
SELECT count(*) FROM conveyor.charge('acme', 'search', 2.5);
SELECT conveyor.account_create('open');
SELECT conveyor.quota_define('api', 5);
SELECT count(*) FROM conveyor.quota_consume('api', 5);
SELECT conveyor.quota_define('api2', 100);
SELECT count(*) FROM conveyor.quota_consume('api2', 10);
SELECT conveyor.lock_acquire('held', 'o1', 3600);
SELECT conveyor.lock_acquire('stale', 'o2', 1);
SQL
q "$DB" "SELECT conveyor.report_issue('w1', 'timeout', 'error', 'upstream timed out')" \
            "SELECT conveyor.report_issue('w2', 'parse', 'error', 'bad page')" \
            "SELECT conveyor.report_issue('w2', 'slow', 'warning', 'slow responses')" >/dev/null || bail "could not report issues"
# The xmin horizon: a prepared transaction holds it, three transactions old at least.
q "$DB" "BEGIN" "SELECT pg_current_xact_id()" "PREPARE TRANSACTION 'conveyor_exporter_horizon'" \
        "SELECT pg_current_xact_id()" "SELECT pg_current_xact_id()" "SELECT pg_current_xact_id()" >/dev/null ||
    bail "could not prepare a transaction"
sleep 1.2  # the lease of q3's job and the lease 'stale' lapse

# ---- the exporter -----------------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$ROLE dbname=$DB sslmode=disable" \
    "$EXPORTER" --extend.query-path="$QUERIES" --web.listen-address="127.0.0.1:$PORT" >"$TMP/exporter.log" 2>&1 &
EXPORTER_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/metrics" -o "$TMP/metrics" && break
    kill -0 "$EXPORTER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -s "$TMP/metrics" ] || { sed 's/^/#   /' "$TMP/exporter.log"; bail "the exporter did not answer on 127.0.0.1:$PORT"; }
# Scrape once more: a scrape does not run while the state is set up, and this one is the one checked.
curl -sf "http://127.0.0.1:$PORT/metrics" -o "$TMP/metrics" || bail "the second scrape failed"

# metric NAME LABEL...: the value of the one series of NAME carrying every LABEL (e.g. 'queue="q1"');
# "missing" or "ambiguous" otherwise.
metric() {
    local name=$1
    shift
    awk -v name="$name" -v labels="$*" '
        BEGIN { n = split(labels, want, " ") }
        index($0, name "{") == 1 || $1 == name {
            for (i = 1; i <= n; i++) if (index($0, want[i]) == 0) next
            found++; value = $NF
        }
        END { print found == 1 ? value : (found ? "ambiguous" : "missing") }' "$TMP/metrics"
}
# same A B: numerically equal (Prometheus prints 1.7963424e+09 for 1796342400).
same() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 == b + 0) }'; }
# at_least A B: A is a number and A >= B.
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a ~ /^[0-9.e+-]+$/ && a + 0 >= b + 0) }'; }

is "$(metric pg_up)" 1 "the exporter reaches the database over its unix socket"
is "$(metric conveyor_queue_jobs 'queue="q1"' 'state="pending"')" 3 "q1: 3 pending"
is "$(metric conveyor_queue_jobs 'queue="q1"' 'state="running"')" 1 "q1: 1 running"
is "$(metric conveyor_queue_jobs 'queue="q1"' 'state="scheduled"')" 0 "q1: none scheduled"
is "$(metric conveyor_queue_jobs 'queue="q2"' 'state="scheduled"')" 1 "q2: the failed job waits for its retry"
is "$(metric conveyor_queue_recent_completed_1h 'queue="q2"')" 1 "q2: 1 completed in the last hour"
is "$(metric conveyor_queue_jobs_total_jobs 'queue="q1"' 'event="enqueued"')" 4 "q1: 4 enqueued in total (a counter)"
is "$(metric conveyor_queue_jobs_total_jobs 'queue="q2"' 'event="completed"')" 1 "q2: 1 completed in total"
is "$(metric conveyor_queue_jobs_total_jobs 'queue="q2"' 'event="failed"')" 1 "q2: 1 failed in total"
is "$(grep -c '^# TYPE conveyor_queue_jobs_total_jobs counter' "$TMP/metrics")" 1 "the totals are exported as counters"
is "$(metric conveyor_queue_recent_failed_24h 'queue="q2"')" 1 "q2: 1 failed attempt in the last day"
is "$(metric conveyor_queue_recent_expired_leases 'queue="q3"')" 1 "q3: 1 lapsed lease"
is "$(metric conveyor_queue_recent_expired_leases 'queue="q1"')" 0 "q1: no lapsed lease"
is "$(metric conveyor_locks_held)" 2 "2 leases held"
is "$(metric conveyor_locks_stale)" 1 "1 of them stale"
is "$(metric conveyor_account_spent 'account="acme"')" 2.5 "acme spent 2.5"
is "$(metric conveyor_account_budget 'account="acme"')" 10 "of a budget of 10"
is "$(metric conveyor_account_available 'account="acme"')" 7.5 "7.5 available"
is "$(metric conveyor_account_budget 'account="open"')" NaN "an account without budget has no budget value"
is "$(metric conveyor_quota_used 'quota="api"')" 5 "quota api: 5 used"
is "$(metric conveyor_quota_limit 'quota="api"')" 5 "of 5"
is "$(metric conveyor_quota_exhausted 'quota="api"')" 1 "quota api is exhausted"
is "$(metric conveyor_quota_risk 'quota="api"')" 3 "its risk gauge says exhausted (3)"
is "$(metric conveyor_quota_exhausted 'quota="api2"')" 0 "quota api2 is not"
is "$(metric conveyor_quota_remaining 'quota="api2"')" 90 "quota api2: 90 remaining"
reset=$(q "$DB" "SELECT extract(epoch FROM reset_time) FROM conveyor.quota_status('api2')")
check "quota api2: its reset time is quota_status's ($reset)" same "$(metric conveyor_quota_reset_time_seconds 'quota="api2"')" "$reset"

is "$(metric conveyor_worker_issues_open 'severity="error"')" 2 "2 open worker issues of severity error"
is "$(metric conveyor_worker_issues_open 'severity="warning"')" 1 "1 of severity warning"
is "$(metric conveyor_worker_issues_open 'severity="critical"')" 0 "none critical"
# The gauges say what health() says (healthy 0, warning 1, critical 2), read as the exporter's role.
gauge="CASE status WHEN 'healthy' THEN 0 WHEN 'warning' THEN 1 WHEN 'critical' THEN 2 END"
is "$(metric conveyor_health_status 'section="overall"')" \
   "$(q "$DB" "SET ROLE $ROLE" "SELECT $gauge FROM (SELECT conveyor.health() ->> 'overall_status' AS status) x")" \
   "the overall health gauge is health()'s overall_status"
sections=$(q "$DB" "SET ROLE $ROLE" "SELECT e.key || ' ' || $gauge FROM jsonb_each(conveyor.health()) e,
                    LATERAL (SELECT e.value ->> 'status' AS status) s
                    WHERE jsonb_typeof(e.value) = 'object' AND e.value ? 'status' ORDER BY e.key")
is "$(echo "$sections" | cut -d' ' -f1 | tr '\n' ' ')" "costs entities horizon locks queues workers " "health() has the six sections"
while read -r section value; do
    is "$(metric conveyor_health_status "section=\"$section\"")" "$value" "the health gauge of section $section is health()'s"
done <<<"$sections"
# Known without asking health(): an exhausted quota makes costs critical, and so the whole.
is "$(metric conveyor_health_status 'section="costs"')" 2 "the exhausted quota makes section costs critical (2)"
is "$(metric conveyor_health_status 'section="overall"')" 2 "and overall critical (2)"
is "$(metric conveyor_health_queue_status 'queue="q3"')" \
   "$(q "$DB" "SELECT $gauge FROM jsonb_array_elements(conveyor.health() -> 'queues' -> 'queues') q,
               LATERAL (SELECT q ->> 'status' AS status) s WHERE q ->> 'queue' = 'q3'")" \
   "queue q3's health gauge is health()'s"
# The horizon's figures: the prepared transaction holds it, at least 3 transactions and 1 s old (a query
# the exporter runs at the same time on another connection may hold it too, and autovacuum's
# transactions may age it further between the scrape and health() here).
check "the xmin horizon has a holder" at_least "$(metric conveyor_health_horizon_holders)" 1
xmin_age=$(metric conveyor_health_horizon_oldest_xmin_age)
check "its xmin age is 3 transactions or more ($xmin_age)" at_least "$xmin_age" 3
seconds=$(metric conveyor_health_horizon_longest_transaction_seconds)
check "it was prepared 1 s ago or more ($seconds s)" at_least "$seconds" 1
is "$(q "$DB" "SET ROLE $ROLE" "SELECT conveyor.health() -> 'horizon' -> 'oldest_xmin' ->> 'gid'")" conveyor_exporter_horizon \
   "health() names it to the exporter's role"
is "$(metric pg_exporter_last_scrape_error)" 0 "every query of the file ran without error"
grep -q "Error running query" "$TMP/exporter.log" && grep "Error running query" "$TMP/exporter.log" | sort -u | sed 's/^/#   /'

stop_exporter
finish
