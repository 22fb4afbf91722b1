-- bench/soak.sh's database: two queues, the workers' loop, and the calendar that ages finished rows.
-- Runs in database conveyor_soak after CREATE EXTENSION conveyor.

-- crawl: ungrouped, failures retried twice after 1-2 s, then dead; only failures leave events.
-- groups: 20 groups, one job of a group at a time; every state change leaves an event.
SELECT conveyor.create_queue('soak_crawl', '{"max_attempts": 3, "backoff_base_seconds": 1, "backoff_max_seconds": 2,
                                             "lease_seconds": 20, "event_trail": "failures"}');
SELECT conveyor.create_queue('soak_groups', '{"max_attempts": 3, "backoff_base_seconds": 1, "backoff_max_seconds": 2,
                                              "lease_seconds": 20}');

CREATE SCHEMA soak;

-- One worker until `seconds` have passed: dequeue up to 20 jobs (one transaction), then settle them
-- (another): 1% abandoned (never acknowledged: their 20 s leases run out and maintain() takes them
-- back), 5% failed, the rest acknowledged together; one job in ten also takes a lease on its channel
-- and an entity through acquire/complete (or fail). 40001, 40P01 and 55P03 are retried, as callers
-- must; any other error ends the worker, and bench/soak.sh counts it. Each call ends with a notice of
-- what it did, with the time its dequeue calls took (what a backlog or bloat makes dequeue cost).
CREATE PROCEDURE soak.work(worker text, queue text, seconds int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + seconds * interval '1 second';
    ids uuid[];
    payloads jsonb[];
    ok uuid[];
    r float8;
    channel text;
    token bigint;
    retries int := 0;
    settled bigint := 0;
    dequeues bigint := 0;
    dequeued bigint := 0;
    dequeue_ms float8 := 0;
    t0 timestamptz;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        BEGIN
            t0 := clock_timestamp();
            SELECT array_agg(d.job_id), array_agg(d.payload) INTO ids, payloads
            FROM conveyor.dequeue(queue, worker, 20) d;
            dequeue_ms := dequeue_ms + 1000 * extract(epoch FROM clock_timestamp() - t0);
            dequeues := dequeues + 1;
            dequeued := dequeued + COALESCE(cardinality(ids), 0);
        EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
            retries := retries + 1;
            ids := NULL;
        END;
        COMMIT;
        IF ids IS NULL THEN
            PERFORM pg_sleep(0.1);
            CONTINUE;
        END IF;
        BEGIN
            ok := '{}';
            FOR j IN 1 .. cardinality(ids) LOOP
                r := random();
                CONTINUE WHEN r < 0.01;
                IF r >= 0.9 THEN
                    channel := payloads[j] ->> 'channel';
                    token := conveyor.lock_acquire('channel:' || channel, worker, 60);
                    IF conveyor.entity_acquire('channel', channel, 60) THEN
                        IF r >= 0.99 THEN
                            PERFORM conveyor.entity_fail('channel', channel, 'HTTP 404');
                        ELSE
                            PERFORM conveyor.entity_complete('channel', channel, jsonb_build_object('worker', worker));
                        END IF;
                    END IF;
                    IF token IS NOT NULL THEN
                        PERFORM conveyor.lock_release('channel:' || channel, worker, token);
                    END IF;
                END IF;
                IF r < 0.06 THEN
                    PERFORM conveyor.ack(ids[j], false, 'HTTP 503', worker_id => worker);
                ELSE
                    ok := ok || ids[j];
                END IF;
            END LOOP;
            IF cardinality(ok) > 0 THEN
                settled := settled + conveyor.ack_many(ok, true, worker_id => worker);
            END IF;
        EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available THEN
            retries := retries + 1;  -- nothing settled: the leases run out and the jobs come back
        END;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'worker % settled % jobs, retried % transactions, dequeued % jobs in % calls taking % ms',
        worker, settled, retries, dequeued, dequeues, round(dequeue_ms::numeric, 1);
END $$;

-- The calendar: a day passes every minute. Makes the partition of a past day `day` for conveyor's
-- daily-partitioned table `tbl` (as conveyor names it, with the indexes conveyor gives today's
-- partition) and moves into it the rows whose `age_col` is older than 30 seconds and whose partition
-- key `key_col` is not already in the past, as if they had been written that long ago. maintain()
-- then finds the partition past its retention and drops it. Returns the rows moved.
CREATE FUNCTION soak.age(tbl text, key_col text, age_col text, day date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    part text := tbl || '_p' || to_char(day, 'YYYYMMDD');
    today text := tbl || '_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD');
    def text;
    moved bigint;
BEGIN
    EXECUTE format('CREATE TABLE conveyor.%I PARTITION OF conveyor.%I FOR VALUES FROM (%L) TO (%L)',
                   part, tbl, day::text || ' 00:00+00', (day + 1)::text || ' 00:00+00');
    FOR def IN SELECT indexdef FROM pg_indexes WHERE schemaname = 'conveyor' AND tablename = today LOOP
        EXECUTE replace(def, today, part);
    END LOOP;
    EXECUTE format('UPDATE conveyor.%I SET %I = %L WHERE %I < now() - interval ''30 seconds'' AND %I >= %L',
                   tbl, key_col, day::text || ' 12:00+00', age_col, key_col, (current_date - 1)::text);
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END $$;
