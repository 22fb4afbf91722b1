#!/usr/bin/env bash
# The whole service through pgbouncer in transaction mode: 100 jobs created as clients would (a login
# role holding video_client, each call with its request.client_ip), 4 of them cancelled by their
# clients, then three worker processes (a login role holding video_service) render the rest against
# the simulated renderer and S3, while a listener on a direct connection records every notification.
# Then: every job completed, failed or cancelled for the reason its scenario says, conveyor's render
# jobs agree, the timelines are complete and ordered, the storage operations are logged, and the
# notifications arrived in order.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

DB=conveyor_example_video_e2e
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=/usr/bin/python3
JOBS=100
SEED=7
use_scratch video-e2e
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1100))
drop_roles() { psql -X -q -d postgres -c "DROP ROLE IF EXISTS video_e2e_client" -c "DROP ROLE IF EXISTS video_e2e_worker" >/dev/null 2>&1; }
trap 'stop_pgbouncer; scratch_cleanup; drop_roles' EXIT

create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/install.sql" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; bail "install.sql failed"; }
drop_roles
q postgres "CREATE ROLE video_e2e_client LOGIN IN ROLE video_client" "CREATE ROLE video_e2e_worker LOGIN IN ROLE video_service" >/dev/null ||
    bail "could not create the login roles"
# Retries at once: the simulated S3's failures do not clear with time.
q "$DB" "SELECT conveyor.alter_queue('video', '{\"backoff_base_seconds\": 0}')" >/dev/null
start_pgbouncer "$DB" 6 video_e2e_client video_e2e_worker
CLIENT_POOL="host=$TMP port=$BPORT dbname=$DB user=video_e2e_client"
POOL="host=$TMP port=$BPORT dbname=$DB user=video_e2e_worker"
DIRECT="host=$PGHOST port=$PGPORT dbname=$DB user=video_e2e_worker"

# One listener follows all jobs from before the first is created; a second one, started once the jobs
# exist, follows three of them on their own channels.
listen() {  # listen NAME [--job=ID ...]
    local name=$1
    shift
    $PYTHON "$HERE/test/listen.py" --dsn "$DIRECT" --out "$TMP/$name.tsv" "$@" >"$TMP/$name.out" 2>&1 &
    LISTENERS+=($!)
    for _ in $(seq 1 100); do grep -q ready "$TMP/$name.out" && break; sleep 0.1; done
    grep -q ready "$TMP/$name.out" || bail "the listener $name did not start"
}
LISTENERS=()
listen all_jobs
$PYTHON "$HERE/worker/video_worker.py" create --dsn "$CLIENT_POOL" --jobs $JOBS --seed $SEED >"$TMP/jobs.txt" 2>"$TMP/create.log" ||
    { cat "$TMP/create.log"; bail "creating the jobs failed"; }
is "$(wc -l <"$TMP/jobs.txt")" "$JOBS" "$JOBS jobs created through pgbouncer by a video_client login, each with its request IP"
mapfile -t SAMPLE < <(head -3 "$TMP/jobs.txt")
listen per_job "${SAMPLE[@]/#/--job=}"

for i in 1 2 3; do
    $PYTHON "$HERE/worker/video_worker.py" work --direct "$DIRECT" --pool "$POOL" --concurrency 4 --seed $SEED \
        --until-idle >"$TMP/worker$i.log" 2>&1 &
    PIDS+=($!)
done
wait_sessions_bounded "$DB" 150 "the workers"
q "$DB" "NOTIFY video_test_done" >/dev/null
for p in "${LISTENERS[@]}"; do wait "$p" || fail "a listener ended with an error"; done

# What the simulation says should happen to each job.
read -r CANCELLED MISSING BROKEN FLAKY OK < <(cd "$HERE/worker" && $PYTHON -c "
import fake_render
s = {}
for i in range($JOBS):
    k = 'cancelled' if i % 25 == 24 else fake_render.scenario($SEED, f'clip {i}')
    s[k] = s.get(k, 0) + 1
print(*(s.get(k, 0) for k in ('cancelled', 'missing_source', 'broken_upload', 'flaky_upload', 'ok')))")
note "scenarios: $CANCELLED cancelled, $MISSING missing source, $BROKEN broken upload, $FLAKY flaky upload, $OK ok"

is "$(q "$DB" "SELECT count(*) FROM video.jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')")" 0 "every job ended"
is "$(q "$DB" "SELECT string_agg(status || ':' || coalesce(error_code, '-') || ':' || n, ',' ORDER BY status, error_code)
               FROM (SELECT status, error_code, count(*) n FROM video.jobs GROUP BY 1, 2) s")" \
   "$(echo "cancelled:CANCELLED:$CANCELLED completed:-:$((FLAKY + OK)) failed:SOURCE_NOT_FOUND:$MISSING failed:UPLOAD_FAILED:$BROKEN" | tr ' ' '\n' | grep -v ':0$' | paste -sd,)" \
   "each job ended as its scenario says: completed, failed for SOURCE_NOT_FOUND or UPLOAD_FAILED, or cancelled"
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE j.request->>'title' IS NULL")" 0 "every job kept its request"
is "$(q "$DB" "SELECT string_agg(attempts || ':' || n, ',' ORDER BY attempts) FROM (SELECT attempts, count(*) n FROM video.jobs
               WHERE status = 'completed' GROUP BY 1) s")" "$(if [ "$FLAKY" -gt 0 ]; then echo "1:$OK,2:$FLAKY"; else echo "1:$OK"; fi)" \
   "completed jobs: the flaky uploads took two attempts, the others one"
is "$(q "$DB" "SELECT count(*) FROM video.jobs WHERE error_code = 'UPLOAD_FAILED' AND (status <> 'failed' OR attempts <> 3)")" 0 \
   "the broken uploads failed on their third attempt, the queue's max_attempts"

# conveyor's render jobs agree with the video jobs.
is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('video', status => '{pending,running}', lim => 1000)")" 0 "no render job left pending or running"
is "$(q "$DB" "SELECT count(*) FROM video.jobs j JOIN LATERAL (SELECT conveyor.get_job(j.queue_job_id) ->> 'status' AS s) q ON true
               WHERE q.s <> CASE j.status WHEN 'failed' THEN 'dead' ELSE j.status END")" 0 \
   "each render job: completed for a completed video job, dead for a failed one, cancelled for a cancelled one"
is "$(q "$DB" "SELECT count(*) FROM conveyor.dead_jobs('video', lim => 1000) d JOIN video.jobs j ON j.queue_job_id = d.job_id
               WHERE d.reason LIKE j.error_code || ': %'")" "$((MISSING + BROKEN))" "every dead render job's reason is its video job's error code and message"

# Timelines: the final attempt of a completed job ran the five steps in order, each completed, none overlapping.
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE j.status = 'completed' AND
               (SELECT string_agg(t.step || ':' || t.status, ',' ORDER BY t.started_at) FROM video.processing_timeline t
                WHERE t.job_id = j.id AND t.attempt = j.attempts)
               IS DISTINCT FROM 'validation:completed,download:completed,processing:completed,encoding:completed,upload:completed'")" 0 \
   "every completed job: validation, download, processing, encoding, upload, each completed, in that order"
is "$(q "$DB" "SELECT count(*) FROM (SELECT t.started_at < lag(t.completed_at) OVER w AS overlap, t.step_order < lag(t.step_order) OVER w AS back
               FROM video.processing_timeline t WINDOW w AS (PARTITION BY t.job_id, t.attempt ORDER BY t.started_at)) x
               WHERE overlap OR back")" 0 "no step started before the previous one ended, or went back in step_order"
is "$(q "$DB" "SELECT count(*) FROM video.processing_timeline WHERE status = 'running' OR completed_at IS NULL")" 0 "no step left running"
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE j.status = 'failed' AND j.error_code = 'SOURCE_NOT_FOUND' AND NOT EXISTS
               (SELECT FROM video.processing_timeline t WHERE t.job_id = j.id AND t.step = 'download' AND t.status = 'failed' AND t.error_message LIKE '%404%')")" 0 \
   "every missing source failed its download step with the 404"
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE j.status = 'completed' AND EXISTS
               (SELECT FROM video.elements e WHERE e.job_id = j.id AND NOT (e.downloaded AND e.processed AND e.source_size > 0))")" 0 \
   "every element of a completed job downloaded and processed"

# Storage operations: one successful upload per completed job, one failed upload per failed attempt.
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE
               (SELECT count(*) FILTER (WHERE success) FROM video.storage_operations s WHERE s.job_id = j.id) <> (j.status = 'completed')::int
               OR (SELECT count(*) FILTER (WHERE NOT success) FROM video.storage_operations s WHERE s.job_id = j.id)
                  <> CASE WHEN j.error_code = 'UPLOAD_FAILED' THEN 3 WHEN j.status = 'completed' THEN j.attempts - 1 ELSE 0 END")" 0 \
   "storage operations: one successful upload per completed job, one failed upload per failed upload attempt"
is "$(q "$DB" "SELECT count(*) FROM video.jobs j WHERE j.status = 'completed'
               AND j.file_size IS DISTINCT FROM (SELECT s.file_size FROM video.storage_operations s WHERE s.job_id = j.id AND s.success)")" 0 \
   "each completed job's file_size is its upload's"
is "$(q "$DB" "SELECT (SELECT sum(operations) FROM video.storage_performance) = (SELECT count(*) FROM video.storage_operations)")" t \
   "storage_performance counts every operation"

# Notifications.
$PYTHON "$HERE/test/check_notifications.py" "host=$PGHOST port=$PGPORT dbname=$DB user=$PGUSER" "$TMP/all_jobs.tsv" "$TMP/per_job.tsv" >"$TMP/notify.tap"
cat "$TMP/notify.tap"
TESTS_RUN=$((TESTS_RUN + $(grep -c '^ok\|^not ok' "$TMP/notify.tap")))
TESTS_FAILED=$((TESTS_FAILED + $(grep -c '^not ok' "$TMP/notify.tap")))

# The service's own view of it.
is "$(q "$DB" "SELECT video.health_check() ->> 'status'")" healthy "health_check: healthy after the run"
is "$(q "$DB" "SELECT (video.get_system_stats() -> 'jobs' -> 'by_status' ->> 'completed')::int")" "$((FLAKY + OK))" "get_system_stats counts the completed jobs"
is "$(q "$DB" "SELECT count(*) FROM conveyor.audit(function => 'video.create_job') WHERE current_user_name = 'video_e2e_client'")" "$JOBS" \
   "every creation audited with the client's login role and IP"
is "$(q "$DB" "SELECT count(*) FROM conveyor.audit(function => 'video.security_event')")" 0 "no security event in a clean run"
if grep -qE 'Traceback|ERROR' "$TMP"/worker*.log; then
    fail "the workers logged no error"
    grep -hE -B2 -A12 'Traceback|ERROR' "$TMP"/worker*.log | head -60 | sed 's/^/#   /'
else
    pass "the workers logged no error"
fi
finish
