#!/usr/bin/env bash
# conveyor_proxy's routing, function by function, and its errors: three shard clusters and a front
# (each its own port and socket). First the front's functions against the shard's catalog: each has
# conveyor's name, arguments, defaults, result and roles; the routing table of proxy/README.md names
# exactly them; every other function of conveyor is on a list of those the front does not offer, each
# with its reason. Where each call lands is read on the shards themselves, recurring jobs too (the
# shards preload pg_cron: a schedule on its group's shard, else its name's, on one shard only, moved
# when its group changes; their runs called by hand on the shard, as pg_cron would). Then a role with
# conveyor_worker only, mapped to a role of the same rights on the shards; hostile input; an id that
# names no shard; racing first jobs of new groups (8 sessions through one front, then through two
# fronts sharing one directory), checked on the shards' tables: every group on exactly one shard, no job
# lost or doubled, one directory row per group; a fourth shard added (existing groups stay, new groups
# go to it); a shard down.
# Ports: CONVEYOR_PROXY_PORTS="FRONT SHARD1 ... SPARE..." (default 55620 to 55629).
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/shards.bash"

DB=conveyor_proxy_routing
use_scratch proxy-routing
chmod 755 "$TMP"
SHARD_BASE=$TMP
trap 'stop_shard_clusters; scratch_cleanup' EXIT

SHARD_CRON=1
start_sharded 3 "$DB" || bail "could not start 3 shards and a front"
export PGHOST=$SHARD_BASE/front/sock PGPORT=$(cluster_port front)
f() { q "$DB" "$@"; }
# on_shards SQL: the result of SQL on each shard, "1:result 2:result 3:result".
on_shards() {
    local i out=()
    for i in 1 2 3; do out+=("$i:$(sq shard$i "$DB" "$1" | tr '\n' ',' | sed 's/,$//')"); done
    echo "${out[*]}"
}
# where ID: the shard that holds a job, asked of the shards.
where() { on_shards "SELECT count(*) FROM conveyor.jobs WHERE job_id = '$1'" | grep -oE '[0-9]:1' | cut -d: -f1; }
# err SQL: "SQLSTATE message" of the error SQL raises on the front (VERBOSITY sqlstate shows the code).
err() {
    psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$DB" -c "$1" 2>&1 >/dev/null |
        sed -nE 's/^ERROR: +([0-9A-Z]{5}): (.*)$/\1 \2/p' | head -1
}

# ---- the front's functions are conveyor's ------------------------------------------------------------------
# Read from both catalogs: per function of schema conveyor, "name(identity args)|full args with defaults|result".
# Every function the front defines must be, to the letter, the function of the same identity on a shard.
sig_sql="SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')|' || pg_get_function_arguments(p.oid)
                || '|' || pg_get_function_result(p.oid)
           FROM pg_proc p WHERE p.pronamespace = 'conveyor'::regnamespace"
front_sigs=$(f "$sig_sql" | LC_ALL=C sort)
shard_sigs=$(sq shard1 "$DB" "$sig_sql" | LC_ALL=C sort)
differ=$(LC_ALL=C comm -23 <(echo "$front_sigs") <(echo "$shard_sigs"))
is "$differ" "" "each of the front's $(echo "$front_sigs" | wc -l) functions in schema conveyor has the name, arguments (names, types, defaults) and result of conveyor's on a shard"
while IFS= read -r line; do
    [ -n "$line" ] || continue
    note "  front: $line"
    note "  shard: $(grep -E "^${line%%(*}\(" <<< "$shard_sigs" || echo "(no function ${line%%(*} in conveyor)")"
done <<< "$differ"
# The roles that may execute each of them, as on the shard (the owner aside).
acl_sql="SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')|'
                || coalesce((SELECT string_agg(a.grantee::regrole::text, ',' ORDER BY a.grantee::regrole::text)
                               FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                              WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner), '')
           FROM pg_proc p WHERE p.pronamespace = 'conveyor'::regnamespace"
front_acl=$(f "$acl_sql" | LC_ALL=C sort)
is "$(LC_ALL=C comm -23 <(echo "$front_acl") <(sq shard1 "$DB" "$acl_sql" | LC_ALL=C sort))" "" \
   "and the same roles may execute each of them as on the shard"

# The calls proxy/README.md's routing table names ("Where each call goes") are exactly the front's functions.
README_PROXY=$(dirname "$0")/../../proxy/README.md
routed=$(sed -n '/^## Where each call goes/,/^\*\*/p' "$README_PROXY" | grep -E '^\| `' | cut -d'|' -f2 |
         grep -oE '`[a-z_]+`' | tr -d '`' | LC_ALL=C sort -u)
front_names=$(echo "$front_sigs" | cut -d'(' -f1 | LC_ALL=C sort -u)
is "$(LC_ALL=C comm -23 <(echo "$routed") <(echo "$front_names") | tr '\n' ' ')" "" \
   "every call of the README's routing table ($(echo "$routed" | wc -l) of them) is a function of the front"
is "$(LC_ALL=C comm -13 <(echo "$routed") <(echo "$front_names") | tr '\n' ' ')" "" \
   "and every function of the front is in that table"

# conveyor's functions the front does not offer, on purpose, each with its reason (proxy/README.md, "What
# the front does not offer"). A new function of conveyor fails here until it is proxied or listed.
declare -A NOT_ON_FRONT=(
    [wait_for]="session-bound: LISTEN in the caller's own session; through the front it would be PL/Proxy's"
    [stop_waiting]="session-bound: UNLISTEN in the caller's own session"
    [advisory_lock]="session-bound: a session advisory lock would be held by PL/Proxy's connection"
    [try_advisory_lock]="session-bound: a session advisory lock would be held by PL/Proxy's connection"
    [advisory_unlock]="session-bound: releases a lock of the caller's own session"
    [advisory_unlock_all]="session-bound: releases the locks of the caller's own session"
    [advisory_lock_held]="session-bound: asks about the caller's own session"
    [advisory_xact_lock]="session-bound: the remote call commits on return, so the lock would end with it"
    [try_advisory_xact_lock]="session-bound: the remote call commits on return, so the lock would end with it"
    [uuid_v7]="pure function: no state to route to; call it on any shard"
    [uuid_v7_time]="pure function: no state to route to; call it on any shard"
    [uuid_shard]="pure function: no state to route to; call it on any shard"
    [advisory_key]="pure function: no state to route to; call it on any shard"
    [metrics_delta]="pure function: no state to route to; call it on any shard"
    [quota_window]="pure function: no state to route to; call it on any shard"
    [quota_projection]="pure function: no state to route to; call it on any shard"
    [maintain]="per-server upkeep: each shard runs its own (pg_cron in its database)"
    [schedule_maintenance]="per-server upkeep: each shard schedules its own"
    [unschedule_maintenance]="per-server upkeep: each shard schedules its own"
    [run_schedule]="what pg_cron runs on the shard that holds a schedule; no role calls it"
    [retention_define]="per-server upkeep: retention of the shard's own tables"
    [retention_drop]="per-server upkeep: retention of the shard's own tables"
    [retention_rules]="per-server upkeep: retention of the shard's own tables"
    [aggregate_metrics]="per-server upkeep: each shard rolls up its own metric points"
    [locks_cleanup]="per-server upkeep: each shard cleans its own stale leases"
    [entity_reset]="per-server upkeep: resets the stuck entities of the shard it runs on"
    [set_setting]="per-server setting: shard.number differs by shard; set on each"
    [get_setting]="per-server setting: read on each shard"
    [settings]="per-server setting: read on each shard"
    [audit]="per-server audit trail: read on each shard"
    [audit_record]="per-server audit trail: written on the shard where the audited call ran"
    [queues_changed]="trigger function; no role calls it"
    [settings_changed]="trigger function; no role calls it"
    [events]="per-server monitoring, not gathered: read on each shard"
    [metrics]="per-server monitoring, not gathered: read on each shard"
    [record_metric]="per-server monitoring: record on any one shard"
    [record_metrics]="per-server monitoring: record on any one shard"
    [report_issue]="per-server monitoring: report on any one shard"
    [resolve_issue]="per-server monitoring: resolve on the shard that holds the issue"
    [worker_issues]="per-server monitoring, not gathered: read on each shard"
    [worker_issue_stats]="per-server monitoring, not gathered: read on each shard"
    [job_stats]="per-server monitoring, not gathered: read on each shard"
    [dead_jobs]="per-server monitoring, not gathered: read on each shard (list_jobs with status dead gathers)"
    [entity_stats]="per-server monitoring, not gathered: read on each shard"
    [entity_inconsistencies]="per-server monitoring, not gathered: read on each shard"
    [upsert]="writes a table of the database it runs in; call it where that table lives"
    [upsert_counts]="writes a table of the database it runs in; call it where that table lives"
    [snapshot]="snapshot series live in the database they are written to; not routed"
    [snapshot_batch]="snapshot series live in the database they are written to; not routed"
    [snapshot_series]="snapshot series live in the database they are written to; not routed"
    [snapshot_top]="snapshot series live in the database they are written to; not routed"
    [account_create]="keyed definition: on the shard conveyor_proxy.key_shard(account) names"
    [account_update]="keyed definition: on the shard conveyor_proxy.key_shard(account) names"
    [quota_define]="keyed definition: on the shard conveyor_proxy.key_shard(name) names"
    [account_status]="keyed state, not routed: on the shard conveyor_proxy.key_shard(account) names"
    [ledger_verify]="keyed state, not routed: on the shard conveyor_proxy.key_shard(account) names"
    [cost_report]="keyed state, not routed: on the shard conveyor_proxy.key_shard(account) names"
    [quota_status]="keyed state, not routed: on the shard conveyor_proxy.key_shard(name) names"
    [lock_force_release]="keyed state, not routed: on the shard conveyor_proxy.key_shard(key) names"
    [entity_set]="keyed state, not routed: on the shard key_shard(entity_type || E'\\x1f' || entity_id) names"
    [validate_payload]="not routed: on any shard (queue definitions are the same everywhere)"
)
listed=$(printf '%s\n' "${!NOT_ON_FRONT[@]}" | LC_ALL=C sort)
# Functions of a shard whose identity the front lacks (a new overload of a proxied name counts too).
missing=$(LC_ALL=C comm -23 <(echo "$shard_sigs" | cut -d'|' -f1 | LC_ALL=C sort) <(echo "$front_sigs" | cut -d'|' -f1 | LC_ALL=C sort) |
          cut -d'(' -f1 | LC_ALL=C sort -u)
unlisted=$(LC_ALL=C comm -23 <(echo "$missing") <(echo "$listed"))
is "$(echo "$unlisted" | tr '\n' ' ' | sed 's/ $//')" "" \
   "every function of conveyor on a shard is on the front or listed as not offered, with its reason ($(echo "$missing" | wc -l) not on the front)"
for n in $unlisted; do note "  on the shard, not on the front and not listed: $(grep -E "^$n\(" <<< "$shard_sigs")"; done
is "$(LC_ALL=C comm -13 <(echo "$missing") <(echo "$listed") | tr '\n' ' ' | sed 's/ $//')" "" \
   "every listed name is a function of conveyor that the front lacks (the list is not stale)"
not_offered_doc=$(sed -n '/^## What the front does not offer/,/^## /p' "$README_PROXY")
is "$(for n in $listed; do grep -q "\`$n\`" <<< "$not_offered_doc" || printf '%s ' "$n"; done)" "" \
   "each of them is named in proxy/README.md's \"What the front does not offer\""

f "SELECT conveyor.create_queue('r')" "SELECT conveyor.create_queue('r2')" >/dev/null || bail "could not create the queues"
is "$(on_shards "SELECT count(*) FROM conveyor.queues WHERE name IN ('r', 'r2')")" "1:2 2:2 3:2" "create_queue reaches every shard"
f "SELECT conveyor.alter_queue('r', '{\"max_attempts\": 7}')" >/dev/null
is "$(on_shards "SELECT max_attempts FROM conveyor.queues WHERE name = 'r'")" "1:7 2:7 3:7" "alter_queue reaches every shard"
is "$(f "SELECT count(*) FROM conveyor.list_queues() WHERE queue IN ('r', 'r2')")" 2 "list_queues lists the queues"

# ---- enqueue -------------------------------------------------------------------------------------------------
j1=$(f "SELECT job_id FROM conveyor.enqueue('r', '{\"n\": 1}', group_key => 'ga')")
gshard=$(f "SELECT shard FROM conveyor_proxy.groups WHERE queue = 'r' AND group_key = 'ga'")
is "$(where "$j1")" "$gshard" "a job with a group key lands on the shard the directory gives its group"
j2=$(f "SELECT job_id FROM conveyor.enqueue('r', '{\"n\": 2}', group_key => 'ga')")
is "$(where "$j2")" "$gshard" "the group's next job lands on the same shard"
# A rolled-back caller: the group's place was recorded on its own connection and stays.
f "BEGIN" "SELECT count(*) FROM conveyor.enqueue('r', '{}', group_key => 'g-rolled-back')" "ROLLBACK" >/dev/null
rb=$(f "SELECT shard FROM conveyor_proxy.groups WHERE queue = 'r' AND group_key = 'g-rolled-back'")
check "a group first seen in a rolled-back transaction keeps its place in the directory (shard $rb)" [ -n "$rb" ]
j3=$(f "SELECT job_id FROM conveyor.enqueue('r', '{}', group_key => 'g-rolled-back')")
is "$(where "$j3")" "$rb" "and its later jobs go there, beside the job the shard already committed"
is "$(on_shards "SELECT count(*) FROM conveyor.jobs WHERE group_key = 'g-rolled-back'" | grep -oE '[0-9]:[1-9]' | tr '\n' ' ')" "$rb:2 " \
   "the group's two jobs share one shard"
# The same group name in another queue is another group, placed on its own.
f "SELECT count(*) FROM conveyor.enqueue('r2', '{}', group_key => 'ga')" >/dev/null
is "$(f "SELECT count(*) FROM conveyor_proxy.groups WHERE group_key = 'ga'")" 2 "a group is placed per queue"

# Dedup keys without a group: every call with the key reaches the same shard, which answers the duplicate.
d1=$(f "SELECT job_id || ' ' || was_duplicate FROM conveyor.enqueue('r', '{}', dedup_key => 'dk-1')")
d2=$(f "SELECT job_id || ' ' || was_duplicate FROM conveyor.enqueue('r', '{}', dedup_key => 'dk-1')")
is "$d2" "${d1% *} true" "a dedup key without a group routes by its hash: the second enqueue is the first's duplicate"
is "$(where "${d1% *}")" "$(( $(f "SELECT conveyor_proxy.key_partition('r' || E'\\x1f' || 'dk-1')") + 1 ))" \
   "it lives on the shard key_partition names"

# Jobs with neither key go round robin: 30 of them, 10 on each shard.
f "SELECT count(*) FROM generate_series(1, 30) n, conveyor.enqueue('r2', jsonb_build_object('spread', n))" >/dev/null
is "$(on_shards "SELECT count(*) FROM conveyor.jobs WHERE payload ? 'spread'")" "1:10 2:10 3:10" "30 keyless jobs: 10 on each shard"

# ---- enqueue_batch -----------------------------------------------------------------------------------------------
batch='[{"group_key": "ga", "payload": {"b": 0}}, {"payload": {"b": 1}}, {"dedup_key": "dk-1", "payload": {"b": 2}},
        {"group_key": "gb", "payload": {"b": 3}}, {"payload": {"b": 4}}, {"dedup_key": "dk-2", "payload": {"b": 5}},
        {"dedup_key": "dk-2", "payload": {"b": 6}}]'
f "CREATE TABLE b AS SELECT * FROM conveyor.enqueue_batch('r', '$batch')" >/dev/null || fail "enqueue_batch through the front"
is "$(f "SELECT string_agg(ord::text, ',' ORDER BY ord) FROM b")" "0,1,2,3,4,5,6" "enqueue_batch returns one row per element, by ord"
is "$(f "SELECT job_id FROM b WHERE ord = 2")" "${d1% *}" "an element with a known dedup key returns the live job (its shard answered)"
is "$(f "SELECT (SELECT job_id FROM b WHERE ord = 5) = (SELECT job_id FROM b WHERE ord = 6), (SELECT was_duplicate FROM b WHERE ord = 6)")" "t|t" \
   "two elements with one dedup key: the second is the first's duplicate"
is "$(where "$(f "SELECT job_id FROM b WHERE ord = 0")")" "$gshard" "an element with a group key lands on its group's shard"
for o in 0 1 3 4 5; do
    jid=$(f "SELECT job_id FROM b WHERE ord = $o")
    is "$(f "SELECT (conveyor.get_job('$jid') -> 'payload' ->> 'b')")" "$o" "element $o is the job enqueued with its payload (read back by its id)"
done
is "$(f "SELECT count(*) FROM conveyor.enqueue_batch('r', '[]')")" 0 "an empty batch enqueues nothing"
is "$(err "SELECT * FROM conveyor.enqueue_batch('r', '{\"a\": 1}')")" "22023 jobs must be a JSON array" "a batch that is not an array: 22023"
is "$(err "SELECT * FROM conveyor.enqueue_batch('r', NULL)")" "22004 jobs must not be NULL" "a NULL batch: 22004"
is "$(err "SELECT * FROM conveyor.enqueue_batch('r', '[1]')")" "22023 every element of jobs must be a JSON object" \
   "an element that is not an object: 22023"

# ---- consuming ------------------------------------------------------------------------------------------------------
f "SELECT conveyor.create_queue('c')" >/dev/null
# One job on shard 3 only (enqueued there directly): every worker of the front finds it.
c3=$(sq shard3 "$DB" "SELECT job_id FROM conveyor.enqueue('c', '{}')")
is "$(f "SELECT string_agg(job_id::text, ',') FROM conveyor.dequeue('c', 'w1', 1)")" "$c3" \
   "dequeue falls through empty shards to the one with a job"
is "$(f "SELECT count(*) FROM conveyor.dequeue('c', 'w1', 5)")" 0 "and finds none when every shard is empty"
for i in 1 2 3; do sq shard$i "$DB" "SELECT count(*) FROM generate_series(1, 2) n, conveyor.enqueue('c', jsonb_build_object('n', n))" >/dev/null; done
is "$(f "SELECT count(*) FROM conveyor.dequeue('c', 'w2', 5)")" 5 "dequeue fills max_count from the shards in turn (2 + 2 + 1)"
is "$(f "SELECT count(*) FROM conveyor.dequeue('c', 'w2', 5)")" 1 "the next call takes the last one"
# Rotation: one call per shard start, each from another shard first.
for i in 1 2 3; do sq shard$i "$DB" "SELECT count(*) FROM generate_series(1, 3) n, conveyor.enqueue('c', jsonb_build_object('n', n))" >/dev/null; done
firsts=$(for k in 1 2 3; do f "SELECT get_byte(uuid_send(job_id), 10) FROM conveyor.dequeue('c', 'w3', 1)"; done | sort | tr '\n' ' ')
is "$firsts" "1 2 3 " "three dequeues of one job each start at three different shards"
# ack_many across shards: one call per shard.
ids=$(f "SELECT string_agg(job_id::text, ',') FROM conveyor.list_jobs('c', ARRAY['running'], lim => 100)")
is "$(f "SELECT conveyor.ack_many('{$ids}'::uuid[], true)")" "$(echo "$ids" | tr ',' '\n' | wc -l)" \
   "ack_many acknowledges running jobs of several shards in one call"
is "$(f "SELECT conveyor.ack_many('{}'::uuid[], true)")" 0 "ack_many of no ids: 0"
is "$(on_shards "SELECT count(*) FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'c' AND j.state = 'running'")" \
   "1:0 2:0 3:0" "none of them is running any more on any shard"

# One job per shard: heartbeat, progress, job_log, release, ack, get_job and job_events, each on its shard.
for i in 1 2 3; do sq shard$i "$DB" "SELECT count(*) FROM conveyor.enqueue('c', '{}')" >/dev/null; done
# Three dequeues of one job: the rotation starts each at another shard, and each shard has one.
leased=$(for k in 1 2 3; do f "SELECT job_id FROM conveyor.dequeue('c', 'w4', 1)"; done | tr '\n' ' ')
is "$(for jid in $leased; do where "$jid"; done | sort | tr '\n' ' ')" "1 2 3 " "three jobs leased, one from each shard"
n=0
for jid in $leased; do
    s=$(where "$jid")
    hb=$(f "SELECT conveyor.heartbeat('$jid', 'w4', 60) IS NOT NULL, conveyor.progress('$jid', 'w4', 50, 'half'),
                   conveyor.job_log('$jid', 'w4', 'note'), conveyor.release('$jid', 'w4')")
    is "$hb" "t|t|t|t" "heartbeat, progress, job_log and release of a job of shard $s reach it"
    is "$(f "SELECT conveyor.get_job('$jid') ->> 'status'")" "pending" "get_job reads it back from shard $s (pending again)"
    is "$(f "SELECT string_agg(event, ',' ORDER BY at) FILTER (WHERE event IN ('step', 'log:note', 'released')) FROM conveyor.job_events('$jid')")" \
       "$(sq shard$s "$DB" "SELECT string_agg(event, ',' ORDER BY at) FILTER (WHERE event IN ('step', 'log:note', 'released')) FROM conveyor.job_events('$jid')")" \
       "job_events through the front is the trail shard $s holds"
    n=$((n + 1))
done
is "$n" 3 "each of the three was called through the front"
# reschedule and resolve_dead by id: each job's own shard changes, and only it.
for jid in $leased; do
    s=$(where "$jid")
    is "$(f "SELECT conveyor.reschedule('$jid', '2031-01-02 03:04:05+00')")" t "reschedule of a job of shard $s through the front"
    is "$(sq shard$s "$DB" "SELECT run_at = '2031-01-02 03:04:05+00' FROM conveyor.jobs WHERE job_id = '$jid'")" t \
       "shard $s holds the new run_at"
    f "SELECT conveyor.dead_letter('$jid', 'unusable')" >/dev/null
    is "$(f "SELECT conveyor.resolve_dead('$jid', 'fixed by hand'), conveyor.resolve_dead('$jid', 'again')")" "t|f" \
       "resolve_dead of a dead job of shard $s through the front: once"
    is "$(on_shards "SELECT count(*) FROM conveyor.job_history WHERE job_id = '$jid' AND resolution = 'fixed by hand'")" \
       "$(for i in 1 2 3; do [ "$i" = "$s" ] && printf '%s:1 ' "$i" || printf '%s:0 ' "$i"; done | sed 's/ $//')" \
       "the resolution is on shard $s only"
done

# ---- gathering ------------------------------------------------------------------------------------------------------
is "$(f "SELECT pending FROM conveyor.queue_metrics('r2')")" \
   "$(( $(on_shards "SELECT pending FROM conveyor.queue_metrics('r2')" | tr ' ' '\n' | cut -d: -f2 | paste -sd+) ))" \
   "queue_metrics sums the shards' counts"
is "$(f "SELECT enqueued FROM conveyor.queue_totals('r2')")" 31 "queue_totals sums the shards' totals (31 enqueued in r2)"
is "$(f "SELECT conveyor.health() ->> 'status', jsonb_array_length(conveyor.health() -> 'shards')")" "healthy|3" \
   "health: the worst status of the shards, with each shard's document"
# reap: one number, the lapsed leases of every shard (one on shard 1, one on shard 2).
f "SELECT conveyor.create_queue('lapse')" >/dev/null
for i in 1 2; do
    sq shard$i "$DB" "SELECT count(*) FROM conveyor.enqueue('lapse', '{}')" \
        "SELECT count(*) FROM conveyor.dequeue('lapse', 'w-lapse', 1, lease_seconds => 1)" >/dev/null
done
sleep 1.5
is "$(f "SELECT conveyor.reap('lapse')")" 2 "reap expires the lapsed leases of every shard and returns how many in all"
all=$(f "SELECT string_agg(job_id::text, ',' ORDER BY job_id DESC) FROM conveyor.list_jobs('r2', lim => 1000)")
is "$(echo "$all" | tr ',' '\n' | wc -l)" 31 "list_jobs gathers the jobs of every shard"
page1=$(f "SELECT string_agg(job_id::text, ',' ORDER BY job_id DESC) FROM conveyor.list_jobs('r2', lim => 10)")
last=${page1##*,}
page2=$(f "SELECT string_agg(job_id::text, ',' ORDER BY job_id DESC) FROM conveyor.list_jobs('r2', lim => 10, after => '$last')")
is "$page1,$page2" "$(echo "$all" | cut -d, -f1-20)" "list_jobs pages by id across shards as on one server"

# ---- keyed state ----------------------------------------------------------------------------------------------------
tok=$(f "SELECT conveyor.lock_acquire('lease-1', 'o1', 60)")
ks=$(f "SELECT conveyor_proxy.key_shard('lease-1')")
is "$(on_shards "SELECT count(*) FROM conveyor.locks WHERE key = 'lease-1'")" \
   "$(for i in 1 2 3; do printf '%s:%s ' $i $([ $i = "$ks" ] && echo 1 || echo 0); done | sed 's/ $//')" "a lease lives on its key's shard"
is "$(f "SELECT conveyor.lock_acquire('lease-1', 'o2', 60) IS NULL, conveyor.lock_check('lease-1', $tok), conveyor.lock_release('lease-1', 'o1', $tok)")" \
   "t|t|t" "every call on the lease reaches the same shard: a second owner is refused, the token checks, release works"
is "$(f "SELECT acquired FROM conveyor.idempotency_begin('idem-1', '{\"a\": 1}')")" t "idempotency_begin through the front"
f "SELECT conveyor.idempotency_finish('idem-1', '{\"done\": true}')" >/dev/null
is "$(f "SELECT state || ' ' || result FROM conveyor.idempotency_begin('idem-1', '{\"a\": 1}')")" 'completed {"done": true}' \
   "a repeated key finds its finished result on its shard"
is "$(f "SELECT conveyor.entity_acquire('page', 'p-1'), conveyor.entity_state('page', 'p-1') ->> 'state'")" "t|IN_PROGRESS" \
   "entity_acquire and entity_state reach the entity's shard"

# ---- recurring jobs: each schedule on one shard ------------------------------------------------------------------
# The shards preload pg_cron (SHARD_CRON=1). Schedules here are yearly ('0 3 1 1 *'), so pg_cron does not
# run them during the test: their ticks are run by hand on the shard that holds them, as the extension's
# owner (conveyor.run_schedule, the command of the pg_cron job).
# held_by NAME: per shard, "<rows of conveyor.schedules>/<pg_cron jobs>" for the schedule NAME.
held_by() {
    on_shards "SELECT (SELECT count(*) FROM conveyor.schedules WHERE name = '$1') || '/'
                      || (SELECT count(*) FROM cron.job WHERE jobname = 'conveyor-enqueue:$DB:$1')"
}
# only_on S: what held_by shows for a schedule held by shard S alone.
only_on() { for i in 1 2 3; do [ "$i" = "$1" ] && printf '%s:1/1 ' "$i" || printf '%s:0/0 ' "$i"; done | sed 's/ $//'; }
# A group of queue r on another shard than ga's (round robin gives one within three new groups).
for k in 1 2 3; do
    f "SELECT count(*) FROM conveyor.enqueue('r', '{}', group_key => 'g-away-$k')" >/dev/null
    away=$(f "SELECT shard FROM conveyor_proxy.groups WHERE queue = 'r' AND group_key = 'g-away-$k'")
    [ "$away" != "$gshard" ] && { gaway=g-away-$k; break; }
done
check "a group of queue r on another shard than ga's: $gaway on shard $away (ga on $gshard)" [ -n "$gaway" ]

cid=$(f "SELECT conveyor.schedule_enqueue('s-ga', '0 3 1 1 *', 'r', '{\"s\": 1}', group_key => 'ga')")
is "$(held_by s-ga)" "$(only_on "$gshard")" \
   "a schedule with the group of existing jobs is on the group's shard ($gshard) only: its schedule row and its pg_cron job"
is "$(sq shard$gshard "$DB" "SELECT jobid, command, database, active FROM cron.job WHERE jobname = 'conveyor-enqueue:$DB:s-ga'")" \
   "$cid|SELECT conveyor.run_schedule('s-ga')|$DB|t" "schedule_enqueue through the front returns that shard's pg_cron job id; the job runs the schedule there"
sj=$(sq shard$gshard "$DB" "SELECT conveyor.run_schedule('s-ga')")
is "$(where "$sj")" "$gshard" "a run of the schedule enqueues its job on that shard"
is "$(f "SELECT conveyor.get_job('$sj') ->> 'group_key'")" ga "in the group (beside the group's other jobs, read through the front)"
is "$(sq shard$gshard "$DB" "SELECT coalesce(conveyor.run_schedule('s-ga')::text, 'none')")" none \
   "a second run of the same tick on that shard enqueues nothing"

f "SELECT conveyor.schedule_enqueue('s-new', '0 3 1 1 *', 'r', '{}', group_key => 'g-sched-new')" >/dev/null
nshard=$(f "SELECT shard FROM conveyor_proxy.groups WHERE queue = 'r' AND group_key = 'g-sched-new'")
check "a schedule with a new group assigns the group in the directory (shard $nshard)" [ -n "$nshard" ]
is "$(held_by s-new)" "$(only_on "$nshard")" "and is on the shard the directory names, only"
nj=$(sq shard$nshard "$DB" "SELECT conveyor.run_schedule('s-new')")
is "$(where "$nj")" "$nshard" "its job lands on the group's shard"
nj2=$(f "SELECT job_id FROM conveyor.enqueue('r', '{}', group_key => 'g-sched-new')")
is "$(where "$nj2")" "$nshard" "where the group's next job through the front goes too"

f "SELECT conveyor.schedule_enqueue('s-plain', '0 3 1 1 *', 'r', '{\"p\": 1}')" >/dev/null
pshard=$(f "SELECT conveyor_proxy.key_shard(E'schedule\\x1f' || 's-plain')")
is "$(held_by s-plain)" "$(only_on "$pshard")" "a schedule without a group is on one shard only, the one a hash of its name names ($pshard)"
f "SELECT conveyor.schedule_enqueue('s-plain', '0 4 1 1 *', 'r2', '{\"p\": 2}')" >/dev/null
is "$(held_by s-plain)" "$(only_on "$pshard")" "changing its queue and schedule keeps it there"
is "$(sq shard$pshard "$DB" "SELECT queue || ' ' || payload::text || ' ' || schedule FROM conveyor.list_schedules() WHERE name = 's-plain'")" \
   'r2 {"p": 2} 0 4 1 1 *' "with the new definition"

# Moving: the same name with a group on another shard.
f "SELECT conveyor.schedule_enqueue('s-ga', '0 3 1 1 *', 'r', '{\"s\": 2}', group_key => '$gaway')" >/dev/null
is "$(held_by s-ga)" "$(only_on "$away")" "scheduling the name again with a group of another shard moves it: shard $away holds it, no other"
mj=$(sq shard$away "$DB" "SELECT conveyor.run_schedule('s-ga')")
is "$(where "$mj") $(f "SELECT conveyor.get_job('$mj') ->> 'group_key'")" "$away $gaway" "its run enqueues there, in the new group"
# Refused on the target shard: the definition taken off its old shard is put back.
refused=$(err "SELECT conveyor.schedule_enqueue('s-ga', '0 3 1 1 *', 'r', '{}', group_key => 'ga', priority => 11)")
note "a move refused on the target shard: $refused"
check "a move the target shard refuses fails with that shard's error (22023, priority out of range)" \
      grep -qE '^22023 .*priority must be between 1 and 10, not 11' <<< "$refused"
is "$(held_by s-ga)" "$(only_on "$away")" "and the schedule is back on its shard"
is "$(sq shard$away "$DB" "SELECT group_key || ' ' || payload::text FROM conveyor.schedules WHERE name = 's-ga'")" "$gaway {\"s\": 2}" \
   "with its definition"
is "$(err "SELECT conveyor.schedule_enqueue('s-x', '0 3 1 1 *', 'r', '{}', group_key => repeat('x', 2000))")" \
   "22023 group_key must be at most 1024 bytes, not 2000" "a group key past the limit is refused on the front"
is "$(err "SELECT conveyor.schedule_enqueue(NULL, '0 3 1 1 *', 'r')" | cut -c1-5)" 22004 "a NULL name: 22004 (the shard's)"

is "$(f "SELECT string_agg(name || '=' || coalesce(group_key, '-'), ' ' ORDER BY name) FROM conveyor.list_schedules() WHERE name LIKE 's-%'")" \
   "s-ga=$gaway s-new=g-sched-new s-plain=-" "list_schedules through the front shows each schedule once, from its shard"
is "$(f "SELECT count(*) FROM conveyor.list_schedules()")" \
   "$(( $(on_shards "SELECT count(*) FROM conveyor.schedules" | tr ' ' '\n' | cut -d: -f2 | paste -sd+) ))" "and all the shards' schedules"

is "$(f "SELECT conveyor.unschedule_enqueue('s-ga')")" t "unschedule_enqueue through the front removes a schedule"
is "$(held_by s-ga)" "1:0/0 2:0/0 3:0/0" "from every shard, its pg_cron job too"
is "$(f "SELECT conveyor.unschedule_enqueue('s-ga')")" f "unscheduling it again finds it nowhere"
is "$(f "SELECT bool_and(conveyor.unschedule_enqueue(n)) FROM unnest(ARRAY['s-new', 's-plain']) n")" t "the other two are unscheduled"
is "$(on_shards "SELECT (SELECT count(*) FROM conveyor.schedules) + (SELECT count(*) FROM cron.job)")" "1:0 2:0 3:0" \
   "no schedule and no pg_cron job is left on any shard"

# ---- a worker role, hostile input and wrong ids ----------------------------------------------------------------------
# tap_proxy_worker: conveyor_worker on the front, mapped to a role of the same name and rights on each shard.
for i in 1 2 3; do sq shard$i "$DB" "CREATE ROLE tap_proxy_worker LOGIN IN ROLE conveyor_worker" >/dev/null; done
f "CREATE ROLE tap_proxy_worker LOGIN IN ROLE conveyor_worker" "CREATE ROLE tap_proxy_mallory LOGIN" \
  "CREATE USER MAPPING FOR tap_proxy_worker SERVER conveyor_shards OPTIONS (user 'tap_proxy_worker')" \
  "CREATE USER MAPPING FOR tap_proxy_worker SERVER conveyor_directory OPTIONS (user 'tap_proxy_worker')" \
  "GRANT USAGE ON FOREIGN SERVER conveyor_shards, conveyor_directory TO conveyor_worker" >/dev/null
w() { PGUSER=tap_proxy_worker q "$DB" "$@"; }
m() { PGUSER=tap_proxy_mallory psql -X -q -At -v VERBOSITY=verbose -d "$DB" -c "$1" 2>&1 | sed -nE 's/^ERROR: +([0-9A-Z]{5}):.*/\1/p' | head -1; }
wj=$(w "SELECT job_id FROM conveyor.enqueue('r', '{}', group_key => 'g-worker')")
check "a conveyor_worker role enqueues through the front (a new group: the directory call runs as it too)" [ -n "$wj" ]
is "$(sq shard$(where "$wj") "$DB" "SELECT count(*) FROM conveyor.jobs WHERE job_id = '$wj'")" 1 "its job is on its group's shard"
is "$(PGUSER=tap_proxy_worker psql -X -q -At -d "$DB" -c "SELECT conveyor.create_queue('w-queue')" 2>&1 | grep -c 'permission denied')" 1 \
   "it may not create queues (conveyor_admin's)"
is "$(PGUSER=tap_proxy_worker psql -X -q -At -v VERBOSITY=verbose -d "$DB" -c "SELECT conveyor.schedule_enqueue('w-s', '0 3 1 1 *', 'r')" 2>&1 |
      sed -nE 's/^ERROR: +([0-9A-Z]{5}):.*/\1/p')" 42501 "nor schedule recurring jobs (conveyor_admin's)"
is "$(w "SELECT count(*) FROM conveyor.list_schedules()")" 0 "but it may list them (conveyor_reader's), gathered from the shards"
is "$(m "SELECT * FROM conveyor.enqueue('r', '{}')")" 42501 "a role without conveyor's roles may not enqueue"
is "$(m "SELECT conveyor_proxy.assign_group('r', 'g-mallory')")" 42501 "nor write the directory through assign_group"
is "$(m "INSERT INTO conveyor_proxy.groups VALUES ('r', 'g-x', 1)")" 42501 "nor the directory table"
is "$(m "SELECT connstr FROM conveyor_proxy.shards")" 42501 "nor read the shards' connection strings"
is "$(PGUSER=tap_proxy_worker psql -X -q -At -v VERBOSITY=verbose -d "$DB" -c "SELECT connstr FROM conveyor_proxy.shards" 2>&1 |
      sed -nE 's/^ERROR: +([0-9A-Z]{5}):.*/\1/p')" 42501 "a worker cannot read them either"
is "$(f "SELECT count(*) FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
         WHERE p.pronamespace IN ('conveyor'::regnamespace, 'conveyor_proxy'::regnamespace) AND a.grantee = 0")" 0 \
   "no function of the front is executable by PUBLIC"
is "$(f "SELECT count(*) FROM pg_proc p WHERE p.pronamespace IN ('conveyor'::regnamespace, 'conveyor_proxy'::regnamespace)
         AND p.prosecdef AND NOT coalesce(p.proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false)")" 0 \
   "every SECURITY DEFINER function of the front pins its search_path"
# Look-alikes of what the routing calls, ahead of pg_catalog on the caller's search_path, change nothing.
f "CREATE SCHEMA evil" "CREATE FUNCTION evil.get_byte(bytea, int) RETURNS int LANGUAGE sql AS 'SELECT 1'" \
  "CREATE FUNCTION evil.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'" \
  "CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'" \
  "GRANT USAGE ON SCHEMA evil TO PUBLIC" "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil TO PUBLIC" >/dev/null
is "$(f "SET search_path = evil, pg_catalog, conveyor" "SELECT get_job('$j1') ->> 'job_id'")" "$j1" \
   "with look-alike functions ahead of pg_catalog a job id still routes to its shard"
is "$(f "SET search_path = evil, pg_catalog, conveyor" "SELECT (SELECT was_duplicate FROM enqueue('r', '{}', dedup_key => 'dk-1'))")" t \
   "and a dedup key still hashes to its shard"
f "DROP SCHEMA evil CASCADE" >/dev/null
hostile="g'); DROP TABLE conveyor_proxy.groups; --"
hj=$(f "SELECT job_id FROM conveyor.enqueue('r', '{}', group_key => \$h\$$hostile\$h\$)")
is "$(f "SELECT count(*) FROM conveyor_proxy.groups WHERE group_key = \$h\$$hostile\$h\$")" 1 "a hostile group key is a key like any other"
is "$(f "SELECT conveyor.get_job('$hj') ->> 'group_key'")" "$hostile" "and reaches its shard intact"
before=$(f "SELECT count(*) FROM conveyor_proxy.groups")
is "$(err "SELECT * FROM conveyor.enqueue('r', '{}', group_key => repeat('x', 2000))")" "22023 group_key must be at most 1024 bytes, not 2000" \
   "a group key past the shards' limit is refused on the front (22023)"
is "$(f "SELECT count(*) FROM conveyor_proxy.groups")" "$before" "and leaves nothing in the directory"
is "$(err "SELECT conveyor.ack('01a24204-cec7-7129-9d00-09085afb0bca', true)")" "22023 id 01a24204-cec7-7129-9d00-09085afb0bca names no shard of this front" \
   "an id naming shard 9 of a 3-shard front: 22023"
is "$(err "SELECT conveyor.get_job('01a24204-cec7-7129-9d00-00085afb0bca')")" "22023 id 01a24204-cec7-7129-9d00-00085afb0bca names no shard of this front" \
   "an id of a standalone server (shard 0): 22023"
is "$(err "SELECT conveyor.get_job('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')")" "22023 id a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 names no shard of this front" \
   "a UUID that is not version 7: 22023"
is "$(err "SELECT conveyor.ack(NULL, true)")" "22004 the id must not be NULL" "a NULL job id: 22004"
is "$(err "SELECT * FROM conveyor.enqueue('no_such_queue', '{}')" | cut -c1-5)" 42704 "a shard's own error keeps its SQLSTATE through the front (42704)"
is "$(err "SELECT conveyor.lock_acquire(NULL, 'o1')")" "22004 the routing key must not be NULL" "a NULL lock key: 22004"

# ---- racing first jobs of new groups: one front, then two fronts sharing one directory ----------------------
# A second front database (same cluster, same shards) whose conveyor_directory is the first front's
# database, as bench/README.md ("Past one front") sets several fronts up.
DB2=${DB}_b
sq front postgres "CREATE DATABASE $DB2" >/dev/null || bail "could not create a second front database"
sq front "$DB2" "SET client_min_messages = warning" "CREATE EXTENSION conveyor_proxy CASCADE" >/dev/null || bail "no conveyor_proxy in $DB2"
for i in 1 2 3; do
    sq front "$DB2" "SELECT conveyor_proxy.add_shard('host=$SHARD_BASE/shard$i/sock port=$(cluster_port shard$i) dbname=$DB')" >/dev/null ||
        bail "could not add shard $i to the second front"
done
sq front "$DB2" "SELECT conveyor_proxy.set_hash_shards(3)" \
    "SELECT conveyor_proxy.set_directory('host=$SHARD_BASE/front/sock port=$(cluster_port front) dbname=$DB')" \
    "CREATE USER MAPPING FOR PUBLIC SERVER conveyor_shards OPTIONS (user 'postgres')" \
    "CREATE USER MAPPING FOR PUBLIC SERVER conveyor_directory OPTIONS (user 'postgres')" >/dev/null ||
    bail "could not set up the second front"
f "SELECT conveyor.create_queue('race1')" "SELECT conveyor.create_queue('race2')" >/dev/null || bail "could not create the race queues"
RACE_CLIENTS=8
# race QUEUE GROUPS DB...: RACE_CLIENTS sessions, the k-th through the k-th database named (round robin),
# all waiting for one instant, then each enqueuing one job into each of the groups g-1..g-GROUPS of
# QUEUE in the same order; each prints its job ids to $TMP/QUEUE.K.ids and its errors to $TMP/QUEUE.K.err.
race() {
    local queue=$1 groups=$2 k at
    shift 2
    local dbs=("$@")
    RACE_SEQ0=$(f "SELECT coalesce(last_value, 0) FROM conveyor_proxy.new_groups")
    at=$(f "SELECT (clock_timestamp() + interval '2 seconds')::text")
    for k in $(seq 0 $((RACE_CLIENTS - 1))); do
        psql -X -q -At -v ON_ERROR_STOP=1 -d "${dbs[$((k % ${#dbs[@]}))]}" \
             -c "SELECT pg_sleep_until('$at')" \
             -c "SELECT e.job_id FROM generate_series(1, $groups) g,
                        conveyor.enqueue('$queue', jsonb_build_object('client', $k), group_key => 'g-' || g) e" \
             2> "$TMP/$queue.$k.err" | grep -v '^$' > "$TMP/$queue.$k.ids" &
        PIDS+=($!)
    done
    wait_sessions_bounded "$DB" 240 "the sessions enqueueing into $queue"
}
# race_check QUEUE GROUPS WHAT: what the sessions got back, against the shards' own tables and the
# directory: every group on exactly one shard (the one the directory names), one directory row per
# group, and every job returned found once on the shards, with nothing more there.
race_check() {
    local queue=$1 groups=$2 what=$3 i k
    is "$(cat "$TMP/$queue".*.err)" "" "$what: no session saw an error"
    f "CREATE TABLE ${queue}_returned (job_id uuid)" "CREATE TABLE ${queue}_shard (shard int, job_id uuid, group_key text)" >/dev/null
    cat "$TMP/$queue".*.ids | f "COPY ${queue}_returned FROM STDIN"
    for i in 1 2 3; do
        sq shard$i "$DB" "COPY (SELECT $i, j.job_id, j.group_key FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id)
                                WHERE q.name = '$queue') TO STDOUT" | f "COPY ${queue}_shard FROM STDIN"
    done
    is "$(f "SELECT count(*), count(DISTINCT job_id) FROM ${queue}_returned")" "$((RACE_CLIENTS * groups))|$((RACE_CLIENTS * groups))" \
       "$what: the sessions got $((RACE_CLIENTS * groups)) distinct job ids back"
    is "$(f "SELECT count(*), count(DISTINCT job_id) FROM ${queue}_shard")" "$((RACE_CLIENTS * groups))|$((RACE_CLIENTS * groups))" \
       "$what: the shards hold $((RACE_CLIENTS * groups)) jobs of the queue, each once"
    is "$(f "SELECT count(*) FROM ${queue}_returned r FULL JOIN ${queue}_shard s USING (job_id) WHERE r.job_id IS NULL OR s.job_id IS NULL")" 0 \
       "$what: they are the jobs the sessions got back (none lost, none added)"
    is "$(f "SELECT count(*) FROM (SELECT group_key FROM ${queue}_shard GROUP BY 1
                                    HAVING count(DISTINCT shard) <> 1 OR count(*) <> $RACE_CLIENTS) g")" 0 \
       "$what: each of the $groups groups has its $RACE_CLIENTS jobs on exactly one shard"
    is "$(f "SELECT count(*), count(DISTINCT group_key) FROM conveyor_proxy.groups WHERE queue = '$queue'")" "$groups|$groups" \
       "$what: the directory holds one row per group"
    is "$(f "SELECT count(*) FROM (SELECT DISTINCT group_key, shard FROM ${queue}_shard) s
              LEFT JOIN conveyor_proxy.groups g ON g.queue = '$queue' AND g.group_key = s.group_key
              WHERE g.shard IS DISTINCT FROM s.shard")" 0 \
       "$what: and every job is on the shard the directory names for its group"
    # Every call of assign_group takes one number from new_groups, the caller that records the group and
    # every caller that found it missing too: the calls past one per group are lookups that raced.
    note "$what: assign_group called $(( $(f "SELECT last_value FROM conveyor_proxy.new_groups") - RACE_SEQ0 )) times for $groups groups"
    note "$what: groups per shard $(f "SELECT string_agg(shard || ': ' || n, ', ' ORDER BY shard)
                                         FROM (SELECT shard, count(*) n FROM conveyor_proxy.groups WHERE queue = '$queue' GROUP BY 1) s")"
}
race race1 100 "$DB"
race_check race1 100 "$RACE_CLIENTS sessions through one front, first jobs of 100 new groups"
race race2 300 "$DB" "$DB2"
race_check race2 300 "$RACE_CLIENTS sessions through two fronts sharing a directory, first jobs of 300 new groups"
is "$(sq front "$DB2" "SELECT count(*) FROM conveyor_proxy.groups")" 0 \
   "the second front recorded no group of its own (it asks the first front's directory)"

# ---- a fourth shard: existing groups stay, new ones go to it ----------------------------------------------------------
groups_before=$(f "SELECT string_agg(group_key || '=' || shard, ',' ORDER BY queue, group_key) FROM conveyor_proxy.groups")
add_shard_cluster 4 "$DB" || bail "could not add a fourth shard"
sq shard4 "$DB" "SELECT conveyor.create_queue('r')" >/dev/null
for s in 1 2 3; do f "SELECT conveyor_proxy.set_accepts_new($s, false)" >/dev/null; done
ga2=$(f "SELECT job_id FROM conveyor.enqueue('r', '{}', group_key => 'ga')")
is "$(where "$ga2")" "$gshard" "after adding shard 4, an existing group's jobs still go to its shard"
new=$(f "SELECT string_agg(DISTINCT get_byte(uuid_send(job_id), 10)::text, ',') FROM generate_series(1, 5) n,
                 conveyor.enqueue('r', '{}', group_key => 'new-' || n)")
is "$new" 4 "new groups go to shard 4 while the others take none"
is "$(f "SELECT string_agg(group_key || '=' || shard, ',' ORDER BY queue, group_key) FROM conveyor_proxy.groups WHERE group_key NOT LIKE 'new-%'")" \
   "$groups_before" "no existing group moved"
is "$(f "SELECT hash_shards FROM conveyor_proxy.config")" 3 "key hashing still spreads over the first 3 shards (no lease or dedup key moved)"
d3=$(f "SELECT job_id || ' ' || was_duplicate FROM conveyor.enqueue('r', '{}', dedup_key => 'dk-1')")
is "$d3" "${d1% *} true" "a live dedup key still finds its job"

# ---- a shard down ----------------------------------------------------------------------------------------------------------
s3job=$(sq shard3 "$DB" "SELECT job_id FROM conveyor.enqueue('c', '{}')")
s1job=$(sq shard1 "$DB" "SELECT job_id FROM conveyor.enqueue('c', '{}')")
runuser -u postgres -- "$CV_PGBIN/pg_ctl" -D "$SHARD_BASE/shard3/data" -m fast -w stop >/dev/null
down=$(psql -X -q -At -v VERBOSITY=verbose -d "$DB" -c "SELECT conveyor.get_job('$s3job')" 2>&1 | grep -E '^ERROR' | head -1)
note "a call for shard 3 while it is down: $down"
# PL/Proxy reports it as XX000 with the function and libpq's message.
check "a call routed to a stopped shard fails with XX000, naming the function and the failed connection to that shard" \
      grep -qE '^ERROR: +XX000: PL/Proxy function conveyor.get_job\([0-9]+\): .*connection to server .*shard3.* failed' <<< "$down"
is "$(f "SELECT conveyor.get_job('$s1job') ->> 'status'")" pending "calls for the other shards go on"
check "gathering calls (queue_metrics) fail while a shard is down rather than answer partly" \
      bash -c "! psql -X -q -At -d '$DB' -c \"SELECT * FROM conveyor.queue_metrics('c')\" >/dev/null 2>&1"

stop_shard_clusters
finish
