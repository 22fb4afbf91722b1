// Finishing jobs: what workers do with the jobs they hold (conveyor.ack, ack_many, heartbeat,
// release), what housekeeping does with the ones whose lease ran out (conveyor.reap), and what
// operators do with any job (conveyor.dead_letter, cancel; the other operator actions are in
// operator.cpp). Finished jobs move to
// conveyor.job_history; a group whose head leaves gets its next one.
#include <algorithm>

#include "queue/internal.hpp"

namespace conveyor::queue {

void check_delay(const std::optional<int32> &delay, const char *name) {
    if (delay && *delay < 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must not be negative, not {}", name, *delay));
}

// worker_id alone does not tell one lease of a job from a later one to the same worker (after a
// requeue or an expiry, a worker whose old run still goes on may dequeue the job again); the attempt
// does, except after release, which gives the attempt back.
std::optional<int32> lease_attempt(FunctionCallInfo fcinfo, int i) {
    if (PG_NARGS() <= i) return std::nullopt;
    return optional_int(fcinfo, i, "attempt", 1, PG_INT32_MAX, "It is the attempt dequeue reported for the lease.");
}

static constexpr const char *history_columns =
    "job_id, queue_id, status, priority, run_at, job_type, group_key, dedup_key, payload, attempt, "
    "max_attempts, worker_id, started_at, last_error, created_at, finished_at, purge_at";
// The same with 0.3's columns in a database at 0.3 (catalog_at_0_3()): progress, and the run_at the
// job was enqueued with (its 'enqueued' event, src/queue/enqueue.cpp); progress_values: what the
// SELECT that feeds the INSERT adds for them.
static std::string history_columns_for(bool at_0_3) {
    return std::string(history_columns) + (at_0_3 ? ", percent, step, enqueued_run_at" : "");
}
static const char *progress_values(bool at_0_3) { return at_0_3 ? ", percent, step, enqueued_run_at" : ""; }

// ---------------------------------------------------------------------------------------------------
// Finishing and failing running jobs: ack, ack_many, reap

// Every status change made here and in operator.cpp goes through status_changed (src/queue/status.cpp).
void report_status(const std::vector<Changed> &changes) {
    std::vector<std::pair<int32, pg_uuid_t>> jobs;
    jobs.reserve(changes.size());
    for (const auto &c : changes) jobs.emplace_back(c.queue_id, c.id);
    status_changed(jobs);
}

std::vector<Changed> changed_rows(const spi::Rows &rows) {
    std::vector<Changed> out;
    for (uint64 r = 0; r < rows.size(); ++r)
        out.push_back(Changed{*rows.uuid(r, 0), *rows.int4(r, 1), rows.text(r, 2), *rows.text(r, 3)});
    return out;
}

// Each job that died here is a monitoring event (src/monitor), in this transaction: one statement for
// all of them.
static void report_dead_jobs(const std::vector<Changed> &changes, const char *why, const std::optional<std::string> &error) {
    std::vector<std::string> subjects, details;
    std::string error_json = error ? monitor::json_quoted(clipped(*error)) : std::string("null");
    for (const auto &c : changes) {
        if (c.state != "dead") continue;
        subjects.push_back(uuid_text(c.id));
        details.push_back(fmt::format("{{\"queue_id\": {}, \"why\": {}, \"error\": {}}}", c.queue_id,
                                      monitor::json_quoted(why), error_json));
    }
    monitor::record_events("job_dead_lettered", "queue", subjects, details);
}

// Succeeds running jobs: they move to history as completed. $2: only jobs leased to this worker;
// $4: only if on this attempt (the lease the worker was given, see lease_attempt()).
static std::vector<Changed> complete_jobs(const std::vector<pg_uuid_t> &ids, const std::optional<std::string> &worker,
                                          Datum stats, bool stats_null, std::optional<int32> attempt) {
    auto sql_for = [](bool progress) { return std::string() +
        "WITH d AS ("
        "  DELETE FROM conveyor.jobs j USING conveyor.queues q"
        "  WHERE j.job_id = ANY($1) AND q.queue_id = j.queue_id AND j.state = 'running'"
        "    AND ($2::text IS NULL OR j.worker_id = $2) AND ($4::int IS NULL OR j.attempt = $4)"
        "  RETURNING j.*, q.retention_days, q.event_trail), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + history_columns_for(progress) + ")"
        "  SELECT job_id, queue_id, 'completed', priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, last_error, created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)" + progress_values(progress) +
        "  FROM d), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'succeeded', worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'duration_ms',"
        "           pg_catalog.round(extract(epoch FROM pg_catalog.clock_timestamp() - started_at) * 1000), 'stats', $3::jsonb)"
        "  FROM d WHERE event_trail = 'all'), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*), count(*), sum(extract(epoch FROM pg_catalog.clock_timestamp() - started_at))::float8"
                      " FROM d GROUP BY queue_id",
                      {"running", "completed", "run_seconds"}) +
        ") SELECT job_id, queue_id, group_key, 'completed' FROM d"; };
    static const std::string sql[2] = {sql_for(false), sql_for(true)};
    static Statement stmts[2] = {{sql[0].c_str(), {UUIDARRAYOID, TEXTOID, JSONBOID, INT4OID}},
                                 {sql[1].c_str(), {UUIDARRAYOID, TEXTOID, JSONBOID, INT4OID}}};
    Statement &stmt = stmts[catalog_at_0_3()];
    Params p;
    p.uuid_array(0, ids).text(1, worker).int4(3, attempt);
    if (stats_null) p.null(2);
    else p.datum(2, stats);
    return changed_rows(stmt.run(p));
}

// Fails running jobs: each is rescheduled with exponential backoff, or dies at max_attempts.
// expire = false: the jobs named (and, if worker is given, leased to that worker);
// expire = true: those of the named jobs whose lease has run out.
// skip_locked: leave jobs another transaction has locked (dequeue's housekeeping never waits).
// at_0_3: the database has 0.3's dead letters (dead_retention_days, job_history.reason). A failed ack
// ($4 false) records its stats ($5) and the run's duration in the trail, as a successful one does.
// $6 true: the failure is final (ack with retry => false): the jobs die whatever attempts remain,
// with the reason 'not retryable' instead of 'max_attempts reached'. $7: only if on this attempt.
// The run's duration and the worker's stats, for a failed ack (not for an expired lease).
#define DEAD_REASON "CASE WHEN $6 THEN 'not retryable' ELSE 'max_attempts reached' END"
#define RUN_FIGURES                                                                                               \
    "CASE WHEN $4 THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('duration_ms',"                             \
    " pg_catalog.round(extract(epoch FROM pg_catalog.clock_timestamp() - started_at) * 1000), 'stats', $5::jsonb) END"
static std::string fail_jobs_sql(bool skip_locked, bool at_0_3) {
    return std::string(
        "WITH t AS ("
        "  SELECT j.job_id FROM conveyor.jobs j"
        "  WHERE j.job_id = ANY($1) AND j.state = 'running'"
        "    AND CASE WHEN $4 THEN j.lease_until < pg_catalog.now()"
        "             ELSE ($3::text IS NULL OR j.worker_id = $3) AND ($7::int IS NULL OR j.attempt = $7) END"
        "  FOR UPDATE") + (skip_locked ? " SKIP LOCKED" : "") + "), "
        "dead AS ("
        "  DELETE FROM conveyor.jobs j USING t, conveyor.queues q"
        "  WHERE j.job_id = t.job_id AND q.queue_id = j.queue_id AND (j.attempt >= j.max_attempts OR $6)"
        "  RETURNING j.*, " + std::string(at_0_3 ? "q.dead_retention_days" : "q.retention_days") + " AS retention_days), "
        "retried AS ("
        "  UPDATE conveyor.jobs j SET"
        "    state = CASE WHEN q.backoff_base_seconds > 0 THEN 'scheduled' ELSE 'ready' END,"
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs =>"
        "      LEAST(q.backoff_base_seconds * pg_catalog.power(2::float8, j.attempt - 1), q.backoff_max_seconds::float8)"
        "      * (1 - 0.25 * pg_catalog.random())),"
        "    worker_id = NULL, lease_until = NULL, last_error = $2"
        "  FROM t, conveyor.queues q"
        "  WHERE j.job_id = t.job_id AND q.queue_id = j.queue_id AND j.attempt < j.max_attempts AND NOT $6"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at, j.attempt, j.started_at,"
        "            (SELECT o.worker_id FROM conveyor.jobs o WHERE o.job_id = j.job_id) AS worker_id), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + history_columns_for(at_0_3) + (at_0_3 ? ", reason" : "") + ")"
        "  SELECT job_id, queue_id, 'dead', priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, $2, created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)" + progress_values(at_0_3) +
        (at_0_3 ? ", " DEAD_REASON : "") +
        "  FROM dead), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), CASE WHEN $4 THEN 'expired' ELSE 'failed' END, worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'error', $2, 'retry_at', run_at)"
        "           OPERATOR(pg_catalog.||) " RUN_FIGURES
        "  FROM retried"
        "  UNION ALL"
        "  SELECT job_id, pg_catalog.clock_timestamp(), CASE WHEN $4 THEN 'expired' ELSE 'failed' END, worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'error', $2)"
        "           OPERATOR(pg_catalog.||) " RUN_FIGURES
        "  FROM dead"
        "  UNION ALL"
        "  SELECT job_id, pg_catalog.clock_timestamp() + interval '1 microsecond', 'dead', worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'reason', " DEAD_REASON ", 'error', $2)"
        "  FROM dead), "
        "changes AS ("
        "  SELECT job_id, queue_id, group_key, state FROM retried"
        "  UNION ALL SELECT job_id, queue_id, group_key, 'dead' FROM dead), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*), count(*) FILTER (WHERE state = 'ready'),"
                      " count(*) FILTER (WHERE state = 'scheduled'), count(*) FILTER (WHERE state = 'dead'),"
                      " count(*), count(*) FILTER (WHERE $4) FROM changes GROUP BY queue_id",
                      {"running", "pending", "scheduled", "dead", "failed", "expired"}) +
        ") SELECT job_id, queue_id, group_key, state FROM changes";
}

#undef RUN_FIGURES
#undef DEAD_REASON

static std::vector<Changed> fail_jobs(const std::vector<pg_uuid_t> &ids, const std::optional<std::string> &error,
                                      const std::optional<std::string> &worker, bool expire, bool skip_locked = false,
                                      Datum stats = (Datum)0, bool stats_null = true, bool final = false,
                                      std::optional<int32> attempt = std::nullopt) {
    static const std::initializer_list<Oid> types = {UUIDARRAYOID, TEXTOID, TEXTOID, BOOLOID, JSONBOID, BOOLOID, INT4OID};
    static const std::string sql[2][2] = {{fail_jobs_sql(false, false), fail_jobs_sql(false, true)},
                                          {fail_jobs_sql(true, false), fail_jobs_sql(true, true)}};
    static Statement stmts[2][2] = {{{sql[0][0].c_str(), types}, {sql[0][1].c_str(), types}},
                                    {{sql[1][0].c_str(), types}, {sql[1][1].c_str(), types}}};
    Params p;
    p.uuid_array(0, ids).text(1, error).text(2, worker).boolean(3, expire);
    if (stats_null) p.null(4);
    else p.datum(4, stats);
    p.boolean(5, final).int4(6, attempt);
    return changed_rows(stmts[skip_locked][catalog_at_0_3()].run(p));
}

// The groups whose head left (finished, or went back to scheduled) need a new head.
std::set<GroupKey> groups_losing_head(const std::vector<Changed> &changes) {
    std::set<GroupKey> out;
    for (const auto &c : changes)
        if (c.group_key && c.state != "ready") out.insert({c.queue_id, *c.group_key});
    return out;
}

// Rows of job_id, queue_id, group_key, state, worker_id and the queue's retention_days.
static std::vector<JobRef> job_refs(const spi::Rows &rows) {
    std::vector<JobRef> out;
    for (uint64 r = 0; r < rows.size(); ++r)
        out.push_back(JobRef{*rows.uuid(r, 0), *rows.int4(r, 1), rows.text(r, 2), *rows.text(r, 3), rows.text(r, 4),
                             *rows.int4(r, 5)});
    return out;
}

std::vector<JobRef> find_jobs(const std::vector<pg_uuid_t> &ids, bool lock) {
    static Statement read(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = ANY($1)",
        {UUIDARRAYOID});
    static Statement locking(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = ANY($1)"
        " ORDER BY j.job_id FOR UPDATE OF j",
        {UUIDARRAYOID});
    return job_refs((lock ? locking : read).run(Params().uuid_array(0, ids)));
}

std::optional<std::string> finished_status(const pg_uuid_t &id) {
    static Statement stmt("SELECT status FROM conveyor.job_history WHERE job_id = $1", {UUIDOID});
    auto rows = stmt.run(Params().uuid(0, id));
    if (rows.size() == 0) return std::nullopt;
    return rows.text(0, 0);
}

std::string public_status(const std::string &state) { return state == "running" ? "running" : "pending"; }

// The error for acting on a job that is not running (unknown: 42704, otherwise 55000).
static Error not_running(const pg_uuid_t &id, const std::optional<JobRef> &ref) {
    std::string idt = uuid_text(id);
    if (ref)
        return Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                     fmt::format("job {} is not running (it is {})", idt, public_status(ref->state)),
                     "Only a running job can be acknowledged.");
    if (auto status = finished_status(id))
        return Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} is already finished ({})", idt, *status),
                     "", "Pass worker_id to have ack return false instead of raising for lost leases.");
    return Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", idt));
}

static Error changed_while_acknowledged() {
    return Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "a job changed state while it was being acknowledged", "",
                 "Another session acknowledged, cancelled or reaped it; retry.");
}

void ensure_partitions_for(const std::vector<JobRef> &jobs) {
    // A job that dies lands at its queue's dead_retention_days: the longest retention covers both.
    int32 retention = longest_retention();
    for (const auto &j : jobs) retention = std::max(retention, j.retention_days);
    ensure_history_partitions(retention);
    ensure_event_partitions();
}

// Acknowledging jobs (acknowledge_success, acknowledge_failure) returns how many were. Without a
// worker every job must be running (else 42704/55000); with one, jobs no longer leased to it are
// skipped.

// Successful acks, the hot path: complete the jobs first (the DELETE locks their rows), then take
// the groups that lost their running job and give each its next head; rows before groups, as
// everywhere. Only ids that did not complete are looked up, to tell "no longer yours" (false) from
// an unknown or not running job (an error).
static int64 acknowledge_success(const std::vector<pg_uuid_t> &ids, Datum stats, bool stats_null,
                                 const std::optional<std::string> &worker, std::optional<int32> attempt = std::nullopt) {
    ensure_history_partitions(longest_retention());
    ensure_event_partitions();
    std::vector<Changed> changes = complete_jobs(ids, worker, stats, stats_null, attempt);
    report_status(changes);
    if (changes.size() != ids.size()) {
        std::set<pg_uuid_t, UuidLess> done;
        for (const auto &c : changes) done.insert(c.id);
        std::vector<pg_uuid_t> missing;
        for (const auto &id : ids)
            if (!done.count(id)) missing.push_back(id);
        std::map<pg_uuid_t, JobRef, UuidLess> found;
        for (auto &j : find_jobs(missing)) found.emplace(j.id, std::move(j));
        for (const auto &id : missing) {
            auto it = found.find(id);
            std::optional<JobRef> ref = it == found.end() ? std::nullopt : std::optional<JobRef>(it->second);
            if (!worker && ref && ref->state == "running") throw changed_while_acknowledged();
            if (!worker) throw not_running(id, ref);
            if (!ref && !finished_status(id)) throw not_running(id, ref);  // unknown is an error either way
        }
    }
    std::set<GroupKey> groups = groups_losing_head(changes);
    lock_groups(groups);
    fill_group_heads(groups);
    return (int64)changes.size();
}

// Failed acks: the jobs are looked up and locked first (rows before groups), then their groups are
// locked, and each job is rescheduled with backoff or dies at max_attempts; retry false: each dies now.
static int64 acknowledge_failure(const std::vector<pg_uuid_t> &ids, const std::optional<std::string> &error,
                                 const std::optional<std::string> &worker, Datum stats = (Datum)0,
                                 bool stats_null = true, bool retry = true,
                                 std::optional<int32> attempt = std::nullopt) {
    std::map<pg_uuid_t, JobRef, UuidLess> found;
    for (auto &j : find_jobs(ids, true)) found.emplace(j.id, std::move(j));
    std::vector<JobRef> targets;
    for (const auto &id : ids) {
        auto it = found.find(id);
        std::optional<JobRef> ref = it == found.end() ? std::nullopt : std::optional<JobRef>(it->second);
        bool ours = ref && ref->state == "running" && (!worker || ref->worker_id == worker);
        if (!ours) {
            if (!worker) throw not_running(id, ref);
            if (!ref && !finished_status(id)) throw not_running(id, ref);  // unknown is an error either way
            continue;
        }
        targets.push_back(*ref);
    }
    if (targets.empty()) return 0;
    ensure_partitions_for(targets);
    std::set<GroupKey> groups;
    std::vector<pg_uuid_t> target_ids;
    for (const auto &t : targets) {
        target_ids.push_back(t.id);
        if (t.group_key) groups.insert({t.queue_id, *t.group_key});
    }
    lock_groups(groups);
    std::vector<Changed> changes = fail_jobs(target_ids, error, worker, false, false, stats, stats_null, !retry, attempt);
    report_status(changes);
    report_dead_jobs(changes, retry ? "max_attempts reached" : "not retryable", error);
    fill_group_heads(groups_losing_head(changes));
    if (!worker && changes.size() != target_ids.size()) throw changed_while_acknowledged();
    return (int64)changes.size();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_ack) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    require(fcinfo, 1, "success");
    bool success = PG_GETARG_BOOL(1);
    auto error = arg_text(fcinfo, 2);
    Jsonb *stats = arg_jsonb(fcinfo, 3);
    auto worker = optional_key(fcinfo, 4, "worker_id", true);
    // retry (0.3): the function of a database at 0.2 passes five arguments.
    bool retry = true;
    if (PG_NARGS() > 5) {
        require(fcinfo, 5, "retry");
        retry = PG_GETARG_BOOL(5);
    }
    auto attempt = lease_attempt(fcinfo, 6);
    if (attempt && !worker)
        throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "worker_id must not be NULL when attempt is given",
                    "A lease is the worker_id and the attempt that dequeue reported.");
    spi::Connection spi;
    int64 n = success ? acknowledge_success({id}, PointerGetDatum(stats), stats == nullptr, worker, attempt)
                      : acknowledge_failure({id}, error, worker, PointerGetDatum(stats), stats == nullptr, retry, attempt);
    spi.finish();
    PG_RETURN_BOOL(n == 1);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_ack_many) {
    require(fcinfo, 0, "job_ids");
    require(fcinfo, 1, "success");
    ArrayType *arr = pg_guard([&] { return PG_GETARG_ARRAYTYPE_P(0); });
    bool success = PG_GETARG_BOOL(1);
    auto error = arg_text(fcinfo, 2);
    auto worker = optional_key(fcinfo, 3, "worker_id", true);
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] { deconstruct_array(arr, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, &nulls, &n); });
    std::vector<pg_uuid_t> ids;
    std::set<pg_uuid_t, UuidLess> seen;
    for (int i = 0; i < n; ++i) {
        if (nulls[i]) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("job_ids[{}] must not be NULL", i + 1));
        const pg_uuid_t &id = *DatumGetUUIDP(elems[i]);
        if (seen.insert(id).second) ids.push_back(id);
    }
    spi::Connection spi;
    int64 count = 0;
    if (!ids.empty())
        count = success ? acknowledge_success(ids, (Datum)0, true, worker) : acknowledge_failure(ids, error, worker);
    spi.finish();
    PG_RETURN_INT32((int32)count);
}

int64 reap_expired(std::optional<int32> queue_id, int limit) {
    // Two statements, so each has a plan that uses jobs_running for its case.
    static Statement one_queue(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id)"
        " WHERE j.queue_id = $1 AND j.state = 'running' AND j.lease_until < pg_catalog.now()"
        " ORDER BY j.lease_until LIMIT $2",
        {INT4OID, INT4OID});
    static Statement all_queues(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id)"
        " WHERE j.state = 'running' AND j.lease_until < pg_catalog.now() ORDER BY j.lease_until LIMIT $1",
        {INT4OID});
    auto rows = queue_id ? one_queue.run(Params().int4(0, *queue_id).int4(1, limit))
                         : all_queues.run(Params().int4(0, limit));
    if (rows.size() == 0) return 0;
    std::vector<JobRef> jobs = job_refs(rows);
    ensure_partitions_for(jobs);
    std::set<GroupKey> groups;
    for (const auto &j : jobs)
        if (j.group_key) groups.insert({j.queue_id, *j.group_key});
    std::set<GroupKey> held = try_lock_groups(groups);
    std::vector<pg_uuid_t> ids;
    for (const auto &j : jobs)
        if (!j.group_key || held.count({j.queue_id, *j.group_key})) ids.push_back(j.id);
    if (ids.empty()) return 0;
    std::vector<Changed> changes = fail_jobs(ids, std::string("lease expired"), std::nullopt, true, true);
    report_status(changes);
    report_dead_jobs(changes, "max_attempts reached", std::string("lease expired"));
    fill_group_heads(groups_losing_head(changes));
    return (int64)changes.size();
}

// Reaps in passes of 1000 until a pass finds fewer; returns how many it expired.
static int64 reap_all(std::optional<int32> queue_id) {
    int64 total = 0;
    for (;;) {
        int64 n = reap_expired(queue_id, 1000);
        total += n;
        if (n < 1000) return total;
    }
}

int64 expire_leases() {
    int64 n = reap_all(std::nullopt);
    if (n > 0) monitor::record_event("leases_expired", "queue", std::nullopt, fmt::format("{{\"jobs\": {}}}", n));
    return n;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_reap) {
    auto queue_name = arg_text(fcinfo, 0);
    spi::Connection spi;
    std::optional<int32> queue_id;
    if (queue_name) queue_id = load_queue(*queue_name).id;
    int64 total = reap_all(queue_id);
    if (total > 0)
        monitor::record_event("leases_expired", "queue", queue_name, fmt::format("{{\"jobs\": {}}}", total));
    spi.finish();
    PG_RETURN_INT32((int32)total);
}

// ---------------------------------------------------------------------------------------------------
// Leases held by workers: heartbeat and release

CONVEYOR_AUDITED_FUNCTION(conveyor_heartbeat) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    auto extend = optional_int(fcinfo, 2, "extend_seconds", 1, 7 * 86400);
    auto attempt = lease_attempt(fcinfo, 3);
    spi::Connection spi;
    static Statement stmt(
        "UPDATE conveyor.jobs j SET lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs =>"
        "   COALESCE($3, q.lease_seconds))"
        " FROM conveyor.queues q"
        " WHERE j.job_id = $1 AND j.state = 'running' AND j.worker_id = $2 AND ($4::int IS NULL OR j.attempt = $4)"
        "   AND q.queue_id = j.queue_id"
        " RETURNING j.lease_until",
        {UUIDOID, TEXTOID, INT4OID, INT4OID});
    auto rows = stmt.run(Params().uuid(0, id).text(1, worker).int4(2, extend).int4(3, attempt));
    if (rows.size() == 0) {
        if (find_jobs({id}).empty() && !finished_status(id))
            throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
        spi.finish();
        PG_RETURN_NULL();
    }
    TimestampTz until = DatumGetTimestampTz(rows.datum(0, 0));
    spi.finish();
    PG_RETURN_TIMESTAMPTZ(until);
}

// Puts a running job of this worker (on this attempt, if given) back as pending, due after delay
// seconds, without counting the attempt it used (release). Callers hold the group's lock.
static std::vector<Changed> requeue_running(const pg_uuid_t &id, const std::string &worker, int32 delay,
                                            std::optional<int32> attempt) {
    static const std::string sql =
        "WITH r AS ("
        "  UPDATE conveyor.jobs j SET state = CASE WHEN $3 > 0 THEN 'scheduled' ELSE 'ready' END,"
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs => $3), attempt = j.attempt - 1,"
        "    worker_id = NULL, lease_until = NULL"
        "  WHERE j.job_id = $1 AND j.state = 'running' AND j.worker_id = $2 AND ($4::int IS NULL OR j.attempt = $4)"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'released', $2, pg_catalog.jsonb_build_object('run_at', run_at)"
        "  FROM r), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*), count(*) FILTER (WHERE state = 'ready'),"
                      " count(*) FILTER (WHERE state = 'scheduled') FROM r GROUP BY queue_id",
                      {"running", "pending", "scheduled"}) +
        ") SELECT job_id, queue_id, group_key, state FROM r";
    static Statement stmt(sql.c_str(), {UUIDOID, TEXTOID, INT4OID, INT4OID});
    return changed_rows(stmt.run(Params().uuid(0, id).text(1, worker).int4(2, delay).int4(3, attempt)));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_release) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    require(fcinfo, 2, "delay_seconds");
    int32 delay = PG_GETARG_INT32(2);
    check_delay(delay, "delay_seconds");
    auto attempt = lease_attempt(fcinfo, 3);
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty()) {
        if (!finished_status(id)) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
        spi.finish();
        PG_RETURN_BOOL(false);
    }
    ensure_event_partitions();
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = requeue_running(id, worker, delay, attempt);
    report_status(changes);
    fill_group_heads(groups_losing_head(changes));
    spi.finish();
    PG_RETURN_BOOL(!changes.empty());
}

// ---------------------------------------------------------------------------------------------------
// Operator actions: dead_letter, cancel (retry, requeue, reschedule: operator.cpp)

// Moves a pending or running job to history as dead or cancelled, with the operator's reason (and,
// in a database at 0.3, the details, kept in its history row). at_0_3: see catalog_at_0_3().
static std::string finish_job_sql(bool at_0_3) {
    return std::string(
        "WITH d AS ("
        "  DELETE FROM conveyor.jobs j USING conveyor.queues q WHERE j.job_id = $1 AND q.queue_id = j.queue_id"
        "  RETURNING j.*, ") + (at_0_3 ? "CASE WHEN $2 = 'dead' THEN q.dead_retention_days ELSE q.retention_days END"
                                     : "q.retention_days") + " AS retention_days), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + history_columns_for(at_0_3) + (at_0_3 ? ", reason, details" : "") + ")"
        "  SELECT job_id, queue_id, $2, priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, COALESCE($3, last_error), created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)" + progress_values(at_0_3) +
        (at_0_3 ? ", $3, $4::jsonb" : "") +
        "  FROM d), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), $2, worker_id,"
        "         pg_catalog.jsonb_build_object('reason', $3, 'previous_status',"
        "           CASE WHEN state = 'running' THEN 'running' ELSE 'pending' END)"
        "           OPERATOR(pg_catalog.||) CASE WHEN $4::jsonb IS NULL THEN '{}'::jsonb"
        "             ELSE pg_catalog.jsonb_build_object('details', $4::jsonb) END"
        "  FROM d), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*) FILTER (WHERE state IN ('ready', 'waiting')),"
                      " -count(*) FILTER (WHERE state = 'scheduled'), -count(*) FILTER (WHERE state = 'running'),"
                      " count(*) FILTER (WHERE $2 = 'dead'), count(*) FILTER (WHERE $2 = 'cancelled')"
                      " FROM d GROUP BY queue_id",
                      {"pending", "scheduled", "running", "dead", "cancelled"}) +
        ") SELECT job_id, queue_id, group_key, $2 FROM d";
}

static std::vector<Changed> finish_job(const pg_uuid_t &id, const std::string &status, const std::optional<std::string> &reason,
                                       Jsonb *details) {
    static const std::string sql[2] = {finish_job_sql(false), finish_job_sql(true)};
    static Statement stmts[2] = {{sql[0].c_str(), {UUIDOID, TEXTOID, TEXTOID, JSONBOID}},
                                 {sql[1].c_str(), {UUIDOID, TEXTOID, TEXTOID, JSONBOID}}};
    Params p;
    p.uuid(0, id).text(1, status).text(2, reason);
    if (details) p.datum(3, PointerGetDatum(details));
    else p.null(3);
    return changed_rows(stmts[catalog_at_0_3()].run(p));
}

static bool end_job(FunctionCallInfo fcinfo, const std::string &status) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    auto reason = arg_text(fcinfo, 1);
    // dead_letter's details (0.3; the function of a database at 0.2 passes two arguments).
    Jsonb *details = status == "dead" && PG_NARGS() > 2 ? arg_jsonb(fcinfo, 2) : nullptr;
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty()) {
        if (auto done = finished_status(id))
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} is already finished ({})", uuid_text(id), *done));
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    }
    ensure_partitions_for(jobs);
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = finish_job(id, status, reason, details);
    if (changes.empty())
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} finished concurrently", uuid_text(id)), "", "Retry.");
    report_status(changes);
    fill_group_heads(groups_losing_head(changes));
    if (status == "dead") report_dead_jobs(changes, "dead_letter", reason);
    spi.finish();
    return true;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_dead_letter) {
    required_text(fcinfo, 1, "reason");
    PG_RETURN_BOOL(end_job(fcinfo, "dead"));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_cancel) { PG_RETURN_BOOL(end_job(fcinfo, "cancelled")); }

} // namespace conveyor::queue
