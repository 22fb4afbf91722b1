#!/usr/bin/env bash
# Fault: the primary lost and a streaming standby promoted in its place. Two clusters of our own
# (sockets in the test's directory, nothing shared with the runner's cluster): node1, the primary, and
# node2, a standby made with pg_basebackup -R that streams from it.
#
# Synchronous phase: synchronous_standby_names names node2 and synchronous_commit is on, so no commit
# returns before node2 has flushed it. The workload of lib/fault_workload.py (a producer enqueueing
# 10,000 jobs, 6 workers acking each job in one transaction with its effect and a job-keyed charge,
# fenced writes under 1-2 s leases, charges with idempotency keys; see fault_kill.sh) connects through
# one multi-host connection string, "host=S1,S2 port=P1,P2 target_session_attrs=read-write". Mid-run
# node1 is stopped with pg_ctl stop -m immediate; once node2 has replayed what it received, the jobs
# and leases it shows as held are noted and node2 is promoted (pg_ctl promote). The workload's
# processes find it by themselves through the same string and finish. Then, on the promoted node:
# every ack, batch and charge a client saw confirmed before the crash is there and every job is
# completed exactly once or dead (lib/fault_checks.bash: none lost, none duplicated, counters, ledger),
# the jobs held at the crash had their leases expire and ran again, the leases held at the crash were
# taken over with greater tokens or lay expired, and tokens issued after the failover are greater than
# every token issued before it.
#
# Asynchronous phase, two rounds: a standby rebuilt from the promoted node (pg_basebackup -R again) with
# synchronous_standby_names empty, so a commit returns once the primary alone has flushed it; a short
# run of the same workload; the primary stopped with -m immediate, the clients stopped, the standby
# promoted. In the first round the standby keeps up; in the second its walreceiver is stopped (SIGSTOP)
# for the last second before the crash, as a stalled link would leave it behind. Clients logged every
# commit they saw confirmed with the WAL insert position read right after it; the test prints how many
# confirmed commits (batches, acks, charges) the promoted node lacks and checks that each lay past what
# the standby had replayed (past its last replayed LSN; where the position is unknown, confirmed after
# the last replayed commit's time): only the last, unreplicated commits are lost, and what survived is
# whole. It does not require that anything is lost.
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/fault_checks.bash"

DB=conveyor_shell_fault_failover
DB2=conveyor_shell_fault_failover_async
JOBS=10000
WORKERS=6
ASYNC_JOBS=3000
ASYNC_WORKERS=4
CAP=${CONVEYOR_FAULT_CAP:-420}
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
# The sockets live in our own directory, so the numbers cannot collide with another cluster's.
P1=${CONVEYOR_FAILOVER_PORT:-$((PGPORT + 1200))}
P2=$((P1 + 1))
export FAULT_WAL_POSITION=1
use_scratch fault-failover
chmod 755 "$TMP"
S1=$TMP/s1
S2=$TMP/s2
mkdir -p "$TMP/n1" "$TMP/n2" "$S1" "$S2"
chown postgres:postgres "$TMP/n1" "$TMP/n2" "$S1" "$S2"

pgctl() { runuser -u postgres -- "$PGBIN/pg_ctl" "$@"; }
node_port() { if [ "$1" = 1 ]; then echo "$P1"; else echo "$P2"; fi; }
node_data() { echo "$TMP/n$1/data"; }
# use_node N: psql, q and the fault helpers talk to node N from now on.
use_node() {
    export PGHOST=$TMP/s$1 PGPORT
    PGPORT=$(node_port "$1")
    export CONVEYOR_PGDATA
    CONVEYOR_PGDATA=$(node_data "$1")
}
# qn N SQL...: q against node N's postgres database, whichever node the test uses.
qn() {
    local n=$1
    shift
    PGHOST=$TMP/s$n PGPORT=$(node_port "$n") q postgres "$@"
}
# node_conf N SYNC_NAMES: node N's own settings, after whatever its postgresql.conf holds (pg_basebackup
# copies the primary's; later lines win).
node_conf() {
    cat >>"$(node_data "$1")/postgresql.conf" <<CONF
unix_socket_directories = '$TMP/s$1'
port = $(node_port "$1")
cluster_name = 'node$1'
synchronous_standby_names = '$2'
CONF
}
# make_standby N FROM: node N becomes a streaming standby of node FROM (pg_basebackup -R writes
# standby.signal and primary_conninfo; cluster_name is the name the primary sees it by).
make_standby() {
    rm -rf "$(node_data "$1")"
    runuser -u postgres -- "$PGBIN/pg_basebackup" -h "$TMP/s$2" -p "$(node_port "$2")" -U postgres \
        -D "$(node_data "$1")" -R -X stream -c fast >>"$TMP/n$1/basebackup.out" 2>&1 ||
        { sed 's/^/#   /' "$TMP/n$1/basebackup.out"; bail "pg_basebackup from node$2 failed"; }
    node_conf "$1" ''
    start_server "$(node_data "$1")" >>"$TMP/pg_ctl.out" 2>&1 || { sed 's/^/#   /' "$TMP/n$1/server.log"; bail "node$1 did not start"; }
}
# wait_streaming PRIMARY NAME STATE: until the primary shows standby NAME streaming in STATE (at most 60 s).
wait_streaming() {
    local i got=
    for i in $(seq 1 120); do
        got=$(qn "$1" "SELECT application_name, state, sync_state FROM pg_stat_replication" 2>/dev/null)
        [ "$got" = "$2|streaming|$3" ] && break
        sleep 0.5
    done
    is "$got" "$2|streaming|$3" "node$1 streams to $2, which it sees as $3"
}
# wait_replayed N: until standby N has replayed what it received from the lost primary: all of it, or,
# when what it received ends inside a WAL record (the stream cut mid-record), up to that record, where
# replay stops for good; either way the positions no longer move. Sets REPLAYED_LSN and REPLAYED_AT
# (the primary's time of the last commit or abort it replayed, epoch).
wait_replayed() {
    local i row= prev= same=0 caught_up
    for i in $(seq 1 240); do
        row=$(qn "$1" "SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn(),
                              extract(epoch FROM pg_last_xact_replay_timestamp()), pg_last_wal_receive_lsn()")
        if [ "$row" = "$prev" ]; then same=$((same + 1)); else same=0; fi
        prev=$row
        caught_up=${row%%|*}
        { [ "$caught_up" = t ] && [ "$same" -ge 1 ]; } || [ "$same" -ge 8 ] && break
        sleep 0.25
    done
    check "node$1 replayed what it had received from the lost primary, and its positions stopped moving" test "$same" -ge 1
    REPLAYED_LSN=$(echo "$row" | cut -d'|' -f2)
    REPLAYED_AT=$(echo "$row" | cut -d'|' -f3)
    [ "$caught_up" = t ] ||
        note "node$1 received up to $(echo "$row" | cut -d'|' -f4) and replayed to $REPLAYED_LSN: the rest is a record cut off in the stream"
}
# commits_table DB LSN AT: table commits in DB, one row per commit a client saw confirmed (after
# fault_load_confirmed): its kind, whether this node has it, and whether it lay past what the standby
# had replayed (LSN, AT): by its WAL position, or where that is unknown, by the time it was confirmed.
commits_table() {
    q "$1" "CREATE TABLE commits AS
            SELECT 'batch' AS kind, confirmed_at, lsn, EXISTS (SELECT FROM enqueued e WHERE e.batch = c.batch) AS present
            FROM batch_confirmed c
            UNION ALL
            SELECT 'ack', confirmed_at, lsn, CASE WHEN a.success
                THEN EXISTS (SELECT FROM effects f WHERE f.job_id = a.job_id AND f.attempt = a.attempt AND f.worker = a.worker)
                ELSE EXISTS (SELECT FROM failures x WHERE x.job_id = a.job_id AND x.attempt = a.attempt AND x.worker = a.worker) END
            FROM ack_confirmed a
            UNION ALL
            SELECT 'charge', confirmed_at, lsn, EXISTS (SELECT FROM conveyor.ledger l WHERE l.entry_id = c.entry_id)
            FROM charge_confirmed c" \
           "ALTER TABLE commits ADD past boolean" \
           "UPDATE commits SET past = CASE WHEN lsn IS NOT NULL THEN lsn > '$2' ELSE confirmed_at > $3 END" >/dev/null
}
stop_nodes() {
    local n
    for n in 1 2; do
        [ -f "$(node_data $n)/postmaster.pid" ] && pgctl -D "$(node_data $n)" -m immediate -w stop >/dev/null 2>&1
    done
    return 0
}
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; stop_nodes; TEST_DBS=(); scratch_cleanup' EXIT

# ---- node1, the primary, and node2, its synchronous standby --------------------------------------------
runuser -u postgres -- "$PGBIN/initdb" -D "$(node_data 1)" --auth=trust --username=postgres -E UTF8 \
    --locale=C.UTF-8 >"$TMP/initdb.out" 2>&1 || { sed 's/^/#   /' "$TMP/initdb.out"; bail "initdb failed"; }
cat >>"$(node_data 1)/postgresql.conf" <<CONF
listen_addresses = ''
max_connections = 60
shared_buffers = 64MB
wal_level = replica
max_wal_senders = 4
wal_keep_size = 256MB
hot_standby = on
fsync = on
synchronous_commit = on
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
CONF
node_conf 1 'node2'
start_server "$(node_data 1)" >>"$TMP/pg_ctl.out" 2>&1 || { sed 's/^/#   /' "$TMP/n1/server.log"; bail "node1 did not start"; }
make_standby 2 1
wait_streaming 1 node2 sync
is "$(qn 2 "SELECT pg_is_in_recovery()")" t "node2 is a standby in recovery"

# ---- synchronous phase -------------------------------------------------------------------------------
use_node 1
fault_setup "$DB"
DSN="host=$S1,$S2 port=$P1,$P2 dbname=$DB target_session_attrs=read-write"
fault_start "$DSN" "$JOBS" 250 "$WORKERS" "$CAP"
sleep 6
for _ in $(seq 1 50); do  # a process may be between connections (it drops some answers on purpose)
    on_node1=$(qn 1 "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE datname = '$DB' AND application_name LIKE 'fault\\_%'")
    [ "$on_node1" = $((WORKERS + 1)) ] && break
    sleep 0.1
done
is "$on_node1" $((WORKERS + 1)) "the producer and the $WORKERS workers are connected to node1, the read-write host of the string"

# A lease of the test's own, taken right before the crash with a 5-second ttl.
probe_token=$(PGHOST=$S1 PGPORT=$P1 q "$DB" "SELECT conveyor.lock_acquire('failover:probe', 'probe-before', 5)")
t_down=$(date +%s.%N)
pgctl -D "$(node_data 1)" -m immediate -w stop >>"$TMP/pg_ctl.out" 2>&1 || bail "pg_ctl stop -m immediate of node1 failed"
wait_replayed 2
SYNC_LSN=$REPLAYED_LSN
SYNC_AT=${REPLAYED_AT:-0}
# What node2 shows as held at the crash: running jobs (attempt, lease) and leases with their tokens.
PGHOST=$S2 PGPORT=$P2 q "$DB" "COPY (SELECT job_id, attempt FROM conveyor.jobs WHERE state = 'running') TO STDOUT" >"$TMP/held_jobs"
PGHOST=$S2 PGPORT=$P2 q "$DB" "COPY (SELECT key, owner, token FROM conveyor.locks) TO STDOUT" >"$TMP/held_locks"
pgctl -D "$(node_data 2)" -w -t 60 promote >>"$TMP/pg_ctl.out" 2>&1 || bail "pg_ctl promote of node2 failed"
t_up=$(date +%s.%N)
echo "$t_down $t_up" >>"$TMP/out/outages"
use_node 2
is "$(q postgres "SELECT pg_is_in_recovery(), left(pg_walfile_name(pg_current_wal_lsn()), 8)")" "f|00000002" \
   "node2 is promoted: read-write, on timeline 2"
# Another owner asks for the probe's key until it gets it; each try notes whether the old lease had
# already run out when it began (a refusal then would be wrong).
probe_refused=0
probe_wrong=0
probe_new=
for _ in $(seq 1 120); do
    row=$(q "$DB" "SELECT (SELECT heartbeat_at + make_interval(secs => ttl_seconds) < clock_timestamp() FROM conveyor.locks
                           WHERE key = 'failover:probe' AND token = $probe_token), conveyor.lock_acquire('failover:probe', 'probe-after', 5)")
    expired_before=${row%%|*}
    probe_new=${row#*|}
    if [ -n "$probe_new" ]; then break; fi
    probe_refused=$((probe_refused + 1))
    [ "$expired_before" = t ] && probe_wrong=$((probe_wrong + 1))
    sleep 0.25
done
is "$probe_wrong" 0 "the lease taken on node1 before the crash held on the promoted node while its ttl ran ($probe_refused tries refused)"
check "then another owner took it over with a greater token ($probe_token, then $probe_new)" test -n "$probe_new" -a "${probe_new:-0}" -gt "$probe_token"
is "$(q "$DB" "SELECT count(*) FROM conveyor.lock_events WHERE key = 'failover:probe' AND event = 'takeover'
               AND old_owner = 'probe-before' AND old_token = $probe_token AND new_token = ${probe_new:-0}")" 1 \
   "the promoted node recorded the takeover of the lease held at the crash"

wait_sessions_bounded "$DB" $((CAP + 30)) "the producer and the workers"
fault_checks "$DB"

# ---- what the crash left held, and what became of it -------------------------------------------------
q "$DB" "CREATE TABLE held_jobs (job_id uuid, attempt int)" "CREATE TABLE held_locks (key text, owner text, token bigint)" >/dev/null
psql -X -q -d "$DB" -c "\\copy held_jobs FROM '$TMP/held_jobs'" -c "\\copy held_locks FROM '$TMP/held_locks'" >/dev/null
held_jobs=$(q "$DB" "SELECT count(*) FROM held_jobs")
held_locks=$(q "$DB" "SELECT count(*) FROM held_locks")
check "node2 showed jobs running at the crash ($held_jobs) and leases held ($held_locks, the test's own among them)" \
    test "$held_jobs" -ge 1 -a "$(q "$DB" "SELECT count(*) FROM held_locks WHERE key = 'failover:probe' AND token = $probe_token")" = 1
is "$(q "$DB" "SELECT count(*) FROM held_jobs j JOIN conveyor.job_history h USING (job_id)
               WHERE NOT EXISTS (SELECT FROM conveyor.job_events e WHERE e.job_id = j.job_id AND e.event = 'expired'
                                   AND (e.details ->> 'attempt')::int = j.attempt)
                  OR NOT (h.attempt > j.attempt OR h.status = 'dead')
                  OR EXISTS (SELECT FROM effects f WHERE f.job_id = j.job_id AND f.attempt = j.attempt)
                  OR EXISTS (SELECT FROM failures x WHERE x.job_id = j.job_id AND x.attempt = j.attempt)")" 0 \
   "every job running at the crash had that attempt's lease expire on the promoted node and ran again (or went dead), and the attempt left no effect"
is "$(q "$DB" "SELECT count(*) FROM held_jobs j WHERE (SELECT count(*) FROM conveyor.job_history h WHERE h.job_id = j.job_id) <> 1")" 0 \
   "each of them is in job_history exactly once"
is "$(q "$DB" "SELECT count(*) FROM held_locks l
               WHERE NOT EXISTS (SELECT FROM conveyor.lock_events e WHERE e.key = l.key AND e.event = 'takeover'
                                   AND e.old_token = l.token AND e.new_token > l.token)
                 AND NOT EXISTS (SELECT FROM conveyor.locks k WHERE k.key = l.key AND k.token = l.token
                                   AND k.heartbeat_at + make_interval(secs => k.ttl_seconds) < clock_timestamp())")" 0 \
   "every lease held at the crash was taken over with a greater token, or lies expired"
is "$(q "$DB" "SELECT count(*) FROM held_locks l JOIN lease_events e ON e.key = l.key AND e.token = l.token
               WHERE e.kind = 'write' AND e.at > to_timestamp($t_up)")" 0 \
   "no fenced write with a token held at the crash was accepted after the failover"
acked_before=$(q "$DB" "SELECT count(*) FROM ack_confirmed WHERE success AND confirmed_at < $t_down")
is "$(q "$DB" "SELECT count(*) FROM ack_confirmed a WHERE a.success AND a.confirmed_at < $t_down
               AND (SELECT count(*) FROM conveyor.job_history h WHERE h.job_id = a.job_id AND h.status = 'completed'
                      AND h.attempt = a.attempt AND h.worker_id = a.worker) <> 1")" 0 \
   "every job whose ack a worker saw confirmed before the crash ($acked_before) is completed exactly once, by that attempt, on the promoted node"
commits_table "$DB" "$SYNC_LSN" "$SYNC_AT"
sync_confirmed=$(q "$DB" "SELECT count(*) FROM commits WHERE confirmed_at < $t_down")
sync_past=$(q "$DB" "SELECT count(*) FROM commits WHERE confirmed_at < $t_down AND past")
is "$(q "$DB" "SELECT count(*) FROM commits WHERE confirmed_at < $t_down AND NOT present")" 0 \
   "every commit a client saw confirmed before the crash ($sync_confirmed batches, acks and charges) is on the promoted node"
outage_ms=$(awk -v a="$t_down" -v b="$t_up" 'BEGIN { printf "%d", (b - a) * 1000 }')
note "synchronous: $sync_confirmed commits confirmed to clients before the crash (batches, acks, charges)," \
     "lost: $(q "$DB" "SELECT count(*) FROM commits WHERE confirmed_at < $t_down AND NOT present");" \
     "node2 had replayed to $SYNC_LSN ($sync_past of them with a position read past it); crash to promoted: $outage_ms ms;" \
     "$held_jobs jobs and $held_locks leases held at the crash"
note "fault_failover: $JOBS jobs ($FAULT_COMPLETED completed, $FAULT_DEAD dead, $FAULT_ATTEMPTS attempts) through a crash of" \
     "the primary and the promotion of its synchronous standby, $FAULT_RECONNECTS reconnects: $(fault_verdict)"
sync_failed=$TESTS_FAILED

# ---- asynchronous phase: a standby rebuilt from the promoted node, then the primary lost ------------
# async_round PRIMARY STANDBY STALL TIMELINE: STANDBY is rebuilt from PRIMARY with
# synchronous_standby_names empty; a short run; with STALL, the standby's walreceiver is stopped
# (SIGSTOP) for a second before the crash, as a link that stalls would; PRIMARY is stopped with
# -m immediate, the clients are stopped, STANDBY is promoted and what it lacks is counted.
async_round() {
    local pri=$1 sby=$2 stall=$3 tl=$4 p wr lost past confirmed unknown gap lag
    PIDS=()
    use_node "$pri"
    q postgres "SET client_min_messages = warning" "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" \
               "DROP DATABASE IF EXISTS \"$DB2\" WITH (FORCE)" >/dev/null
    make_standby "$sby" "$pri"
    wait_streaming "$pri" "node$sby" async
    rm -rf "$TMP/out"
    fault_setup "$DB2"
    fault_start "host=$S1,$S2 port=$P1,$P2 dbname=$DB2 target_session_attrs=read-write" "$ASYNC_JOBS" 100 "$ASYNC_WORKERS" "$CAP"
    sleep 7
    if [ "$stall" = stall ]; then
        wr=$(qn "$sby" "SELECT pid FROM pg_stat_wal_receiver")
        [ -n "$wr" ] && kill -STOP "$wr"
        sleep 1
    fi
    local t_down
    t_down=$(date +%s.%N)
    pgctl -D "$(node_data "$pri")" -m immediate -w stop >>"$TMP/pg_ctl.out" 2>&1 || bail "pg_ctl stop -m immediate of node$pri failed"
    [ "$stall" = stall ] && [ -n "$wr" ] && kill -CONT "$wr"
    # The clients have written down every answer they had; they stop here (what the new primary lacks
    # is measured, not worked around).
    sleep 0.5
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
    wait_replayed "$sby"
    pgctl -D "$(node_data "$sby")" -w -t 60 promote >>"$TMP/pg_ctl.out" 2>&1 || bail "pg_ctl promote of node$sby failed"
    use_node "$sby"
    is "$(q postgres "SELECT pg_is_in_recovery(), left(pg_walfile_name(pg_current_wal_lsn()), 8)")" "f|0000000$tl" \
       "node$sby is promoted: read-write, on timeline $tl"

    fault_load_confirmed "$DB2"
    commits_table "$DB2" "$REPLAYED_LSN" "${REPLAYED_AT:-0}"
    confirmed=$(q "$DB2" "SELECT count(*) FROM commits")
    past=$(q "$DB2" "SELECT count(*) FROM commits WHERE past")
    lost=$(q "$DB2" "SELECT count(*) FROM commits WHERE NOT present")
    unknown=$(q "$DB2" "SELECT count(*) FROM commits WHERE lsn IS NULL")
    check "the clients saw commits confirmed by node$pri before it was lost ($confirmed)" test "$confirmed" -ge 100
    is "$(q "$DB2" "SELECT count(*) FROM commits WHERE NOT present AND NOT past")" 0 \
       "every confirmed commit node$sby lacks ($lost) lay past what it had replayed: only the unreplicated tail is lost"
    is "$(q "$DB2" "SELECT count(*) FROM enqueued e WHERE (SELECT count(*) FROM conveyor.jobs j WHERE j.job_id = e.job_id)
                       + (SELECT count(*) FROM conveyor.job_history h WHERE h.job_id = e.job_id) <> 1")" 0 \
       "what survived is whole: every enqueued job node$sby knows is in jobs or job_history exactly once"
    is "$(q "$DB2" "SELECT count(*) FROM effects f WHERE NOT EXISTS (
                       SELECT FROM conveyor.job_history h WHERE h.job_id = f.job_id AND h.status = 'completed' AND h.attempt = f.attempt)")" 0 \
       "every effect that survived has its completed job"
    is "$(q "$DB2" "SELECT bool_and(ok) FROM conveyor.ledger_verify()")" t "ledger_verify() is ok on node$sby"
    # How far the last confirmed commit lay past the standby's replay (negative: the standby had more).
    gap=$(q "$DB2" "SELECT COALESCE(pg_wal_lsn_diff(max(lsn), '$REPLAYED_LSN')::bigint, 0) FROM commits")
    lag=$(q "$DB2" "SELECT COALESCE(round((max(confirmed_at) - ${REPLAYED_AT:-0}) * 1000)::bigint, 0) FROM commits")
    note "asynchronous$( [ "$stall" = stall ] && echo ", the standby's walreceiver stopped for 1 s before the crash"):" \
         "$confirmed commits confirmed to clients, $past of them past node$sby's last replayed position $REPLAYED_LSN" \
         "($unknown with no position, placed by time); lost: $lost"
    note "  by kind, confirmed/past/lost: $(q "$DB2" "SELECT string_agg(format('%s %s/%s/%s', kind, n, p, l), ', ' ORDER BY kind) FROM (
                    SELECT kind, count(*) n, count(*) FILTER (WHERE past) p, count(*) FILTER (WHERE NOT present) l
                    FROM commits GROUP BY kind) s");" \
         "last confirmed commit minus last replayed: $gap bytes of WAL, $lag ms"
    ASYNC_SUMMARY="${ASYNC_SUMMARY:+$ASYNC_SUMMARY; }$( [ "$stall" = stall ] && echo "standby stalled 1 s" || echo "standby keeping up"): $lost of $confirmed lost"
}

async_round 2 1 keep 3
async_round 1 2 stall 4
note "fault_failover: synchronous: $( [ "$sync_failed" -eq 0 ] && echo "none lost" || echo "$sync_failed checks FAILED" );" \
     "asynchronous: $ASYNC_SUMMARY; $( [ "$TESTS_FAILED" -eq "$sync_failed" ] &&
         echo "each lost commit lay past the standby's replay" || echo "$((TESTS_FAILED - sync_failed)) checks FAILED" ); $SECONDS s"
finish
