#!/usr/bin/env bash
# Status notifications: a queue with {"status_notify": true} sends every status change of its jobs
# (enqueue, enqueue_batch, dequeue, ack success and failure, a final one with retry => false too,
# release, cancel, retry, dead_letter, lease expiry) and every progress update on channel
# conveyor_status, as JSON, in commit order. A
# listener on a separate connection receives each change of each job in order; a rolled-back change
# and a queue without the option send nothing.
#
# The listener LISTENs, then waits inside one statement until the test says it is done (a row in
# table done): psql prints every notification it received after that statement.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/listener.bash"

DB=conveyor_shell_status_notify
listener_begin status-notify
q "$DB" "CREATE TABLE ids (tag text, job_id uuid)" \
        "SELECT conveyor.create_queue('watched', '{\"status_notify\": true, \"backoff_base_seconds\": 0, \"max_attempts\": 2}')" \
        "SELECT conveyor.create_queue('silent', '{\"backoff_base_seconds\": 0}')" >/dev/null || bail "could not create the queues"

listener_start conveyor_status_listener conveyor_status || bail "the listener did not start"

# Job a: enqueued, dequeued, two progress updates, completed.
q "$DB" "INSERT INTO ids SELECT 'a', job_id FROM conveyor.enqueue('watched', '{\"n\": 1}')" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.progress(job_id, 'w1', 40, 'fetch') FROM ids WHERE tag = 'a'" \
        "SELECT conveyor.progress(job_id, 'w1', 80) FROM ids WHERE tag = 'a'" \
        "SELECT conveyor.ack(job_id, true) FROM ids WHERE tag = 'a'" >/dev/null || bail "job a"
# Job b: a failure (retried), released, cancelled, retried by an operator, dead-lettered.
q "$DB" "INSERT INTO ids SELECT 'b', job_id FROM conveyor.enqueue('watched', '{\"n\": 2}')" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.ack(job_id, false, 'boom') FROM ids WHERE tag = 'b'" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w2')" \
        "SELECT conveyor.release(job_id, 'w2') FROM ids WHERE tag = 'b'" \
        "SELECT conveyor.cancel(job_id) FROM ids WHERE tag = 'b'" \
        "SELECT conveyor.retry(job_id) FROM ids WHERE tag = 'b'" \
        "SELECT conveyor.dead_letter(job_id, 'given up') FROM ids WHERE tag = 'b'" >/dev/null || bail "job b"
# Job g: taken back from its worker by requeue, then by requeue_stuck, then dead-lettered.
q "$DB" "INSERT INTO ids SELECT 'g', job_id FROM conveyor.enqueue('watched', '{\"n\": 8}')" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.requeue(job_id) FROM ids WHERE tag = 'g'" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w2')" \
        "SELECT count(*) FROM conveyor.requeue_stuck('watched', interval '1 microsecond')" \
        "SELECT conveyor.dead_letter(job_id, 'given up') FROM ids WHERE tag = 'g'" >/dev/null || bail "job g"
# Job h: its worker's failure is final (ack with retry => false): dead on its first attempt.
q "$DB" "INSERT INTO ids SELECT 'h', job_id FROM conveyor.enqueue('watched', '{\"n\": 9}')" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.ack(job_id, false, 'HTTP 404', worker_id => 'w1', retry => false) FROM ids WHERE tag = 'h'" >/dev/null || bail "job h"
# Jobs c and d in one batch, d then failing twice (dead at max_attempts 2); job e's lease runs out.
q "$DB" "INSERT INTO ids SELECT CASE ord WHEN 0 THEN 'c' ELSE 'd' END, job_id
         FROM conveyor.enqueue_batch('watched', '[{\"payload\": {\"n\": 3}, \"priority\": 9}, {\"payload\": {\"n\": 4}, \"priority\": 8}]')" \
        "SELECT conveyor.cancel(job_id) FROM ids WHERE tag = 'c'" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.ack(job_id, false, 'boom', worker_id => 'w1') FROM ids WHERE tag = 'd'" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w1')" \
        "SELECT conveyor.ack(job_id, false, 'boom', worker_id => 'w1') FROM ids WHERE tag = 'd'" \
        "INSERT INTO ids SELECT 'e', job_id FROM conveyor.enqueue('watched', '{\"n\": 5}')" \
        "SELECT count(*) FROM conveyor.dequeue('watched', 'w3')" \
        "UPDATE conveyor.jobs SET lease_until = now() - interval '1 second' WHERE job_id = (SELECT job_id FROM ids WHERE tag = 'e')" \
        "SELECT conveyor.reap('watched')" >/dev/null || bail "jobs c, d, e"
# Nothing from a rolled-back transaction, nor from a queue without the option.
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "rolled back"
BEGIN;
SELECT count(*) FROM conveyor.enqueue('watched', '{"n": 6}');
ROLLBACK;
SQL
q "$DB" "INSERT INTO ids SELECT 'f', job_id FROM conveyor.enqueue('silent', '{\"n\": 7}')" \
        "SELECT count(*) FROM conveyor.dequeue('silent', 'w1')" \
        "SELECT conveyor.ack(job_id, true) FROM ids WHERE tag = 'f'" >/dev/null || bail "job f"

listener_stop

# The payloads, in the order received, into a table (they hold no tab or backslash).
sed -n 's/^Asynchronous notification "conveyor_status" with payload "\(.*\)" received from server process with PID [0-9]*\.$/\1/p' \
    "$TMP/listener.out" >"$TMP/payloads"
q "$DB" "CREATE TABLE got (n serial, payload jsonb)" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "\\copy got (payload) FROM '$TMP/payloads'" || bail "could not read the payloads"

# Each job's changes, in the order received: status/attempt[/percent/step].
changes() {
    q "$DB" "SELECT string_agg(concat_ws('/', g.payload->>'status', g.payload->>'attempt', g.payload->>'percent', g.payload->>'step'), ' ' ORDER BY g.n)
             FROM got g JOIN ids i ON i.job_id = (g.payload->>'job_id')::uuid WHERE i.tag = '$1'"
}
is "$(changes a)" "pending/0 running/1 running/1/40/fetch running/1/80/fetch completed/1/80/fetch" \
    "job a: enqueue, dequeue, each progress update and the ack, in order"
is "$(changes b)" "pending/0 running/1 pending/1 running/2 pending/1 cancelled/1 pending/1 dead/1" \
    "job b: failure, release, cancel, retry and dead_letter, in order"
is "$(changes g)" "pending/0 running/1 pending/1 running/2 pending/2 dead/2" \
    "job g: requeue and requeue_stuck, each counting the attempt, then dead_letter"
is "$(changes h)" "pending/0 running/1 dead/1" "job h: a failure acked with retry => false is dead at once"
is "$(changes c)" "pending/0 cancelled/0" "job c: enqueue_batch, then cancel"
is "$(changes d)" "pending/0 running/1 pending/1 running/2 dead/2" "job d: enqueue_batch, failures up to dead"
is "$(changes e)" "pending/0 running/1 pending/1" "job e: lease expiry makes it pending again"
is "$(changes f)" "" "a queue without status_notify sends nothing"
is "$(q "$DB" "SELECT count(*) FROM got WHERE (payload->>'job_id')::uuid NOT IN (SELECT job_id FROM ids)")" 0 \
    "a rolled-back enqueue sends nothing"
is "$(q "$DB" "SELECT count(*) FROM got WHERE payload->>'queue' = 'watched' AND (payload->>'at')::timestamptz IS NOT NULL")" \
    "$(q "$DB" "SELECT count(*) FROM got")" "every payload names the queue and the time"

finish
