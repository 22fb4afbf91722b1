// Dequeueing: conveyor.dequeue. Before it claims, a dequeue does the queue's housekeeping that never
// waits (expired leases, scheduled jobs that came due); a worker that finds nothing may wait for a
// wakeup (src/queue/wakeup.hpp).
#include "queue/internal.hpp"

namespace conveyor::queue {

// Due scheduled jobs become ready, or waiting when their group is busy.
static void promote_due(int32 queue_id) {
    static Statement find(
        "SELECT job_id, group_key FROM conveyor.jobs"
        " WHERE queue_id = $1 AND state = 'scheduled' AND run_at <= pg_catalog.now() ORDER BY run_at LIMIT 1000",
        {INT4OID});
    auto rows = find.run(Params().int4(0, queue_id));
    if (rows.size() == 0) return;
    std::vector<pg_uuid_t> loose, grouped;
    std::set<GroupKey> groups;
    for (uint64 r = 0; r < rows.size(); ++r) {
        auto g = rows.text(r, 1);
        if (g) {
            grouped.push_back(*rows.uuid(r, 0));
            groups.insert({queue_id, *g});
        } else
            loose.push_back(*rows.uuid(r, 0));
    }
    static const std::string sql =
        "WITH p AS ("
        "  UPDATE conveyor.jobs j SET state = $2 FROM ("
        "    SELECT job_id FROM conveyor.jobs WHERE job_id = ANY($1) AND state = 'scheduled' FOR UPDATE SKIP LOCKED) s"
        "  WHERE j.job_id = s.job_id RETURNING j.queue_id), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*), count(*) FROM p GROUP BY queue_id", {"scheduled", "pending"}) +
        ") SELECT count(*) FROM p";
    static Statement promote(sql.c_str(), {UUIDARRAYOID, TEXTOID});
    if (!loose.empty()) promote.run(Params().uuid_array(0, loose).text(1, "ready"));
    if (!grouped.empty()) {
        // Only groups whose lock is free now: a busy group's jobs are promoted by a later dequeue.
        std::set<GroupKey> held = try_lock_groups(groups);
        if (held.empty()) return;
        std::vector<pg_uuid_t> ids;
        for (uint64 r = 0; r < rows.size(); ++r) {
            auto g = rows.text(r, 1);
            if (g && held.count({queue_id, *g})) ids.push_back(*rows.uuid(r, 0));
        }
        promote.run(Params().uuid_array(0, ids).text(1, "waiting"));
        std::vector<std::string> keys;
        for (const auto &g : held) keys.push_back(g.second);
        rebalance_group_heads(queue_id, keys);
        fill_group_heads(queue_id, keys);
    }
}

// How long a claimed job waited, 0 for a run_at that is not finite (none is accepted, but a reader
// must not fail on rows stored before that was checked: started_at - '-infinity' raises).
#define WAIT_SECONDS \
    "CASE WHEN pg_catalog.isfinite(run_at) THEN GREATEST(extract(epoch FROM started_at - run_at), 0) ELSE 0 END"

// The claim: leases up to $3 ready jobs of queue $1 to worker $2 for $4 seconds, in dequeue order,
// skipping jobs another claim holds; writes their 'started' events (with_event) and the counters.
// Leases and start times come from the clock, not the transaction start: a worker whose transaction
// began a while ago must still get the full lease. single: the same for exactly one job, without the
// array, the aggregate and the sort that a batch needs (the cheaper plan for the most common call,
// dequeue of 1).
static std::string claim_sql(bool with_event, bool single) {
    std::string pick = "SELECT job_id FROM conveyor.jobs WHERE queue_id = $1 AND state = 'ready'"
                       " ORDER BY priority DESC, run_at, job_id LIMIT $3 FOR UPDATE SKIP LOCKED";
    return std::string(
        "WITH u AS ("
        "  UPDATE conveyor.jobs j SET state = 'running', worker_id = $2, started_at = pg_catalog.clock_timestamp(),"
        "    attempt = j.attempt + 1, lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $4)"
        "  WHERE j.job_id ") +
        (single ? "= (" + pick + ")" : "= ANY(ARRAY(" + pick + "))") +
        "  RETURNING j.job_id, j.job_type, j.group_key, j.payload, j.priority, j.attempt, j.lease_until, j.run_at,"
        "            j.started_at), " +
        std::string(with_event ? "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'started', $2, pg_catalog.jsonb_build_object('attempt', attempt,"
        "         'lease_until', lease_until) FROM u), " : "") +
        "cnt AS (" +
        (single ? counts_upsert("SELECT $1, -1, 1, 1, " WAIT_SECONDS "::float8 FROM u",
                                {"pending", "running", "started", "wait_seconds"})
                : counts_upsert("SELECT $1, -count(*), count(*), count(*),"
                                " sum(" WAIT_SECONDS ")::float8 FROM u HAVING count(*) > 0",
                                {"pending", "running", "started", "wait_seconds"})) +
        ") SELECT job_id, job_type, group_key, payload, priority::int, attempt, lease_until FROM u" +
        (single ? "" : "  ORDER BY priority DESC, run_at, job_id");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_dequeue) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    auto worker = optional_key(fcinfo, 1, "worker_id", true);
    if (!worker) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "worker_id must not be NULL", "", "Name the worker, e.g. host:pid.");
    int32 max_count = required_int(fcinfo, 2, "max_count", 1, 1000);
    auto lease = optional_int(fcinfo, 3, "lease_seconds", 1, 7 * 86400);

    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = cached_queue(queue_name);
    if (q.paused) {
        if (q.notify) worker_found_nothing(q.id, q.name);  // resume_queue wakes it
        spi.finish();
        return (Datum)0;
    }
    // Housekeeping that never waits: expired leases, then jobs that came due. One probe says whether
    // either has anything to do, so an idle housekeeping costs one index lookup per index.
    static Statement probe(
        "SELECT EXISTS (SELECT 1 FROM conveyor.jobs WHERE queue_id = $1 AND state = 'running'"
        "               AND lease_until < pg_catalog.now()),"
        "       EXISTS (SELECT 1 FROM conveyor.jobs WHERE queue_id = $1 AND state = 'scheduled'"
        "               AND run_at <= pg_catalog.now())",
        {INT4OID});
    auto due = probe.run(Params().int4(0, q.id));
    bool expired = *due.boolean(0, 0), came_due = *due.boolean(0, 1);
    if (expired) reap_expired(q.id, 100);
    if (came_due) promote_due(q.id);
    bool trail = q.event_trail == "all";
    if (trail) ensure_event_partitions();

    static const std::initializer_list<Oid> claim_types = {INT4OID, TEXTOID, INT4OID, INT4OID};
    static const std::string sql[2][2] = {{claim_sql(false, false), claim_sql(false, true)},
                                          {claim_sql(true, false), claim_sql(true, true)}};
    static Statement claims[2][2] = {{{sql[0][0].c_str(), claim_types}, {sql[0][1].c_str(), claim_types}},
                                     {{sql[1][0].c_str(), claim_types}, {sql[1][1].c_str(), claim_types}}};
    Statement &claim = claims[trail][max_count == 1];
    auto rows = claim.run(Params()
                              .int4(0, q.id)
                              .text(1, *worker)
                              .int4(2, max_count)
                              .int4(3, lease.value_or(q.lease_seconds)));
    spi::emit(out, rows);
    if (q.status_notify && rows.size() > 0) {
        std::vector<pg_uuid_t> ids;
        for (uint64 r = 0; r < rows.size(); ++r) ids.push_back(*rows.uuid(r, 0));
        status_changed(q.id, ids);
    }
    if (rows.size() > 0) worker_found_jobs(q.id);
    else if (q.notify) worker_found_nothing(q.id, q.name);
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
