#!/usr/bin/env bash
# Leases, entity states and lock events survive pg_dump/pg_restore and a crash (immediate shutdown
# and restart), and fencing tokens keep growing across both: a token issued after the restore or the
# restart is greater than every token issued before.
source "$(dirname "$0")/lib/tap.bash"

SRC=conveyor_shell_locks_src
DST=conveyor_shell_locks_dst
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
DATA=${CONVEYOR_PGDATA:-$(q postgres "SHOW data_directory")}
use_scratch locks-durability
chmod 755 "$TMP"

create_db "$SRC" || bail "could not create database $SRC"

psql -X -q -At -v ON_ERROR_STOP=1 -d "$SRC" >/dev/null <<'SQL' || bail "could not fill the source database"
SELECT conveyor.lock_acquire('artist:1', 'w1', 3600, 'corr-1', '{"page": 3}');
SELECT conveyor.lock_acquire('artist:2', 'w2', 10);
UPDATE conveyor.locks SET heartbeat_at = heartbeat_at - interval '1 minute' WHERE key = 'artist:2';
SELECT conveyor.lock_acquire('artist:2', 'w3', 3600);          -- a takeover, recorded as an event
SELECT conveyor.lock_acquire('artist:3', 'w4', 3600);
SELECT conveyor.lock_force_release('artist:3');               -- a force release, recorded too
SELECT conveyor.entity_acquire('artist', '1', 600, 'corr-1');
SELECT conveyor.entity_acquire('artist', '2', 600, max_attempts => 2);
SELECT conveyor.entity_fail('artist', '2', 'HTTP 500');
SELECT conveyor.entity_acquire('artist', '3', 600);
SELECT conveyor.entity_complete('artist', '3', '{"albums": 4}');
SQL

LOCKS="SELECT key, owner, token, ttl_seconds, acquired_at, heartbeat_at, correlation_id, metadata, taken_from_owner,
              taken_from_token FROM conveyor.locks ORDER BY key"
ENTITIES="SELECT entity_type, entity_id, state, attempts, max_attempts, timeout_seconds, last_processed_at, last_error,
                 metadata, created_at, updated_at FROM conveyor.entities ORDER BY 1, 2"
EVENTS="SELECT at, key, event, old_owner, old_token, new_owner, new_token, details FROM conveyor.lock_events ORDER BY at, key"
max_token=$(q "$SRC" "SELECT max(token) FROM (SELECT token FROM conveyor.locks UNION ALL SELECT old_token FROM conveyor.lock_events
                                             UNION ALL SELECT new_token FROM conveyor.lock_events) t")
is "$(q "$SRC" "SELECT count(*) FROM conveyor.locks") $(q "$SRC" "SELECT count(*) FROM conveyor.entities") $(q "$SRC" "SELECT count(*) FROM conveyor.lock_events")" \
   "2 3 2" "the source holds 2 leases, 3 entities and 2 lock events"

# ---- pg_dump and pg_restore ------------------------------------------------------------------------
dump_and_restore "$SRC" "$DST"

is "$(q "$DST" "$LOCKS")" "$(q "$SRC" "$LOCKS")" "every lease comes back as it was"
is "$(q "$DST" "$ENTITIES")" "$(q "$SRC" "$ENTITIES")" "every entity state comes back as it was"
is "$(q "$DST" "$EVENTS")" "$(q "$SRC" "$EVENTS")" "every lock event comes back"
t=$(q "$DST" "SELECT conveyor.lock_acquire('artist:9', 'w9', 60)")
check "after the restore a new token ($t) is greater than every token issued before ($max_token)" test "$t" -gt "$max_token"
is "$(q "$DST" "SELECT conveyor.lock_acquire('artist:1', 'w7', 60) IS NULL")" "t" \
   "a restored live lease still refuses another owner"
is "$(q "$DST" "SELECT conveyor.lock_heartbeat('artist:1', 'w1', (SELECT token FROM conveyor.locks WHERE key = 'artist:1'))")" "t" \
   "and its holder can still heartbeat it with its token"

# ---- crash and restart ---------------------------------------------------------------------------
before=$(q "$SRC" "SELECT conveyor.lock_acquire('artist:4', 'w4', 3600)")
check "a token issued just before the crash ($before)" test -n "$before"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w stop >"$TMP/stop.out" 2>&1
is "$?" 0 "immediate shutdown (a crash)"
start_server "$DATA" >"$TMP/start.out" 2>&1
is "$?" 0 "the server restarts and recovers"
for _ in $(seq 1 50); do q postgres "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
is "$(q "$SRC" "SELECT owner FROM conveyor.locks WHERE key = 'artist:4' AND token = $before")" "w4" \
   "the lease committed before the crash is there, with its token"
after=$(q "$SRC" "SELECT conveyor.lock_acquire('artist:5', 'w5', 60)")
check "after the crash a new token ($after) is greater than the last one before it ($before)" test "$after" -gt "$before"
is "$(q "$SRC" "SELECT conveyor.lock_acquire('artist:4', 'w4', 3600)")" "$before" \
   "the holder refreshing its lease after the restart keeps its token"

finish
