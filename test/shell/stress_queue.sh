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
# The workload and the invariants are shared with test/shell/proxy_shards.sh (the same stress through
# a PL/Proxy front): test/shell/lib/queue_stress.{bash,sql}.
source "$(dirname "$0")/lib/queue_stress.bash"

DB=conveyor_shell_stress
use_scratch stress

create_db "$DB" || bail "could not create database $DB"

q "$DB" "SELECT conveyor.create_queue('stress', '{\"lease_seconds\": 2, \"max_attempts\": 3, \"backoff_base_seconds\": 1, \"backoff_max_seconds\": 4}')" \
    >/dev/null || bail "could not create the queue"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the helper functions"
-- On one server the workload reads conveyor's tables directly.
CREATE FUNCTION stress_jobs_left() RETURNS boolean LANGUAGE sql AS $$ SELECT EXISTS (SELECT 1 FROM conveyor.jobs) $$;
-- The attempt count is kept: the row's attempt is the one taken back (rows locked till commit).
CREATE FUNCTION stress_requeue_stuck(queue text, older_than interval) RETURNS TABLE(job_id uuid, attempt int)
LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    ids := ARRAY(SELECT conveyor.requeue_stuck(queue, older_than));
    RETURN QUERY SELECT j.job_id, j.attempt FROM conveyor.jobs j WHERE j.job_id = ANY(ids);
END
$$;
SQL
stress_load "$DB" || bail "could not create the test tables"

stress_run "$DB"
stress_check "$DB"

finish
