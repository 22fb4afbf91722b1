-- The queue stress's workload (test/shell/lib/queue_stress.bash loads it): its tables and the
-- producer, worker and operator procedures, which call conveyor's functions by their names, on one
-- server (test/shell/stress_queue.sh) or on a PL/Proxy front (test/shell/proxy_shards.sh). Each setup
-- first defines the two functions that differ:
--   stress_jobs_left() RETURNS boolean                     any job still pending, scheduled or running
--   stress_requeue_stuck(queue text, older_than interval)  requeue_stuck, with the attempt each job
--       RETURNS TABLE(job_id uuid, attempt int)            was on when it was taken back
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
            EXIT WHEN EXISTS (SELECT 1 FROM producer_done) AND NOT stress_jobs_left();
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
    err_detail text;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM producer_done) AND NOT stress_jobs_left();
        BEGIN
            INSERT INTO requeued SELECT r.job_id, r.attempt, clock_timestamp()
              FROM stress_requeue_stuck('stress', interval '400 milliseconds') r;
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
