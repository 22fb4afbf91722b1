#!/usr/bin/env bash
# Stress: 16 concurrent clients contend for 50 lease keys (half of their picks go to 5 hot keys) with
# a 1-second ttl for about 20 seconds. Each critical section makes three fenced writes (lock_check and
# the write in one transaction) with short work between them; about one write in seven is preceded
# by a stall longer than the ttl, so leases expire under their holders and are taken over. Every
# client logs each critical section (key, token, start, end) and each write attempt inside the
# database. Afterwards, for each key: tokens are unique and strictly increasing in time, live
# sections (from start to the last accepted write) never overlap, and no write with a superseded
# token was accepted.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_stress_locks
CLIENTS=16
KEYS=50
SECONDS_RUN=${CONVEYOR_STRESS_LOCKS_SECONDS:-20}
use_scratch stress-locks

create_db "$DB" || bail "could not create database $DB"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the test tables"
-- One row per critical section: from the acquisition (logged in the acquiring transaction) to the end.
CREATE TABLE sections (
    id      bigserial PRIMARY KEY,
    client  text NOT NULL,
    key     text NOT NULL,
    token   bigint NOT NULL,
    started timestamptz NOT NULL,
    ended   timestamptz
);
-- One row per fenced write attempt, logged in the writing transaction. prev_token: the token of the
-- write the data row held before (read under the row lock).
CREATE TABLE writes (
    id         bigserial PRIMARY KEY,
    section_id bigint NOT NULL,
    key        text NOT NULL,
    token      bigint NOT NULL,
    at         timestamptz NOT NULL,
    accepted   boolean NOT NULL,
    prev_token bigint
);
-- The guarded resource: one row per key, written only under a live lease.
CREATE TABLE data (key text PRIMARY KEY, token bigint NOT NULL DEFAULT 0, writes bigint NOT NULL DEFAULT 0);

CREATE PROCEDURE client(c text, run_seconds int, nkeys int)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => run_seconds);
    k text;
    tok bigint;
    sid bigint;
    live boolean;
    prev bigint;
BEGIN
    WHILE clock_timestamp() < deadline LOOP
        k := 'stress:' || CASE WHEN random() < 0.5 THEN floor(random() * 5)::int
                               ELSE floor(random() * nkeys)::int END;
        tok := conveyor.lock_acquire(k, c, 1);
        IF tok IS NULL THEN
            COMMIT;
            PERFORM pg_sleep(0.002 + random() * 0.005);
            CONTINUE;
        END IF;
        INSERT INTO sections (client, key, token, started) VALUES (c, k, tok, clock_timestamp()) RETURNING id INTO sid;
        COMMIT;
        FOR w IN 1 .. 3 LOOP
            IF random() < 0.15 THEN
                PERFORM pg_sleep(1.1 + random() * 0.4);   -- a stall longer than the ttl
            ELSE
                PERFORM pg_sleep(random() * 0.02);
            END IF;
            -- The fenced write: check and write in one transaction.
            live := conveyor.lock_check(k, tok);
            prev := NULL;
            IF live THEN
                SELECT d.token INTO prev FROM data d WHERE d.key = k FOR UPDATE;
                UPDATE data SET token = tok, writes = writes + 1 WHERE data.key = k;
            END IF;
            INSERT INTO writes (section_id, key, token, at, accepted, prev_token)
            VALUES (sid, k, tok, clock_timestamp(), live, prev);
            COMMIT;
            EXIT WHEN NOT live;
            IF random() < 0.3 THEN
                PERFORM conveyor.lock_heartbeat(k, c, tok);
                COMMIT;
            END IF;
        END LOOP;
        UPDATE sections SET ended = clock_timestamp() WHERE id = sid;
        PERFORM conveyor.lock_release(k, c, tok);
        COMMIT;
    END LOOP;
END
$$;
SQL
q "$DB" "INSERT INTO data (key) SELECT 'stress:' || g FROM generate_series(0, $((KEYS - 1))) g" >/dev/null ||
    bail "could not create the data rows"

# ---- run ------------------------------------------------------------------------------------------
for i in $(seq 1 $CLIENTS); do
    PGOPTIONS='-c synchronous_commit=off' PGAPPNAME="conveyor_stress_locks_c$i" \
        psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CALL client('c$i', $SECONDS_RUN, $KEYS)" >"$TMP/c$i.log" 2>&1 &
    PIDS+=($!)
done
# Bounded wait: a section takes at most a few seconds past the deadline.
wait_sessions_bounded "$DB" $((SECONDS_RUN + 30)) "clients"

client_rc=0
for i in $(seq 1 $CLIENTS); do
    if [ -s "$TMP/c$i.log" ]; then client_rc=1; note "client c$i said:"; sed 's/^/#   /' "$TMP/c$i.log"; fi
done
is "$client_rc" 0 "all $CLIENTS clients ended without an error"

q "$DB" "CREATE INDEX ON writes (key, at)" "CREATE INDEX ON sections (key, started)" "ANALYZE" >/dev/null
note "$(q "$DB" "SELECT count(*) || ' sections, ' || count(DISTINCT key) || ' keys' FROM sections")," \
     "$(q "$DB" "SELECT count(*) FILTER (WHERE accepted) || ' writes accepted, ' || count(*) FILTER (WHERE NOT accepted) || ' refused' FROM writes"),"\
     "$(q "$DB" "SELECT count(*) || ' takeovers' FROM conveyor.lock_events WHERE event = 'takeover' AND key LIKE 'stress:%'")"

# ---- the run did what it is meant to test ------------------------------------------------------------
check "sections ran on at least 40 of the $KEYS keys" \
    test "$(q "$DB" "SELECT count(DISTINCT key) FROM sections")" -ge 40
check "leases expired under their holders and were taken over" \
    test "$(q "$DB" "SELECT count(*) FROM conveyor.lock_events WHERE event = 'takeover' AND key LIKE 'stress:%'")" -gt 0
check "late writes of holders that lost their lease were refused" \
    test "$(q "$DB" "SELECT count(*) FROM writes WHERE NOT accepted")" -gt 0

# ---- tokens ------------------------------------------------------------------------------------------
is "$(q "$DB" "SELECT count(*) - count(DISTINCT token) FROM sections")" 0 "no token was handed out twice"
is "$(q "$DB" "SELECT count(*) FROM (SELECT token, lag(token) OVER (PARTITION BY key ORDER BY started, id) AS prev
                                     FROM sections) s WHERE prev >= token")" 0 \
   "per key, tokens are strictly increasing in the order the sections started"
is "$(q "$DB" "SELECT count(*) FROM conveyor.lock_events WHERE key LIKE 'stress:%' AND event = 'takeover'
               AND NOT (new_token > old_token)")" 0 "every takeover's token is greater than the one it replaced"
is "$(q "$DB" "SELECT count(*) FROM conveyor.lock_events e WHERE e.key LIKE 'stress:%' AND e.event = 'takeover'
               AND NOT EXISTS (SELECT 1 FROM sections s WHERE s.key = e.key AND s.token = e.old_token)")" 0 \
   "every takeover replaced a lease a client held"

# ---- live sections never overlap -----------------------------------------------------------------
# A section is live from its start to its last accepted write; the next section of the key starts
# after that.
overlaps=$(q "$DB" "
    WITH live AS (
        SELECT s.id, s.key, s.token, s.started, max(w.at) AS last_write
        FROM sections s JOIN writes w ON w.section_id = s.id AND w.accepted
        GROUP BY s.id, s.key, s.token, s.started),
    seq AS (
        SELECT l.*, lead(started) OVER (PARTITION BY key ORDER BY started, id) AS next_start FROM live l)
    SELECT count(*) FROM seq WHERE next_start <= last_write")
is "$overlaps" 0 "per key, live sections (start to last accepted write) never overlap"
is "$(q "$DB" "SELECT count(*) FROM writes w JOIN sections s ON s.id = w.section_id
               WHERE w.accepted AND (w.at < s.started OR w.token <> s.token OR w.key <> s.key)")" 0 \
   "every accepted write lies within its own section"

# ---- no write with a superseded token was accepted -----------------------------------------------------
is "$(q "$DB" "SELECT count(*) FROM writes w WHERE w.accepted AND EXISTS (
                   SELECT 1 FROM sections s WHERE s.key = w.key AND s.token > w.token AND s.started < w.at)")" 0 \
   "no write was accepted after a greater token of its key had been granted"
is "$(q "$DB" "SELECT count(*) FROM writes WHERE accepted AND prev_token > token")" 0 \
   "no accepted write overwrote data written with a greater token"
is "$(q "$DB" "SELECT count(*) FROM data d WHERE d.token <> COALESCE((SELECT max(token) FROM writes w WHERE w.key = d.key AND w.accepted), 0)
                                           OR d.writes <> (SELECT count(*) FROM writes w WHERE w.key = d.key AND w.accepted)")" 0 \
   "each data row holds its key's greatest accepted token and counts exactly the accepted writes"
is "$(q "$DB" "SELECT count(*) FROM conveyor.locks WHERE key LIKE 'stress:%'")" 0 "every lease was released at the end"
is "$(q "$DB" "SELECT count(*) FROM sections WHERE ended IS NULL")" 0 "every section ended"

finish
