#!/usr/bin/env bash
# ALTER EXTENSION conveyor UPDATE from every released version. For each version V with an install
# script sql/conveyor--V.sql: install V, fill it (test/fixtures/fill_<W>.sql for every W up to V),
# update to the default version, then
#   - the catalog of the updated database equals that of a fresh install of the default version
#     (test/shell/lib/extension_schema.sql over the extension's members, and, on a database updated
#     without data, pg_dump --schema-only --binary-upgrade with its OIDs left out);
#   - every row of every table of the extension, and every sequence's position, is as before;
#   - the data is usable: leases held before are heartbeaten and acked, expired ones reaped by
#     maintain(), every pending job is dequeued and acked, locks are checked and released with their
#     tokens, reservations settle, ledger_verify() is consistent.
# And the comparison itself can fail: a fresh install with one grant and one comment taken away must
# be reported by both views of the catalog.
source "$(dirname "$0")/lib/tap.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
use_scratch upgrade
chmod 755 "$TMP"

DEFAULT=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$ROOT/conveyor.control")
[ -n "$DEFAULT" ] || bail "no default_version in conveyor.control"
# Released versions: sql/conveyor--V.sql (upgrade scripts are conveyor--A--B.sql).
RELEASED=$(for f in "$ROOT"/sql/conveyor--*.sql; do v=${f##*/conveyor--}; v=${v%.sql}; [[ $v == *--* ]] || echo "$v"; done | sort -V)
[ -n "$RELEASED" ] || bail "no released install script in sql/"
note "default version $DEFAULT; released: $(echo $RELEASED)"

# ---- helpers ------------------------------------------------------------------------------------
new_db() {  # new_db NAME [VERSION]: a fresh database with conveyor (at VERSION) installed
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
        -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" -c "CREATE DATABASE \"$1\"" >/dev/null || return 1
    TEST_DBS+=("$1")
    # check_function_bodies on: every C function's symbol is looked up in conveyor.so as it is created.
    PGOPTIONS="-c check_function_bodies=on" psql -X -q -v ON_ERROR_STOP=1 -d "$1" \
        -c "CREATE EXTENSION conveyor${2:+ VERSION '$2'}" >"$TMP/create.out" 2>&1
}
schema_of() { psql -X -At -v ON_ERROR_STOP=1 -d "$1" -f "$ROOT/test/shell/lib/extension_schema.sql"; }
# The schema as pg_dump restores it into a new cluster, extension members included; without what
# names OIDs and transaction ids, which differ between any two databases (extconfig is compared by
# name in schema_of). Dropped columns show as placeholders in this view, so it runs on databases that
# never held data; the trailing comma of a column line is dropped for the same reason.
dump_of() {
    pg_dump --schema-only --binary-upgrade "$1" | sed -E \
        -e '/^\\(un)?restrict /d' -e '/binary_upgrade_set_next_/d' -e '/^SET relfrozenxid = /d' \
        -e "/^WHERE oid = '[0-9]+';$/d" -e '/binary_upgrade_set_missing_value/d' \
        -e "s/(binary_upgrade_create_empty_extension\('[^']*', '[^']*', [a-z]+, '[^']*', )'\{[0-9,]*\}', '\{[^}]*\}'/\1<extconfig>/" \
        -e '/pg\.dropped\./d' -e '/recreate dropped column/d' -e '/^(UPDATE pg_catalog\.pg_attribute|SET attlen = )/d' \
        -e 's/^(\t.*),$/\1/'
}
# same DESCRIPTION FILE_A FILE_B: passes when equal; otherwise fails and shows the unified diff.
same() {
    if diff -u --label "$4" --label "$5" "$2" "$3" >"$TMP/diff"; then
        pass "$1"
    else
        fail "$1"
        head -120 "$TMP/diff" | sed 's/^/#   /'
    fi
}
# The contents of every table of the extension (by the columns it has now) and the position of
# every sequence, as statements: run before the update and again after it.
contents_queries() {
    q "$1" "SELECT format('SELECT %L || '' '' || count(*) || '' '' || md5(coalesce(string_agg(r::text, E''\\n'' ORDER BY r::text), '''')) FROM (SELECT %s FROM %s) r;',
                          c.oid::regclass, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), c.oid::regclass)
            FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
            JOIN pg_class c ON c.oid = d.objid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind IN ('r', 'p')
            GROUP BY c.oid ORDER BY c.oid::regclass::text COLLATE \"C\"" \
           "SELECT format('SELECT %L || '' '' || last_value || '' '' || is_called FROM %s;', c.oid::regclass, c.oid::regclass)
            FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
            JOIN pg_class c ON c.oid = d.objid
            WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind = 'S'
            ORDER BY c.oid::regclass::text COLLATE \"C\""
}
fill() {  # fill DB FROM TO: applies test/fixtures/fill_W.sql for every FROM < W <= TO (FROM may be empty)
    local f w
    for f in "$ROOT"/test/fixtures/fill_*.sql; do
        w=${f##*/fill_}; w=${w%.sql}
        if { [ -z "$2" ] || [ "$(printf '%s\n%s\n' "$2" "$w" | sort -V | head -1)" != "$w" ]; } &&
           [ "$(printf '%s\n%s\n' "$w" "$3" | sort -V | tail -1)" = "$3" ]; then
            echo "$w"
        fi
    done | sort -V | while read -r w; do
        psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -f "$ROOT/test/fixtures/fill_$w.sql" >"$TMP/fill.out" 2>&1 ||
            { sed 's/^/#   /' "$TMP/fill.out"; exit 1; }
    done
}
named() { echo "(SELECT id FROM public.fill_names WHERE name = '$1')"; }

# ---- the reference: a fresh install of the default version ----------------------------------------
FRESH=conveyor_shell_upgrade_fresh
new_db "$FRESH" || { sed 's/^/#   /' "$TMP/create.out"; bail "could not install conveyor $DEFAULT"; }
is "$(q "$FRESH" "SELECT extversion FROM pg_extension WHERE extname = 'conveyor'")" "$DEFAULT" "a fresh install is at the default version $DEFAULT"
schema_of "$FRESH" >"$TMP/fresh.schema" || bail "could not read the catalog of $FRESH"
dump_of "$FRESH" >"$TMP/fresh.dump" || bail "could not dump the schema of $FRESH"

# ---- the comparison can fail ----------------------------------------------------------------------
ALTERED=conveyor_shell_upgrade_altered
new_db "$ALTERED" || bail "could not install conveyor in $ALTERED"
q "$ALTERED" "REVOKE EXECUTE ON FUNCTION conveyor.ack(uuid, boolean, text, jsonb, text, boolean, int) FROM conveyor_worker" \
    "COMMENT ON FUNCTION conveyor.uuid_v7() IS NULL" || bail "could not alter $ALTERED"
schema_of "$ALTERED" >"$TMP/altered.schema"
dump_of "$ALTERED" >"$TMP/altered.dump"
diff "$TMP/fresh.schema" "$TMP/altered.schema" >"$TMP/diff"
is "$(grep -c '^[<>] function conveyor.ack(uuid,boolean,text,jsonb,text,boolean,integer): owner' "$TMP/diff") $(grep -c '^[<>] function conveyor.uuid_v7(): owner' "$TMP/diff")" "2 2" \
   "the catalog comparison reports a grant taken away and a comment dropped"
diff "$TMP/fresh.dump" "$TMP/altered.dump" >"$TMP/diff"
is "$(grep -c '^> REVOKE ALL ON FUNCTION conveyor.ack(.* FROM conveyor_worker;$' "$TMP/diff") $(grep -c "^< COMMENT ON FUNCTION conveyor.uuid_v7() IS " "$TMP/diff")" "1 1" \
   "the pg_dump comparison reports them too"

# ---- every released version ------------------------------------------------------------------------
for V in $RELEASED; do
    if [ "$V" = "$DEFAULT" ]; then
        note "sql/conveyor--$V.sql is the default version itself: nothing to update"
        continue
    fi
    tag=${V//./_}
    is "$(q "$FRESH" "SELECT count(*) FROM pg_extension_update_paths('conveyor') WHERE source = '$V' AND target = '$DEFAULT' AND path IS NOT NULL")" 1 \
       "$V: an update path leads to $DEFAULT ($(q "$FRESH" "SELECT path FROM pg_extension_update_paths('conveyor') WHERE source = '$V' AND target = '$DEFAULT'"))"

    # The schema alone: installed at V, updated, never filled.
    EMPTY=conveyor_shell_upgrade_${tag}_empty
    if new_db "$EMPTY" "$V"; then
        pass "$V: installs from sql/conveyor--$V.sql, every C symbol it declares found in today's conveyor.so"
    else
        fail "$V: installs from sql/conveyor--$V.sql, every C symbol it declares found in today's conveyor.so"
        sed 's/^/#   /' "$TMP/create.out"
        continue
    fi
    rc=0; q "$EMPTY" "ALTER EXTENSION conveyor UPDATE" >"$TMP/update.out" 2>&1 || rc=$?
    is "$rc $(q "$EMPTY" "SELECT extversion FROM pg_extension WHERE extname = 'conveyor'")" "0 $DEFAULT" "$V: ALTER EXTENSION conveyor UPDATE reaches $DEFAULT"
    [ "$rc" = 0 ] || sed 's/^/#   /' "$TMP/update.out"
    schema_of "$EMPTY" >"$TMP/empty.schema"
    same "$V: updated, the extension's catalog equals a fresh $DEFAULT install's" "$TMP/fresh.schema" "$TMP/empty.schema" \
         "fresh $DEFAULT" "$V updated"
    dump_of "$EMPTY" >"$TMP/empty.dump"
    same "$V: updated, pg_dump --binary-upgrade --schema-only equals a fresh $DEFAULT install's" "$TMP/fresh.dump" "$TMP/empty.dump" \
         "fresh $DEFAULT" "$V updated"

    # A database in full use at V.
    DB=conveyor_shell_upgrade_$tag
    new_db "$DB" "$V" || { fail "$V: installs"; continue; }
    fill "$DB" "" "$V" || { fail "$V: the fill of $V runs"; continue; }
    pass "$V: filled with test/fixtures/fill_*.sql up to $V"
    is "$(q "$DB" "SELECT string_agg(n.name || ':' || coalesce(j.state, h.status), ' ' ORDER BY n.name)
                   FROM public.fill_names n LEFT JOIN conveyor.jobs j ON j.job_id::text = n.id
                   LEFT JOIN conveyor.job_history h ON h.job_id::text = n.id
                   WHERE j.job_id IS NOT NULL OR h.job_id IS NOT NULL")" \
       "backoff:scheduled cancelled:cancelled completed:completed dead:dead expired:running ready:ready running:running scheduled:scheduled waiting:waiting" \
       "$V: jobs in every state before the update"
    is "$(q "$DB" "SELECT (SELECT lease_until < now() FROM conveyor.jobs WHERE job_id::text = $(named expired)) || ' ' ||
                          (SELECT lease_until > now() FROM conveyor.jobs WHERE job_id::text = $(named running)) || ' ' ||
                          (SELECT attempt FROM conveyor.jobs WHERE job_id::text = $(named backoff)) || ' ' ||
                          (SELECT string_agg(DISTINCT state, ',' ORDER BY state) FROM conveyor.entities) || ' ' ||
                          (SELECT string_agg(DISTINCT state, ',' ORDER BY state) FROM conveyor.reservations)")" \
       "true true 1 COMPLETED,DEAD,FAILED,IN_PROGRESS,PENDING open,released,settled" \
       "$V: an expired and a live lease, a job in backoff, every entity state, open/settled/released reservations"
    contents_queries "$DB" >"$TMP/contents.sql" || bail "could not list the tables of the extension"
    psql -X -At -v ON_ERROR_STOP=1 -d "$DB" -f "$TMP/contents.sql" >"$TMP/before.contents" || bail "could not read the tables"
    is "$(grep -c ' 0 d41d8cd98f00b204e9800998ecf8427e$' "$TMP/before.contents")" 0 "$V: every table of the extension holds rows before the update"
    grep ' 0 d41d8cd98f00b204e9800998ecf8427e$' "$TMP/before.contents" | sed 's/^/#   empty: /'

    # The history partitions as the library of 0.1 and 0.2 made them, with a (queue_id, status) index
    # today's library no longer makes (the fill's partitions come from today's conveyor.so).
    q "$DB" "DO \$\$ DECLARE p name; BEGIN
               FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                        WHERE i.inhparent = 'conveyor.job_history'::regclass LOOP
                 EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON conveyor.%I (queue_id, status) WHERE status <> ''completed''',
                                p || '_unfinished', p);
               END LOOP; END \$\$" >/dev/null
    old_indexes=$(q "$DB" "SELECT count(*) FROM pg_class WHERE relname LIKE 'job\_history\_p%\_unfinished'")
    # The trail's 'enqueued' events stored before the update (0.3 reads a job's from the job itself).
    q "$DB" "CREATE TABLE public.jobs_before AS SELECT n.id FROM public.fill_names n
             WHERE EXISTS (SELECT FROM conveyor.jobs j WHERE j.job_id::text = n.id)
                OR EXISTS (SELECT FROM conveyor.job_history h WHERE h.job_id::text = n.id)" >/dev/null
    stored_enqueued=$(q "$DB" "SELECT count(*) FROM public.jobs_before n JOIN conveyor.job_events e ON e.job_id::text = n.id AND e.event = 'enqueued'")
    rc=0; q "$DB" "ALTER EXTENSION conveyor UPDATE" >"$TMP/update.out" 2>&1 || rc=$?
    is "$rc $(q "$DB" "SELECT extversion FROM pg_extension WHERE extname = 'conveyor'")" "0 $DEFAULT" "$V: a database in full use updates to $DEFAULT"
    [ "$rc" = 0 ] || sed 's/^/#   /' "$TMP/update.out"
    is "$([ "$old_indexes" -gt 0 ] && echo some) $(q "$DB" "SELECT count(*) FROM pg_class WHERE relname LIKE 'job\_history\_p%\_unfinished'")" \
       "some 0" "$V: the update drops the (queue_id, status) index from every history partition that has it ($old_indexes)"
    psql -X -At -v ON_ERROR_STOP=1 -d "$DB" -f "$TMP/contents.sql" >"$TMP/after.contents" 2>&1
    same "$V: every row of every table of the extension and every sequence's position survive the update" \
         "$TMP/before.contents" "$TMP/after.contents" "before" "after"
    note "$V: compared $(wc -l <"$TMP/before.contents") tables and sequences"
    schema_of "$DB" >"$TMP/full.schema"
    same "$V: updated in full use, the extension's catalog equals a fresh $DEFAULT install's" "$TMP/fresh.schema" "$TMP/full.schema" \
         "fresh $DEFAULT" "$V updated in use"
    fill "$DB" "$V" "$DEFAULT" || fail "$V: the fills after $V run on the updated database"
    # Each job of the fill shows as many enqueued events as were stored for it (none or one), each
    # exactly as stored; $1: when.
    enqueued_once() {
        is "$(q "$DB" "SELECT count(*) FILTER (WHERE shown = 1 AND same = 1) || ' ' || count(*) FILTER (WHERE shown <> stored OR same <> stored)
                       FROM (SELECT (SELECT count(*) FROM conveyor.job_events(n.id::uuid) e WHERE e.event = 'enqueued') AS shown,
                                    (SELECT count(*) FROM conveyor.job_events s WHERE s.job_id::text = n.id AND s.event = 'enqueued') AS stored,
                                    (SELECT count(*) FROM conveyor.job_events(n.id::uuid) e JOIN conveyor.job_events s
                                       ON s.job_id::text = n.id AND s.event = 'enqueued' AND (s.at, s.details) = (e.at, e.details)
                                     WHERE e.event = 'enqueued') AS same
                             FROM public.jobs_before n) x")" "$stored_enqueued 0" \
           "$V: $1, the $stored_enqueued enqueued events stored before the update show once each, as stored"
    }
    [ "$stored_enqueued" -gt 0 ] || fail "$V: the fill stored enqueued events before the update"
    enqueued_once "updated"
    after=$(q "$DB" "SELECT job_id FROM conveyor.enqueue('fill_main', '{\"url\": \"https://after/1\"}', job_type => 'fetch', priority => 3)")
    is "$(q "$DB" "SELECT (SELECT string_agg(e.event || ' ' || (e.details ->> 'priority'), ',') FROM conveyor.job_events('$after') e)
                          || ' ' || (SELECT count(*) FROM conveyor.job_events s WHERE s.job_id = '$after')")" "enqueued 3 0" \
       "$V: a job enqueued after the update shows its enqueued event, read from the job (no row in job_events)"

    # ---- the updated data is usable ----
    is "$(q "$DB" "SELECT conveyor.heartbeat($(named running)::uuid, 'fill-w1', 60) > now()")" t "$V: the lease taken before the update is heartbeaten"
    is "$(q "$DB" "SELECT conveyor.ack($(named running)::uuid, true, worker_id => 'fill-w1')")" t "$V: ... and acked by its worker"
    # The fills after the update may run maintain() too (0.3's folds job_stats): the runs' reports
    # (maintenance_run events) add up to the one reap and the one expiry.
    is "$(q "$DB" "SELECT conveyor.maintain() IS NOT NULL" \
            "SELECT sum((details ->> 'leases_expired')::int), sum((details ->> 'reservations_expired')::int)
             FROM conveyor.events(now() - interval '1 hour', 'maintenance_run')" \
            "SELECT (SELECT state || ' ' || attempt FROM conveyor.jobs WHERE job_id::text = $(named expired)),
                          (SELECT state FROM conveyor.reservations WHERE reservation_id::text = $(named res_lapsed))")" \
       "t
1|1
ready 1|expired" "$V: maintain() reaps the expired lease (the job is ready again) and expires the lapsed reservation"
    is "$(q "$DB" "SELECT conveyor.resume_queue('fill_paused')")" "" "$V: the paused queue resumes"
    pending=$(q "$DB" "SELECT count(*) FROM conveyor.jobs")
    acked=0; deadline=$(($(date +%s) + 60))
    while [ "$(q "$DB" "SELECT count(*) FROM conveyor.jobs")" != 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do
        n=$(q "$DB" "SELECT count(*) FILTER (WHERE conveyor.ack(d.job_id, true, worker_id => 'drain'))
                     FROM conveyor.queues q, conveyor.dequeue(q.name, 'drain', 100) d") || break
        acked=$((acked + n))
        [ "$n" = 0 ] && sleep 0.3   # the scheduled job and the one in backoff come due within seconds
    done
    is "$acked $(q "$DB" "SELECT count(*) FROM conveyor.jobs")" "$pending 0" "$V: workers dequeue and ack all $pending pending jobs to the end"
    is "$(q "$DB" "SELECT string_agg(n.name || ':' || h.status, ' ' ORDER BY n.name) FROM public.fill_names n
                   JOIN conveyor.job_history h ON h.job_id::text = n.id")" \
       "backoff:completed cancelled:cancelled completed:completed dead:dead expired:completed ready:completed running:completed scheduled:completed waiting:completed" \
       "$V: every job ends where it should"
    enqueued_once "with every job finished"
    is "$(q "$DB" "SELECT conveyor.lock_check('fill:live', $(named lock_live)::bigint), conveyor.lock_heartbeat('fill:live', 'fill-a', $(named lock_live)::bigint),
                          conveyor.lock_check('fill:taken', $(named lock_taken)::bigint), conveyor.lock_release('fill:taken', 'fill-b', $(named lock_taken)::bigint),
                          conveyor.lock_release('fill:live', 'fill-a', $(named lock_live)::bigint)")" "t|t|t|t|t" \
       "$V: locks are checked, heartbeaten and released with their tokens"
    is "$(q "$DB" "SELECT conveyor.lock_acquire('fill:stale', 'fill-c', 60) > (SELECT max(id::bigint) FROM public.fill_names WHERE name LIKE 'lock%')")" t \
       "$V: a stale lease is taken over with a token above every earlier one"
    is "$(q "$DB" "SELECT conveyor.entity_acquire('fill_stuck', 'S1'), conveyor.entity_acquire('fill_artist', 'A2')")" "t|t" \
       "$V: the pending and the failed entity are acquired again"
    is "$(q "$DB" "SELECT acquired, state, result FROM conveyor.idempotency_begin('fill-k1', '{\"req\": 1}')")" 'f|completed|{"answer": 42}' \
       "$V: a completed idempotency key returns its stored result"
    is "$(q "$DB" "SELECT count(*) FROM public.fill_names n, conveyor.settle(n.id::uuid, 9, 'maps') WHERE n.name = 'res_open'")" 1 \
       "$V: the open reservation settles"
    is "$(q "$DB" "SELECT count(*) || ' ' || bool_and(ok) FROM conveyor.ledger_verify()")" "$(q "$DB" "SELECT count(*) FROM conveyor.accounts") true" "$V: ledger_verify() finds every account consistent"
    is "$(q "$DB" "SELECT allowed FROM conveyor.rate_limit('fill-api', 1, 3600, 3)") $(q "$DB" "SELECT allowed FROM conveyor.rate_limit('fill-api', 1, 3600, 3)")" \
       "t f" "$V: the rate limit goes on from where it was (third of a burst of 3 allowed, fourth refused)"
    is "$(q "$DB" "SELECT used FROM conveyor.quota_consume('fill_hourly', 1)")" 8 "$V: a quota's window goes on counting"
    is "$(q "$DB" "SELECT delta FROM conveyor.snapshot('fill_stats', 'UC1', '{\"subscribers\": 15}', '2026-03-03 10:00+00')")" '{"subscribers": 3}' \
       "$V: the next snapshot's delta is taken against the series kept through the update"
    is "$(q "$DB" "SELECT is_new_period || ' ' || delta FROM conveyor.snapshot('fill_stats', 'UC1', '{\"subscribers\": 15}', '2026-03-04 10:00+00', skip_unchanged => true)")" \
       'false {"subscribers": 0}' "$V: snapshot's new skip_unchanged skips an equal capture of a series kept through the update"
    is "$(q "$DB" "SELECT string_agg(action, ',') FROM conveyor.upsert('fill_channels', '[{\"channel_id\": \"UC2\", \"title\": \"Two!\"}]', '{channel_id}', '{\"audit\": true}')")
$(q "$DB" "SELECT max(change_id) FROM conveyor.change_log")" "updated
4" "$V: upserts go on, and the audit trail continues its numbering"
done

finish
