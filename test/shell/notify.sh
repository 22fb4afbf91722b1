#!/usr/bin/env bash
# LISTEN/NOTIFY: enqueueing a due job notifies channel "conveyor" with the queue's name as payload,
# once per queue and transaction, when a listening worker waits on the queue (its last dequeue found
# the queue empty); a queue created with {"notify": false} stays silent, and so do a transaction
# that rolls back and a queue no listener waits on.
#
# A listener session LISTENs, drains and then waits on the queues it is given (dequeue until one
# finds nothing), then waits inside one statement until the test says it is done (a row in table
# done): psql prints every notification it received after that statement.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/listener.bash"

DB=conveyor_shell_notify
listener_begin notify
q "$DB" "SELECT conveyor.create_queue('alpha')" \
        "SELECT conveyor.create_queue('quiet', '{\"notify\": false}')" \
        "SELECT conveyor.create_queue('multi')" \
        "SELECT conveyor.create_queue('other')" \
        "SELECT conveyor.create_queue('batch one')" \
        "SELECT conveyor.create_queue('rolled back')" \
        "SELECT conveyor.create_queue('unwatched')" >/dev/null || bail "could not create the queues"

# listen QUEUE...: starts a listener in the background, waiting on these queues; returns once it is
# inside its waiting statement.
listen() {
    local queue dequeues=()
    for queue in "$@"; do
        # Twice: the first may take jobs left from before; the second finds the queue empty.
        dequeues+=(-c "SELECT count(*) FROM conveyor.dequeue('$queue', 'listener', 1000)"
                   -c "SELECT count(*) FROM conveyor.dequeue('$queue', 'listener', 1000)")
    done
    listener_start conveyor_notify_listener conveyor "${dequeues[@]}"
}
# received PAYLOAD: how many notifications on channel conveyor carried this payload.
received() { grep -cF "Asynchronous notification \"conveyor\" with payload \"$1\" received" "$TMP/listener.out"; }

listen alpha quiet multi other "batch one" "rolled back" || bail "the listener did not start"
listener_pid=$(q "$DB" "SELECT pid FROM pg_stat_activity WHERE application_name = 'conveyor_notify_listener' AND datname = current_database()")
q "$DB" "SELECT count(*) FROM conveyor.enqueue('alpha', '{\"n\": 1}')" >/dev/null
q "$DB" "SELECT count(*) FROM conveyor.enqueue('quiet', '{\"n\": 1}')" \
        "SELECT count(*) FROM conveyor.enqueue_batch('quiet', '[{}, {\"group_key\": \"g\"}]')" >/dev/null
# One transaction, several jobs in two queues: one notification for each queue.
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL'
BEGIN;
SELECT count(*) FROM conveyor.enqueue('multi', '{"n": 1}');
SELECT count(*) FROM conveyor.enqueue('multi', '{"n": 2}', group_key => 'g');
SELECT count(*) FROM conveyor.enqueue('multi', '{"n": 3}', group_key => 'g');
SELECT count(*) FROM conveyor.enqueue_batch('multi', '[{"payload": {"n": 4}}, {"payload": {"n": 5}}]');
SELECT count(*) FROM conveyor.enqueue('other', '{"n": 1}');
SELECT count(*) FROM conveyor.enqueue('other', '{"n": 2}');
COMMIT;
SQL
q "$DB" "SELECT count(*) FROM conveyor.enqueue_batch('batch one', '[{}, {}, {}]')" >/dev/null
q "$DB" "SELECT count(*) FROM conveyor.enqueue('unwatched', '{}')" >/dev/null
psql -X -q -d "$DB" >/dev/null <<'SQL'
BEGIN;
SELECT count(*) FROM conveyor.enqueue('rolled back', '{}');
ROLLBACK;
SQL
listener_stop

if [ -n "$(grep -v '^Asynchronous notification\|^0$' "$TMP/listener.out")" ]; then
    note "listener said:"
    sed 's/^/#   /' "$TMP/listener.out"
fi
is "$(received alpha)" 1 "enqueue into queue alpha notifies channel conveyor with payload \"alpha\""
check "the notification comes from the enqueueing backend, not the listener" \
    bash -c "! grep -q 'received from server process with PID $listener_pid\.' '$TMP/listener.out'"
is "$(received quiet)" 0 "a queue created with {\"notify\": false} sends no notification"
is "$(received multi)" 1 "five jobs in one transaction send one notification for their queue"
is "$(received other)" 1 "the same transaction sends one notification for its other queue"
is "$(received "batch one")" 1 "enqueue_batch notifies once, with the queue name (with its space) as payload"
is "$(received "rolled back")" 0 "a rolled-back enqueue sends nothing"
is "$(received unwatched)" 0 "a queue no listener waits on sends nothing"
is "$(grep -c '^Asynchronous notification' "$TMP/listener.out")" 4 "no other notification arrived"
is "$(q "$DB" "SELECT string_agg(queue || ' ' || pending, ', ' ORDER BY queue) FROM conveyor.queue_metrics()")" \
   "alpha 1, batch one 3, multi 5, other 2, quiet 3, rolled back 0, unwatched 1" "the jobs themselves were enqueued (and the rolled-back one was not)"

# Turning notify off later silences the queue, also for a worker already waiting on it; turning it
# on again brings notifications back.
listen alpha || bail "the listener did not start again"
q "$DB" "SELECT conveyor.alter_queue('alpha', '{\"notify\": false}')" \
        "SELECT count(*) FROM conveyor.enqueue('alpha', '{\"n\": 2}')" \
        "SELECT conveyor.alter_queue('quiet', '{\"notify\": true}')" >/dev/null
listener_stop
listen quiet || bail "the listener did not start a third time"
q "$DB" "SELECT count(*) FROM conveyor.enqueue('quiet', '{\"n\": 2}')" >/dev/null
listener_stop
is "$(received alpha)" 0 "after alter_queue(notify => false) the queue is silent"
is "$(received quiet)" 1 "after alter_queue(notify => true) the queue notifies"

finish
