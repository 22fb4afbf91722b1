// Enqueueing: conveyor.enqueue and conveyor.enqueue_batch. A due job heads its group when the group
// has no ready or running job, or when it runs before the group's ready head (which steps back to
// waiting); otherwise it waits. A dedup key held by a pending or running job returns that job.
#include <algorithm>

#include "core/jsonb.hpp"
#include "queue/internal.hpp"

namespace conveyor::queue {

struct NewJob {
    Datum payload = (Datum)0;  // jsonb
    std::optional<std::string> job_type, group_key, dedup_key;
    int32 priority = 5;
    TimestampTz run_at = 0;
    int32 max_attempts = 0;
};

static std::string where_in_batch(int ord) { return ord >= 0 ? fmt::format("jobs[{}]: ", ord) : std::string(); }

// Checks one job against its queue's rules; `ord` names the batch element (-1 for single enqueue).
static void validate_job(const Queue &q, const NewJob &job, Jsonb *payload, int ord) {
    std::string at = where_in_batch(ord);
    if (job.priority < 1 || job.priority > 10)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}priority must be between 1 and 10, not {}", at, job.priority),
                    "", "10 runs first; the default is 5.");
    if (job.max_attempts < 1 || job.max_attempts > 1000)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}max_attempts must be between 1 and 1000, not {}", at, job.max_attempts));
    if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}payload must be a JSON object, not {}", at,
                                                                 JB_ROOT_IS_ARRAY(payload) && !JB_ROOT_IS_SCALAR(payload) ? "an array" : "a scalar"));
    if (q.job_types) {
        if (!job.job_type)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}job_type is required by queue {}", at, quoted(q.name)),
                        fmt::format("Allowed job types: {}.", fmt::join(*q.job_types, ", ")));
        if (std::find(q.job_types->begin(), q.job_types->end(), *job.job_type) == q.job_types->end())
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("{}unknown job_type {} for queue {}", at, quoted(*job.job_type), quoted(q.name)),
                        fmt::format("Allowed job types: {}.", fmt::join(*q.job_types, ", ")));
    }
    if (q.required_keys) {
        for (const auto &key : *q.required_keys) {
            JsonbValue k;
            k.type = jbvString;
            k.val.string.val = const_cast<char *>(key.c_str());
            k.val.string.len = (int)key.size();
            JsonbValue *found = pg_guard([&] { return findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k); });
            if (!found)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                            fmt::format("{}payload is missing required key {}", at, quoted(key)),
                            fmt::format("Queue {} requires: {}.", quoted(q.name), fmt::join(*q.required_keys, ", ")));
        }
    }
    if (q.payload_schema) check_payload_schema(q, payload, at);
}

void check_job(const std::string &queue, Jsonb *payload, const std::optional<std::string> &job_type,
               int32 priority, std::optional<int32> max_attempts) {
    Queue q = cached_queue(queue);
    NewJob job;
    job.payload = PointerGetDatum(payload);
    job.job_type = job_type;
    job.priority = priority;
    job.max_attempts = max_attempts.value_or(q.max_attempts);
    validate_job(q, job, payload, -1);
}

// The ready or running job of each group, for groups of one queue.
struct GroupHead {
    pg_uuid_t id;
    bool running;
    int32 priority;
    TimestampTz run_at;
};

static std::map<std::string, GroupHead> group_heads(int32 queue_id, const std::vector<std::string> &groups) {
    static Statement stmt(
        "SELECT group_key, job_id, state = 'running', priority::int, run_at FROM conveyor.jobs"
        " WHERE queue_id = $1 AND group_key = ANY($2) AND state IN ('ready', 'running')",
        {INT4OID, TEXTARRAYOID});
    auto rows = stmt.run(Params().int4(0, queue_id).text_array(1, groups));
    std::map<std::string, GroupHead> out;
    for (uint64 r = 0; r < rows.size(); ++r)
        out.emplace(*rows.text(r, 0), GroupHead{*rows.uuid(r, 1), *rows.boolean(r, 2), *rows.int4(r, 3),
                                                (TimestampTz)*rows.int8(r, 4)});
    return out;
}

// Whether a new due job should run before a group's ready head: higher priority, or the same
// priority and due earlier. Dequeue order inside a group then matches the queue's order.
static bool runs_before(int32 priority, TimestampTz run_at, const GroupHead &head) {
    return priority > head.priority || (priority == head.priority && run_at < head.run_at);
}

// Steps a ready head back to waiting so a better job can head its group. False when a worker
// claimed it meanwhile (then the group is busy and the new job waits).
static bool demote_head(const pg_uuid_t &id) {
    // SKIP LOCKED: a head locked by a worker's claim is taken, and the new job waits behind it.
    static Statement stmt(
        "UPDATE conveyor.jobs j SET state = 'waiting' FROM ("
        "  SELECT job_id FROM conveyor.jobs WHERE job_id = $1 AND state = 'ready' FOR UPDATE SKIP LOCKED) h"
        " WHERE j.job_id = h.job_id",
        {UUIDOID});
    return stmt.run(Params().uuid(0, id)).affected() == 1;
}


// Inserts rows given as parallel arrays; returns how many were inserted. The counts are written by
// the same statement. In a database at 0.3 the trail's 'enqueued' event is not a row of job_events:
// job_events() derives it from the job (its created_at, priority, group_key and enqueued_run_at,
// which holds the run_at it was enqueued with, and only when the queue's event_trail is 'all', $11).
// The counts come from parameters ($12 pending, $13 scheduled, $14 all), since every row is inserted
// or the caller raises an error, which undoes them; the statement adds them to this backend's
// counter row of the minute and its second column says whether that row existed (when not, the
// caller adds them with add_enqueue_counts, once a minute). may_conflict: some row has a group or dedup key and
// the insert is ON CONFLICT DO NOTHING, reporting how many it inserted; the others cannot conflict
// (a fresh id), and a plain INSERT skips the speculative insertion into each unique index.
// A database not yet updated from 0.2 has no enqueued_run_at: the event is written as before.
static std::string insert_jobs_sql(bool at_0_3, bool may_conflict) {
    static const char *rows =
        "  FROM ROWS FROM (pg_catalog.unnest($2::uuid[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int[]),"
        "                  pg_catalog.unnest($5::timestamptz[]), pg_catalog.unnest($6::text[]), pg_catalog.unnest($7::text[]),"
        "                  pg_catalog.unnest($8::text[]), pg_catalog.unnest($9::jsonb[]), pg_catalog.unnest($10::int[]))"
        "       AS u(job_id, state, priority, run_at, job_type, group_key, dedup_key, payload, max_attempts)";
    if (!at_0_3)
        return std::string(
                   "WITH ins AS ("
                   "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
                   "                             payload, max_attempts, created_at)"
                   "  SELECT u.job_id, $1, u.state, u.priority::smallint, u.run_at, u.job_type, u.group_key, u.dedup_key,"
                   "         u.payload, u.max_attempts, pg_catalog.now()") +
               rows +
               "  ON CONFLICT DO NOTHING"
               "  RETURNING job_id, queue_id, state, priority, run_at, group_key), "
               "ev AS ("
               "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
               "  SELECT job_id, pg_catalog.clock_timestamp(), 'enqueued',"
               "         pg_catalog.jsonb_build_object('priority', priority, 'run_at', run_at, 'group_key', group_key)"
               "  FROM ins WHERE $11), "
               "cnt AS (" +
               counts_upsert("SELECT queue_id, count(*) FILTER (WHERE state <> 'scheduled'), count(*) FILTER (WHERE state = 'scheduled'),"
                             " count(*) FROM ins GROUP BY queue_id",
                             {"pending", "scheduled", "enqueued"}) +
               ") SELECT count(*) FROM ins";
    return std::string(
               "WITH ins AS ("
               "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
               "                             payload, max_attempts, created_at, enqueued_run_at)"
               "  SELECT u.job_id, $1, u.state, u.priority::smallint, u.run_at, u.job_type, u.group_key, u.dedup_key,"
               "         u.payload, u.max_attempts, pg_catalog.now(), CASE WHEN $11 THEN u.run_at END") +
           rows + (may_conflict ? "  ON CONFLICT DO NOTHING RETURNING 1" : "") + "), " +
           counts_update_values("cnt", "$1", {{"pending", "$12"}, {"scheduled", "$13"}, {"enqueued", "$14"}}) + " " +
           (may_conflict ? "SELECT (SELECT count(*) FROM ins)" : "SELECT $14") + ", (SELECT count(*) FROM cnt)";
}

struct JobRows {
    std::vector<pg_uuid_t> ids;
    std::vector<std::string> states;
    std::vector<int32> priorities;
    std::vector<TimestampTz> run_ats;
    std::vector<Datum> payloads;
    std::vector<int32> max_attempts;
    // Nullable text columns are passed as arrays with NULL elements.
    std::vector<std::optional<std::string>> job_types, group_keys, dedup_keys;
};

static Datum nullable_text_array(const std::vector<std::optional<std::string>> &v) {
    size_t n = v.size();
    std::vector<Datum> d(n);
    std::unique_ptr<bool[]> nulls(new bool[n + 1]());
    for (size_t k = 0; k < n; ++k) {
        if (!v[k]) {
            nulls[k] = true;
            continue;
        }
        const char *p = v[k]->data();
        size_t len = v[k]->size();
        d[k] = pg_guard([&] { return PointerGetDatum(cstring_to_text_with_len(p, (int)len)); });
    }
    Datum *dp = d.data();
    bool *np = nulls.get();
    return pg_guard([&] {
        int dims[1] = {(int)n};
        int lbs[1] = {1};
        return PointerGetDatum(construct_md_array(dp, np, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
    });
}

static int64 insert_jobs(const Queue &q, const JobRows &rows, bool may_conflict) {
    static const std::initializer_list<Oid> types = {INT4OID, UUIDARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
                                                     TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INT4ARRAYOID,
                                                     BOOLOID, INT8OID, INT8OID, INT8OID};
    static const std::string sql[2][2] = {{insert_jobs_sql(false, false), insert_jobs_sql(false, true)},
                                          {insert_jobs_sql(true, false), insert_jobs_sql(true, true)}};
    static Statement stmts[2][2] = {{{sql[0][0].c_str(), types}, {sql[0][1].c_str(), types}},
                                    {{sql[1][0].c_str(), types}, {sql[1][1].c_str(), types}}};
    bool at_0_3 = catalog_at_0_3();
    if (!at_0_3 && q.event_trail == "all") ensure_event_partitions();
    Params p;
    p.int4(0, q.id)
        .uuid_array(1, rows.ids)
        .text_array(2, rows.states)
        .int4_array(3, rows.priorities)
        .timestamptz_array(4, rows.run_ats)
        .datum(5, nullable_text_array(rows.job_types))
        .datum(6, nullable_text_array(rows.group_keys))
        .datum(7, nullable_text_array(rows.dedup_keys))
        .jsonb_array(8, rows.payloads)
        .int4_array(9, rows.max_attempts)
        .boolean(10, q.event_trail == "all");
    int64 scheduled = std::count(rows.states.begin(), rows.states.end(), "scheduled"), all = (int64)rows.ids.size();
    p.int8(11, all - scheduled).int8(12, scheduled).int8(13, all);
    auto res = stmts[at_0_3][may_conflict].run(p);
    if (at_0_3 && *res.int8(0, 1) == 0) add_enqueue_counts(q.id, all - scheduled, scheduled, all);
    return *res.int8(0, 0);
}

// One job: what insert_jobs_sql does, shaped for the hottest producer path. Every value is known
// here, so the counts take theirs from parameters instead of reading the inserted row back: the
// writes are independent CTEs that the executor runs without a RETURNING list or a CTE scan between
// them (and the second column of the result says whether the counter row existed, as there). A job with neither group nor dedup key is a plain insert (its fresh id cannot conflict, and a
// plain insert skips the speculative-insertion checks of the unique indexes). One that may conflict
// keeps ON CONFLICT DO NOTHING and reports whether it inserted; when it did not, the caller raises an
// error, which also undoes the counts written beside it. The 'enqueued' event: see insert_jobs_sql
// ($13 is enqueued_run_at, NULL without the trail; with_event: a database at 0.2 with the trail on).
static std::string insert_one_sql(bool at_0_3, bool with_event, bool may_conflict) {
    return std::string(
               "WITH ins AS ("
               "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
               "                             payload, max_attempts, created_at") +
           (at_0_3 ? ", enqueued_run_at" : "") + ")  VALUES ($2, $1, $3, $4::smallint, $5, $6, $7, $8, $9, $10, pg_catalog.now()" +
           (at_0_3 ? ", $13" : "") + ")" + (may_conflict ? "  ON CONFLICT DO NOTHING RETURNING 1" : "") + "), " +
           (with_event ? "ev AS ("
                         "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
                         "  VALUES ($2, pg_catalog.clock_timestamp(), 'enqueued',"
                         "          pg_catalog.jsonb_build_object('priority', $4, 'run_at', $5, 'group_key', $7))), "
                       : "") +
           counts_update_values("cnt", "$1", {{"pending", "$11"}, {"scheduled", "$12"}, {"enqueued", "1"}}) + " " +
           (may_conflict ? "SELECT (SELECT count(*) FROM ins)" : "SELECT 1::bigint") + ", (SELECT count(*) FROM cnt)";
}

static bool insert_one(const Queue &q, const pg_uuid_t &id, const std::string &state, const NewJob &job) {
    static const std::initializer_list<Oid> types_0_2 = {INT4OID, UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID,
                                                         TEXTOID, TEXTOID, JSONBOID, INT4OID, INT8OID, INT8OID};
    static const std::initializer_list<Oid> types = {INT4OID, UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID, TEXTOID,
                                                     TEXTOID, JSONBOID, INT4OID, INT8OID, INT8OID, TIMESTAMPTZOID};
    // [kind][may_conflict], kind: 0 at 0.2 without the trail, 1 at 0.2 with it, 2 at 0.3.
    static const std::string sql[3][2] = {{insert_one_sql(false, false, false), insert_one_sql(false, false, true)},
                                          {insert_one_sql(false, true, false), insert_one_sql(false, true, true)},
                                          {insert_one_sql(true, false, false), insert_one_sql(true, false, true)}};
    static Statement stmts[3][2] = {{{sql[0][0].c_str(), types_0_2}, {sql[0][1].c_str(), types_0_2}},
                                    {{sql[1][0].c_str(), types_0_2}, {sql[1][1].c_str(), types_0_2}},
                                    {{sql[2][0].c_str(), types}, {sql[2][1].c_str(), types}}};
    bool trail = q.event_trail == "all";
    bool at_0_3 = catalog_at_0_3();
    bool may_conflict = job.group_key || job.dedup_key;
    int64 pending = state == "scheduled" ? 0 : 1;
    if (trail && !at_0_3) ensure_event_partitions();
    Params p;
    p.int4(0, q.id).uuid(1, id).text(2, state).int4(3, job.priority);
    p.datum(4, TimestampTzGetDatum(job.run_at)).text(5, job.job_type).text(6, job.group_key).text(7, job.dedup_key);
    p.datum(8, job.payload).int4(9, job.max_attempts).int8(10, pending).int8(11, 1 - pending);
    if (at_0_3) {
        if (trail) p.datum(12, TimestampTzGetDatum(job.run_at));
        else p.null(12);
    }
    auto res = stmts[at_0_3 ? 2 : trail][may_conflict].run(p);
    if (*res.int8(0, 1) == 0) add_enqueue_counts(q.id, pending, 1 - pending, 1);
    return *res.int8(0, 0) == 1;
}

static Error concurrent_change(const std::string &what) {
    return Error(ERRCODE_T_R_SERIALIZATION_FAILURE, fmt::format("could not enqueue: {} changed concurrently", what),
                 "", "Retry the transaction.");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_enqueue) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    Jsonb *payload = arg_jsonb(fcinfo, 1);
    if (!payload) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "payload must not be NULL", "", "Pass '{}' for an empty payload.");
    NewJob job;
    job.payload = PointerGetDatum(payload);
    job.job_type = optional_key(fcinfo, 2, "job_type", true);
    job.group_key = optional_key(fcinfo, 3, "group_key", true);
    require(fcinfo, 4, "priority");
    job.priority = PG_GETARG_INT32(4);
    job.run_at = PG_ARGISNULL(5) ? tx_now() : check_time(PG_GETARG_TIMESTAMPTZ(5), "run_at");
    job.dedup_key = optional_key(fcinfo, 6, "dedup_key", true);
    auto max_attempts = arg_int(fcinfo, 7);

    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = cached_queue(queue_name);
    job.max_attempts = max_attempts.value_or(q.max_attempts);
    validate_job(q, job, payload, -1);

    if (job.dedup_key) {
        lock_dedup_keys(q.id, {*job.dedup_key});
        if (auto existing = active_job_with_dedup_key(q.id, *job.dedup_key)) {
            Datum values[2] = {uuid_datum(*existing), BoolGetDatum(true)};
            bool nulls[2] = {false, false};
            out.add(values, nulls);
            spi.finish();
            return (Datum)0;
        }
    }
    bool due = job.run_at <= tx_now();
    std::string state = due ? "ready" : "scheduled";
    if (due && job.group_key) {
        lock_groups({{q.id, *job.group_key}});
        auto heads = group_heads(q.id, {*job.group_key});
        if (!heads.empty()) {
            const GroupHead &head = heads.begin()->second;
            bool first = !head.running && runs_before(job.priority, job.run_at, head) && demote_head(head.id);
            if (!first) state = "waiting";
        }
    }
    pg_uuid_t id = uuid_v7();
    if (!insert_one(q, id, state, job)) throw concurrent_change("a job of the same group or dedup key");
    if (due) notify_queue(q);
    if (q.status_notify) status_changed(q.id, {id});

    Datum values[2] = {uuid_datum(id), BoolGetDatum(false)};
    bool nulls[2] = {false, false};
    out.add(values, nulls);
    spi.finish();
    return (Datum)0;
}

// Reads and checks element `ord` of enqueue_batch's jobs array: the job it describes, with the
// queue's defaults and `now` for what it leaves out.
static NewJob read_batch_job(const Queue &q, const JsonbValue &e, int ord, TimestampTz now) {
    const std::string at = where_in_batch(ord);
    if (e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}must be a JSON object, not {}", at, jsonb_type_name(e)));
    Jsonb *obj = (Jsonb *)DatumGetPointer(jsonb_value_datum(e));
    NewJob job;
    job.priority = 5;
    job.run_at = now;
    job.max_attempts = q.max_attempts;
    Jsonb *payload = nullptr;
    for (const auto &f : jsonb_object_fields(obj, at)) {
        const JsonbValue &v = f.value;
        auto text_field = [&](std::optional<std::string> &dst) {
            if (v.type == jbvNull) return;
            if (v.type != jbvString)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}{} must be a string, not {}", at, f.key, jsonb_type_name(v)));
            dst = jsonb_string(v);
            check_key(*dst, at + f.key);
        };
        if (f.key == "payload") {
            if (v.type == jbvNull) continue;
            payload = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
        } else if (f.key == "job_type") text_field(job.job_type);
        else if (f.key == "group_key") text_field(job.group_key);
        else if (f.key == "dedup_key") text_field(job.dedup_key);
        else if (f.key == "priority") {
            if (v.type != jbvNull) job.priority = (int32)jsonb_int(v, at + "priority", 1, 10);
        } else if (f.key == "max_attempts") {
            if (v.type != jbvNull) job.max_attempts = (int32)jsonb_int(v, at + "max_attempts", 1, 1000);
        } else if (f.key == "run_at") {
            if (v.type == jbvNull) continue;
            if (v.type != jbvString)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}run_at must be a timestamp string, not {}", at, jsonb_type_name(v)));
            job.run_at = check_time(parse_timestamptz(jsonb_string(v), at + "run_at"), at + "run_at");
        } else
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}unknown field {}", at, quoted(f.key)), "",
                        "Fields are payload, job_type, group_key, priority, run_at, dedup_key, max_attempts.");
    }
    if (!payload) {
        static const char empty[] = "{}";
        payload = pg_guard([&] { return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(empty))); });
    }
    job.payload = PointerGetDatum(payload);
    validate_job(q, job, payload, ord);
    return job;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_enqueue_batch) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    Jsonb *batch = arg_jsonb(fcinfo, 1);
    if (!batch) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "jobs must not be NULL");

    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = cached_queue(queue_name);
    TimestampTz now = tx_now();

    // 1. Read and check every element before anything is written.
    std::vector<JsonbValue> elements = jsonb_array_elements(batch, "jobs");
    if (elements.size() > 100000)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("jobs holds {} elements; at most 100000 per call", elements.size()));
    std::vector<NewJob> jobs;
    jobs.reserve(elements.size());
    for (size_t i = 0; i < elements.size(); ++i) jobs.push_back(read_batch_job(q, elements[i], (int)i, now));

    // 2. Dedup: an active job with the key, or an earlier element of this batch, wins.
    std::vector<std::optional<pg_uuid_t>> duplicate_of(jobs.size());
    std::vector<pg_uuid_t> ids(jobs.size());
    for (auto &id : ids) id = uuid_v7();
    {
        std::vector<std::string> keys;
        for (const auto &j : jobs)
            if (j.dedup_key) keys.push_back(*j.dedup_key);
        if (!keys.empty()) {
            lock_dedup_keys(q.id, keys);
            static Statement stmt(
                "SELECT dedup_key, job_id FROM conveyor.jobs WHERE queue_id = $1 AND dedup_key = ANY($2)",
                {INT4OID, TEXTARRAYOID});
            auto rows = stmt.run(Params().int4(0, q.id).text_array(1, keys));
            std::map<std::string, pg_uuid_t> owner;
            for (uint64 r = 0; r < rows.size(); ++r) owner.emplace(*rows.text(r, 0), *rows.uuid(r, 1));
            for (size_t i = 0; i < jobs.size(); ++i) {
                if (!jobs[i].dedup_key) continue;
                auto [it, inserted] = owner.emplace(*jobs[i].dedup_key, ids[i]);
                if (!inserted) duplicate_of[i] = it->second;
            }
        }
    }

    // 3. Groups: a due job heads its group if the group has no ready or running job and no better
    //    due job of this batch; the rest of the group waits.
    std::vector<std::string> states(jobs.size());
    std::map<std::string, size_t> best_of_group;
    std::set<GroupKey> groups;
    for (size_t i = 0; i < jobs.size(); ++i) {
        if (duplicate_of[i]) continue;
        bool due = jobs[i].run_at <= now;
        states[i] = due ? "ready" : "scheduled";
        if (due && jobs[i].group_key) groups.insert({q.id, *jobs[i].group_key});
    }
    if (!groups.empty()) {
        lock_groups(groups);
        std::vector<std::string> keys;
        for (const auto &g : groups) keys.push_back(g.second);
        std::map<std::string, GroupHead> heads = group_heads(q.id, keys);
        for (size_t i = 0; i < jobs.size(); ++i) {
            if (duplicate_of[i] || states[i] != "ready" || !jobs[i].group_key) continue;
            const std::string &g = *jobs[i].group_key;
            auto it = best_of_group.find(g);
            if (it == best_of_group.end()) {
                best_of_group.emplace(g, i);
                continue;
            }
            const NewJob &b = jobs[it->second];
            bool better = jobs[i].priority > b.priority || (jobs[i].priority == b.priority && jobs[i].run_at < b.run_at);
            if (better) {
                states[it->second] = "waiting";
                it->second = i;
            } else
                states[i] = "waiting";
        }
        // The batch's best job of a group heads it only if it runs before the group's current
        // head, and that head is still ready (not claimed) when we step it back.
        for (const auto &[g, i] : best_of_group) {
            auto h = heads.find(g);
            if (h == heads.end()) continue;
            bool first = !h->second.running && runs_before(jobs[i].priority, jobs[i].run_at, h->second) &&
                         demote_head(h->second.id);
            if (!first) states[i] = "waiting";
        }
    }

    // 4. One statement inserts them all.
    JobRows rows;
    bool any_due = false, may_conflict = false;
    for (size_t i = 0; i < jobs.size(); ++i) {
        if (duplicate_of[i]) continue;
        rows.ids.push_back(ids[i]);
        rows.states.push_back(states[i]);
        rows.priorities.push_back(jobs[i].priority);
        rows.run_ats.push_back(jobs[i].run_at);
        rows.payloads.push_back(jobs[i].payload);
        rows.max_attempts.push_back(jobs[i].max_attempts);
        rows.job_types.push_back(jobs[i].job_type);
        rows.group_keys.push_back(jobs[i].group_key);
        rows.dedup_keys.push_back(jobs[i].dedup_key);
        any_due = any_due || states[i] != "scheduled";
        may_conflict = may_conflict || jobs[i].group_key || jobs[i].dedup_key;
    }
    if (!rows.ids.empty() && insert_jobs(q, rows, may_conflict) != (int64)rows.ids.size())
        throw concurrent_change("a job of the same group or dedup key");
    if (any_due) notify_queue(q);
    if (q.status_notify) status_changed(q.id, rows.ids);

    for (size_t i = 0; i < jobs.size(); ++i) {
        Datum values[3] = {Int32GetDatum((int32)i), uuid_datum(duplicate_of[i] ? *duplicate_of[i] : ids[i]),
                           BoolGetDatum(duplicate_of[i].has_value())};
        bool nulls[3] = {false, false, false};
        out.add(values, nulls);
    }
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
