#!/usr/bin/env bash
# Leases and entity states behind pgbouncer in transaction pooling mode: 6 workers, each call a new
# short client, share a pool of 2 server connections, so a worker's acquire, heartbeat, fenced write
# and release land on different backends. Leases are rows, not session state: every holder's
# heartbeat, write and release succeed, no key is held twice, and each entity is processed once.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_locks_pgbouncer
POOL_SIZE=2
WORKERS=6
ROUNDS=6
BPORT=$((PGPORT + 1001))  # the socket lives in our own directory, so the number cannot collide
use_scratch locks-pgbouncer
chmod 755 "$TMP"
chown postgres:postgres "$TMP"

trap 'stop_pgbouncer; scratch_cleanup' EXIT

create_db "$DB" || bail "could not create database $DB"
q "$DB" "CREATE TABLE data (key text PRIMARY KEY, token bigint NOT NULL DEFAULT 0, writes int NOT NULL DEFAULT 0)" \
        "CREATE TABLE log (worker text, key text, token bigint, step text, backend int, ok boolean)" \
        "INSERT INTO data (key) SELECT 'pool:' || g FROM generate_series(1, 4) g" >/dev/null || bail "could not create the tables"

start_pgbouncer "$DB" "$POOL_SIZE"

# bq SQL: one short client session through pgbouncer.
bq() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$BPORT" -d "$DB" -c "$1"; }
is "$(bq "SELECT current_database()")" "$DB" "a client connects through pgbouncer"

# Each round: acquire a key; if granted, heartbeat, write fenced by lock_check, release, each step a
# new client; every step logs itself with its backend. Then one entity: acquire and complete it.
worker() {
    local w=$1 k tok r
    for r in $(seq 1 $ROUNDS); do
        k="pool:$(( (RANDOM % 4) + 1 ))"
        tok=$(bq "INSERT INTO log SELECT '$w', '$k', t, 'acquire', pg_backend_pid(), t IS NOT NULL
                  FROM conveyor.lock_acquire('$k', '$w', 60) t RETURNING coalesce(token::text, '')") || return 1
        if [ -n "$tok" ]; then
            bq "INSERT INTO log SELECT '$w', '$k', $tok, 'heartbeat', pg_backend_pid(), conveyor.lock_heartbeat('$k', '$w', $tok)" || return 1
            bq "WITH u AS (UPDATE data SET token = $tok, writes = writes + 1 WHERE key = '$k' AND conveyor.lock_check('$k', $tok) RETURNING 1)
                INSERT INTO log SELECT '$w', '$k', $tok, 'write', pg_backend_pid(), EXISTS (SELECT 1 FROM u)" || return 1
            bq "INSERT INTO log SELECT '$w', '$k', $tok, 'release', pg_backend_pid(), conveyor.lock_release('$k', '$w', $tok)" || return 1
        fi
        if bq "SELECT conveyor.entity_acquire('track', '$w-$r', 600)" | grep -q t; then
            bq "SELECT conveyor.entity_complete('track', '$w-$r')" >/dev/null || return 1
        fi
    done
}
for i in $(seq 1 $WORKERS); do
    worker "w$i" >"$TMP/w$i.out" 2>"$TMP/w$i.err" &
    PIDS+=($!)
done
rc=0
wait_sessions || rc=1
is "$rc" 0 "$WORKERS workers ran $ROUNDS rounds each through pgbouncer without errors"
cat "$TMP"/w*.err | head -5 | sed 's/^/#   /'

granted=$(q "$DB" "SELECT count(*) FROM log WHERE step = 'acquire' AND ok")
note "$granted leases granted, $(q "$DB" "SELECT count(*) FROM log WHERE step = 'acquire' AND NOT ok") refused"
check "leases were granted through the pool" test "$granted" -gt 0
is "$(q "$DB" "SELECT count(*) FROM log WHERE step IN ('heartbeat', 'write', 'release') AND NOT ok")" 0 \
   "every holder's heartbeat, fenced write and release through the pool succeeded"
is "$(q "$DB" "SELECT count(*) FROM log WHERE step = 'write'")" "$granted" "one fenced write per granted lease"
is "$(q "$DB" "SELECT count(*) - count(DISTINCT token) FROM log WHERE step = 'acquire' AND ok")" 0 "no token was granted twice"
is "$(q "$DB" "SELECT sum(writes) FROM data")" "$granted" "the data rows count every accepted write"
is "$(q "$DB" "SELECT count(*) FROM data d WHERE d.writes > 0 AND d.token <> (SELECT max(token) FROM log l WHERE l.key = d.key AND l.step = 'write')")" 0 \
   "each data row holds the greatest token that wrote it"
backends=$(q "$DB" "SELECT count(DISTINCT backend) FROM log")
check "the steps ran on at most $POOL_SIZE server backends (saw $backends)" test "$backends" -ge 1 -a "$backends" -le "$POOL_SIZE"
moved=$(q "$DB" "SELECT count(*) FROM log a JOIN log r ON r.token = a.token AND r.step = 'release'
                 WHERE a.step = 'acquire' AND a.backend <> r.backend")
check "some leases were released on another backend than the one that granted them ($moved)" test "$moved" -gt 0
is "$(q "$DB" "SELECT count(*) FROM conveyor.locks")" 0 "no lease is left"
is "$(q "$DB" "SELECT state, count(*) FROM conveyor.entities GROUP BY state")" "COMPLETED|$((WORKERS * ROUNDS))" \
   "every entity acquired through the pool was completed, once"

stop_pgbouncer
finish
