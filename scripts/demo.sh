#!/usr/bin/env bash
# conveyor demo:  bash scripts/demo.sh
#
# A crawl pipeline in about a minute, on a fresh scratch cluster (scripts/common.sh):
#   1. a queue "crawl" (job types REFRESH_CHANNEL_STATS and BACKFILL_CHANNEL, payloads must carry
#      channel_id, 5 s leases, 3 attempts, backoff from 1 s);
#   2. ~3,000 jobs over 160 channels with enqueue_batch, one group per channel (a channel's jobs run
#      one at a time), and a re-submission whose duplicates the dedup keys skip;
#   3. six worker sessions (psql running a PL/pgSQL loop, one transaction per step) that dequeue,
#      "work" for a few milliseconds, fail ~8% of jobs, hang on ~2% (never acknowledge: the lease
#      runs out and a later dequeue reaps the job) and acknowledge the rest; a few jobs always fail
#      and end up dead;
#   4. a progress line every second, then queue_metrics, the trail of a job that failed and was
#      retried, the dead jobs, and consistency checks.
# DEMO_TIMEOUT (seconds, default 150) bounds the worker phase.
source "$(dirname "$0")/common.sh"

WORKERS=6
TIMEOUT=${DEMO_TIMEOUT:-150}
WORK=$(mktemp -d /tmp/conveyor-demo.XXXXXX)
chmod 755 "$WORK"
WORKER_PIDS=()

setup_all
cleanup_on_exit "$WORK"

export PGDATABASE=conveyor_demo
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
show() { psql -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"; }
say() { printf '\n== %s\n' "$*"; }

psql -X -q -d postgres -c "CREATE DATABASE conveyor_demo" >/dev/null
sql -c "CREATE EXTENSION conveyor"

say "queue crawl"
sql >/dev/null <<'SQL'
SELECT conveyor.create_queue('crawl', '{
    "job_types": ["REFRESH_CHANNEL_STATS", "BACKFILL_CHANNEL"],
    "required_keys": ["channel_id"],
    "lease_seconds": 5,
    "max_attempts": 3,
    "backoff_base_seconds": 1
}');
SQL
show -c "SELECT queue, options FROM conveyor.list_queues()"

say "enqueue: 150 channels x (1 REFRESH_CHANNEL_STATS + 19 BACKFILL_CHANNEL pages), one enqueue_batch call"
# Channels 7, 42, 99 and 123 were deleted upstream: their refresh always fails (404) and dies.
sql <<'SQL'
SELECT format('%s jobs enqueued, %s duplicates', count(*) FILTER (WHERE NOT was_duplicate), count(*) FILTER (WHERE was_duplicate))
FROM conveyor.enqueue_batch('crawl', (
    SELECT jsonb_agg(job ORDER BY c, k)
    FROM generate_series(1, 150) c, generate_series(0, 19) k,
    LATERAL (SELECT CASE WHEN k = 0 THEN jsonb_build_object(
                    'job_type', 'REFRESH_CHANNEL_STATS', 'group_key', 'UC' || lpad(c::text, 4, '0'), 'priority', 7,
                    'dedup_key', 'refresh:UC' || lpad(c::text, 4, '0'),
                    'payload', jsonb_build_object('channel_id', 'UC' || lpad(c::text, 4, '0'),
                                                  'deleted', c IN (7, 42, 99, 123)))
                ELSE jsonb_build_object(
                    'job_type', 'BACKFILL_CHANNEL', 'group_key', 'UC' || lpad(c::text, 4, '0'),
                    'payload', jsonb_build_object('channel_id', 'UC' || lpad(c::text, 4, '0'), 'page', k))
                END AS job) j));
SQL

say "re-submit REFRESH_CHANNEL_STATS for channels 141..160 (dedup_key refresh:<channel>)"
show <<'SQL'
WITH r AS (
    SELECT * FROM conveyor.enqueue_batch('crawl', (
        SELECT jsonb_agg(jsonb_build_object(
            'job_type', 'REFRESH_CHANNEL_STATS', 'group_key', 'UC' || lpad(c::text, 4, '0'), 'priority', 7,
            'dedup_key', 'refresh:UC' || lpad(c::text, 4, '0'),
            'payload', jsonb_build_object('channel_id', 'UC' || lpad(c::text, 4, '0'))) ORDER BY c)
        FROM generate_series(141, 160) c)))
SELECT count(*) AS submitted,
       count(*) FILTER (WHERE was_duplicate) AS skipped_as_duplicates,
       count(*) FILTER (WHERE NOT was_duplicate) AS new_jobs
FROM r;
SQL
TOTAL=$(sql -c "SELECT pending FROM conveyor.queue_metrics('crawl')")
echo "$TOTAL jobs pending over $(sql -c "SELECT count(DISTINCT group_key) FROM conveyor.jobs") channels"

# ---- workers -------------------------------------------------------------------------------------------

# One worker: a PL/pgSQL loop, one transaction per step (dequeue; work; acknowledge). Errors from
# conveyor calls are reported as warnings and counted instead of ending the worker.
worker_sql() {
    cat <<SQL
DO \$worker\$
DECLARE
    me     constant text := '$1';
    jid    uuid;
    pl     jsonb;
    r      float8;
    done   int := 0;
    failed int := 0;
    hung   int := 0;
    errors int := 0;
BEGIN
    LOOP
        BEGIN
            SELECT d.job_id, d.payload INTO jid, pl FROM conveyor.dequeue('crawl', me, 1) d;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING '% dequeue: % %', me, SQLSTATE, SQLERRM;
            errors := errors + 1;
            jid := NULL;
        END;
        COMMIT;
        IF jid IS NULL THEN
            -- Nothing ready: stop once nothing is pending, scheduled or running, else look again soon.
            EXIT WHEN (SELECT pending + scheduled + running = 0 FROM conveyor.queue_metrics('crawl'));
            PERFORM pg_sleep(0.1);
            COMMIT;
            CONTINUE;
        END IF;

        PERFORM pg_sleep(0.005 + random() * 0.035);           -- the work
        COMMIT;                                                 -- (the acknowledgement is a transaction of its own)
        r := random();
        BEGIN
            IF (pl ->> 'deleted')::boolean THEN
                PERFORM conveyor.ack(jid, false, error_message => 'HTTP 404: channel ' || (pl ->> 'channel_id') || ' not found', worker_id => me,
                                     retry => false);  -- a deleted channel never comes back: dead at once
                failed := failed + 1;
            ELSIF r < 0.08 THEN
                PERFORM conveyor.ack(jid, false, error_message => 'HTTP 503 from upstream (quota exceeded)', worker_id => me);
                failed := failed + 1;
            ELSIF r < 0.10 THEN
                hung := hung + 1;                               -- never acknowledged: the lease runs out
            ELSE
                PERFORM conveyor.ack(jid, true, worker_id => me,
                                     stats => jsonb_build_object('http_requests', 1 + (random() * 4)::int));
                done := done + 1;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING '% ack %: % %', me, jid, SQLSTATE, SQLERRM;
            errors := errors + 1;
        END;
        COMMIT;
    END LOOP;
    RAISE NOTICE '% finished: % succeeded, % failed, % hung, % errors', me, done, failed, hung, errors;
END
\$worker\$;
SQL
}

say "$WORKERS workers start"
for i in $(seq 1 $WORKERS); do
    worker_sql "worker-$i" > "$WORK/worker-$i.sql"
    psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/worker-$i.sql" > "$WORK/worker-$i.log" 2>&1 &
    WORKER_PIDS+=($!)
done

alive() {
    local p
    for p in "${WORKER_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

start=$(date +%s)
printf '%6s %10s %8s %10s %8s %8s %8s\n' "time" "completed" "pending" "scheduled" "running" "failed" "dead"
while alive; do
    now=$(date +%s)
    if [ $((now - start)) -ge "$TIMEOUT" ]; then
        echo "workers still running after $TIMEOUT s; stopping them" >&2
        exit 1
    fi
    sql -F ' ' -c "SELECT completed_1h, pending, scheduled, running, failed_24h, dead FROM conveyor.queue_metrics('crawl')" |
        { read -r c p s r f d; printf '%5ss %10s %8s %10s %8s %8s %8s\n' "$((now - start))" "$c" "$p" "$s" "$r" "$f" "$d"; }
    sleep 1
done
elapsed=$(($(date +%s) - start))

status=0
for i in $(seq 1 $WORKERS); do
    wait "${WORKER_PIDS[$((i - 1))]}" || { echo "worker-$i exited with an error:" >&2; status=1; }
done
WORKER_PIDS=()
echo "all workers done in ${elapsed}s"
grep -h 'finished:' "$WORK"/worker-*.log | sed 's/^.*NOTICE: */  /'
if grep -q 'WARNING' "$WORK"/worker-*.log; then
    echo "errors raised by conveyor in the workers:"
    grep -h 'WARNING' "$WORK"/worker-*.log | sed 's/^/  /'
fi
[ "$status" -eq 0 ] || { cat "$WORK"/worker-*.log >&2; exit 1; }

# ---- results -------------------------------------------------------------------------------------------

say "conveyor.queue_metrics('crawl')"
show -x -c "SELECT * FROM conveyor.queue_metrics('crawl')"

say "a job that failed and was retried: conveyor.job_events"
show <<'SQL'
SELECT e.at::time(3) AS at, e.event, e.worker_id, e.details
FROM (SELECT h.job_id FROM conveyor.job_history h
      WHERE h.status = 'completed' AND h.attempt > 1
        AND EXISTS (SELECT 1 FROM conveyor.job_events f WHERE f.job_id = h.job_id AND f.event = 'failed')
      ORDER BY h.attempt DESC, h.finished_at LIMIT 1) j,
     LATERAL conveyor.job_events(j.job_id) e;
SQL

say "a job whose worker hung: its lease expired, a dequeue reaped it, and it ran again"
show <<'SQL'
SELECT e.at::time(3) AS at, e.event, e.worker_id, e.details
FROM (SELECT h.job_id FROM conveyor.job_history h
      WHERE h.status = 'completed'
        AND EXISTS (SELECT 1 FROM conveyor.job_events x WHERE x.job_id = h.job_id AND x.event = 'expired')
      ORDER BY h.finished_at LIMIT 1) j,
     LATERAL conveyor.job_events(j.job_id) e;
SQL

say "dead jobs"
show <<'SQL'
SELECT h.job_id, h.job_type, h.group_key AS channel, h.attempt, h.last_error, h.finished_at::time(0) AS died_at
FROM conveyor.job_history h WHERE h.status = 'dead' ORDER BY h.finished_at;
SQL

say "checks"
sql <<SQL
SELECT CASE WHEN m.pending + m.scheduled + m.running = 0 THEN 'ok' ELSE 'NOT OK' END
           || ' - nothing left pending, scheduled or running (' || m.pending || '/' || m.scheduled || '/' || m.running || ')'
FROM conveyor.queue_metrics('crawl') m;
SELECT CASE WHEN count(*) = $TOTAL THEN 'ok' ELSE 'NOT OK' END
           || ' - every job finished exactly once: ' || count(*) || ' in history (' || count(*) FILTER (WHERE status = 'completed')
           || ' completed, ' || count(*) FILTER (WHERE status = 'dead') || ' dead) of $TOTAL'
FROM conveyor.job_history;
SELECT CASE WHEN m.dead = d.n AND m.completed_1h = c.n THEN 'ok' ELSE 'NOT OK' END
           || ' - queue_metrics agrees with history (dead ' || m.dead || ' vs ' || d.n || ', completed ' || m.completed_1h || ' vs ' || c.n || ')'
FROM conveyor.queue_metrics('crawl') m,
     (SELECT count(*) AS n FROM conveyor.job_history WHERE status = 'dead') d,
     (SELECT count(*) AS n FROM conveyor.job_history WHERE status = 'completed') c;
SELECT CASE WHEN count(*) >= 4 AND bool_and(attempt = 1 AND reason = 'not retryable') THEN 'ok' ELSE 'NOT OK' END
           || ' - the 4 deleted channels'' refreshes are dead at their first attempt, not retried: ' || count(*)
FROM conveyor.job_history WHERE status = 'dead' AND (payload ->> 'deleted')::boolean;
-- A channel's jobs never overlapped: each start comes after the previous job of the group ended.
WITH runs AS (
    SELECT h.group_key, s.at AS started, lead(s.at) OVER (PARTITION BY h.group_key ORDER BY s.at) AS next_start,
           (SELECT min(e.at) FROM conveyor.job_events e WHERE e.job_id = s.job_id AND e.at > s.at
              AND e.event IN ('succeeded', 'failed', 'expired', 'dead')) AS ended
    FROM conveyor.job_events s JOIN conveyor.job_history h USING (job_id)
    WHERE s.event = 'started')
SELECT CASE WHEN count(*) = 0 THEN 'ok' ELSE 'NOT OK' END || ' - no two jobs of one channel ran at once ('
           || count(*) || ' overlaps)'
FROM runs WHERE next_start < ended;
SQL
