#!/usr/bin/env bash
# Stress: 8 concurrent workers (one psql session each, running a procedure that COMMITs every step)
# drain 20,000 jobs in 200 groups from a queue with 2-second leases, 3 attempts and 1-second backoff,
# while a producer is still enqueueing the second half with enqueue_batch. Workers fail ~10% of the
# attempts (ack success => false) and abandon ~1% (no ack: the lease runs out and dequeue reaps it),
# while an operator session calls requeue_stuck every 0.2 s for jobs running longer than 0.4 s (most
# abandoned attempts go back that way before their lease runs out; the late ack of a slow worker is
# then refused).
# Afterwards: every job finished exactly once (completed or dead), nothing ran twice, no two jobs of
# a group ever ran at the same time, and the counters agree with the tables.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_stress
JOBS=20000
NGROUPS=200
BATCH=2000
WORKERS=8
CAP_SECONDS=${CONVEYOR_STRESS_CAP:-240}  # the workers' time cap; the run normally takes far less
use_scratch stress

create_db "$DB" || bail "could not create database $DB"

q "$DB" "SELECT conveyor.create_queue('stress', '{\"lease_seconds\": 2, \"max_attempts\": 3, \"backoff_base_seconds\": 1, \"backoff_max_seconds\": 4}')" \
    >/dev/null || bail "could not create the queue"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the test tables"
CREATE TABLE enqueued (job_id uuid PRIMARY KEY, group_key text NOT NULL, n int NOT NULL UNIQUE,
                       was_duplicate boolean NOT NULL);
-- One row per attempt a worker made: what it did and when.
CREATE TABLE work_log (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL,
    group_key   text,
    worker      text NOT NULL,
    attempt     int NOT NULL,
    lease_until timestamptz NOT NULL,   -- as dequeue returned it
    started     timestamptz NOT NULL,
    finished    timestamptz,
    outcome     text,                   -- succeeded / failed / abandoned
    acked       boolean                 -- what ack returned (NULL: abandoned, never acked)
);
CREATE TABLE worker_errors (worker text, job_id uuid, sqlstate text, message text, detail text,
                            at timestamptz DEFAULT clock_timestamp());
-- Acks retried after 40P01/40001, as every caller must (README, "Errors"), with the server's DETAIL.
CREATE TABLE ack_retries (worker text, job_id uuid, sqlstate text, detail text, at timestamptz DEFAULT clock_timestamp());
-- The attempts the operator's requeue_stuck took back, and when (before its commit freed the group).
CREATE TABLE requeued (job_id uuid NOT NULL, attempt int NOT NULL, at timestamptz NOT NULL);
CREATE TABLE producer_done (done boolean);
CREATE TABLE producer_retries (batch int, sqlstate text, message text);

-- Enqueues batches first..last of BATCH jobs each; job n goes to group n % NGROUPS.
CREATE PROCEDURE produce(first int, last int, batch_size int, ngroups int, pause float8)
LANGUAGE plpgsql AS $$
DECLARE
    b int;
    tries int;
    jobs jsonb;
BEGIN
    FOR b IN first .. last LOOP
        SELECT jsonb_agg(jsonb_build_object(
                   'payload', jsonb_build_object('n', n, 'pad', repeat('x', n % 50)),
                   'group_key', 'g' || lpad((n % ngroups)::text, 3, '0'),
                   'priority', 1 + (n * 7) % 10) ORDER BY n)
          INTO jobs
          FROM generate_series(b * batch_size, (b + 1) * batch_size - 1) n;
        tries := 0;
        LOOP
            BEGIN
                INSERT INTO enqueued (job_id, group_key, n, was_duplicate)
                SELECT e.job_id, jobs -> e.ord ->> 'group_key', (jobs -> e.ord -> 'payload' ->> 'n')::int, e.was_duplicate
                  FROM conveyor.enqueue_batch('stress', jobs) e;
                EXIT;
            EXCEPTION WHEN serialization_failure OR deadlock_detected THEN
                -- enqueue_batch documents 40001 as "retry the transaction"; count them all.
                INSERT INTO producer_retries VALUES (b, SQLSTATE, SQLERRM);
                tries := tries + 1;
                IF tries > 50 THEN RAISE; END IF;
            END;
        END LOOP;
        COMMIT;
        PERFORM pg_sleep(pause);
        COMMIT;
    END LOOP;
END
$$;

-- One worker: dequeue up to 10, then one transaction per job.
-- A worker's ack: 40P01 and 40001 are retried (up to 5 times), as conveyor's callers are told to.
-- Each retry is recorded with the server's DETAIL; any other error propagates.
CREATE FUNCTION ack_retrying(jid uuid, ok boolean, w text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    FOR i IN 1 .. 5 LOOP
        BEGIN
            IF ok THEN
                RETURN conveyor.ack(jid, success => true, worker_id => w);
            END IF;
            RETURN conveyor.ack(jid, success => false, error_message => 'simulated failure', worker_id => w);
        EXCEPTION WHEN deadlock_detected OR serialization_failure THEN
            GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
            INSERT INTO ack_retries (worker, job_id, sqlstate, detail) VALUES (w, jid, SQLSTATE, d);
        END;
    END LOOP;
    RAISE EXCEPTION 'ack of % failed 5 times with 40P01/40001', jid;
END
$$;

CREATE PROCEDURE work(w text, cap_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => cap_seconds);
    batch jsonb;
    job jsonb;
    jid uuid;
    k int;
    log_id bigint;
    r float8;
    ack_ok boolean;
    failures int := 0;   -- dequeue errors in a row
    err_detail text;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        batch := NULL;
        BEGIN
            SELECT jsonb_agg(jsonb_build_object('job_id', d.job_id, 'group_key', d.group_key,
                                                'attempt', d.attempt, 'lease_until', d.lease_until))
              INTO batch
              FROM conveyor.dequeue('stress', w, 10) d;
            failures := 0;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_detail = PG_EXCEPTION_DETAIL;
            INSERT INTO worker_errors (worker, sqlstate, message, detail) VALUES (w, SQLSTATE, 'dequeue: ' || SQLERRM, err_detail);
            failures := failures + 1;
        END;
        COMMIT;
        EXIT WHEN failures >= 50;   -- dequeue is broken: stop rather than spin until the cap
        IF batch IS NULL THEN
            EXIT WHEN EXISTS (SELECT 1 FROM producer_done) AND NOT EXISTS (SELECT 1 FROM conveyor.jobs);
            PERFORM pg_sleep(0.05);
            COMMIT;
            CONTINUE;
        END IF;
        FOR k IN 0 .. jsonb_array_length(batch) - 1 LOOP
            job := batch -> k;
            jid := (job ->> 'job_id')::uuid;
            BEGIN
                INSERT INTO work_log (job_id, group_key, worker, attempt, lease_until, started)
                VALUES (jid, job ->> 'group_key', w, (job ->> 'attempt')::int,
                        (job ->> 'lease_until')::timestamptz, clock_timestamp())
                RETURNING id INTO log_id;
                IF random() < 0.05 THEN
                    PERFORM pg_sleep(0.001 + random() * 0.01);   -- some work takes a while
                END IF;
                r := random();
                IF r < 0.01 THEN
                    -- The worker "crashes": nothing acks this attempt; its lease runs out.
                    UPDATE work_log SET finished = clock_timestamp(), outcome = 'abandoned' WHERE id = log_id;
                ELSIF r < 0.11 THEN
                    UPDATE work_log SET finished = clock_timestamp(), outcome = 'failed' WHERE id = log_id;
                    ack_ok := ack_retrying(jid, false, w);
                    UPDATE work_log SET acked = ack_ok WHERE id = log_id;
                ELSE
                    UPDATE work_log SET finished = clock_timestamp(), outcome = 'succeeded' WHERE id = log_id;
                    ack_ok := ack_retrying(jid, true, w);
                    UPDATE work_log SET acked = ack_ok WHERE id = log_id;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_detail = PG_EXCEPTION_DETAIL;
                INSERT INTO worker_errors (worker, job_id, sqlstate, message, detail)
                VALUES (w, jid, SQLSTATE, SQLERRM, err_detail);
            END;
            COMMIT;
        END LOOP;
    END LOOP;
END
$$;

-- The operator: every 0.2 s, requeue_stuck for jobs running longer than 0.4 s, until the work is done.
CREATE PROCEDURE operate(cap_seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => cap_seconds);
    ids uuid[];
    err_detail text;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM producer_done) AND NOT EXISTS (SELECT 1 FROM conveyor.jobs);
        BEGIN
            ids := ARRAY(SELECT conveyor.requeue_stuck('stress', interval '400 milliseconds'));
            -- The attempt count is kept: the row's attempt is the one taken back (rows locked till commit).
            INSERT INTO requeued SELECT job_id, attempt, clock_timestamp() FROM conveyor.jobs WHERE job_id = ANY(ids);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_detail = PG_EXCEPTION_DETAIL;
            INSERT INTO worker_errors (worker, sqlstate, message, detail)
            VALUES ('operator', SQLSTATE, 'requeue_stuck: ' || SQLERRM, err_detail);
        END;
        COMMIT;
        PERFORM pg_sleep(0.2);
        COMMIT;
    END LOOP;
END
$$;
SQL

# ---- run ------------------------------------------------------------------------------------------
half=$((JOBS / BATCH / 2))
last=$((JOBS / BATCH - 1))
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t0=$(now_ms)
q "$DB" "CALL produce(0, $((half - 1)), $BATCH, $NGROUPS, 0)" || bail "enqueueing the first half failed"
t_enq=$(now_ms)
note "enqueued $((half * BATCH)) jobs in $(((t_enq - t0) / 1000)).$(((t_enq - t0) % 1000 / 100)) s before starting the workers"

t1=$(now_ms)
for i in $(seq 1 $WORKERS); do
    PGOPTIONS='-c synchronous_commit=off' PGAPPNAME="conveyor_stress_w$i" \
        psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL work('w$i', $CAP_SECONDS)" >"$TMP/w$i.log" 2>&1 &
    PIDS+=($!)
done
# The second half arrives while the workers run (enqueue_batch racing dequeue and ack on the groups).
PGAPPNAME=conveyor_stress_operator psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL operate($CAP_SECONDS)" \
    >"$TMP/operator.log" 2>&1 &
PIDS+=($!)
(q "$DB" "CALL produce($half, $last, $BATCH, $NGROUPS, 0.5)" && q "$DB" "INSERT INTO producer_done VALUES (true)") \
    >"$TMP/producer.log" 2>&1 &
producer=$!
PIDS+=("$producer")

# Bounded wait: the procedures stop themselves at the cap; the watchdog allows a minute more.
wait_sessions_bounded "$DB" $((CAP_SECONDS + 60)) "workers"
t2=$(now_ms)

worker_rc=0
for i in $(seq 1 $WORKERS); do
    if [ -s "$TMP/w$i.log" ]; then worker_rc=1; note "worker w$i said:"; sed 's/^/#   /' "$TMP/w$i.log"; fi
done
if [ -s "$TMP/operator.log" ]; then worker_rc=1; note "operator said:"; sed 's/^/#   /' "$TMP/operator.log"; fi
is "$worker_rc" 0 "all $WORKERS worker sessions and the operator ended without an error"
if [ -s "$TMP/producer.log" ]; then note "producer said:"; sed 's/^/#   /' "$TMP/producer.log"; fi
is "$(q "$DB" "SELECT count(*) FROM producer_done")" 1 "the producer enqueued every batch"

elapsed=$((t2 - t1 > 0 ? t2 - t1 : 1))  # ms
attempts=$(q "$DB" "SELECT count(*) FROM work_log")
note "workers ran $((elapsed / 1000)).$((elapsed % 1000 / 100)) s: $attempts attempts, $((attempts * 1000 / elapsed)) attempts/s," \
     "$((JOBS * 1000 / elapsed)) jobs/s"
note "$(q "$DB" "SELECT string_agg(outcome || coalesce(' (ack ' || acked || ')', '') || ': ' || n, ', ' ORDER BY outcome, acked)
                 FROM (SELECT outcome, acked, count(*) n FROM work_log GROUP BY 1, 2) s")"
requeues=$(q "$DB" "SELECT count(*) FROM requeued")
note "attempts requeued by the operator: $requeues"
note "producer retries: $(q "$DB" "SELECT count(*) FROM producer_retries")"
note "ack retries after 40P01/40001: $(q "$DB" "SELECT count(*) FROM ack_retries")"
q "$DB" "SELECT sqlstate || ': ' || coalesce(detail, '') FROM ack_retries LIMIT 5" | sed 's/^/#   /'

# ---- assertions -----------------------------------------------------------------------------------
q "$DB" "CREATE INDEX ON work_log (job_id, attempt)" "ANALYZE work_log" "ANALYZE enqueued" >/dev/null
is "$(q "$DB" "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE was_duplicate) FROM enqueued")" \
   "$JOBS|$JOBS|0" "enqueue_batch returned $JOBS distinct new job ids"

errors=$(q "$DB" "SELECT count(*) FROM worker_errors")
is "$errors" 0 "workers met no errors from dequeue or ack"
[ "$errors" = 0 ] || q "$DB" "SELECT sqlstate, message, count(*), min(detail) FROM worker_errors GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10" | sed 's/^/#   /'

is "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" 0 "no job is left in conveyor.jobs"
is "$(q "$DB" "SELECT count(*) FROM enqueued e WHERE (SELECT count(*) FROM conveyor.job_history h WHERE h.job_id = e.job_id) <> 1")" 0 \
   "every enqueued job is in job_history exactly once"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h WHERE NOT EXISTS (SELECT 1 FROM enqueued e WHERE e.job_id = h.job_id)")" 0 \
   "job_history holds no job that was not enqueued"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history WHERE status NOT IN ('completed', 'dead')")" 0 \
   "every finished job is completed or dead"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h JOIN enqueued e USING (job_id)
               WHERE h.payload ->> 'n' <> e.n::text OR h.group_key IS DISTINCT FROM e.group_key")" 0 \
   "every history row carries its job's payload and group"
note "$(q "$DB" "SELECT string_agg(status || ': ' || n, ', ') FROM (SELECT status, count(*) n FROM conveyor.job_history GROUP BY 1 ORDER BY 1) s")"

is "$(q "$DB" "SELECT count(*) FROM (SELECT job_id, attempt FROM work_log GROUP BY 1, 2 HAVING count(*) > 1) d")" 0 \
   "no attempt of a job was handed to two workers"
is "$(q "$DB" "SELECT count(*) FROM (SELECT job_id FROM work_log GROUP BY 1
                                      HAVING min(attempt) <> 1 OR max(attempt) <> count(*)) d")" 0 \
   "each job's attempts were numbered 1, 2, ... without gaps"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h
               WHERE h.attempt <> (SELECT count(*) FROM work_log w WHERE w.job_id = h.job_id)")" 0 \
   "each finished job's attempt count equals the attempts the workers made"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h
               WHERE h.status = 'completed'
                 AND (SELECT count(*) FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked) <> 1")" 0 \
   "every completed job has exactly one successful ack"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h
               WHERE h.status = 'completed'
                 AND NOT EXISTS (SELECT 1 FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked
                                 AND w.worker = h.worker_id AND w.attempt = h.attempt)")" 0 \
   "each completed job records the worker and attempt whose ack succeeded"
is "$(q "$DB" "SELECT count(*) FROM conveyor.job_history h
               WHERE h.status = 'dead' AND (h.attempt < 3 OR EXISTS (
                   SELECT 1 FROM work_log w WHERE w.job_id = h.job_id AND w.outcome = 'succeeded' AND w.acked))")" 0 \
   "every dead job used its 3 attempts (more if requeued on its last) and none of them succeeded"
is "$(q "$DB" "SELECT count(*) FROM work_log w WHERE w.acked AND EXISTS (
                   SELECT 1 FROM work_log l WHERE l.job_id = w.job_id AND l.attempt > w.attempt AND w.outcome = 'succeeded')")" 0 \
   "no job ran again after a successful ack"

# Per-group serialization. An attempt occupies its group from its start to its finish; if its ack
# failed to find the lease (acked false) or it never acked, only until its lease ran out, since from
# then on the job may be reaped and the group move on; a requeued attempt, only until its requeue.
overlaps=$(q "$DB" "
    WITH iv AS (
        SELECT w.id, w.group_key, w.started,
               CASE WHEN w.acked THEN w.finished
                    ELSE least(coalesce(w.finished, w.lease_until), w.lease_until, r.at) END AS ended
        FROM work_log w LEFT JOIN requeued r ON r.job_id = w.job_id AND r.attempt = w.attempt),
    w AS (
        SELECT iv.*, max(ended) OVER (PARTITION BY group_key ORDER BY started, id
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS busy_until
        FROM iv)
    SELECT count(*) FROM w WHERE busy_until > started")
is "$overlaps" 0 "no two attempts of the same group overlapped in time"
[ "$overlaps" = 0 ] || q "$DB" "
    SELECT a.group_key, a.job_id, a.worker, a.started, a.finished, a.acked, b.job_id, b.worker, b.started, b.finished, b.acked
    FROM work_log a JOIN work_log b ON a.group_key = b.group_key AND a.id < b.id
         AND a.started < b.finished AND b.started < a.finished AND a.acked AND b.acked
    LIMIT 5" | sed 's/^/#   /'
note "attempts still working after their lease ran out: $(q "$DB" "SELECT count(*) FROM work_log WHERE finished > lease_until")"

dead=$(q "$DB" "SELECT count(*) FROM conveyor.job_history WHERE status = 'dead'")
completed=$(q "$DB" "SELECT count(*) FROM conveyor.job_history WHERE status = 'completed'")
is "$(q "$DB" "SELECT pending, scheduled, running, expired_leases, dead FROM conveyor.queue_metrics('stress')")" \
   "0|0|0|0|$dead" "queue_metrics: nothing pending, scheduled or running; dead = $dead as in history"

# The gauges are deltas summed over all counter rows; they must add up to what the tables hold.
real=$(q "$DB" "SELECT (SELECT count(*) FROM conveyor.jobs WHERE state IN ('ready', 'waiting')),
                       (SELECT count(*) FROM conveyor.jobs WHERE state = 'scheduled'),
                       (SELECT count(*) FROM conveyor.jobs WHERE state = 'running'),
                       $dead")
is "$(q "$DB" "SELECT sum(pending), sum(scheduled), sum(running), sum(dead) FROM conveyor.queue_counts")" "$real" \
   "queue_counts gauges (pending, scheduled, running, dead) sum to the real counts"
is "$(q "$DB" "SELECT count(*) FROM requeued r WHERE NOT EXISTS (
                   SELECT 1 FROM work_log w WHERE w.job_id = r.job_id AND w.attempt = r.attempt AND w.acked IS NOT TRUE)")" 0 \
   "every requeued attempt was one whose ack had not succeeded"
check "the operator requeued stuck attempts ($requeues)" [ "$requeues" -gt 0 ]
# Lease expiries: attempts never acked or acked too late, except those the operator requeued.
expired=$(q "$DB" "SELECT count(*) FROM work_log w WHERE (outcome = 'abandoned' OR acked = false)
                   AND NOT EXISTS (SELECT 1 FROM requeued r WHERE r.job_id = w.job_id AND r.attempt = w.attempt)")
failed_acks=$(q "$DB" "SELECT count(*) FROM work_log WHERE outcome = 'failed' AND acked")
is "$(q "$DB" "SELECT sum(enqueued), sum(started), sum(completed), sum(expired), sum(failed) FROM conveyor.queue_counts")" \
   "$JOBS|$attempts|$completed|$expired|$((failed_acks + expired))" \
   "queue_counts counters: enqueued, started, completed, expired and failed match what happened"

finish
