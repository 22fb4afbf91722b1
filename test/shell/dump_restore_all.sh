#!/usr/bin/env bash
# pg_dump / pg_restore of a database in full use, over every table of the extension: filled by the
# shared fixtures (test/fixtures/fill_*.sql, every version up to the default one, as
# test/shell/upgrade.sh fills), dumped in custom format and restored into a fresh database. Generic
# over the catalog, so tables added later are covered without editing this test:
#   - every table of the extension holds rows after the fill (a new table needs its fill);
#   - every table and sequence registered with pg_extension_config_dump comes back row for row
#     (an md5 of its rows in a stable order), every sequence at its position;
#   - the tables not registered are exactly the ones whose rows are transient (TRANSIENT below);
#   - the restored extension's catalog equals the source's, and the restored data works.
source "$(dirname "$0")/lib/tap.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
use_scratch dump-all
chmod 755 "$TMP"

# Tables of the extension deliberately left out of dumps: GCRA rate-limit state, as good as absent
# once its time has passed.
TRANSIENT="conveyor.rate_limits"

SRC=conveyor_shell_dump_all_src
DST=conveyor_shell_dump_all_dst
DEFAULT=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$ROOT/conveyor.control")
create_db "$SRC" || bail "could not create database $SRC"
for w in $(for f in "$ROOT"/test/fixtures/fill_*.sql; do w=${f##*/fill_}; echo "${w%.sql}"; done | sort -V); do
    [ "$(printf '%s\n%s\n' "$w" "$DEFAULT" | sort -V | tail -1)" = "$DEFAULT" ] || continue
    psql -X -q -At -v ON_ERROR_STOP=1 -d "$SRC" -f "$ROOT/test/fixtures/fill_$w.sql" >"$TMP/fill.out" 2>&1 ||
        { sed 's/^/#   /' "$TMP/fill.out"; bail "test/fixtures/fill_$w.sql failed"; }
    note "filled with test/fixtures/fill_$w.sql"
done

# ---- what the extension holds, from the catalog --------------------------------------------------
MEMBERS="FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
         JOIN pg_class c ON c.oid = d.objid WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'"
CONFIG="c.oid = ANY ((SELECT extconfig FROM pg_extension WHERE extname = 'conveyor')::oid[])"
tables=$(q "$SRC" "SELECT c.oid::regclass $MEMBERS AND c.relkind IN ('r', 'p') ORDER BY c.oid::regclass::text COLLATE \"C\"")
[ -n "$tables" ] || bail "no tables in the extension"
dumped=$(q "$SRC" "SELECT c.oid::regclass $MEMBERS AND c.relkind IN ('r', 'p') AND $CONFIG ORDER BY c.oid::regclass::text COLLATE \"C\"")
sequences=$(q "$SRC" "SELECT c.oid::regclass $MEMBERS AND c.relkind = 'S' AND $CONFIG ORDER BY c.oid::regclass::text COLLATE \"C\"")
digest() { echo "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM $1 t"; }

empty=""
for t in $tables; do [ "$(q "$SRC" "SELECT count(*) FROM $t")" = 0 ] && empty="$empty $t"; done
is "${empty# }" "" "the fill leaves rows in every table of the extension ($(echo $tables | wc -w) tables)"
is "$(q "$SRC" "SELECT string_agg(c.oid::regclass::text, ' ' ORDER BY c.oid::regclass::text COLLATE \"C\") $MEMBERS
                AND c.relkind IN ('r', 'p') AND NOT $CONFIG")" "$TRANSIENT" \
   "every table of the extension is registered for pg_dump except the transient ones ($TRANSIENT)"
is "$(q "$SRC" "SELECT count(*) $MEMBERS AND c.relkind = 'S' AND NOT $CONFIG")" 0 "every sequence of the extension is registered for pg_dump"

# ---- dump and restore ---------------------------------------------------------------------------
dump_and_restore "$SRC" "$DST"
[ "$(q "$DST" "SELECT count(*) FROM pg_extension WHERE extname = 'conveyor'")" = 1 ] || bail "the restore did not create the extension"

for t in $dumped; do
    a=$(q "$SRC" "$(digest "$t")"); b=$(q "$DST" "$(digest "$t")" 2>&1)
    is "$b" "$a" "$t is restored row for row"
done
for s in $sequences; do
    is "$(q "$DST" "SELECT last_value || ' ' || is_called FROM $s" 2>&1)" "$(q "$SRC" "SELECT last_value || ' ' || is_called FROM $s")" \
       "$s is restored at its position"
done
for t in $TRANSIENT; do
    is "$(q "$DST" "SELECT count(*) FROM $t")" 0 "$t (transient) is restored empty"
done
q "$SRC" "$(cat "$ROOT/test/shell/lib/extension_schema.sql")" >"$TMP/src.schema"
q "$DST" "$(cat "$ROOT/test/shell/lib/extension_schema.sql")" >"$TMP/dst.schema"
if diff -u --label source --label restored "$TMP/src.schema" "$TMP/dst.schema" >"$TMP/diff"; then
    pass "the restored extension's catalog equals the source's"
else
    fail "the restored extension's catalog equals the source's"
    head -80 "$TMP/diff" | sed 's/^/#   /'
fi

# ---- the restored data works --------------------------------------------------------------------
named() { echo "(SELECT id FROM public.fill_names WHERE name = '$1')"; }
is "$(q "$DST" "SELECT conveyor.heartbeat($(named running)::uuid, 'fill-w1', 60) > now(), conveyor.ack($(named running)::uuid, true, worker_id => 'fill-w1')")" \
   "t|t" "restored: the lease held before the dump is heartbeaten and acked"
is "$(q "$DST" "SELECT conveyor.lock_check('fill:live', $(named lock_live)::bigint), conveyor.lock_release('fill:live', 'fill-a', $(named lock_live)::bigint)")" \
   "t|t" "restored: a lock is checked and released with its token"
is "$(q "$DST" "SELECT count(*) FROM public.fill_names n, conveyor.settle(n.id::uuid, 9, 'maps') WHERE n.name = 'res_open'")" 1 \
   "restored: the open reservation settles"
is "$(q "$DST" "SELECT bool_and(ok) AND count(*) = (SELECT count(*) FROM conveyor.accounts) FROM conveyor.ledger_verify()")" t \
   "restored: ledger_verify() finds every account consistent"

finish
