#!/usr/bin/env bash
# Stress: 8 clients for about 10 seconds each record metric points (single and batched), report a
# small set of issues over and over (so the same open issue is reported by several clients at once)
# and now and then resolve one, while two more sessions run aggregate_metrics('hour'/'day') and
# maintain() in a loop. Every client logs what it did in tables of the test. Afterwards (one final
# rollup) the invariants:
#   - every point is in exactly one hourly and one daily bucket: the rollups' counts and sums equal
#     the clients' logs, per metric and tag set;
#   - issues: every report is counted once (occurrences summed over rows = reports logged), at most
#     one open row per (worker, type, message), and one issue_reported event per row;
#   - concurrent maintain() runs never failed (the skipped ones said so).
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_stress_monitor
CLIENTS=8
SECONDS_RUN=${CONVEYOR_STRESS_MONITOR_SECONDS:-10}
use_scratch stress-monitor

create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the test tables"
CREATE TABLE points_log (client int, metric text, tags jsonb, value float8);
CREATE TABLE reports_log (client int, issue_id bigint);
CREATE TABLE maintain_log (skipped boolean);

CREATE PROCEDURE client(c int, run_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => run_seconds);
    v float8;
    batch jsonb;
    id bigint;
    k int;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        v := round((random() * 1000)::numeric, 3);
        PERFORM conveyor.record_metric('stress.latency', v, jsonb_build_object('api', 'a' || (c % 3)));
        INSERT INTO points_log VALUES (c, 'stress.latency', jsonb_build_object('api', 'a' || (c % 3)), v);
        SELECT jsonb_agg(jsonb_build_object('name', 'stress.rows', 'value', g, 'tags', jsonb_build_object('client', c)))
        INTO batch FROM generate_series(1, 5) g;
        PERFORM conveyor.record_metrics(batch);
        INSERT INTO points_log SELECT c, 'stress.rows', jsonb_build_object('client', c), g FROM generate_series(1, 5) g;
        k := floor(random() * 4)::int;
        id := conveyor.report_issue('stress-w' || (k % 2), 'http', 'warning', 'HTTP 5' || k || '0');
        INSERT INTO reports_log VALUES (c, id);
        IF random() < 0.05 THEN
            PERFORM conveyor.resolve_issue(id, 'client ' || c || ' resolved it');
        END IF;
        COMMIT;
    END LOOP;
END $$;

CREATE PROCEDURE roller(run_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => run_seconds);
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        PERFORM conveyor.aggregate_metrics('hour');
        COMMIT;
        PERFORM conveyor.aggregate_metrics('day');
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

CREATE PROCEDURE maintainer(run_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => run_seconds);
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        INSERT INTO maintain_log SELECT conveyor.maintain() ? 'skipped';
        COMMIT;
        PERFORM pg_sleep(0.2);
    END LOOP;
END $$;
SQL

for c in $(seq 1 $CLIENTS); do
    psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL client($c, $SECONDS_RUN)" >"$TMP/client-$c.log" 2>&1 &
    PIDS+=($!)
done
for m in 1 2; do
    psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL maintainer($SECONDS_RUN)" >"$TMP/maintainer-$m.log" 2>&1 &
    PIDS+=($!)
done
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL roller($SECONDS_RUN)" >"$TMP/roller.log" 2>&1 &
PIDS+=($!)
if wait_sessions; then pass "every client, roller and maintainer session ended without an error"; else
    fail "a session failed"; cat "$TMP"/*.log | head -20 | sed 's/^/#   /'; fi

q "$DB" "SELECT conveyor.aggregate_metrics('hour')" "SELECT conveyor.aggregate_metrics('day')" >/dev/null
note "points logged: $(q "$DB" "SELECT count(*) FROM points_log"), reports: $(q "$DB" "SELECT count(*) FROM reports_log"), maintain runs: $(q "$DB" "SELECT count(*) || ' (' || count(*) FILTER (WHERE skipped) || ' skipped)' FROM maintain_log")"
check "the clients recorded points" [ "$(q "$DB" "SELECT count(*) > 100 FROM points_log")" = t ]

for period in hour day; do
    is "$(q "$DB" "
        WITH logged AS (SELECT metric, tags, count(*) AS n, round(sum(value)::numeric, 3) AS s FROM points_log GROUP BY 1, 2),
             rolled AS (SELECT metric, tag_set AS tags, sum(count) AS n, round(sum(sum)::numeric, 3) AS s
                        FROM conveyor.metric_rollups WHERE period = '$period' AND metric LIKE 'stress.%' GROUP BY 1, 2)
        SELECT count(*) FROM logged FULL JOIN rolled USING (metric, tags)
        WHERE logged.n IS DISTINCT FROM rolled.n OR logged.s IS DISTINCT FROM rolled.s")" 0 \
        "every point is in exactly one ${period}ly bucket: counts and sums per metric and tag set match the log"
done
is "$(q "$DB" "SELECT (SELECT count(*) FROM reports_log) = (SELECT sum(occurrences) FROM conveyor.worker_issues WHERE worker_name LIKE 'stress-%')")" t \
    "every report is counted once: occurrences summed over the issues equal the reports"
is "$(q "$DB" "SELECT count(*) FROM (SELECT 1 FROM conveyor.worker_issues WHERE resolved_at IS NULL GROUP BY worker_name, issue_type, message HAVING count(*) > 1) d")" 0 \
    "at most one open row per worker, type and message"
is "$(q "$DB" "SELECT (SELECT count(*) FROM conveyor.worker_issues WHERE worker_name LIKE 'stress-%') = (SELECT count(*) FROM conveyor.events('-infinity', 'issue_reported', 100000) WHERE subject LIKE 'stress-%')")" t \
    "one issue_reported event per issue row"
is "$(q "$DB" "SELECT count(*) FILTER (WHERE NOT skipped) > 0 FROM maintain_log")" t "maintain() ran beside the clients"
finish
