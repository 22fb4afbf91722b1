#!/usr/bin/env bash
# pg_dump / pg_restore: a database whose queue holds pending (ready, waiting in a group, scheduled,
# in backoff), running, completed, dead and cancelled jobs is dumped in custom format and restored
# into fresh databases. The restore must be clean, every job must come back as it was (hot table and
# history, events and counters too), queue options and metrics must match, and the restored database
# must keep working: dequeue picks the same jobs as the original, leases held before the dump can
# still be heartbeaten and acked, new jobs and new queues get fresh ids and land in partitions.
source "$(dirname "$0")/lib/tap.bash"

SRC=conveyor_shell_dump_src
DST=conveyor_shell_dump_dst
DST1=conveyor_shell_dump_dst1
TMP=$(mktemp -d /tmp/conveyor-dump.XXXXXX)
chmod 755 "$TMP"
trap 'drop_test_dbs; rm -rf "$TMP"' EXIT

create_db "$SRC" || bail "could not create database $SRC"

# ---- the source database ------------------------------------------------------------------------
# Job names are kept in a table of the test (public.names), so both databases can refer to them.
psql -X -q -At -v ON_ERROR_STOP=1 -d "$SRC" >/dev/null <<'SQL' || bail "could not fill the source database"
CREATE TABLE names (name text PRIMARY KEY, job_id uuid NOT NULL);
CREATE FUNCTION named(n text) RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT job_id FROM names WHERE name = n $$;

SELECT conveyor.create_queue('dr', '{"lease_seconds": 3600, "max_attempts": 3, "backoff_base_seconds": 600,
    "backoff_max_seconds": 7200, "retention_days": 5, "job_types": ["fetch", "parse"], "required_keys": ["url"],
    "event_trail": "all", "notify": false}');
SELECT conveyor.create_queue('side');

-- r1..r6 will be running (r6 heads group gr, r7 waits behind it); r5 may be tried only once.
INSERT INTO names SELECT 'r' || i, (conveyor.enqueue('dr', jsonb_build_object('url', 'https://r/' || i, 'i', i), 'fetch',
        priority => 10, group_key => CASE WHEN i = 6 THEN 'gr' END,
        max_attempts => CASE WHEN i = 5 THEN 1 END)).job_id
    FROM generate_series(1, 6) i ORDER BY i;
INSERT INTO names SELECT 'r7', job_id FROM conveyor.enqueue('dr', '{"url": "https://r/7", "note": "waits behind r6"}', 'fetch',
        group_key => 'gr', priority => 10);
SELECT count(*) FROM conveyor.dequeue('dr', 'w1', 6);
SELECT conveyor.ack(named('r1'), true, stats => '{"bytes": 42}');           -- completed
SELECT conveyor.ack(named('r2'), false, 'timeout');                         -- back off: scheduled
SELECT conveyor.dead_letter(named('r3'), 'poison');                         -- dead
SELECT conveyor.cancel(named('r4'), 'not needed');                          -- cancelled
SELECT conveyor.ack(named('r5'), false, 'fatal');                           -- dead (max_attempts 1)
-- r6 stays running, leased to w1.

-- Pending: ready, grouped (one ready, two waiting), scheduled, deduplicated, another priority.
INSERT INTO names SELECT 'p1', job_id FROM conveyor.enqueue('dr', '{"url": "https://p/1", "nested": {"a": [1, 2, {"b": null}]}}', 'fetch');
INSERT INTO names SELECT 'p' || i, (conveyor.enqueue('dr', jsonb_build_object('url', 'https://p/' || i), 'parse', group_key => 'ga')).job_id
    FROM generate_series(2, 4) i ORDER BY i;
INSERT INTO names SELECT 'p5', job_id FROM conveyor.enqueue('dr', '{"url": "https://p/5"}', 'fetch', run_at => now() + interval '1 day');
INSERT INTO names SELECT 'p6', job_id FROM conveyor.enqueue('dr', '{"url": "https://p/6", "text": "ünïcødé \"quoted\" \\ back"}', 'fetch', dedup_key => 'd1');
INSERT INTO names SELECT 'p7', job_id FROM conveyor.enqueue('dr', '{"url": "https://p/7"}', 'parse', priority => 8);

INSERT INTO names SELECT 's' || i, (conveyor.enqueue('side', jsonb_build_object('i', i))).job_id FROM generate_series(1, 2) i ORDER BY i;
SELECT conveyor.pause_queue('side');
SQL

# What the source holds, by job name: where it is (hot table or history), its state, payload.
JOB_STATES="SELECT n.name, 'jobs', j.state, j.payload, j.attempt, j.worker_id FROM names n JOIN conveyor.jobs j USING (job_id)
            UNION ALL
            SELECT n.name, 'history', h.status, h.payload, h.attempt, h.worker_id FROM names n JOIN conveyor.job_history h USING (job_id)
            ORDER BY 1"
is "$(q "$SRC" "SELECT string_agg(name || ':' || state, ' ' ORDER BY name) FROM ($JOB_STATES) s(name, t, state)")" \
   "p1:ready p2:ready p3:waiting p4:waiting p5:scheduled p6:ready p7:ready r1:completed r2:scheduled r3:dead r4:cancelled r5:dead r6:running r7:waiting s1:ready s2:ready" \
   "the source holds ready, waiting, scheduled, running, completed, dead and cancelled jobs"

# ---- dump and restore ---------------------------------------------------------------------------
pg_dump -Fc -f "$TMP/src.dump" "$SRC" 2>"$TMP/dump.err"
is "$?" 0 "pg_dump -Fc succeeds"
[ -s "$TMP/dump.err" ] && sed 's/^/#   /' "$TMP/dump.err"

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $DST WITH (FORCE)" -c "CREATE DATABASE $DST" \
    -c "DROP DATABASE IF EXISTS $DST1 WITH (FORCE)" -c "CREATE DATABASE $DST1" >/dev/null || bail "could not create the target databases"
TEST_DBS+=("$DST" "$DST1")

rc=0
pg_restore -d "$DST" "$TMP/src.dump" >"$TMP/restore.out" 2>&1 || rc=$?
is "$rc" 0 "pg_restore into a fresh database exits 0"
errors=$(grep -c 'error:' "$TMP/restore.out" || true)
is "$errors" 0 "pg_restore reports no errors"
[ "$errors" = 0 ] || { head -6 "$TMP/restore.out"; tail -1 "$TMP/restore.out"; } | sed 's/^/#   /'

rc=0
pg_restore --exit-on-error --single-transaction -d "$DST1" "$TMP/src.dump" >"$TMP/restore1.out" 2>&1 || rc=$?
is "$rc" 0 "pg_restore --single-transaction --exit-on-error succeeds too"
[ "$rc" = 0 ] || head -3 "$TMP/restore1.out" | sed 's/^/#   /'

# ---- the restored data --------------------------------------------------------------------------
both_equal() {  # both_equal DESCRIPTION SQL: the query gives the same output in both databases
    local a b
    a=$(q "$SRC" "$2" 2>&1)
    b=$(q "$DST" "$2" 2>&1)
    if [ "$a" = "$b" ] && [ -n "$a" ]; then
        pass "$1"
    else
        fail "$1"
        diff <(echo "$a") <(echo "$b") | head -10 | sed 's/^/#   /'
    fi
}
table_digest() { echo "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM $1 t"; }

is "$(q "$DST" "SELECT count(*) FROM names")" 16 "the restored database has the 16 named jobs of the test"
both_equal "every job is back with the same place, state, payload, attempt and worker" "$JOB_STATES"
for t in conveyor.queues conveyor.jobs conveyor.job_history conveyor.job_events conveyor.queue_counts; do
    both_equal "$t is restored row for row" "$(table_digest $t)"
done
both_equal "list_queues (options, paused, created_at) is unchanged" "SELECT * FROM conveyor.list_queues()"
both_equal "queue_metrics is unchanged" \
    "SELECT queue, pending, scheduled, running, expired_leases, completed_1h, failed_24h, dead, avg_queue_seconds, jobs_per_hour
     FROM conveyor.queue_metrics()"
both_equal "queue_id_seq is restored" "SELECT last_value || ' ' || is_called FROM conveyor.queue_id_seq"
both_equal "the partitions of job_history and job_events are restored with their bounds" \
    "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent IN ('conveyor.job_history'::regclass, 'conveyor.job_events'::regclass) ORDER BY 1"
both_equal "each partition has the indexes of its parent, once" \
    "SELECT c.relname || ' ' || count(x.indexrelid) || ' ' || count(x.indexrelid) FILTER (WHERE x.indisvalid)
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid LEFT JOIN pg_index x ON x.indrelid = c.oid
     WHERE i.inhparent IN ('conveyor.job_history'::regclass, 'conveyor.job_events'::regclass) GROUP BY 1 ORDER BY 1"
is "$(q "$DST" "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                WHERE e.extname = 'conveyor' AND d.deptype = 'e' AND d.classid = 'pg_class'::regclass
                  AND d.objid IN ('conveyor.jobs'::regclass, 'conveyor.job_history'::regclass, 'conveyor.queues'::regclass)")" 3 \
   "the restored tables still belong to the extension"

# ---- the restored database works --------------------------------------------------------------
# The same operations on both databases must give the same answers.
is "$(q "$DST" "SELECT was_duplicate, job_id = named('p6') FROM conveyor.enqueue('dr', '{\"url\": \"x\"}', 'fetch', dedup_key => 'd1')")" \
   "t|t" "restored: a dedup key of a pending job still deduplicates"
both_equal "dequeue picks the same jobs, in the same order, from the restored database" \
    "SELECT n.name || ' ' || d.attempt FROM conveyor.dequeue('dr', 'w2', 10) WITH ORDINALITY d JOIN names n USING (job_id)
     ORDER BY d.ordinality"
is "$(q "$DST" "SELECT conveyor.heartbeat(named('r6'), 'w1', 60) > now()")" t "restored: the lease of r6 (taken before the dump) can be extended"
is "$(q "$DST" "SELECT conveyor.ack(named('r6'), true, worker_id => 'w1')")" t "restored: r6 is acked by the worker that leased it before the dump"
is "$(q "$DST" "SELECT string_agg(n.name, ' ') FROM conveyor.dequeue('dr', 'w3', 10) d JOIN names n USING (job_id)")" "r7" \
   "restored: finishing r6 makes r7, waiting behind it in group gr, the next job out"
is "$(q "$DST" "SELECT conveyor.ack_many(array_agg(job_id), true, worker_id => 'w2') FROM conveyor.jobs WHERE worker_id = 'w2'")" 4 \
   "restored: the four jobs dequeued by w2 are acked"
is "$(q "$DST" "SELECT string_agg(n.name, ' ' ORDER BY n.name) FROM conveyor.dequeue('dr', 'w2', 10) d JOIN names n USING (job_id)")" "p3" \
   "restored: group ga moves on to its next job"
is "$(q "$DST" "SELECT conveyor.ack(named('p3'), true, worker_id => 'w2') AND conveyor.ack(named('r7'), true, worker_id => 'w3')")" t \
   "restored: p3 and r7 are acked"
is "$(q "$DST" "SELECT conveyor.retry(named('r3'))")" t "restored: a dead job can be retried"
new=$(q "$DST" "SELECT job_id FROM conveyor.enqueue('dr', '{\"url\": \"https://new\"}', 'fetch', priority => 10)")
is "$(q "$DST" "SELECT count(*) FROM conveyor.job_history WHERE job_id = '$new'") $(q "$DST" "SELECT count(*) FROM names WHERE job_id = '$new'")" "0 0" \
   "restored: enqueue makes a new job with a new id"
is "$(q "$DST" "SELECT count(*) FILTER (WHERE conveyor.ack(job_id, true, worker_id => 'w4')) FROM conveyor.dequeue('dr', 'w4', 10)")" 3 \
   "restored: the new job, r3 and p4 are dequeued and acked"
is "$(q "$DST" "SELECT status, tableoid::regclass::text LIKE 'conveyor.job_history_p%' FROM conveyor.job_history WHERE job_id = '$new'")" "completed|t" \
   "restored: the new job finished into a history partition"
q "$DST" "SELECT conveyor.resume_queue('side')" >/dev/null
is "$(q "$DST" "SELECT count(*) FILTER (WHERE conveyor.ack(job_id, true)) FROM conveyor.dequeue('side', 'w5', 10)")" 2 \
   "restored: the paused queue resumes and its jobs run"
src_max=$(q "$SRC" "SELECT max(queue_id) FROM conveyor.queues")
q "$DST" "SELECT conveyor.create_queue('fresh')" >/dev/null
is "$(q "$DST" "SELECT queue_id FROM conveyor.queues WHERE name = 'fresh'")" "$((src_max + 1))" \
   "restored: a new queue takes the next id from the restored sequence"
is "$(q "$DST" "SELECT count(*) FROM conveyor.dequeue('fresh', 'w6')")" 0 "restored: the new queue is empty"
maintained=$(q "$DST" "SELECT conveyor.maintain() ->> 'groups_repaired'" 2>&1)
is "$maintained" 0 "restored: maintain() runs and finds nothing to repair"

is "$(q "$DST" "SELECT string_agg(name || ':' || state, ' ' ORDER BY name) FROM ($JOB_STATES) s(name, t, state)")" \
   "p1:completed p2:completed p3:completed p4:completed p5:scheduled p6:completed p7:completed r1:completed r2:scheduled r3:completed r4:cancelled r5:dead r6:completed r7:completed s1:completed s2:completed" \
   "restored: every job ends where it should"
is "$(q "$DST" "SELECT (SELECT count(*) FROM conveyor.jobs WHERE state IN ('ready', 'waiting')) || ' ' ||
                       (SELECT count(*) FROM conveyor.jobs WHERE state = 'scheduled') || ' ' ||
                       (SELECT count(*) FROM conveyor.jobs WHERE state = 'running') || ' ' ||
                       (SELECT count(*) FROM conveyor.job_history WHERE status = 'dead')")" \
   "$(q "$DST" "SELECT sum(pending) || ' ' || sum(scheduled) || ' ' || sum(running) || ' ' || sum(dead) FROM conveyor.queue_counts")" \
   "restored: the queue_counts gauges add up to the real counts"
is "$(q "$DST" "SELECT string_agg(queue || ' ' || pending || ' ' || running || ' ' || dead, ', ' ORDER BY queue) FROM conveyor.queue_metrics()")" \
   "dr 0 0 1, fresh 0 0 0, side 0 0 0" "restored: queue_metrics after the work"

# The strictly restored copy holds the same data (when that restore succeeded at all).
if [ "$(q "$DST1" "SELECT count(*) FROM pg_extension WHERE extname = 'conveyor'" 2>/dev/null)" = 1 ]; then
    is "$(q "$DST1" "$(table_digest conveyor.job_history)")" "$(q "$SRC" "$(table_digest conveyor.job_history)")" \
       "the single-transaction restore holds the same history"
else
    fail "the single-transaction restore holds the same history (nothing was restored)"
fi

finish
