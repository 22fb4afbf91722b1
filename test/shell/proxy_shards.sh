#!/usr/bin/env bash
# Shards behind PL/Proxy, under the queue stress: three conveyor shard clusters and one front cluster
# with conveyor_proxy (each its own port and socket), and the stress of test/shell/stress_queue.sh (8
# workers, 20,000 jobs in 200 groups, failures, abandoned leases, an operator requeueing stuck jobs)
# run entirely through the front. Afterwards the same invariants as on one server, read from the
# shards' tables gathered on the front, and:
#   - every group's jobs lived on one shard, the one the front's directory names;
#   - every shard got within 10% of an even share of the jobs;
#   - an ack through the front of a job of shard 2 called conveyor.ack on shard 2 only.
# Ports: CONVEYOR_PROXY_PORTS="FRONT SHARD1 SHARD2 SHARD3" (default 55620 55621 55622 55623).
source "$(dirname "$0")/lib/tap.bash"
source "$(dirname "$0")/lib/shards.bash"
source "$(dirname "$0")/lib/queue_stress.bash"

DB=conveyor_proxy_stress
NSHARDS=3
use_scratch proxy-shards
chmod 755 "$TMP"
SHARD_BASE=$TMP
trap 'stop_shard_clusters; scratch_cleanup' EXIT

start_sharded $NSHARDS "$DB" || bail "could not start $NSHARDS shards and a front"
note "front on port $(cluster_port front), shards on $(for i in $(seq 1 $NSHARDS); do printf '%s ' "$(cluster_port shard$i)"; done)"
# From here on psql (and q, and the stress's sessions) talk to the front.
export PGHOST=$SHARD_BASE/front/sock PGPORT=$(cluster_port front)

q "$DB" "SELECT conveyor.create_queue('stress', '{\"lease_seconds\": 2, \"max_attempts\": 3, \"backoff_base_seconds\": 1, \"backoff_max_seconds\": 4}')" \
    >/dev/null || bail "could not create the queue through the front"
is "$(for i in $(seq 1 $NSHARDS); do sq shard$i "$DB" "SELECT count(*) FROM conveyor.queues WHERE name = 'stress'"; done | tr -d '\n')" \
   "111" "create_queue through the front created the queue on every shard"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the helper functions"
-- On the front the workload sees the shards only through conveyor's functions.
CREATE FUNCTION stress_jobs_left() RETURNS boolean LANGUAGE sql AS $$
    SELECT coalesce(sum(pending + scheduled + running), 0) > 0 FROM conveyor.queue_metrics('stress')
$$;
-- requeue_stuck commits on each shard before it returns here, so a job may run again before this reads
-- it: the attempt taken back is the one before the attempt its 'requeued' event announces.
CREATE FUNCTION stress_requeue_stuck(queue text, older_than interval) RETURNS TABLE(job_id uuid, attempt int)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    ids uuid[];
BEGIN
    ids := ARRAY(SELECT conveyor.requeue_stuck(queue, older_than));
    RETURN QUERY
        SELECT i, (SELECT (e.details ->> 'attempt')::int - 1 FROM conveyor.job_events(i) e
                    WHERE e.event = 'requeued' AND e.at >= t0 ORDER BY e.at DESC LIMIT 1)
          FROM unnest(ids) i;
END
$$;
SQL
stress_load "$DB" || bail "could not create the test tables"

stress_run "$DB"

# ---- the shards' tables, gathered on the front ----------------------------------------------------------
q "$DB" "CREATE TABLE shard_jobs (shard int, job_id uuid, state text, group_key text)" \
        "CREATE TABLE shard_history (shard int, job_id uuid, status text, payload jsonb, group_key text, attempt int, worker_id text)" \
        "CREATE TABLE shard_counts (shard int, pending bigint, scheduled bigint, running bigint, dead bigint,
                                    enqueued bigint, started bigint, completed bigint, expired bigint, failed bigint)" >/dev/null
for i in $(seq 1 $NSHARDS); do
    sq shard$i "$DB" "COPY (SELECT $i, job_id, state, group_key FROM conveyor.jobs) TO STDOUT" | q "$DB" "COPY shard_jobs FROM STDIN"
    sq shard$i "$DB" "COPY (SELECT $i, job_id, status, payload, group_key, attempt, worker_id FROM conveyor.job_history) TO STDOUT" |
        q "$DB" "COPY shard_history FROM STDIN"
    sq shard$i "$DB" "COPY (SELECT $i, pending, scheduled, running, dead, enqueued, started, completed, expired, failed
                           FROM conveyor.queue_counts) TO STDOUT" | q "$DB" "COPY shard_counts FROM STDIN"
done
q "$DB" "ANALYZE shard_history" >/dev/null

JOBS_REL=shard_jobs HISTORY_REL=shard_history COUNTS_REL=shard_counts stress_check "$DB"

# ---- what sharding adds -----------------------------------------------------------------------------------
is "$(q "$DB" "SELECT count(*) FROM (SELECT group_key FROM shard_history GROUP BY 1 HAVING count(DISTINCT shard) > 1) g")" 0 \
   "every group's jobs lived on one shard"
is "$(q "$DB" "SELECT count(*) FROM shard_history h JOIN conveyor_proxy.groups g ON g.queue = 'stress' AND g.group_key = h.group_key
               WHERE g.shard <> h.shard")" 0 "each group lived on the shard the front's directory names"
is "$(q "$DB" "SELECT count(*) FROM conveyor_proxy.groups WHERE queue = 'stress'")" "$NGROUPS" \
   "the directory holds the $NGROUPS groups, each once"
is "$(q "$DB" "SELECT count(*) FROM shard_history WHERE get_byte(uuid_send(job_id), 9) * 256 + get_byte(uuid_send(job_id), 10) <> shard")" 0 \
   "every job id names the shard that held it"
shares=$(q "$DB" "SELECT string_agg(shard || ': ' || n, ', ' ORDER BY shard) FROM (SELECT shard, count(*) n FROM shard_history GROUP BY 1) s")
note "jobs per shard: $shares"
is "$(q "$DB" "SELECT count(*) FROM (SELECT s, (SELECT count(*) FROM shard_history h WHERE h.shard = s) n
                                     FROM generate_series(1, $NSHARDS) s) c
               WHERE c.n < 0.9 * $JOBS / $NSHARDS OR c.n > 1.1 * $JOBS / $NSHARDS")" 0 \
   "every shard got within 10% of an even share ($JOBS / $NSHARDS jobs)"
note "dequeue calls served per shard (pg_stat_user_functions): $(for i in $(seq 1 $NSHARDS); do
    printf '%s ' "$i: $(sq shard$i "$DB" "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = 'conveyor' AND funcname = 'dequeue'")"
done)"

# ---- an ack through the front touches its job's shard only ---------------------------------------------
# A job of shard 2, enqueued and leased there directly (workers may also talk to a shard).
sq shard2 "$DB" "SELECT conveyor.create_queue('probe')" >/dev/null
jid=$(sq shard2 "$DB" "SELECT job_id FROM conveyor.enqueue('probe', '{}')")
sq shard2 "$DB" "SELECT count(*) FROM conveyor.dequeue('probe', 'w-probe', 1)" >/dev/null
# In one front session: each shard's count of conveyor.ack calls (stats flushed first), the ack, the
# counts again. Every remote call runs on this session's connections, so their stats are flushed.
probe=$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" <<SQL 2>&1
CREATE FUNCTION pg_temp.flush_all() RETURNS SETOF int LANGUAGE plproxy AS \$\$
    CLUSTER 'conveyor_shards'; RUN ON ALL; SELECT 1 FROM pg_stat_force_next_flush();
\$\$;
CREATE FUNCTION pg_temp.ack_calls() RETURNS TABLE(shard int, calls bigint) LANGUAGE plproxy AS \$\$
    CLUSTER 'conveyor_shards'; RUN ON ALL;
    SELECT conveyor.get_setting('shard.number')::int AS shard,
           coalesce((SELECT f.calls FROM pg_stat_user_functions f WHERE f.schemaname = 'conveyor' AND f.funcname = 'ack'), 0) AS calls;
\$\$;
SELECT count(*) FROM pg_temp.flush_all();
SELECT pg_sleep(1.5);
CREATE TEMP TABLE before AS SELECT * FROM pg_temp.ack_calls();
SELECT conveyor.ack('$jid', true, worker_id => 'w-probe');
SELECT count(*) FROM pg_temp.flush_all();
SELECT string_agg(b.shard || ':' || (a.calls - b.calls), ' ' ORDER BY b.shard)
  FROM before b JOIN pg_temp.ack_calls() a USING (shard);
SQL
)
note "ack calls added per shard: $(echo "$probe" | tail -1)"
is "$(echo "$probe" | tail -1)" "1:0 2:1 3:0" "an ack through the front of a job of shard 2 called conveyor.ack on shard 2 only"
is "$(sq shard2 "$DB" "SELECT status FROM conveyor.job_history WHERE job_id = '$jid'")" "completed" "and completed the job there"

stop_shard_clusters
finish
