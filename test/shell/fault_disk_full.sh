#!/usr/bin/env bash
# A full disk under each kind of batch. The tables a batch writes (conveyor.jobs for enqueue_batch, a
# user table for upsert and upsert_counts, conveyor.snapshots and snapshot_metrics for snapshot_batch,
# conveyor.ledger for charge; each with its indexes) move to a tablespace on a small tmpfs the test
# mounts itself; a filler table then takes every free block of it. Each call must then fail with
# 53100 disk_full and a message saying so, write nothing (row counts and the counters behind
# queue_metrics, the account's total: all-or-nothing), leave the server up (same postmaster, no crash
# in the log, other databases answering) and its session usable; once space is freed (the tmpfs
# remounted larger, or the filler dropped and made again) the same call in the same session succeeds.
#
# WAL stays on the ordinary disk: a full pg_wal makes PostgreSQL PANIC by design (it cannot go on
# without logging), which no extension can or should turn into an error.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_disk_full
TS=conveyor_fault_disk
TMP=$(mktemp -d /tmp/conveyor-disk-full.XXXXXX)
MNT=$TMP/ts
mounted=0
cleanup() {
    drop_test_dbs
    psql -X -q -d postgres -c "DROP TABLESPACE IF EXISTS $TS" >/dev/null 2>&1 || true
    if [ "$mounted" = 1 ]; then
        # A backend may still hold a file of the tablespace open: detach lazily rather than leave it.
        umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || echo "# could not unmount $MNT"
    fi
    mountpoint -q "$MNT" || [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || bail "mounting a tmpfs needs root"
chmod 755 "$TMP"
mkdir "$MNT"
mount -t tmpfs -o size=16m,mode=0700 tmpfs "$MNT" || bail "could not mount a tmpfs on $MNT"
mounted=1
chown postgres:postgres "$MNT"

LOG=$(server_log)
[ -r "$LOG" ] || bail "cannot read the server log $LOG"
log_start=$(($(stat -c %s "$LOG") + 1))
postmaster_before=$(head -1 "$CONVEYOR_PGDATA/postmaster.pid")

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP TABLESPACE IF EXISTS $TS" \
    -c "CREATE TABLESPACE $TS LOCATION '$MNT'" >/dev/null || bail "could not create tablespace $TS"
create_db "$DB" || bail "could not create database $DB"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<SQL || bail "could not set up the tables"
SET client_min_messages = warning;
SELECT conveyor.create_queue('full');
SELECT conveyor.account_create('acct', budget => 1000);
CREATE TABLE channels (channel_id text PRIMARY KEY, title text NOT NULL, views bigint);
-- Move the written tables and all their indexes onto the small disk. Autovacuum stays off there: a
-- vacuum truncating pages of an aborted batch would free space behind the test's back.
DO \$\$
DECLARE
    t regclass;
    i regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY['conveyor.jobs', 'conveyor.snapshots', 'conveyor.snapshot_metrics', 'conveyor.ledger',
                             'public.channels']::regclass[] LOOP
        EXECUTE format('ALTER TABLE %s SET TABLESPACE $TS, SET (autovacuum_enabled = false)', t);
        FOR i IN SELECT indexrelid FROM pg_index WHERE indrelid = t LOOP
            EXECUTE format('ALTER INDEX %s SET TABLESPACE $TS', i);
        END LOOP;
    END LOOP;
END \$\$;
-- The filler takes every free block: rows of 1800 bytes stored plain (never compressed), in ever
-- smaller chunks, each chunk in its own subtransaction (a chunk that hits the full disk is undone, its
-- blocks stay allocated).
-- empty_filler drops it and makes it again, in two transactions (TRUNCATE cannot run on a full disk:
-- it builds a new, empty index of the filler's TOAST table, whose first block needs space).
CREATE PROCEDURE empty_filler() LANGUAGE plpgsql AS \$\$
BEGIN
    DROP TABLE IF EXISTS filler;
    COMMIT;  -- the dropped files give their space back at commit
    CREATE TABLE filler (pad text) WITH (autovacuum_enabled = false) TABLESPACE $TS;
    ALTER TABLE filler ALTER COLUMN pad SET STORAGE PLAIN;
END \$\$;
CALL empty_filler();
CREATE PROCEDURE fill_disk() LANGUAGE plpgsql AS \$\$
DECLARE
    n int;
BEGIN
    FOREACH n IN ARRAY ARRAY[4000, 400, 40, 4, 1] LOOP
        LOOP
            BEGIN
                INSERT INTO filler SELECT repeat('x', 1800) FROM generate_series(1, n);
            EXCEPTION WHEN disk_full THEN
                EXIT;
            END;
        END LOOP;
    END LOOP;
END \$\$;
SQL

# The state each batch must leave unchanged when refused: rows it writes and the counters beside them.
STATE_JOBS="SELECT 'jobs=' || (SELECT count(*) FROM conveyor.jobs) || '|' || m.pending || '|' || m.scheduled
    || '|' || (SELECT sum(enqueued) || '|' || sum(pending) FROM conveyor.queue_counts)
    FROM conveyor.queue_metrics('full') m"
STATE_CHANNELS="SELECT 'channels=' || count(*) || '|' || coalesce(sum(views), 0) FROM channels"
STATE_SNAPSHOTS="SELECT 'snapshots=' || (SELECT count(*) FROM conveyor.snapshots) || '|'
    || (SELECT count(*) FROM conveyor.snapshot_metrics)"
STATE_LEDGER="SELECT 'ledger=' || (SELECT count(*) FROM conveyor.ledger) || '|' || s.total
    FROM conveyor.account_status('acct') s"

# The batches: enough rows that they need many new blocks of their tables.
JOBS_BATCH="(SELECT jsonb_agg(jsonb_build_object('payload', jsonb_build_object('n', n, 'pad', repeat('p', 100)),
    'dedup_key', 'k' || n)) FROM generate_series(1, 5000) n)"
CHANNELS_BATCH="(SELECT jsonb_agg(jsonb_build_object('channel_id', 'UC' || n, 'title', repeat('t', 150), 'views', n))
    FROM generate_series(1, 5000) n)"
BIG_METADATA="(SELECT jsonb_build_object('pad', string_agg(md5(random()::text), '')) FROM generate_series(1, 3200))"
CAPTURES_BATCH="(SELECT jsonb_agg(jsonb_build_object('entity_id', 'v' || n,
    'metrics', jsonb_build_object('views', n, 'likes', n % 7, 'comments', n % 11)))
    FROM generate_series(1, 3000) n)"

# One session for all of it: each refused call is followed by calls in that same session.
# \! runs as this script's user (root): it remounts the tmpfs larger without a second connection.
psql -X -At -d "$DB" -v ON_ERROR_STOP=0 >"$TMP/out" 2>"$TMP/err" <<SQL
\set VERBOSITY verbose
SELECT 'pid_before=' || pg_backend_pid();
-- Warm-up: every statement of each path prepared and kept, the caches filled, some rows in place.
SELECT 'warm_jobs=' || count(*) FROM conveyor.enqueue_batch('full', '[{"payload": {"n": 0}}, {"payload": {"n": -1}}]');
SELECT 'warm_channels=' || inserted FROM conveyor.upsert_counts('channels', '[{"channel_id": "UC0", "title": "t", "views": 1}]', '{channel_id}');
SELECT 'warm_snapshots=' || count(*) FROM conveyor.snapshot_batch('series', '[{"entity_id": "v0", "metrics": {"views": 1}}]');
SELECT 'warm_ledger=' || count(*) FROM conveyor.charge('acct', 'svc', 1.5);

-- enqueue_batch; space freed by remounting the tmpfs larger
CALL fill_disk();
$STATE_JOBS;
SELECT count(*) FROM conveyor.enqueue_batch('full', $JOBS_BATCH);
\echo enqueue_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
$STATE_JOBS;
SELECT 'enqueue_next=' || count(*) FROM conveyor.list_jobs('full');
\! mount -o remount,size=48m '$MNT'
SELECT 'enqueue_retry=' || count(*) FROM conveyor.enqueue_batch('full', $JOBS_BATCH);

-- upsert, then upsert_counts; space freed by emptying the filler
CALL fill_disk();
$STATE_CHANNELS;
SELECT count(*) FROM conveyor.upsert('channels', $CHANNELS_BATCH, '{channel_id}');
\echo upsert_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
$STATE_CHANNELS;
SELECT * FROM conveyor.upsert_counts('channels', $CHANNELS_BATCH, '{channel_id}');
\echo upsert_counts_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
$STATE_CHANNELS;
SELECT 'upsert_next=' || action FROM conveyor.upsert('channels', '[{"channel_id": "UC0", "title": "t", "views": 1}]', '{channel_id}');
CALL empty_filler();
SELECT 'upsert_retry=' || count(*) FROM conveyor.upsert('channels', $CHANNELS_BATCH, '{channel_id}');

-- snapshot_batch
CALL fill_disk();
$STATE_SNAPSHOTS;
SELECT count(*) FROM conveyor.snapshot_batch('series', $CAPTURES_BATCH);
\echo snapshot_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
$STATE_SNAPSHOTS;
SELECT 'snapshot_next=' || count(*) FROM conveyor.snapshot_series('series', 'v0');
CALL empty_filler();
SELECT 'snapshot_retry=' || count(*) FROM conveyor.snapshot_batch('series', $CAPTURES_BATCH);

-- charge: one ledger row, with 100 kB of metadata that does not compress (random hex): it goes to the
-- ledger's TOAST table (moved with it), which needs new blocks for it.
CALL fill_disk();
$STATE_LEDGER;
SELECT * FROM conveyor.charge('acct', 'svc', 2.25, metadata => $BIG_METADATA);
\echo charge_error=:LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
$STATE_LEDGER;
SELECT 'charge_next=' || count(*) FROM conveyor.ledger_verify('acct');
CALL empty_filler();
SELECT 'charge_retry=' || count(*) FROM conveyor.charge('acct', 'svc', 2.25, metadata => $BIG_METADATA);

SELECT 'health=' || count(*) FROM conveyor.health();
SELECT 'pid_after=' || pg_backend_pid();
SQL
note "psql exited with status $?"

value() { grep "^$1=" "$TMP/out" | sed -n "${2:-1}p" | sed "s/^$1=//"; }

pid_before=$(value pid_before)
check "the session reported its backend pid" test -n "$pid_before"
is "$(value pid_after)" "$pid_before" "one backend served every refused call and what followed"
is "$(value warm_jobs)|$(value warm_channels)|$(value warm_snapshots)|$(value warm_ledger)" "2|1|1|1" \
   "each path ran once before the disk filled"

refused=0
# refused NAME STATE_KEY WHAT: the error of NAME is 53100 with a message naming the full disk, and the
# state before and after the call is the same.
refused() {
    local name=$1 key=$2 what=$3 err
    err=$(value "${name}_error")
    if [[ "$err" =~ ^53100\ could\ not\ extend\ file\ .*(No\ space\ left\ on\ device|wrote\ only) ]]; then
        pass "$what: refused with 53100 disk_full, saying so"
        refused=$((refused + 1))
    else
        fail "$what: refused with 53100 disk_full, saying so"
        note "  got: '$err'"
    fi
}
same_state() {  # same_state KEY BEFORE_INDEX AFTER_INDEX WHAT
    local before after
    before=$(value "$1" "$2")
    after=$(value "$1" "$3")
    check "$4: the state was read (${before:-none})" test -n "$before"
    is "$after" "$before" "$4: nothing written (rows and counters as before)"
}

refused enqueue jobs "enqueue_batch of 5000 jobs"
same_state jobs 1 2 "enqueue_batch"
is "$(value enqueue_next)" 2 "enqueue_batch: the session's next call (list_jobs) works on the full disk"
is "$(value enqueue_retry)" 5000 "enqueue_batch: the same batch succeeds once the tmpfs is larger"

refused upsert channels "upsert of 5000 rows"
refused upsert_counts channels "upsert_counts of 5000 rows"
same_state channels 1 2 "upsert"
same_state channels 2 3 "upsert_counts"
is "$(value upsert_next)" unchanged "upsert: the session's next call works on the full disk"
is "$(value upsert_retry)" 5000 "upsert: the same batch succeeds once the filler is dropped"

refused snapshot snapshots "snapshot_batch of 3000 captures"
same_state snapshots 1 2 "snapshot_batch"
is "$(value snapshot_next)" 1 "snapshot_batch: the session's next call (snapshot_series) works"
is "$(value snapshot_retry)" 3000 "snapshot_batch: the same batch succeeds once the filler is dropped"

refused charge ledger "charge"
same_state ledger 1 2 "charge"
is "$(value charge_next)" 1 "charge: the session's next call (ledger_verify) works"
is "$(value charge_retry)" 1 "charge: the same charge succeeds once the filler is dropped"

is "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")|$(q "$DB" "SELECT count(*) FROM channels")" "5002|5001" \
   "afterwards the tables hold the warm-up and the one successful batch each"
is "$(q "$DB" "SELECT sum(pending) + sum(running) FROM conveyor.queue_counts")" \
   "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" "queue_counts agrees with conveyor.jobs"
is "$(q "$DB" "SELECT bool_and(ok) FROM conveyor.ledger_verify('acct')")" t "ledger_verify: the account's total matches its ledger"
is "$(value health)" "$(q "$DB" "SELECT count(*) FROM conveyor.health()")" "health() answers in the same session"

# The server: never restarted, other databases fine, nothing crashed.
is "$(head -1 "$CONVEYOR_PGDATA/postmaster.pid")" "$postmaster_before" "the same postmaster runs (pid $postmaster_before)"
is "$(q postgres "SELECT 40 + 2")" 42 "another database answers"
sleep 0.2
tail -c +"$log_start" "$LOG" >"$TMP/log"
is "$(grep -cE 'terminated by signal|PANIC|server process .* (was terminated|exited with exit code)|terminating any other active server processes' "$TMP/log" || true)" 0 \
   "the server log shows no crash or restart"
is "$(grep -cE 'WARNING: .*(leak|SPI|snapshot|reference)' "$TMP/log" || true)" 0 "the server log has no leak warnings"
grep -E 'PANIC|WARNING|terminated' "$TMP/log" | head -5 | sed 's/^/#   /'
is "$(grep -c '^WARNING' "$TMP/err" || true)" 0 "no WARNING reached the client"

note "batches refused for a full disk: $refused"
finish
