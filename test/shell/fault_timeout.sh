#!/usr/bin/env bash
# Batches ended by statement_timeout or pg_cancel_backend (57014) half-way: enqueue_batch of 100,000
# jobs, upsert of 10,000 rows, snapshot_batch of 10,000 captures and maintain(). Each must end with
# the plain cancel error, write nothing (row counts and counters as before), and leave its session
# working: the same session's next call succeeds. Where the work is quick, the call is made to wait
# for a row or table lock that another session holds, so the cancel surely lands inside it (after
# upsert has inserted the rest of its batch, or maintain has run its first steps) without depending
# on the machine's speed.
#
# The per-backend caches must not be left half-written: a session cancelled in its FIRST call of a
# queue (or of an upsert target), while the cache entry is being filled, must see the definition
# another session changes afterwards (alter_queue, ALTER TABLE ADD COLUMN) in its next calls; and a
# session whose own alter_queue is rolled back with the cancelled batch must not keep it.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_timeout
use_scratch timeout
[ -z "${KEEP:-}" ] || trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; drop_test_dbs; echo "# kept $TMP"' EXIT
chmod 755 "$TMP"

create_db "$DB" || bail "could not create database $DB"
# The batches, built once (building them is not part of what a timeout should interrupt).
fault_batches "$DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not set up"
SELECT conveyor.create_queue('big');
SELECT conveyor.create_queue('fresh');
SELECT conveyor.create_queue('own');
CREATE TABLE channels (channel_id text PRIMARY KEY, title text NOT NULL, views bigint);
CREATE TABLE wide (id int PRIMARY KEY, v text);
INSERT INTO wide VALUES (9999, 'held');
-- More batches beside lib/fault_batches.sql's 'jobs' and 'channels'.
INSERT INTO batches
SELECT 'captures', jsonb_agg(jsonb_build_object('entity_id', 'v' || lpad(n::text, 5, '0'),
                             'metrics', jsonb_build_object('views', n, 'likes', n % 7)))
  FROM generate_series(1, 9999) n;
INSERT INTO batches
SELECT 'wide', jsonb_agg(jsonb_build_object('id', n, 'v', 'x' || n)) FROM generate_series(1, 9998) n;
INSERT INTO batches
SELECT 'jobs_only', jsonb_agg(e || '{"job_type": "only"}') FROM jsonb_array_elements((SELECT j FROM batches WHERE name = 'jobs')) e;
-- What must not change when a call is refused.
CREATE FUNCTION jobs_state(queue text) RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = queue)
        || '|' || m.pending || '|' || m.scheduled
        || '|' || (SELECT coalesce(sum(c.enqueued), 0) || '|' || coalesce(sum(c.pending), 0)
                     FROM conveyor.queue_counts c JOIN conveyor.queues q USING (queue_id) WHERE q.name = queue)
        || '|' || (SELECT count(*) FROM conveyor.job_events)
      FROM conveyor.queue_metrics(queue) m
$$;
CREATE FUNCTION channels_state() RETURNS text LANGUAGE sql AS $$
    SELECT count(*) || '|' || coalesce(sum(views), 0) || '|' || (SELECT count(*) FROM conveyor.change_log) FROM channels
$$;
CREATE FUNCTION snapshots_state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM conveyor.snapshots) || '|' || (SELECT count(*) FROM conveyor.snapshot_metrics)
        || '|' || (SELECT coalesce(sum(captures), 0) FROM conveyor.snapshots)
$$;
CREATE FUNCTION maintain_state() RETURNS text LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM conveyor.metric_points) || '|' || (SELECT count(*) FROM conveyor.events)
        || '|' || (SELECT coalesce(string_agg(period || '@' || rolled_at, ',' ORDER BY period), '') FROM conveyor.metric_rollup_state)
$$;
-- Rows that already exist, so the batches below update one of them (the one another session holds).
SELECT count(*) FROM conveyor.upsert('channels', '[{"channel_id": "UC10000", "title": "held", "views": 0}]', '{channel_id}');
SELECT count(*) FROM conveyor.snapshot('series', 'v10000', '{"views": 0}');
SQL

cancelled=0
# bg APP SQLFILE: a background session named APP (application_name) running the file; its output
# in $TMP/APP.out and errors in $TMP/APP.err.
bg() {
    PGAPPNAME=$1 psql -X -At -d "$DB" -v ON_ERROR_STOP=0 -f "$2" >"$TMP/$1.out" 2>"$TMP/$1.err" &
    PIDS+=($!)
}
# wait_activity APP CONDITION: waits (at most 60 s) until the session APP is seen in pg_stat_activity
# with CONDITION true; its pid, or nothing (and a failure) when it never was.
wait_activity() {
    local pid
    for _ in $(seq 1 600); do
        pid=$(q postgres "SELECT pid FROM pg_stat_activity WHERE application_name = '$1' AND ($2) LIMIT 1")
        [ -n "$pid" ] && { echo "$pid"; return 0; }
        sleep 0.1
    done
    return 1
}
# cancel_when APP CONDITION WHAT: pg_cancel_backend of APP once CONDITION holds.
cancel_when() {
    local pid
    if pid=$(wait_activity "$1" "$2"); then
        is "$(q postgres "SELECT pg_cancel_backend($pid)")" t "$3: the session is cancelled while it is in the call"
    else
        fail "$3: the session reached the call (pg_stat_activity: $2)"
    fi
}
# A lock holder: a session that runs SQL in a transaction and then sleeps, until release_holder
# cancels its sleep (which rolls the transaction back).
hold() {  # hold APP SQL
    printf 'BEGIN;\n%s;\nSELECT pg_sleep(300);\nROLLBACK;\n' "$2" >"$TMP/$1.sql"
    bg "$1" "$TMP/$1.sql"
    wait_activity "$1" "wait_event = 'PgSleep'" >/dev/null || bail "the lock holder $1 did not start"
}
release_holder() {
    q postgres "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = '$1'" >/dev/null
}
# wait_lines APP KEY N: waits (at most 60 s) until APP has printed N lines KEY=...
wait_lines() {
    for _ in $(seq 1 600); do
        [ "$(grep -c "^$2=" "$TMP/$1.out")" -ge "$3" ] && return 0
        sleep 0.1
    done
    fail "$1 printed $3 lines $2=..."
}
value() { grep "^$2=" "$TMP/$1.out" | sed -n "${3:-1}p" | sed "s/^$2=//"; }
# refused APP NAME CODE WHAT: the error APP echoed as NAME_error is SQLSTATE CODE, cancel's message.
refused() {
    local err
    err=$(value "$1" "$2_error")
    if [[ "$err" =~ ^57014\ canceling\ statement\ due\ to\ (statement\ timeout|user\ request)$ ]]; then
        pass "$4: ended with 57014 ($err)"
        cancelled=$((cancelled + 1))
    else
        fail "$4: ended with 57014"
        note "  got: '$err'"
    fi
}
unchanged() {  # unchanged APP KEY WHAT
    local before after
    before=$(value "$1" "$2" 1)
    after=$(value "$1" "$2" 2)
    check "$3: the state was read (${before:-none})" test -n "$before"
    is "$after" "$before" "$3: nothing written (rows and counters as before)"
}

# ---- 1. enqueue_batch of 100,000 jobs under statement_timeout, then cancelled by another session ----
cat >"$TMP/enqueue.sql" <<'SQL'
SELECT 'jobs=' || jobs_state('big');
SELECT count(*) FROM conveyor.enqueue_batch('big', (SELECT j FROM batches WHERE name = 'jobs'));
\echo cancel_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT 'jobs=' || jobs_state('big');
SET statement_timeout = '300ms';
SELECT count(*) FROM conveyor.enqueue_batch('big', (SELECT j FROM batches WHERE name = 'jobs'));
\echo timeout_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
RESET statement_timeout;
SELECT 'jobs=' || jobs_state('big');
SELECT 'next=' || count(*) FROM conveyor.enqueue_batch('big', '[{"payload": {"n": 1}, "dedup_key": "k1", "group_key": "g1"}, {"payload": {}}]');
SELECT 'dequeued=' || count(*) FROM conveyor.dequeue('big', 'w', 5);
SQL
bg enqueue "$TMP/enqueue.sql"
# The cancel comes once the batch has run for half a second (it takes seconds).
cancel_when enqueue "state = 'active' AND query LIKE '%enqueue_batch(''big'', (SELECT%' AND now() - query_start > interval '0.5 s'" \
    "enqueue_batch (pg_cancel_backend)"
wait_sessions_bounded "$DB" 120 "the enqueue session"
refused enqueue timeout 57014 "enqueue_batch of 100,000 jobs (statement_timeout)"
refused enqueue cancel 57014 "enqueue_batch of 100,000 jobs (pg_cancel_backend)"
unchanged enqueue jobs "enqueue_batch (pg_cancel_backend)"
is "$(value enqueue jobs 3)" "$(value enqueue jobs 1)" "enqueue_batch (statement_timeout): nothing written (rows and counters as before)"
is "$(value enqueue next)|$(value enqueue dequeued)" "2|2" "enqueue_batch: the session's next enqueue_batch and dequeue work"

# ---- 2. upsert: 9,999 new rows inserted, then a wait for the row another session holds ----
for how in timeout cancel; do
    hold holder "SELECT 1 FROM channels WHERE channel_id = 'UC10000' FOR UPDATE"
    {
        echo "SELECT 'channels=' || channels_state();"
        [ "$how" = timeout ] && echo "SET statement_timeout = '1s';"
        echo "SELECT count(*) FROM conveyor.upsert('channels', (SELECT j FROM batches WHERE name = 'channels') || '[{\"channel_id\": \"UC10000\", \"title\": \"new\", \"views\": 1}]', '{channel_id}', '{\"audit\": true}');"
        echo "\\echo upsert_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"
        echo "RESET statement_timeout;"
        echo "SELECT 'channels=' || channels_state();"
        [ "$how" = cancel ] && echo "SELECT 'next=' || inserted || '|' || unchanged FROM conveyor.upsert_counts('channels', (SELECT j FROM batches WHERE name = 'channels'), '{channel_id}');"
    } >"$TMP/upsert_$how.sql"
    bg "upsert_$how" "$TMP/upsert_$how.sql"
    if [ "$how" = cancel ]; then
        cancel_when "upsert_$how" "wait_event_type = 'Lock'" "upsert (pg_cancel_backend)"
    else
        # The timeout ends the wait; that it was a wait for the held row is checked by the holder's
        # lock still being there when the call fails (pg_locks, from the holder's side).
        wait_activity "upsert_$how" "wait_event_type = 'Lock'" >/dev/null || fail "upsert (statement_timeout): the call waited for the held row"
    fi
    wait_lines "upsert_$how" channels 2
    release_holder holder
    wait_sessions_bounded "$DB" 60 "the upsert session"
    refused "upsert_$how" upsert 57014 "upsert of 10,000 rows ($how)"
    unchanged "upsert_$how" channels "upsert ($how)"
done
is "$(value upsert_cancel next)" "9999|0" "upsert: the cancelled session's next batch is written whole"

# ---- 3. snapshot_batch: waits for the period row another session holds ----
for how in timeout cancel; do
    hold holder "SELECT 1 FROM conveyor.snapshots WHERE entity_id = 'v10000' FOR UPDATE"
    {
        echo "SELECT 'snapshots=' || snapshots_state();"
        [ "$how" = timeout ] && echo "SET statement_timeout = '1s';"
        echo "SELECT count(*) FROM conveyor.snapshot_batch('series', (SELECT j FROM batches WHERE name = 'captures') || '[{\"entity_id\": \"v10000\", \"metrics\": {\"views\": 5}}]');"
        echo "\\echo snapshot_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE"
        echo "RESET statement_timeout;"
        echo "SELECT 'snapshots=' || snapshots_state();"
        echo "SELECT 'next=' || count(*) FROM conveyor.snapshot_batch('series', '[{\"entity_id\": \"v10000\", \"metrics\": {\"views\": 6}}]');"
    } >"$TMP/snapshot_$how.sql"
    bg "snapshot_$how" "$TMP/snapshot_$how.sql"
    if [ "$how" = cancel ]; then
        cancel_when "snapshot_$how" "wait_event_type = 'Lock'" "snapshot_batch (pg_cancel_backend)"
    else
        wait_activity "snapshot_$how" "wait_event_type = 'Lock'" >/dev/null || fail "snapshot_batch (statement_timeout): the call waited for the held row"
    fi
    wait_lines "snapshot_$how" snapshots 2  # the next capture waits for the holder's row
    release_holder holder
    wait_sessions_bounded "$DB" 60 "the snapshot session"
    refused "snapshot_$how" snapshot 57014 "snapshot_batch of 10,000 captures ($how)"
    unchanged "snapshot_$how" snapshots "snapshot_batch ($how)"
    is "$(value "snapshot_$how" next)" 1 "snapshot_batch ($how): the session's next capture works"
done

# ---- 4. maintain(): its first steps run, then it waits for queue_counts, locked by another session ----
hold holder "LOCK TABLE conveyor.queue_counts IN ACCESS EXCLUSIVE MODE"
cat >"$TMP/maintain.sql" <<'SQL'
SELECT 'maintain=' || maintain_state();
SELECT conveyor.maintain();
\echo maintain_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT 'maintain=' || maintain_state();
\! while [ ! -e "$TMP/released" ]; do sleep 0.1; done
SELECT 'next=' || (conveyor.maintain() ->> 'ms' IS NOT NULL);
SQL
sed -i "s|\$TMP|$TMP|" "$TMP/maintain.sql"
bg maintain "$TMP/maintain.sql"
cancel_when maintain "wait_event_type = 'Lock'" "maintain() (pg_cancel_backend)"
wait_lines maintain maintain 2
release_holder holder
touch "$TMP/released"
wait_sessions_bounded "$DB" 60 "the maintain session"
refused maintain maintain 57014 "maintain()"
unchanged maintain maintain "maintain()"
is "$(value maintain next)" true "maintain(): the session's next maintain() runs through"

# ---- 5. a queue's cache entry made in a cancelled first call; the queue altered meanwhile ----
hold holder "SELECT conveyor.enqueue('fresh', group_key => 'g')"
cat >"$TMP/cache.sql" <<SQL
SELECT count(*) FROM conveyor.enqueue_batch('fresh', '[{"payload": {"a": 1}}, {"payload": {"a": 2}, "group_key": "g"}]');
\echo first_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
\! while [ ! -e "$TMP/altered" ]; do sleep 0.1; done
\unset job_id
SELECT job_id FROM conveyor.enqueue('fresh', '{"must": 1}') LIMIT 1 \gset
SELECT 'enqueue_max_attempts=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
\unset job_id
SELECT job_id FROM conveyor.enqueue_batch('fresh', '[{"payload": {"must": 2}}]') LIMIT 1 \gset
SELECT 'batch_max_attempts=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
SELECT conveyor.enqueue('fresh', '{"other": 1}');
\echo required_error=:LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.enqueue_batch('fresh', '[{"payload": {"other": 1}}]');
\echo batch_required_error=:LAST_ERROR_SQLSTATE
SELECT 'lease=' || round(extract(epoch FROM lease_until - now())) FROM conveyor.dequeue('fresh', 'w', 1);
SQL
bg cache "$TMP/cache.sql"
cancel_when cache "wait_event_type = 'Lock'" "first enqueue_batch of a queue in a session (its cache entry being filled)"
release_holder holder
wait_lines cache first_error 1
q "$DB" "SELECT conveyor.alter_queue('fresh', '{\"max_attempts\": 9, \"required_keys\": [\"must\"], \"lease_seconds\": 77}')" >/dev/null ||
    fail "alter_queue from another session"
touch "$TMP/altered"
wait_sessions_bounded "$DB" 60 "the cache session"
refused cache first 57014 "the first enqueue_batch of queue fresh"
is "$(value cache enqueue_max_attempts)|$(value cache batch_max_attempts)" "9|9" \
   "after the cancelled first call, the session's enqueue and enqueue_batch use the altered max_attempts"
is "$(value cache required_error)|$(value cache batch_required_error)" "22023|22023" \
   "... and its required_keys (a payload without the key is refused)"
is "$(value cache lease)" 77 "... and dequeue its lease_seconds"

# ---- 6. the session's own alter_queue, rolled back with its cancelled batch ----
cat >"$TMP/own.sql" <<'SQL'
\unset job_id
SELECT job_id FROM conveyor.enqueue('own', '{}') LIMIT 1 \gset
SELECT 'before=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
BEGIN;
SELECT conveyor.alter_queue('own', '{"max_attempts": 9, "job_types": ["only"]}');
\unset job_id
SELECT job_id FROM conveyor.enqueue('own', '{}', job_type => 'only') LIMIT 1 \gset
SELECT 'inside=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
SET LOCAL statement_timeout = '300ms';
SELECT count(*) FROM conveyor.enqueue_batch('own', (SELECT j FROM batches WHERE name = 'jobs_only'));
\echo own_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
ROLLBACK;
\unset job_id
SELECT job_id FROM conveyor.enqueue('own', '{}') LIMIT 1 \gset
SELECT 'after=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
\unset job_id
SELECT job_id FROM conveyor.enqueue_batch('own', '[{"payload": {}, "job_type": "other"}]') LIMIT 1 \gset
SELECT 'batch_after=' || max_attempts FROM conveyor.jobs WHERE job_id = :'job_id';
SQL
bg own "$TMP/own.sql"
wait_sessions_bounded "$DB" 60 "the own-alter session"
refused own own 57014 "enqueue_batch after the session's own alter_queue (statement_timeout)"
is "$(value own before)|$(value own inside)|$(value own after)|$(value own batch_after)" "5|9|5|5" \
   "the rolled-back alter_queue is forgotten: max_attempts 5 and any job_type again"

# ---- 7. an upsert target's cache made in a cancelled first call; the table altered meanwhile ----
hold holder "SELECT 1 FROM wide WHERE id = 9999 FOR UPDATE"
cat >"$TMP/target.sql" <<SQL
SELECT count(*) FROM conveyor.upsert('wide', (SELECT j FROM batches WHERE name = 'wide') || '[{"id": 9999, "v": "changed"}]', '{id}');
\echo first_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
\! while [ ! -e "$TMP/widened" ]; do sleep 0.1; done
SELECT 'upsert=' || action FROM conveyor.upsert('wide', '[{"id": 1, "v": "a", "extra": "e1"}]', '{id}');
SELECT 'counts=' || inserted FROM conveyor.upsert_counts('wide', '[{"id": 2, "v": "b", "extra": "e2"}]', '{id}');
SELECT 'stored=' || string_agg(extra, ',' ORDER BY id) FROM wide WHERE extra IS NOT NULL;
SQL
bg target "$TMP/target.sql"
cancel_when target "wait_event_type = 'Lock'" "first upsert into a table in a session (its target cache being filled)"
release_holder holder
wait_lines target first_error 1
q "$DB" "ALTER TABLE wide ADD COLUMN extra text" >/dev/null || fail "ALTER TABLE from another session"
touch "$TMP/widened"
wait_sessions_bounded "$DB" 60 "the target session"
refused target first 57014 "the first upsert into table wide"
is "$(value target upsert)|$(value target counts)|$(value target stored)" "inserted|1|e1,e2" \
   "after the cancelled first upsert, the session's upsert and upsert_counts know the added column"
is "$(q "$DB" "SELECT count(*) FROM wide")" 3 "the cancelled upsert left no row"
grep -h '^ERROR' "$TMP"/*.err | grep -v '57014\|canceling statement' | sort | uniq -c | head -5 | sed 's/^/#   unexpected: /'

note "calls ended by statement_timeout or pg_cancel_backend: $cancelled"
finish
