// Operator actions on single jobs: conveyor.requeue, requeue_stuck, reschedule and retry (admin
// only; each is a line in the audit log through CONVEYOR_AUDITED_FUNCTION and an event in the job's
// trail). Each state change below is made by one function, in one statement with its trail event and
// its counters: requeue_running (running -> pending), move_pending (pending -> pending at another
// time), retry_in_backoff (a failed job's backoff cut short) and retry_finished (dead or cancelled ->
// pending). Whatever must follow every such change belongs in those functions.
//
// Locks as everywhere in the queue (src/queue/internal.hpp): job rows first, then dedup keys, then
// groups. A worker's late ack or heartbeat after a requeue is refused by the lease's worker_id, which
// requeue clears.
#include "queue/internal.hpp"

namespace conveyor::queue {

// The job's queue (for notify_queue): it exists while a job of it does.
static Queue queue_of(int32 queue_id) {
    auto queues = load_queues_by_id({queue_id});
    if (queues.empty()) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("queue {} does not exist", queue_id));
    return queues.begin()->second;
}

// Grouped jobs that joined their group's waiting set: the best of each group runs next.
static void settle_groups(const std::vector<Changed> &changes) {
    std::map<int32, std::vector<std::string>> joined;
    std::set<GroupKey> left;
    for (const auto &c : changes) {
        if (!c.group_key) continue;
        if (c.state == "waiting") joined[c.queue_id].push_back(*c.group_key);
        else if (c.state != "ready") left.insert({c.queue_id, *c.group_key});
    }
    for (const auto &[queue_id, groups] : joined) {
        rebalance_group_heads(queue_id, groups);
        fill_group_heads(queue_id, groups);
    }
    fill_group_heads(left);
}

static bool any_due(const std::vector<Changed> &changes) {
    for (const auto &c : changes)
        if (c.state != "scheduled") return true;
    return false;
}

// ---------------------------------------------------------------------------------------------------
// running -> pending: requeue and requeue_stuck

// Gives running jobs back without their worker, due after $2 seconds: the attempt they used counts,
// as when a lease expires (a job that hangs its workers must not loop for ever). $3: only jobs started before it (requeue_stuck), rechecked on the
// locked row, so a job acked and leased again meanwhile is left alone. skip_locked: leave the rows a
// worker's ack or heartbeat holds right now (that job is not stuck). The event names the worker the
// lease was taken from and the role that took it.
static std::string requeue_running_sql(bool skip_locked) {
    return std::string(
        "WITH o AS ("
        "  SELECT job_id, worker_id, started_at FROM conveyor.jobs"
        "  WHERE job_id = ANY($1) AND state = 'running' AND ($3::timestamptz IS NULL OR started_at < $3)"
        "  FOR UPDATE") + (skip_locked ? " SKIP LOCKED" : "") + "), "
        "r AS ("
        "  UPDATE conveyor.jobs j SET state = CASE WHEN $2 > 0 THEN 'scheduled' ELSE 'ready' END,"
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs => $2),"
        "    worker_id = NULL, lease_until = NULL"
        "  FROM o WHERE j.job_id = o.job_id"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at, j.attempt, o.worker_id, o.started_at), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'requeued', worker_id,"
        "         pg_catalog.jsonb_build_object('run_at', run_at, 'attempt', attempt + 1, 'running_seconds',"
        "           pg_catalog.round(extract(epoch FROM pg_catalog.clock_timestamp() - started_at)), 'by', session_user)"
        "  FROM r), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*), count(*) FILTER (WHERE state = 'ready'),"
                      " count(*) FILTER (WHERE state = 'scheduled') FROM r GROUP BY queue_id",
                      {"running", "pending", "scheduled"}) +
        ") SELECT job_id, queue_id, group_key, state FROM r";
}

static std::vector<Changed> requeue_running(const std::vector<pg_uuid_t> &ids, int32 delay,
                                            std::optional<TimestampTz> started_before, bool skip_locked) {
    static const std::initializer_list<Oid> types = {UUIDARRAYOID, INT4OID, TIMESTAMPTZOID};
    static const std::string sql[2] = {requeue_running_sql(false), requeue_running_sql(true)};
    static Statement stmts[2] = {{sql[0].c_str(), types}, {sql[1].c_str(), types}};
    Params p;
    p.uuid_array(0, ids).int4(1, delay);
    if (started_before) p.datum(2, TimestampTzGetDatum(*started_before));
    else p.null(2);
    return changed_rows(stmts[skip_locked].run(p));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_requeue) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    require(fcinfo, 1, "delay_seconds");
    int32 delay = PG_GETARG_INT32(1);
    check_delay(delay, "delay_seconds");
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty() && !finished_status(id))
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    if (jobs.empty() || jobs[0].state != "running") {
        spi.finish();
        PG_RETURN_BOOL(false);
    }
    ensure_event_partitions();
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = requeue_running({id}, delay, std::nullopt, false);
    report_status(changes);
    settle_groups(changes);
    if (any_due(changes)) notify_queue(queue_of(jobs[0].queue_id));
    spi.finish();
    PG_RETURN_BOOL(!changes.empty());
}

// Requeues, in passes of at most 1000, the jobs of the queue that have run since before `cutoff`.
// Never waits: a job whose row or group another transaction holds (its worker acking it now) is
// left for the next call.
static std::vector<pg_uuid_t> requeue_stuck_jobs(const Queue &q, TimestampTz cutoff) {
    static Statement find(
        "SELECT job_id, group_key FROM conveyor.jobs"
        " WHERE queue_id = $1 AND state = 'running' AND started_at < $2 ORDER BY started_at, job_id LIMIT 1000",
        {INT4OID, TIMESTAMPTZOID});
    std::vector<pg_uuid_t> out;
    std::set<pg_uuid_t, UuidLess> tried;
    for (;;) {
        auto rows = find.run(Params().int4(0, q.id).datum(1, TimestampTzGetDatum(cutoff)));
        std::vector<pg_uuid_t> ids;
        std::set<GroupKey> groups;
        std::map<pg_uuid_t, std::optional<std::string>, UuidLess> group_of;
        for (uint64 r = 0; r < rows.size(); ++r) {
            pg_uuid_t id = *rows.uuid(r, 0);
            if (!tried.insert(id).second) continue;
            auto g = rows.text(r, 1);
            group_of.emplace(id, g);
            if (g) groups.insert({q.id, *g});
        }
        if (group_of.empty()) break;
        std::set<GroupKey> held = try_lock_groups(groups);
        for (const auto &[id, g] : group_of)
            if (!g || held.count({q.id, *g})) ids.push_back(id);
        if (!ids.empty()) {
            auto changes = requeue_running(ids, 0, cutoff, true);
            report_status(changes);
            settle_groups(changes);
            for (const auto &c : changes) out.push_back(c.id);
        }
        if (rows.size() < 1000) break;
    }
    return out;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_requeue_stuck) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    require(fcinfo, 1, "older_than");
    Interval *older = pg_guard([&] { return PG_GETARG_INTERVAL_P(1); });
    // 0 is legal: every job running since before this transaction began.
    if (older->month != 0 || older->day < 0 || older->time < 0 || older->day > 3650)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("older_than must be an interval of 0 or more days, hours, minutes or seconds, up to 3650 days"),
                    "", "Pass e.g. interval '30 minutes'.");
    TimestampTz cutoff = GetCurrentTransactionStartTimestamp() - (older->day * USECS_PER_DAY + older->time);
    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = load_queue(queue_name);
    ensure_event_partitions();
    auto ids = requeue_stuck_jobs(q, cutoff);
    if (!ids.empty()) {
        notify_queue(q);
        monitor::record_event("jobs_requeued", "queue", q.name, fmt::format("{{\"jobs\": {}}}", ids.size()));
    }
    static Statement emit_ids("SELECT pg_catalog.unnest($1::uuid[])", {UUIDARRAYOID});
    spi::emit(out, emit_ids.run(Params().uuid_array(0, ids)));
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// pending -> pending at another time: reschedule

// A pending job (ready, waiting or scheduled) due at $2: scheduled when that is ahead, otherwise
// ready, or waiting to be its group's head (settle_groups decides).
static std::vector<Changed> move_pending(const pg_uuid_t &id, TimestampTz run_at) {
    static const std::string sql =
        "WITH o AS ("
        "  SELECT job_id, state, run_at FROM conveyor.jobs WHERE job_id = $1 AND state <> 'running' FOR UPDATE), "
        "r AS ("
        "  UPDATE conveyor.jobs j SET run_at = $2,"
        "    state = CASE WHEN $2 > pg_catalog.now() THEN 'scheduled' WHEN j.group_key IS NULL THEN 'ready' ELSE 'waiting' END"
        "  FROM o WHERE j.job_id = o.job_id"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at, o.state AS old_state, o.run_at AS old_run_at), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'rescheduled',"
        "         pg_catalog.jsonb_build_object('run_at', run_at, 'previous_run_at', old_run_at, 'by', session_user)"
        "  FROM r), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id,"
                      " (count(*) FILTER (WHERE state <> 'scheduled') - count(*) FILTER (WHERE old_state <> 'scheduled')),"
                      " (count(*) FILTER (WHERE state = 'scheduled') - count(*) FILTER (WHERE old_state = 'scheduled'))"
                      " FROM r GROUP BY queue_id",
                      {"pending", "scheduled"}) +
        ") SELECT job_id, queue_id, group_key, state FROM r";
    static Statement stmt(sql.c_str(), {UUIDOID, TIMESTAMPTZOID});
    return changed_rows(stmt.run(Params().uuid(0, id).datum(1, TimestampTzGetDatum(run_at))));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_reschedule) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    require(fcinfo, 1, "run_at");
    TimestampTz run_at = PG_GETARG_TIMESTAMPTZ(1);
    if (TIMESTAMP_NOT_FINITE(run_at))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "run_at must be a finite time", "", "Pass a time such as now() + interval '1 hour'.");
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty() && !finished_status(id))
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    if (jobs.empty() || jobs[0].state == "running") {
        spi.finish();
        PG_RETURN_BOOL(false);
    }
    ensure_event_partitions();
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = move_pending(id, run_at);
    settle_groups(changes);
    if (any_due(changes)) notify_queue(queue_of(jobs[0].queue_id));
    spi.finish();
    PG_RETURN_BOOL(!changes.empty());
}

// ---------------------------------------------------------------------------------------------------
// retry: a failed job waiting out its backoff, or a dead or cancelled one

// State a retried job takes: scheduled after a delay; due now, ready, or waiting to be its group's
// head (settle_groups decides).
#define RETRY_STATE(group_key) \
    "CASE WHEN $2 > 0 THEN 'scheduled' WHEN " group_key " IS NULL THEN 'ready' ELSE 'waiting' END"

// A job that failed and waits out its backoff (scheduled, with an attempt used) runs now or after $2
// seconds. $3: reset its attempt count.
static std::vector<Changed> retry_in_backoff(const pg_uuid_t &id, int32 delay, bool reset_attempts) {
    static const std::string sql =
        "WITH r AS ("
        "  UPDATE conveyor.jobs j SET state = " RETRY_STATE("j.group_key") ","
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs => $2),"
        "    attempt = CASE WHEN $3 THEN 0 ELSE j.attempt END"
        "  WHERE j.job_id = $1 AND j.state = 'scheduled' AND j.attempt > 0"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at, j.attempt), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'retried',"
        "         pg_catalog.jsonb_build_object('previous_status', 'pending', 'run_at', run_at, 'attempts_used', attempt,"
        "           'reset_attempts', $3, 'by', session_user)"
        "  FROM r), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, count(*) FILTER (WHERE state <> 'scheduled'),"
                      " -count(*) FILTER (WHERE state <> 'scheduled') FROM r GROUP BY queue_id",
                      {"pending", "scheduled"}) +
        ") SELECT job_id, queue_id, group_key, state FROM r";
    static Statement stmt(sql.c_str(), {UUIDOID, INT4OID, BOOLOID});
    return changed_rows(stmt.run(Params().uuid(0, id).int4(1, delay).boolean(2, reset_attempts)));
}

// A dead or cancelled job back from history as pending. Its attempt count is kept (its next dequeue
// is the next attempt) unless $3; a job that used all its attempts gets one more, so it runs before
// it can die again. A dead job's retry is its resolution ('retried'), named in the trail. In a
// database at 0.3 it keeps the run_at it was enqueued with (its 'enqueued' event).
static std::string retry_finished_sql(bool at_0_3) {
    return std::string(
        "WITH h AS (DELETE FROM conveyor.job_history WHERE job_id = $1 AND status IN ('dead', 'cancelled') RETURNING *), "
        "ins AS ("
        "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
        "                             payload, attempt, max_attempts, last_error, created_at") +
        (at_0_3 ? ", enqueued_run_at" : "") + ")"
        "  SELECT job_id, queue_id, " RETRY_STATE("group_key") ", priority,"
        "         pg_catalog.now() + pg_catalog.make_interval(secs => $2), job_type, group_key, dedup_key, payload,"
        "         CASE WHEN $3 THEN 0 ELSE attempt END,"
        "         CASE WHEN $3 THEN max_attempts ELSE GREATEST(max_attempts, attempt + 1) END, last_error, created_at" +
        (at_0_3 ? ", enqueued_run_at" : "") +
        "  FROM h"
        "  RETURNING job_id, queue_id, group_key, state, run_at, attempt, max_attempts), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
        "  SELECT ins.job_id, pg_catalog.clock_timestamp(), 'retried',"
        "         pg_catalog.jsonb_build_object('previous_status', h.status, 'run_at', ins.run_at,"
        "           'attempts_used', ins.attempt, 'max_attempts', ins.max_attempts, 'reset_attempts', $3,"
        "           'by', session_user)"
        "         OPERATOR(pg_catalog.||) CASE WHEN h.status = 'dead'"
        "           THEN pg_catalog.jsonb_build_object('resolution', 'retried') ELSE '{}'::jsonb END"
        "  FROM ins JOIN h USING (job_id)), "
        "cnt AS (" +
        counts_upsert("SELECT ins.queue_id, count(*) FILTER (WHERE ins.state <> 'scheduled'),"
                      " count(*) FILTER (WHERE ins.state = 'scheduled'), -count(*) FILTER (WHERE h.status = 'dead')"
                      " FROM ins JOIN h USING (job_id) GROUP BY ins.queue_id",
                      {"pending", "scheduled", "dead"}) +
        ") SELECT job_id, queue_id, group_key, state FROM ins";
}
static std::vector<Changed> retry_finished(const pg_uuid_t &id, int32 delay, bool reset_attempts) {
    static const std::string sql[2] = {retry_finished_sql(false), retry_finished_sql(true)};
    static Statement stmts[2] = {{sql[0].c_str(), {UUIDOID, INT4OID, BOOLOID}}, {sql[1].c_str(), {UUIDOID, INT4OID, BOOLOID}}};
    return changed_rows(stmts[catalog_at_0_3()].run(Params().uuid(0, id).int4(1, delay).boolean(2, reset_attempts)));
}
#undef RETRY_STATE

CONVEYOR_AUDITED_FUNCTION(conveyor_retry) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    auto delay = arg_int(fcinfo, 1);
    check_delay(delay, "delay_seconds");
    // 0.3 keeps the attempt count; retry(job_id, delay_seconds) of a database still at 0.2 resets it,
    // as 0.2 did, until ALTER EXTENSION conveyor UPDATE.
    bool reset_attempts = PG_NARGS() > 2 ? !PG_ARGISNULL(2) && PG_GETARG_BOOL(2) : true;
    int32 secs = delay.value_or(0);
    spi::Connection spi;
    std::vector<Changed> changes;
    int32 queue_id = 0;
    if (auto jobs = find_jobs({id}, true); !jobs.empty()) {
        const JobRef &job = jobs[0];
        queue_id = job.queue_id;
        if (job.state == "scheduled") {
            ensure_event_partitions();
            if (job.group_key) lock_groups({{job.queue_id, *job.group_key}});
            changes = retry_in_backoff(id, secs, reset_attempts);
        }
        if (changes.empty())
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        fmt::format("job {} is {}, not dead, cancelled or waiting out a backoff", uuid_text(id),
                                    public_status(job.state)),
                        "", "A pending job can be moved with conveyor.reschedule, a running one given back with conveyor.requeue.");
    } else {
        static Statement find(
            "SELECT h.queue_id, h.group_key, h.dedup_key, h.status FROM conveyor.job_history h WHERE h.job_id = $1",
            {UUIDOID});
        auto rows = find.run(Params().uuid(0, id));
        if (rows.size() == 0) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
        queue_id = *rows.int4(0, 0);
        auto group = rows.text(0, 1);
        auto dedup = rows.text(0, 2);
        if (*rows.text(0, 3) == "completed")
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        fmt::format("job {} completed; only dead or cancelled jobs can be retried", uuid_text(id)));
        if (load_queues_by_id({queue_id}).empty())
            throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("the queue of job {} no longer exists", uuid_text(id)));
        ensure_event_partitions();
        if (dedup) {
            lock_dedup_keys(queue_id, {*dedup});
            if (auto other = active_job_with_dedup_key(queue_id, *dedup))
                throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                            fmt::format("job {} cannot be retried: job {} with the same dedup_key {} is pending or running",
                                        uuid_text(id), uuid_text(*other), quoted(*dedup)));
        }
        if (group) lock_groups({{queue_id, *group}});
        changes = retry_finished(id, secs, reset_attempts);
        if (changes.empty())
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} changed concurrently", uuid_text(id)), "", "Retry.");
    }
    report_status(changes);
    settle_groups(changes);
    if (any_due(changes)) notify_queue(queue_of(queue_id));
    spi.finish();
    PG_RETURN_BOOL(true);
}

} // namespace conveyor::queue
