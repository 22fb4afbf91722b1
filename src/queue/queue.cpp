// The job queue: SQL entry points conveyor.create_queue ... conveyor.queue_metrics.
//
// Layout of the data (see src/queue/queue.sql): pending and running jobs live in conveyor.jobs, finished
// ones in conveyor.job_history. A job's internal state decides which partial index holds it:
// 'ready' jobs are due and first in line, and they are all that dequeue scans. A grouped job is
// 'ready' only while no other job of its group is ready or running (the unique index
// jobs_group_active enforces it); the rest of the group is 'waiting'. Jobs not yet due are
// 'scheduled' and become ready (or waiting) when a dequeue meets them due.
//
// Locks: every change to which job heads a group happens under that group's transaction-scoped lock
// (LockSpace::group); every insert of a dedup key under the key's lock (LockSpace::dedup). The order
// is: job rows (in id order), then dedup keys, then groups (each set in ascending key order). Whoever
// holds a group lock never waits for a job row: the rows it changes are its own already, or it
// takes them with SKIP LOCKED. Housekeeping (dequeue's, reap, maintain) only try-locks groups and
// skips what is busy, so it never waits for a worker's transaction.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "queue/queue.hpp"
#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "core/time.hpp"
#include "core/uuid.hpp"
#include "core/xact_lock.hpp"
#include "costs/costs.hpp"
#include "idempotency/idempotency.hpp"
#include "locks/locks.hpp"
#include "queue/wakeup.hpp"

namespace conveyor::queue {

using spi::Params;
using spi::Statement;

// ---------------------------------------------------------------------------------------------------
// Arguments

static void check_delay(const std::optional<int32> &delay, const char *name) {
    if (delay && *delay < 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must not be negative, not {}", name, *delay));
}

// ---------------------------------------------------------------------------------------------------
// Queues and their options

struct Queue {
    int32 id = 0;
    std::string name;
    int32 lease_seconds = 300;
    int32 max_attempts = 5;
    int32 backoff_base_seconds = 10;
    int32 backoff_max_seconds = 3600;
    std::optional<std::vector<std::string>> job_types;
    std::optional<std::vector<std::string>> required_keys;
    int32 retention_days = 7;
    bool notify = true;
    std::string event_trail = "all";
    bool paused = false;
};

static constexpr const char *queue_columns =
    "queue_id, name, lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds, job_types, "
    "required_keys, retention_days, notify, event_trail, paused";

static std::optional<std::vector<std::string>> text_array_column(const spi::Rows &rows, uint64 r, int c) {
    bool isnull;
    Datum d = rows.datum(r, c, &isnull);
    if (isnull) return std::nullopt;
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] {
        deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    });
    std::vector<std::string> out;
    for (int k = 0; k < n; ++k)
        if (!nulls[k]) out.emplace_back(pg_guard([&] { return (const char *)TextDatumGetCString(elems[k]); }));
    return out;
}

static Queue queue_from_row(const spi::Rows &rows, uint64 r) {
    Queue q;
    q.id = *rows.int4(r, 0);
    q.name = *rows.text(r, 1);
    q.lease_seconds = *rows.int4(r, 2);
    q.max_attempts = *rows.int4(r, 3);
    q.backoff_base_seconds = *rows.int4(r, 4);
    q.backoff_max_seconds = *rows.int4(r, 5);
    q.job_types = text_array_column(rows, r, 6);
    q.required_keys = text_array_column(rows, r, 7);
    q.retention_days = *rows.int4(r, 8);
    q.notify = *rows.boolean(r, 9);
    q.event_trail = *rows.text(r, 10);
    q.paused = *rows.boolean(r, 11);
    return q;
}

static std::optional<Queue> find_queue(const std::string &name) {
    static const std::string sql = fmt::format("SELECT {} FROM conveyor.queues WHERE name = $1", queue_columns);
    static Statement stmt(sql.c_str(), {TEXTOID});
    auto rows = stmt.run(Params().text(0, name));
    if (rows.size() == 0) return std::nullopt;
    return queue_from_row(rows, 0);
}

static Queue load_queue(const std::string &name) {
    auto q = find_queue(name);
    if (!q)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("queue {} does not exist", quoted(name)), "",
                    "Create it with conveyor.create_queue(queue => ...).");
    return *q;
}

static Oid conveyor_relid(const char *relname) {
    return pg_guard([&] {
        Oid ns = get_namespace_oid("conveyor", true);
        return OidIsValid(ns) ? get_relname_relid(relname, ns) : InvalidOid;
    });
}

// Queue rows for the hot paths (enqueue, enqueue_batch, dequeue), cached per backend. Every change to
// conveyor.queues fires the statement trigger queues_changed, which invalidates the table's relcache
// entry; each backend's relcache callback then empties its cache: others' changes are taken in at
// their next transaction or lookup (which first accepts pending invalidations), the backend's own at
// the end of the changing statement, and a rollback undoes them the same way.
static std::unordered_map<std::string, Queue> queue_cache;
static std::optional<int32> longest_retention_cache;  // the largest retention_days of all queues
static Oid queue_cache_relid = InvalidOid;

static void forget_cached_queues(Datum, Oid relid) {
    if (relid == InvalidOid || relid == queue_cache_relid) {
        queue_cache.clear();
        longest_retention_cache.reset();
        queue_cache_relid = InvalidOid;
    }
}

static void take_in_queue_changes() {
    pg_guard([] { AcceptInvalidationMessages(); });
}

static Queue cached_queue(const std::string &name) {
    take_in_queue_changes();
    if (auto it = queue_cache.find(name); it != queue_cache.end()) return it->second;
    Oid relid = conveyor_relid("queues");
    Queue q = load_queue(name);  // may take in invalidations, which empty the cache
    queue_cache_relid = relid;
    queue_cache.emplace(name, q);
    return q;
}

// The largest retention_days of all queues (7 when there are none): history partitions made for it
// fit a job of any queue.
static int32 longest_retention() {
    take_in_queue_changes();
    if (longest_retention_cache) return *longest_retention_cache;
    static Statement stmt("SELECT COALESCE(max(retention_days), 7) FROM conveyor.queues", {});
    Oid relid = conveyor_relid("queues");
    int32 days = *stmt.run().int4(0, 0);
    queue_cache_relid = relid;
    longest_retention_cache = days;
    return days;
}

static std::map<int32, Queue> load_queues_by_id(const std::vector<int32> &ids) {
    static const std::string sql =
        fmt::format("SELECT {} FROM conveyor.queues WHERE queue_id = ANY($1)", queue_columns);
    static Statement stmt(sql.c_str(), {INT4ARRAYOID});
    auto rows = stmt.run(Params().int4_array(0, ids));
    std::map<int32, Queue> out;
    for (uint64 r = 0; r < rows.size(); ++r) {
        Queue q = queue_from_row(rows, r);
        out.emplace(q.id, std::move(q));
    }
    return out;
}

// An option that lists keys (job_types, required_keys): strings of at most max_key_bytes each.
static std::optional<std::vector<std::string>> jsonb_keys_array(const JsonbValue &v, const std::string &what) {
    auto keys = jsonb_text_array(v, what);
    if (keys)
        for (size_t i = 0; i < keys->size(); ++i) check_key((*keys)[i], fmt::format("{}[{}]", what, i));
    return keys;
}

// Applies a jsonb object of options to q. Unknown names and bad values are errors (22023).
static void apply_options(Queue &q, Jsonb *options) {
    if (!options) return;
    for (const auto &f : jsonb_object_fields(options, "options")) {
        const std::string what = fmt::format("option {}", f.key);
        const JsonbValue &v = f.value;
        if (f.key == "lease_seconds") q.lease_seconds = (int32)jsonb_int(v, what, 1, 7 * 86400);
        else if (f.key == "max_attempts") q.max_attempts = (int32)jsonb_int(v, what, 1, 1000);
        else if (f.key == "backoff_base_seconds") q.backoff_base_seconds = (int32)jsonb_int(v, what, 0, 86400);
        else if (f.key == "backoff_max_seconds") q.backoff_max_seconds = (int32)jsonb_int(v, what, 0, 30 * 86400);
        else if (f.key == "retention_days") q.retention_days = (int32)jsonb_int(v, what, 0, 3650);
        else if (f.key == "job_types") q.job_types = jsonb_keys_array(v, what);
        else if (f.key == "required_keys") q.required_keys = jsonb_keys_array(v, what);
        else if (f.key == "notify") {
            if (v.type != jbvBool)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a boolean, not {}", what, jsonb_type_name(v)));
            q.notify = v.val.boolean;
        } else if (f.key == "event_trail") {
            std::string s = v.type == jbvString ? jsonb_string(v) : "";
            if (s != "all" && s != "failures")
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be \"all\" or \"failures\"", what));
            q.event_trail = s;
        } else
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown queue option {}", quoted(f.key)), "",
                        "Options are lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds, "
                        "job_types, required_keys, retention_days, notify, event_trail.");
    }
    if (q.job_types && q.job_types->empty())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option job_types must not be an empty array", "",
                    "Use null to allow any job type.");
    if (q.backoff_max_seconds < q.backoff_base_seconds)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("option backoff_max_seconds ({}) must not be less than backoff_base_seconds ({})",
                                q.backoff_max_seconds, q.backoff_base_seconds));
}

static void validate_queue_name(const std::string &name) {
    if (name.empty() || name.size() > 128)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("queue name {} must be 1 to 128 characters", quoted(name)));
}

// ---------------------------------------------------------------------------------------------------
// Partitions of job_history (by purge day) and job_events (by day), created ahead and on demand

static int64 unix_day(TimestampTz t) {
    int64 secs = t / USECS_PER_SEC + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
    return secs >= 0 ? secs / SECS_PER_DAY : -((-secs + SECS_PER_DAY - 1) / SECS_PER_DAY);
}

static std::string day_text(int64 day, bool compact) {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    int64 z = day + 719468;
    int64 era = (z >= 0 ? z : z - 146096) / 146097;
    int64 doe = z - era * 146097;
    int64 yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64 y = yoe + era * 400;
    int64 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64 mp = (5 * doy + 2) / 153;
    int64 d = doy - (153 * mp + 2) / 5 + 1;
    int64 m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) ++y;
    return compact ? fmt::format("{:04}{:02}{:02}", y, m, d) : fmt::format("{:04}-{:02}-{:02}", y, m, d);
}

struct PartitionedTable {
    const char *name;
    std::vector<std::pair<const char *, const char *>> index_definitions;  // name suffix, definition
    int64 ready_until = -1;  // partitions exist for every day up to here (this backend's knowledge)
    Oid parent = InvalidOid;
};

static PartitionedTable history_table{
    "job_history", {{"job_id", "(job_id)"}, {"unfinished", "(queue_id, status) WHERE status <> 'completed'"}}};
static PartitionedTable events_table{"job_events", {{"job_id_at", "(job_id, at)"}}};

// Partitions created by a transaction that aborts are gone: forget what this backend believes.
static void forget_partitions_on_abort(XactEvent event, void *) {
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        history_table.ready_until = -1;
        events_table.ready_until = -1;
    }
}

static void forget_partitions_on_subabort(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        history_table.ready_until = -1;
        events_table.ready_until = -1;
    }
}

// Makes sure partitions exist for days [first, last] of table t.
static void ensure_partitions(PartitionedTable &t, int64 first, int64 last) {
    Oid parent = conveyor_relid(t.name);
    if (parent != t.parent) {  // first use, or the extension was dropped and created again
        t.parent = parent;
        t.ready_until = -1;
    }
    if (last <= t.ready_until) return;
    for (int64 day = std::max(first, t.ready_until + 1); day <= last; ++day) {
        std::string part = fmt::format("{}_p{}", t.name, day_text(day, true));
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        // Serialize creators of one partition; then look again.
        xact_lock(LockSpace::partition, hash64(part));
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        std::string sql = fmt::format(
            "CREATE TABLE conveyor.{} PARTITION OF conveyor.{} FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
            ident, t.name, day_text(day, false), day_text(day + 1, false));
        spi::run_once(sql, {}, Params());
        // Indexes belong to each partition, not to the extension's parent: pg_dump then restores
        // partitions with their own indexes after CREATE EXTENSION without name clashes.
        for (const auto &[suffix, definition] : t.index_definitions) {
            std::string name = part + "_" + suffix;
            const char *name_c = name.c_str();
            const char *index_ident = pg_guard([&] { return quote_identifier(name_c); });
            spi::run_once(fmt::format("CREATE INDEX {} ON conveyor.{} {}", index_ident, ident, definition), {}, Params());
        }
    }
    t.ready_until = last;
}

static void ensure_history_partitions(int32 retention_days) {
    int64 today = unix_day(tx_now());
    ensure_partitions(history_table, today, today + retention_days + 2);
}

static void ensure_event_partitions() {
    int64 today = unix_day(GetCurrentTimestamp());
    ensure_partitions(events_table, today, today + 1);
}

// ---------------------------------------------------------------------------------------------------
// SQL shared by several statements

// Adds per-queue deltas to this backend's row of conveyor.queue_counts for the current minute.
// `rows` yields queue_id, the delta columns named, then bucket and shard (counts_bucket_shard).
static constexpr const char *counts_bucket_shard =
    "pg_catalog.date_bin('1 minute', pg_catalog.now(), 'epoch'), pg_catalog.pg_backend_pid()";

static std::string counts_upsert_rows(const std::string &rows, const std::vector<const char *> &columns) {
    std::string cols, sets;
    for (const char *c : columns) {
        cols += fmt::format(", {}", c);
        sets += fmt::format("{}{} = c.{} + excluded.{}", sets.empty() ? "" : ", ", c, c, c);
    }
    return fmt::format("INSERT INTO conveyor.queue_counts AS c (queue_id{}, bucket, shard) {} "
                       "ON CONFLICT (queue_id, bucket, shard) DO UPDATE SET {}",
                       cols, rows, sets);
}

// The deltas read from `select`: queue_id followed by the named delta columns, grouped by queue_id.
static std::string counts_upsert(const std::string &select, std::initializer_list<const char *> columns) {
    return counts_upsert_rows(fmt::format("SELECT s.*, {} FROM ({}) s", counts_bucket_shard, select), columns);
}

// One queue's deltas given as SQL expressions (parameters or constants), without a subquery to read
// them from.
static std::string counts_upsert_values(const std::string &queue_id,
                                        std::initializer_list<std::pair<const char *, const char *>> deltas) {
    std::vector<const char *> columns;
    std::string values;
    for (const auto &[column, value] : deltas) {
        columns.push_back(column);
        values += fmt::format(", {}", value);
    }
    return counts_upsert_rows(fmt::format("VALUES ({}{}, {})", queue_id, values, counts_bucket_shard), columns);
}

static constexpr const char *history_columns =
    "job_id, queue_id, status, priority, run_at, job_type, group_key, dedup_key, payload, attempt, "
    "max_attempts, worker_id, started_at, last_error, created_at, finished_at, purge_at";

// Takes the locks of these groups (queue_id, group_key), in ascending key order.
using GroupKey = std::pair<int32, std::string>;

static uint64 group_lock_key(int32 queue_id, const std::string &group) {
    return hash64(group, (uint64)(uint32)queue_id + 1);
}

static void lock_groups(const std::set<GroupKey> &groups) {
    std::vector<uint64> keys;
    keys.reserve(groups.size());
    for (const auto &g : groups) keys.push_back(group_lock_key(g.first, g.second));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (uint64 k : keys) xact_lock(LockSpace::group, k);
}

// The groups whose locks are free right now (and are now ours). Dequeue's housekeeping uses this so
// that a worker never waits for another worker's transaction.
static std::set<GroupKey> try_lock_groups(const std::set<GroupKey> &groups) {
    std::vector<std::pair<uint64, GroupKey>> keyed;
    for (const auto &g : groups) keyed.emplace_back(group_lock_key(g.first, g.second), g);
    std::sort(keyed.begin(), keyed.end());
    std::set<GroupKey> got;
    for (const auto &[k, g] : keyed)
        if (try_xact_lock(LockSpace::group, k)) got.insert(g);
    return got;
}

static uint64 dedup_lock_key(int32 queue_id, const std::string &key) {
    return hash64(key, ((uint64)(uint32)queue_id + 1) << 32);
}

static void lock_dedup_keys(int32 queue_id, const std::vector<std::string> &dedup_keys) {
    std::vector<uint64> keys;
    for (const auto &k : dedup_keys) keys.push_back(dedup_lock_key(queue_id, k));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (uint64 k : keys) xact_lock(LockSpace::dedup, k);
}

// For each group (all of one queue) that has no ready or running job, the best waiting job becomes
// ready. Callers hold the groups' locks. A waiting job whose row another transaction holds (an
// operator cancelling it) is passed over rather than waited for.
// Where a waiting job should run before its group's ready (unclaimed) head, the head steps back to
// waiting; fill_group_heads then promotes the better job. Used where jobs join a group's waiting
// set while it may have a head (due scheduled jobs, retries). A head a worker is claiming right now
// is skipped: it is taken, not waited for.
static void rebalance_group_heads(int32 queue_id, const std::vector<std::string> &groups) {
    if (groups.empty()) return;
    static Statement stmt(
        "WITH g AS (SELECT DISTINCT group_key FROM pg_catalog.unnest($2::text[]) AS u(group_key)), "
        "best AS ("
        "  SELECT g.group_key, w.priority, w.run_at FROM g CROSS JOIN LATERAL ("
        "    SELECT priority, run_at FROM conveyor.jobs w"
        "    WHERE w.queue_id = $1 AND w.group_key = g.group_key AND w.state = 'waiting'"
        "    ORDER BY w.priority DESC, w.run_at, w.job_id LIMIT 1) w), "
        "heads AS ("
        "  SELECT h.job_id FROM conveyor.jobs h JOIN best b ON h.group_key = b.group_key"
        "  WHERE h.queue_id = $1 AND h.state = 'ready'"
        "    AND (b.priority > h.priority OR (b.priority = h.priority AND b.run_at < h.run_at))"
        "  FOR UPDATE OF h SKIP LOCKED) "
        "UPDATE conveyor.jobs j SET state = 'waiting' FROM heads WHERE j.job_id = heads.job_id",
        {INT4OID, TEXTARRAYOID});
    stmt.run(Params().int4(0, queue_id).text_array(1, groups));
}

static void fill_group_heads(int32 queue_id, const std::vector<std::string> &groups) {
    if (groups.empty()) return;
    static Statement stmt(
        "WITH g AS (SELECT DISTINCT group_key FROM pg_catalog.unnest($2::text[]) AS u(group_key)), "
        "best AS ("
        "  SELECT w.job_id FROM g CROSS JOIN LATERAL ("
        "    SELECT job_id FROM conveyor.jobs w"
        "    WHERE w.queue_id = $1 AND w.group_key = g.group_key AND w.state = 'waiting'"
        "    ORDER BY w.priority DESC, w.run_at, w.job_id LIMIT 1 FOR UPDATE SKIP LOCKED) w"
        "  WHERE NOT EXISTS (SELECT 1 FROM conveyor.jobs h WHERE h.queue_id = $1 AND h.group_key = g.group_key"
        "                    AND h.state IN ('ready', 'running'))) "
        "UPDATE conveyor.jobs j SET state = 'ready' FROM best WHERE j.job_id = best.job_id AND j.state = 'waiting'",
        {INT4OID, TEXTARRAYOID});
    stmt.run(Params().int4(0, queue_id).text_array(1, groups));
}

static void fill_group_heads(const std::set<GroupKey> &groups) {
    std::map<int32, std::vector<std::string>> by_queue;
    for (const auto &g : groups) by_queue[g.first].push_back(g.second);
    for (const auto &[queue_id, keys] : by_queue) fill_group_heads(queue_id, keys);
}

// Due jobs became ready: workers waiting on the queue get a NOTIFY when this transaction commits.
static void notify_queue(const Queue &q) {
    if (q.notify) wake_workers_at_commit(q.id, q.name);
}

// ---------------------------------------------------------------------------------------------------
// Enqueue

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

static std::optional<pg_uuid_t> active_job_with_dedup_key(int32 queue_id, const std::string &key) {
    static Statement stmt("SELECT job_id FROM conveyor.jobs WHERE queue_id = $1 AND dedup_key = $2",
                          {INT4OID, TEXTOID});
    auto rows = stmt.run(Params().int4(0, queue_id).text(1, key));
    if (rows.size() == 0) return std::nullopt;
    return rows.uuid(0, 0);
}

// Inserts rows given as parallel arrays; returns how many were inserted. The rows' event and counts
// are written by the same statement.
static const std::string &insert_jobs_sql() {
    static const std::string sql =
        "WITH ins AS ("
        "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
        "                             payload, max_attempts, created_at)"
        "  SELECT u.job_id, $1, u.state, u.priority::smallint, u.run_at, u.job_type, u.group_key, u.dedup_key,"
        "         u.payload, u.max_attempts, pg_catalog.now()"
        "  FROM ROWS FROM (pg_catalog.unnest($2::uuid[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int[]),"
        "                  pg_catalog.unnest($5::timestamptz[]), pg_catalog.unnest($6::text[]), pg_catalog.unnest($7::text[]),"
        "                  pg_catalog.unnest($8::text[]), pg_catalog.unnest($9::jsonb[]), pg_catalog.unnest($10::int[]))"
        "       AS u(job_id, state, priority, run_at, job_type, group_key, dedup_key, payload, max_attempts)"
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
    return sql;
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

static int64 insert_jobs(const Queue &q, const JobRows &rows) {
    static Statement stmt(insert_jobs_sql().c_str(),
                          {INT4OID, UUIDARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
                           TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INT4ARRAYOID, BOOLOID});
    ensure_event_partitions();
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
    auto res = stmt.run(p);
    return *res.int8(0, 0);
}

// One job: what insert_jobs_sql does, shaped for the hottest producer path. Every value is known
// here, so the event and the counts take theirs from parameters instead of reading the inserted row
// back: the three writes are independent CTEs that the executor runs without a RETURNING list or a
// CTE scan between them (together about a tenth of an enqueue's instructions, measured). A job with
// neither group nor dedup key is a plain insert (its fresh id cannot conflict, and a plain insert
// skips the speculative-insertion checks of the unique indexes). One that may conflict keeps ON
// CONFLICT DO NOTHING and reports whether it inserted; when it did not, the caller raises an error,
// which also undoes the event and the counts written beside it.
static std::string insert_one_sql(bool with_event, bool may_conflict) {
    return std::string(
               "WITH ins AS ("
               "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
               "                             payload, max_attempts, created_at)"
               "  VALUES ($2, $1, $3, $4::smallint, $5, $6, $7, $8, $9, $10, pg_catalog.now())") +
           (may_conflict ? "  ON CONFLICT DO NOTHING RETURNING 1" : "") + "), " +
           (with_event ? "ev AS ("
                         "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
                         "  VALUES ($2, pg_catalog.clock_timestamp(), 'enqueued',"
                         "          pg_catalog.jsonb_build_object('priority', $4, 'run_at', $5, 'group_key', $7))), "
                       : "") +
           "cnt AS (" + counts_upsert_values("$1", {{"pending", "$11"}, {"scheduled", "$12"}, {"enqueued", "1"}}) + ") " +
           (may_conflict ? "SELECT count(*) FROM ins" : "SELECT 1::bigint");
}

static bool insert_one(const Queue &q, const pg_uuid_t &id, const std::string &state, const NewJob &job) {
    static const std::initializer_list<Oid> types = {INT4OID, UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID,
                                                     TEXTOID, TEXTOID, JSONBOID, INT4OID, INT8OID, INT8OID};
    static const std::string sql[2][2] = {{insert_one_sql(false, false), insert_one_sql(false, true)},
                                          {insert_one_sql(true, false), insert_one_sql(true, true)}};
    static Statement stmts[2][2] = {{{sql[0][0].c_str(), types}, {sql[0][1].c_str(), types}},
                                    {{sql[1][0].c_str(), types}, {sql[1][1].c_str(), types}}};
    bool trail = q.event_trail == "all";
    bool may_conflict = job.group_key || job.dedup_key;
    int64 pending = state == "scheduled" ? 0 : 1;
    if (trail) ensure_event_partitions();
    Params p;
    p.int4(0, q.id).uuid(1, id).text(2, state).int4(3, job.priority);
    p.datum(4, TimestampTzGetDatum(job.run_at)).text(5, job.job_type).text(6, job.group_key).text(7, job.dedup_key);
    p.datum(8, job.payload).int4(9, job.max_attempts).int8(10, pending).int8(11, 1 - pending);
    auto res = stmts[trail][may_conflict].run(p);
    return *res.int8(0, 0) == 1;
}

static Error concurrent_change(const std::string &what) {
    return Error(ERRCODE_T_R_SERIALIZATION_FAILURE, fmt::format("could not enqueue: {} changed concurrently", what),
                 "", "Retry the transaction.");
}

CONVEYOR_FUNCTION(conveyor_enqueue) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    Jsonb *payload = arg_jsonb(fcinfo, 1);
    if (!payload) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "payload must not be NULL", "", "Pass '{}' for an empty payload.");
    NewJob job;
    job.payload = PointerGetDatum(payload);
    job.job_type = optional_key(fcinfo, 2, "job_type", true);
    job.group_key = optional_key(fcinfo, 3, "group_key", true);
    if (PG_ARGISNULL(4)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "priority must not be NULL");
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

    Datum values[2] = {uuid_datum(id), BoolGetDatum(false)};
    bool nulls[2] = {false, false};
    out.add(values, nulls);
    spi.finish();
    return (Datum)0;
}


CONVEYOR_FUNCTION(conveyor_enqueue_batch) {
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
    std::vector<NewJob> jobs(elements.size());
    for (size_t i = 0; i < elements.size(); ++i) {
        const std::string at = where_in_batch((int)i);
        const JsonbValue &e = elements[i];
        if (e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}must be a JSON object, not {}", at, jsonb_type_name(e)));
        Jsonb *obj = (Jsonb *)DatumGetPointer(jsonb_value_datum(e));
        NewJob &job = jobs[i];
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
        validate_job(q, job, payload, (int)i);
    }

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
    bool any_due = false;
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
    }
    if (!rows.ids.empty() && insert_jobs(q, rows) != (int64)rows.ids.size())
        throw concurrent_change("a job of the same group or dedup key");
    if (any_due) notify_queue(q);

    for (size_t i = 0; i < jobs.size(); ++i) {
        Datum values[3] = {Int32GetDatum((int32)i), uuid_datum(duplicate_of[i] ? *duplicate_of[i] : ids[i]),
                           BoolGetDatum(duplicate_of[i].has_value())};
        bool nulls[3] = {false, false, false};
        out.add(values, nulls);
    }
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Finishing and failing running jobs (ack, ack_many, reap)

struct Changed {
    pg_uuid_t id;
    int32 queue_id;
    std::optional<std::string> group_key;
    std::string state;  // the job's new state: ready/scheduled, or completed/dead
};

static std::vector<Changed> changed_rows(const spi::Rows &rows) {
    std::vector<Changed> out;
    for (uint64 r = 0; r < rows.size(); ++r)
        out.push_back(Changed{*rows.uuid(r, 0), *rows.int4(r, 1), rows.text(r, 2), *rows.text(r, 3)});
    return out;
}

// Succeeds running jobs: they move to history as completed. $2: only jobs leased to this worker.
static std::vector<Changed> complete_jobs(const std::vector<pg_uuid_t> &ids, const std::optional<std::string> &worker,
                                          Datum stats, bool stats_null) {
    static const std::string sql =
        "WITH d AS ("
        "  DELETE FROM conveyor.jobs j USING conveyor.queues q"
        "  WHERE j.job_id = ANY($1) AND q.queue_id = j.queue_id AND j.state = 'running'"
        "    AND ($2::text IS NULL OR j.worker_id = $2)"
        "  RETURNING j.*, q.retention_days, q.event_trail), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + std::string(history_columns) + ")"
        "  SELECT job_id, queue_id, 'completed', priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, last_error, created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)"
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
        ") SELECT job_id, queue_id, group_key, 'completed' FROM d";
    static Statement stmt(sql.c_str(), {UUIDARRAYOID, TEXTOID, JSONBOID});
    Params p;
    p.uuid_array(0, ids).text(1, worker);
    if (stats_null) p.null(2);
    else p.datum(2, stats);
    return changed_rows(stmt.run(p));
}

// Fails running jobs: each is rescheduled with exponential backoff, or dies at max_attempts.
// expire = false: the jobs named (and, if worker is given, leased to that worker);
// expire = true: those of the named jobs whose lease has run out.
// skip_locked: leave jobs another transaction has locked (dequeue's housekeeping never waits).
static std::string fail_jobs_sql(bool skip_locked) {
    return std::string(
        "WITH t AS ("
        "  SELECT j.job_id FROM conveyor.jobs j"
        "  WHERE j.job_id = ANY($1) AND j.state = 'running'"
        "    AND CASE WHEN $4 THEN j.lease_until < pg_catalog.now() ELSE ($3::text IS NULL OR j.worker_id = $3) END"
        "  FOR UPDATE") + (skip_locked ? " SKIP LOCKED" : "") + "), "
        "dead AS ("
        "  DELETE FROM conveyor.jobs j USING t, conveyor.queues q"
        "  WHERE j.job_id = t.job_id AND q.queue_id = j.queue_id AND j.attempt >= j.max_attempts"
        "  RETURNING j.*, q.retention_days), "
        "retried AS ("
        "  UPDATE conveyor.jobs j SET"
        "    state = CASE WHEN q.backoff_base_seconds > 0 THEN 'scheduled' ELSE 'ready' END,"
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs =>"
        "      LEAST(q.backoff_base_seconds * pg_catalog.power(2::float8, j.attempt - 1), q.backoff_max_seconds::float8)"
        "      * (1 - 0.25 * pg_catalog.random())),"
        "    worker_id = NULL, lease_until = NULL, last_error = $2"
        "  FROM t, conveyor.queues q"
        "  WHERE j.job_id = t.job_id AND q.queue_id = j.queue_id AND j.attempt < j.max_attempts"
        "  RETURNING j.job_id, j.queue_id, j.group_key, j.state, j.run_at, j.attempt,"
        "            (SELECT o.worker_id FROM conveyor.jobs o WHERE o.job_id = j.job_id) AS worker_id), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + std::string(history_columns) + ")"
        "  SELECT job_id, queue_id, 'dead', priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, $2, created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)"
        "  FROM dead), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), CASE WHEN $4 THEN 'expired' ELSE 'failed' END, worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'error', $2, 'retry_at', run_at)"
        "  FROM retried"
        "  UNION ALL"
        "  SELECT job_id, pg_catalog.clock_timestamp(), CASE WHEN $4 THEN 'expired' ELSE 'failed' END, worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'error', $2)"
        "  FROM dead"
        "  UNION ALL"
        "  SELECT job_id, pg_catalog.clock_timestamp() + interval '1 microsecond', 'dead', worker_id,"
        "         pg_catalog.jsonb_build_object('attempt', attempt, 'reason', 'max_attempts reached', 'error', $2)"
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

static std::vector<Changed> fail_jobs(const std::vector<pg_uuid_t> &ids, const std::optional<std::string> &error,
                                      const std::optional<std::string> &worker, bool expire, bool skip_locked = false) {
    static const std::string waiting_sql = fail_jobs_sql(false), skipping_sql = fail_jobs_sql(true);
    static Statement waiting(waiting_sql.c_str(), {UUIDARRAYOID, TEXTOID, TEXTOID, BOOLOID});
    static Statement skipping(skipping_sql.c_str(), {UUIDARRAYOID, TEXTOID, TEXTOID, BOOLOID});
    Params p;
    p.uuid_array(0, ids).text(1, error).text(2, worker).boolean(3, expire);
    return changed_rows((skip_locked ? skipping : waiting).run(p));
}

// The groups whose head left (finished, or went back to scheduled) need a new head.
static std::set<GroupKey> groups_losing_head(const std::vector<Changed> &changes) {
    std::set<GroupKey> out;
    for (const auto &c : changes)
        if (c.group_key && c.state != "ready") out.insert({c.queue_id, *c.group_key});
    return out;
}

struct JobRef {
    pg_uuid_t id;
    int32 queue_id;
    std::optional<std::string> group_key;
    std::string state;
    std::optional<std::string> worker_id;
    int32 retention_days;  // of its queue: where it lands in job_history when it finishes
};

// The jobs with these ids that are pending or running. lock: also lock their rows (in id order),
// which every change to a job does before it takes its group's lock.
static std::vector<JobRef> find_jobs(const std::vector<pg_uuid_t> &ids, bool lock = false) {
    static Statement read(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = ANY($1)",
        {UUIDARRAYOID});
    static Statement locking(
        "SELECT j.job_id, j.queue_id, j.group_key, j.state, j.worker_id, q.retention_days"
        " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = ANY($1)"
        " ORDER BY j.job_id FOR UPDATE OF j",
        {UUIDARRAYOID});
    auto rows = (lock ? locking : read).run(Params().uuid_array(0, ids));
    std::vector<JobRef> out;
    for (uint64 r = 0; r < rows.size(); ++r)
        out.push_back(JobRef{*rows.uuid(r, 0), *rows.int4(r, 1), rows.text(r, 2), *rows.text(r, 3), rows.text(r, 4),
                             *rows.int4(r, 5)});
    return out;
}

static std::optional<std::string> finished_status(const pg_uuid_t &id) {
    static Statement stmt("SELECT status FROM conveyor.job_history WHERE job_id = $1", {UUIDOID});
    auto rows = stmt.run(Params().uuid(0, id));
    if (rows.size() == 0) return std::nullopt;
    return rows.text(0, 0);
}

static std::string public_status(const std::string &state) { return state == "running" ? "running" : "pending"; }

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

static void ensure_partitions_for(const std::vector<JobRef> &jobs) {
    int32 retention = 0;
    for (const auto &j : jobs) retention = std::max(retention, j.retention_days);
    ensure_history_partitions(retention);
    ensure_event_partitions();
}

// Acknowledges jobs; returns how many were. Without a worker every job must be running (else
// 42704/55000); with one, jobs no longer leased to it are skipped.
// Successful acks, the hot path: complete the jobs first (the DELETE locks their rows), then take
// the groups that lost their running job and give each its next head; rows before groups, as
// everywhere. Only ids that did not complete are looked up, to tell "no longer yours" (false) from
// an unknown or not running job (an error).
static int64 acknowledge_success(const std::vector<pg_uuid_t> &ids, Datum stats, bool stats_null,
                                 const std::optional<std::string> &worker) {
    ensure_history_partitions(longest_retention());
    ensure_event_partitions();
    std::vector<Changed> changes = complete_jobs(ids, worker, stats, stats_null);
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

static int64 acknowledge(const std::vector<pg_uuid_t> &ids, bool success, const std::optional<std::string> &error,
                         Datum stats, bool stats_null, const std::optional<std::string> &worker) {
    if (success) return acknowledge_success(ids, stats, stats_null, worker);
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
    std::vector<Changed> changes = success ? complete_jobs(target_ids, worker, stats, stats_null)
                                           : fail_jobs(target_ids, error, worker, false);
    fill_group_heads(groups_losing_head(changes));
    if (!worker && changes.size() != target_ids.size()) throw changed_while_acknowledged();
    return (int64)changes.size();
}

CONVEYOR_FUNCTION(conveyor_ack) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    if (PG_ARGISNULL(1)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "success must not be NULL");
    bool success = PG_GETARG_BOOL(1);
    auto error = arg_text(fcinfo, 2);
    Datum stats = PG_ARGISNULL(3) ? (Datum)0 : PG_GETARG_DATUM(3);
    auto worker = optional_key(fcinfo, 4, "worker_id", true);
    spi::Connection spi;
    int64 n = acknowledge({id}, success, error, stats, PG_ARGISNULL(3), worker);
    spi.finish();
    PG_RETURN_BOOL(n == 1);
}

CONVEYOR_FUNCTION(conveyor_ack_many) {
    if (PG_ARGISNULL(0)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "job_ids must not be NULL");
    if (PG_ARGISNULL(1)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "success must not be NULL");
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
    int64 count = ids.empty() ? 0 : acknowledge(ids, success, error, (Datum)0, true, worker);
    spi.finish();
    PG_RETURN_INT32((int32)count);
}

// Expires running jobs whose lease ran out (of one queue, or all); returns how many. Housekeeping
// never waits: jobs whose group or row another transaction holds are left for the next pass.
static int64 reap_expired(std::optional<int32> queue_id, int limit) {
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
    std::vector<JobRef> jobs;
    for (uint64 r = 0; r < rows.size(); ++r)
        jobs.push_back(JobRef{*rows.uuid(r, 0), *rows.int4(r, 1), rows.text(r, 2), *rows.text(r, 3), rows.text(r, 4),
                              *rows.int4(r, 5)});
    ensure_partitions_for(jobs);
    std::set<GroupKey> groups;
    std::vector<pg_uuid_t> ids;
    for (const auto &j : jobs) {
        ids.push_back(j.id);
        if (j.group_key) groups.insert({j.queue_id, *j.group_key});
    }
    std::set<GroupKey> held = try_lock_groups(groups);
    ids.clear();
    for (const auto &j : jobs)
        if (!j.group_key || held.count({j.queue_id, *j.group_key})) ids.push_back(j.id);
    if (ids.empty()) return 0;
    std::vector<Changed> changes = fail_jobs(ids, std::string("lease expired"), std::nullopt, true, true);
    fill_group_heads(groups_losing_head(changes));
    return (int64)changes.size();
}

CONVEYOR_FUNCTION(conveyor_reap) {
    auto queue_name = arg_text(fcinfo, 0);
    spi::Connection spi;
    std::optional<int32> queue_id;
    if (queue_name) queue_id = load_queue(*queue_name).id;
    int64 total = 0;
    for (;;) {
        int64 n = reap_expired(queue_id, 1000);
        total += n;
        if (n < 1000) break;
    }
    spi.finish();
    PG_RETURN_INT32((int32)total);
}

// ---------------------------------------------------------------------------------------------------
// Dequeue

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

// Claims up to $3 ready jobs of queue $1 for worker $2 with a lease of $4 seconds, in dequeue order.
// Leases and start times come from the clock, not the transaction start: a worker whose transaction
// began a while ago must still get the full lease.
// The claim: leases up to $3 ready jobs of queue $1 to worker $2 for $4 seconds, in dequeue order,
// skipping jobs another claim holds; writes their 'started' events (with_event) and the counters.
// single: the same for exactly one job, without the array, the aggregate and the sort that a batch
// needs (the cheaper plan for the most common call, dequeue of 1).
// How long a claimed job waited, 0 for a run_at that is not finite (none is accepted, but a reader
// must not fail on rows stored before that was checked: started_at - '-infinity' raises).
#define WAIT_SECONDS \
    "CASE WHEN pg_catalog.isfinite(run_at) THEN GREATEST(extract(epoch FROM started_at - run_at), 0) ELSE 0 END"

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

CONVEYOR_FUNCTION(conveyor_dequeue) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    auto worker = optional_key(fcinfo, 1, "worker_id", true);
    if (!worker) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "worker_id must not be NULL", "", "Name the worker, e.g. host:pid.");
    if (PG_ARGISNULL(2)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "max_count must not be NULL");
    int32 max_count = PG_GETARG_INT32(2);
    if (max_count < 1 || max_count > 1000)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("max_count must be between 1 and 1000, not {}", max_count));
    auto lease = arg_int(fcinfo, 3);
    if (lease && (*lease < 1 || *lease > 7 * 86400))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("lease_seconds must be between 1 and 604800, not {}", *lease));

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
    if (rows.size() > 0) worker_found_jobs(q.id);
    else if (q.notify) worker_found_nothing(q.id, q.name);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Leases held by workers: heartbeat and release

CONVEYOR_FUNCTION(conveyor_heartbeat) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    auto extend = arg_int(fcinfo, 2);
    if (extend && (*extend < 1 || *extend > 7 * 86400))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("extend_seconds must be between 1 and 604800, not {}", *extend));
    spi::Connection spi;
    static Statement stmt(
        "UPDATE conveyor.jobs j SET lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs =>"
        "   COALESCE($3, q.lease_seconds))"
        " FROM conveyor.queues q"
        " WHERE j.job_id = $1 AND j.state = 'running' AND j.worker_id = $2 AND q.queue_id = j.queue_id"
        " RETURNING j.lease_until",
        {UUIDOID, TEXTOID, INT4OID});
    auto rows = stmt.run(Params().uuid(0, id).text(1, worker).int4(2, extend));
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

// Puts a job back as pending, due after delay seconds, with $4 = attempt change (release: -1,
// so the attempt is not counted; retry of a scheduled job: 0). Callers hold the group's lock.
static std::vector<Changed> requeue_running(const pg_uuid_t &id, const std::string &worker, int32 delay) {
    static const std::string sql =
        "WITH r AS ("
        "  UPDATE conveyor.jobs j SET state = CASE WHEN $3 > 0 THEN 'scheduled' ELSE 'ready' END,"
        "    run_at = pg_catalog.now() + pg_catalog.make_interval(secs => $3), attempt = j.attempt - 1,"
        "    worker_id = NULL, lease_until = NULL"
        "  WHERE j.job_id = $1 AND j.state = 'running' AND j.worker_id = $2"
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
    static Statement stmt(sql.c_str(), {UUIDOID, TEXTOID, INT4OID});
    return changed_rows(stmt.run(Params().uuid(0, id).text(1, worker).int4(2, delay)));
}

CONVEYOR_FUNCTION(conveyor_release) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    if (PG_ARGISNULL(2)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "delay_seconds must not be NULL");
    int32 delay = PG_GETARG_INT32(2);
    check_delay(delay, "delay_seconds");
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty()) {
        if (!finished_status(id)) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
        spi.finish();
        PG_RETURN_BOOL(false);
    }
    ensure_event_partitions();
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = requeue_running(id, worker, delay);
    fill_group_heads(groups_losing_head(changes));
    spi.finish();
    PG_RETURN_BOOL(!changes.empty());
}

// ---------------------------------------------------------------------------------------------------
// Operator actions: retry, dead_letter, cancel

// Moves a pending or running job to history as dead or cancelled.
static std::vector<Changed> finish_job(const pg_uuid_t &id, const std::string &status, const std::optional<std::string> &reason) {
    static const std::string sql =
        "WITH d AS ("
        "  DELETE FROM conveyor.jobs j USING conveyor.queues q WHERE j.job_id = $1 AND q.queue_id = j.queue_id"
        "  RETURNING j.*, q.retention_days), "
        "h AS ("
        "  INSERT INTO conveyor.job_history (" + std::string(history_columns) + ")"
        "  SELECT job_id, queue_id, $2, priority, run_at, job_type, group_key, dedup_key, payload, attempt,"
        "         max_attempts, worker_id, started_at, COALESCE($3, last_error), created_at, pg_catalog.now(),"
        "         pg_catalog.now() + pg_catalog.make_interval(days => retention_days)"
        "  FROM d), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), $2, worker_id,"
        "         pg_catalog.jsonb_build_object('reason', $3, 'previous_status',"
        "           CASE WHEN state = 'running' THEN 'running' ELSE 'pending' END)"
        "  FROM d), "
        "cnt AS (" +
        counts_upsert("SELECT queue_id, -count(*) FILTER (WHERE state IN ('ready', 'waiting')),"
                      " -count(*) FILTER (WHERE state = 'scheduled'), -count(*) FILTER (WHERE state = 'running'),"
                      " count(*) FILTER (WHERE $2 = 'dead'), count(*) FILTER (WHERE $2 = 'cancelled')"
                      " FROM d GROUP BY queue_id",
                      {"pending", "scheduled", "running", "dead", "cancelled"}) +
        ") SELECT job_id, queue_id, group_key, $2 FROM d";
    static Statement stmt(sql.c_str(), {UUIDOID, TEXTOID, TEXTOID});
    return changed_rows(stmt.run(Params().uuid(0, id).text(1, status).text(2, reason)));
}

static bool end_job(FunctionCallInfo fcinfo, const std::string &status) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    auto reason = arg_text(fcinfo, 1);
    spi::Connection spi;
    auto jobs = find_jobs({id}, true);
    if (jobs.empty()) {
        if (auto done = finished_status(id))
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} is already finished ({})", uuid_text(id), *done));
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    }
    ensure_partitions_for(jobs);
    if (jobs[0].group_key) lock_groups({{jobs[0].queue_id, *jobs[0].group_key}});
    auto changes = finish_job(id, status, reason);
    if (changes.empty())
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} finished concurrently", uuid_text(id)), "", "Retry.");
    fill_group_heads(groups_losing_head(changes));
    spi.finish();
    return true;
}

CONVEYOR_FUNCTION(conveyor_dead_letter) {
    if (PG_ARGISNULL(1)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "reason must not be NULL");
    PG_RETURN_BOOL(end_job(fcinfo, "dead"));
}

CONVEYOR_FUNCTION(conveyor_cancel) { PG_RETURN_BOOL(end_job(fcinfo, "cancelled")); }

CONVEYOR_FUNCTION(conveyor_retry) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    auto delay = arg_int(fcinfo, 1);
    check_delay(delay, "delay_seconds");
    spi::Connection spi;
    if (auto jobs = find_jobs({id}); !jobs.empty())
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fmt::format("job {} is {}, not dead or cancelled", uuid_text(id), public_status(jobs[0].state)));
    static Statement find(
        "SELECT h.queue_id, h.group_key, h.dedup_key, h.status FROM conveyor.job_history h WHERE h.job_id = $1",
        {UUIDOID});
    auto rows = find.run(Params().uuid(0, id));
    if (rows.size() == 0) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    int32 queue_id = *rows.int4(0, 0);
    auto group = rows.text(0, 1);
    auto dedup = rows.text(0, 2);
    std::string status = *rows.text(0, 3);
    if (status == "completed")
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} completed; only dead or cancelled jobs can be retried", uuid_text(id)));
    auto queues = load_queues_by_id({queue_id});
    if (queues.empty()) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("the queue of job {} no longer exists", uuid_text(id)));
    const Queue &q = queues.begin()->second;
    ensure_event_partitions();

    if (dedup) {
        lock_dedup_keys(queue_id, {*dedup});
        if (auto other = active_job_with_dedup_key(queue_id, *dedup))
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        fmt::format("job {} cannot be retried: job {} with the same dedup_key {} is pending or running",
                                    uuid_text(id), uuid_text(*other), quoted(*dedup)));
    }
    int32 secs = delay.value_or(0);
    std::string state = secs > 0 ? "scheduled" : "ready";
    if (secs == 0 && group) {
        // Joins the group's waiting set; the rebalance below decides whether it runs next.
        lock_groups({{queue_id, *group}});
        state = "waiting";
    }
    static const std::string sql =
        "WITH h AS (DELETE FROM conveyor.job_history WHERE job_id = $1 AND status IN ('dead', 'cancelled') RETURNING *), "
        "ins AS ("
        "  INSERT INTO conveyor.jobs (job_id, queue_id, state, priority, run_at, job_type, group_key, dedup_key,"
        "                             payload, attempt, max_attempts, last_error, created_at)"
        "  SELECT job_id, queue_id, $2, priority, pg_catalog.now() + pg_catalog.make_interval(secs => $3), job_type,"
        "         group_key, dedup_key, payload, 0, max_attempts, last_error, created_at FROM h"
        "  RETURNING job_id, queue_id, state, run_at), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
        "  SELECT ins.job_id, pg_catalog.clock_timestamp(), 'retried',"
        "         pg_catalog.jsonb_build_object('previous_status', h.status, 'run_at', ins.run_at)"
        "  FROM ins JOIN h USING (job_id)), "
        "cnt AS (" +
        counts_upsert("SELECT ins.queue_id, count(*) FILTER (WHERE ins.state <> 'scheduled'),"
                      " count(*) FILTER (WHERE ins.state = 'scheduled'), -count(*) FILTER (WHERE h.status = 'dead')"
                      " FROM ins JOIN h USING (job_id) GROUP BY ins.queue_id",
                      {"pending", "scheduled", "dead"}) +
        ") SELECT count(*) FROM ins";
    static Statement stmt(sql.c_str(), {UUIDOID, TEXTOID, INT4OID});
    auto res = stmt.run(Params().uuid(0, id).text(1, state).int4(2, secs));
    if (*res.int8(0, 0) != 1)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("job {} changed concurrently", uuid_text(id)), "", "Retry.");
    if (state == "waiting") {
        rebalance_group_heads(queue_id, {*group});
        fill_group_heads(queue_id, {*group});
    }
    if (state != "scheduled") notify_queue(q);
    spi.finish();
    PG_RETURN_BOOL(true);
}

// ---------------------------------------------------------------------------------------------------
// Queue management

static void write_queue(const Queue &q, bool create) {
    static Statement insert(
        "INSERT INTO conveyor.queues (name, lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds,"
        " job_types, required_keys, retention_days, notify, event_trail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING RETURNING queue_id",
        {TEXTOID, INT4OID, INT4OID, INT4OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, INT4OID, BOOLOID, TEXTOID});
    static Statement update(
        "UPDATE conveyor.queues SET lease_seconds = $2, max_attempts = $3, backoff_base_seconds = $4,"
        " backoff_max_seconds = $5, job_types = $6, required_keys = $7, retention_days = $8, notify = $9,"
        " event_trail = $10 WHERE name = $1 RETURNING queue_id",
        {TEXTOID, INT4OID, INT4OID, INT4OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, INT4OID, BOOLOID, TEXTOID});
    Params p;
    p.text(0, q.name).int4(1, q.lease_seconds).int4(2, q.max_attempts).int4(3, q.backoff_base_seconds);
    p.int4(4, q.backoff_max_seconds);
    if (q.job_types) p.text_array(5, *q.job_types);
    else p.null(5);
    if (q.required_keys) p.text_array(6, *q.required_keys);
    else p.null(6);
    p.int4(7, q.retention_days).boolean(8, q.notify).text(9, q.event_trail);
    auto rows = (create ? insert : update).run(p);
    if (rows.size() == 0 && create)
        throw Error(ERRCODE_DUPLICATE_OBJECT, fmt::format("queue {} already exists", quoted(q.name)), "",
                    "Change its options with conveyor.alter_queue.");
    ensure_history_partitions(q.retention_days);
    ensure_event_partitions();
}

CONVEYOR_FUNCTION(conveyor_create_queue) {
    Queue q;
    q.name = required_text(fcinfo, 0, "queue");
    validate_queue_name(q.name);
    Jsonb *options = arg_jsonb(fcinfo, 1);
    apply_options(q, options);
    spi::Connection spi;
    write_queue(q, true);
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_FUNCTION(conveyor_alter_queue) {
    std::string name = required_text(fcinfo, 0, "queue");
    Jsonb *options = arg_jsonb(fcinfo, 1);
    if (!options) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "options must not be NULL");
    spi::Connection spi;
    Queue q = load_queue(name);
    apply_options(q, options);
    write_queue(q, false);
    spi.finish();
    PG_RETURN_VOID();
}

static void set_paused(FunctionCallInfo fcinfo, bool paused) {
    std::string name = required_text(fcinfo, 0, "queue");
    spi::Connection spi;
    static Statement stmt("UPDATE conveyor.queues SET paused = $2 WHERE name = $1 RETURNING queue_id", {TEXTOID, BOOLOID});
    if (stmt.run(Params().text(0, name).boolean(1, paused)).size() == 0) load_queue(name);  // raises 42704
    if (!paused) notify_queue(load_queue(name));
    spi.finish();
}

CONVEYOR_FUNCTION(conveyor_pause_queue) {
    set_paused(fcinfo, true);
    PG_RETURN_VOID();
}

CONVEYOR_FUNCTION(conveyor_resume_queue) {
    set_paused(fcinfo, false);
    PG_RETURN_VOID();
}

CONVEYOR_FUNCTION(conveyor_drop_queue) {
    std::string name = required_text(fcinfo, 0, "queue");
    bool force = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
    spi::Connection spi;
    Queue q = load_queue(name);
    // Lock the queue row first: enqueue and dequeue read it, so a concurrent drop cannot interleave.
    static Statement lock("SELECT 1 FROM conveyor.queues WHERE queue_id = $1 FOR UPDATE", {INT4OID});
    lock.run(Params().int4(0, q.id));
    static Statement count("SELECT count(*) FROM conveyor.jobs WHERE queue_id = $1", {INT4OID});
    int64 active = *count.run(Params().int4(0, q.id)).int8(0, 0);
    if (active > 0 && !force)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fmt::format("queue {} still has {} pending or running jobs", quoted(name), active), "",
                    "Pass force => true to drop them too.");
    static Statement drop(
        "WITH j AS (DELETE FROM conveyor.jobs WHERE queue_id = $1),"
        " h AS (DELETE FROM conveyor.job_history WHERE queue_id = $1),"
        " c AS (DELETE FROM conveyor.queue_counts WHERE queue_id = $1)"
        " DELETE FROM conveyor.queues WHERE queue_id = $1",
        {INT4OID});
    drop.run(Params().int4(0, q.id));
    spi.finish();
    PG_RETURN_BOOL(true);
}

// AFTER ... FOR EACH STATEMENT trigger on conveyor.queues: every backend drops its cached queue rows.
CONVEYOR_FUNCTION(conveyor_queues_changed) {
    if (!CALLED_AS_TRIGGER(fcinfo)) throw Error(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "queues_changed must be called as a trigger");
    Relation rel = ((TriggerData *)fcinfo->context)->tg_relation;
    pg_guard([&] { CacheInvalidateRelcache(rel); });
    return PointerGetDatum(nullptr);
}

CONVEYOR_FUNCTION(conveyor_list_queues) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT name, paused, pg_catalog.jsonb_build_object('lease_seconds', lease_seconds, 'max_attempts', max_attempts,"
        " 'backoff_base_seconds', backoff_base_seconds, 'backoff_max_seconds', backoff_max_seconds,"
        " 'job_types', job_types, 'required_keys', required_keys, 'retention_days', retention_days,"
        " 'notify', notify, 'event_trail', event_trail), created_at FROM conveyor.queues ORDER BY name",
        {});
    auto rows = stmt.run();
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Observing

CONVEYOR_FUNCTION(conveyor_get_job) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    spi::Connection spi;
    static Statement stmt(
        "SELECT pg_catalog.jsonb_build_object('job_id', j.job_id, 'queue', q.name,"
        "  'status', CASE WHEN j.state = 'running' THEN 'running' ELSE 'pending' END, 'state', j.state,"
        "  'job_type', j.job_type, 'group_key', j.group_key, 'dedup_key', j.dedup_key, 'payload', j.payload,"
        "  'priority', j.priority, 'attempt', j.attempt, 'max_attempts', j.max_attempts, 'run_at', j.run_at,"
        "  'worker_id', j.worker_id, 'started_at', j.started_at, 'lease_until', j.lease_until,"
        "  'last_error', j.last_error, 'created_at', j.created_at, 'finished_at', NULL)"
        " FROM conveyor.jobs j LEFT JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = $1"
        " UNION ALL "
        "SELECT pg_catalog.jsonb_build_object('job_id', h.job_id, 'queue', q.name, 'status', h.status,"
        "  'state', h.status, 'job_type', h.job_type, 'group_key', h.group_key, 'dedup_key', h.dedup_key,"
        "  'payload', h.payload, 'priority', h.priority, 'attempt', h.attempt, 'max_attempts', h.max_attempts,"
        "  'run_at', h.run_at, 'worker_id', h.worker_id, 'started_at', h.started_at, 'lease_until', NULL,"
        "  'last_error', h.last_error, 'created_at', h.created_at, 'finished_at', h.finished_at)"
        " FROM conveyor.job_history h LEFT JOIN conveyor.queues q USING (queue_id) WHERE h.job_id = $1"
        " LIMIT 1",
        {UUIDOID});
    auto rows = stmt.run(Params().uuid(0, id));
    if (rows.size() == 0) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    Datum result = spi.keep(rows.datum(0, 0), false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

CONVEYOR_FUNCTION(conveyor_job_events) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT at, event, worker_id, details FROM conveyor.job_events WHERE job_id = $1 ORDER BY at", {UUIDOID});
    auto rows = stmt.run(Params().uuid(0, id));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// The earliest accepted time (src/core/args.hpp): queue_metrics counts a pending job of an earlier or
// infinite run_at, stored before run_at was checked, as pending since then rather than failing.
#define MIN_TIME_SQL "'1900-01-01 00:00:00+00'::timestamptz"

CONVEYOR_FUNCTION(conveyor_queue_metrics) {
    auto name = arg_text(fcinfo, 0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    if (name) load_queue(*name);
    static Statement stmt(
        "SELECT q.name,"
        "  (COALESCE(c.pending, 0) + ds.n)::bigint,"
        "  (COALESCE(c.scheduled, 0) - ds.n)::bigint,"
        "  COALESCE(c.running, 0)::bigint,"
        "  (SELECT count(*) FROM conveyor.jobs r WHERE r.queue_id = q.queue_id AND r.state = 'running'"
        "     AND r.lease_until < pg_catalog.now()),"
        "  COALESCE(c.completed_1h, 0)::bigint,"
        "  COALESCE(c.failed_24h, 0)::bigint,"
        "  COALESCE(c.dead, 0)::bigint,"
        "  CASE WHEN c.started_1h > 0 THEN pg_catalog.round((c.wait_1h / c.started_1h)::numeric, 3) END,"
        "  COALESCE(c.completed_1h, 0)::numeric,"
        "  pg_catalog.round(extract(epoch FROM pg_catalog.now() - GREATEST(o.oldest, " MIN_TIME_SQL "))::numeric, 3)"
        " FROM conveyor.queues q"
        " LEFT JOIN LATERAL ("
        "   SELECT sum(pending) AS pending, sum(scheduled) AS scheduled, sum(running) AS running, sum(dead) AS dead,"
        "     sum(completed) FILTER (WHERE bucket > pg_catalog.now() - interval '1 hour') AS completed_1h,"
        "     sum(failed) FILTER (WHERE bucket > pg_catalog.now() - interval '24 hours') AS failed_24h,"
        "     sum(started) FILTER (WHERE bucket > pg_catalog.now() - interval '1 hour') AS started_1h,"
        "     sum(wait_seconds) FILTER (WHERE bucket > pg_catalog.now() - interval '1 hour') AS wait_1h"
        "   FROM conveyor.queue_counts WHERE queue_id = q.queue_id) c ON true"
        " CROSS JOIN LATERAL ("
        "   SELECT count(*) AS n FROM conveyor.jobs s"
        "   WHERE s.queue_id = q.queue_id AND s.state = 'scheduled' AND s.run_at <= pg_catalog.now()) ds"
        " CROSS JOIN LATERAL ("
        "   SELECT min(m) AS oldest FROM ("
        "     SELECT (SELECT r.run_at FROM conveyor.jobs r WHERE r.queue_id = q.queue_id AND r.state = 'ready'"
        "             AND r.priority = p ORDER BY r.run_at LIMIT 1) FROM pg_catalog.generate_series(1, 10) p"
        "     UNION ALL SELECT (SELECT w.run_at FROM conveyor.jobs w WHERE w.queue_id = q.queue_id"
        "             AND w.state = 'waiting' ORDER BY w.run_at LIMIT 1)"
        "     UNION ALL SELECT (SELECT s.run_at FROM conveyor.jobs s WHERE s.queue_id = q.queue_id"
        "             AND s.state = 'scheduled' ORDER BY s.run_at LIMIT 1) WHERE true) x(m)"
        "   WHERE m <= pg_catalog.now()) o"
        " WHERE $1::text IS NULL OR q.name = $1"
        " ORDER BY q.name",
        {TEXTOID});
    auto rows = stmt.run(Params().text(0, name));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Maintenance (pg_cron runs conveyor.maintain() every minute; see README)

CONVEYOR_FUNCTION(conveyor_maintain) {
    (void)fcinfo;
    spi::Connection spi;
    // 1. Partitions ahead for every queue's retention.
    static Statement max_retention("SELECT COALESCE(max(retention_days), 7) FROM conveyor.queues", {});
    int32 retention = *max_retention.run().int4(0, 0);
    ensure_history_partitions(retention);
    ensure_event_partitions();

    // 2. Drop history partitions whose purge day has passed, taking their dead jobs off the gauges;
    //    drop event partitions older than the longest retention.
    static Statement partitions(
        "SELECT c.relname, p.relname FROM pg_catalog.pg_inherits i"
        " JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_class p ON p.oid = i.inhparent"
        " WHERE p.relnamespace = 'conveyor'::regnamespace AND p.relname IN ('job_history', 'job_events')"
        " ORDER BY 1",
        {});
    auto rows = partitions.run();
    std::vector<std::pair<std::string, std::string>> parts;
    for (uint64 r = 0; r < rows.size(); ++r) parts.emplace_back(*rows.text(r, 0), *rows.text(r, 1));
    std::string today = day_text(unix_day(tx_now()), true);
    std::string events_cutoff = day_text(unix_day(tx_now()) - retention - 1, true);
    int dropped = 0;
    for (const auto &[part, parent] : parts) {
        std::string suffix = part.substr(part.size() - 8);
        bool expired = parent == "job_history" ? suffix < today : suffix < events_cutoff;
        if (!expired) continue;
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        if (parent == "job_history") {
            std::string sql = "WITH d AS (SELECT queue_id, count(*) AS n FROM conveyor." + std::string(ident) +
                              " WHERE status = 'dead' GROUP BY queue_id) " +
                              counts_upsert("SELECT queue_id, -n FROM d", {"dead"});
            spi::run_once(sql, {}, Params());
        }
        spi::run_once(fmt::format("DROP TABLE conveyor.{}", ident), {}, Params());
        ++dropped;
    }

    // 3. Fold counter rows: minute rows older than 65 minutes into one row per queue and minute
    //    (shard 0, never a backend's pid, so folded rows never collide with live writers), and rows
    //    older than 25 hours into one row per queue at bucket -infinity. Minutes stay minutes, so
    //    the 24-hour window of queue_metrics stays exact.
    static const std::string fold_sql =
        "WITH old AS ("
        "  DELETE FROM conveyor.queue_counts c"
        "  WHERE c.bucket > '-infinity' AND c.bucket < pg_catalog.now() - interval '65 minutes'"
        "    AND (c.shard <> 0 OR c.bucket < pg_catalog.now() - interval '25 hours')"
        "  RETURNING c.*,"
        "    CASE WHEN c.bucket < pg_catalog.now() - interval '25 hours' THEN '-infinity'::timestamptz"
        "         ELSE c.bucket END AS target) "
        "INSERT INTO conveyor.queue_counts AS c (queue_id, bucket, shard, pending, scheduled, running, dead, enqueued,"
        "    started, completed, failed, expired, cancelled, wait_seconds, run_seconds)"
        " SELECT queue_id, target, 0, sum(pending), sum(scheduled), sum(running), sum(dead), sum(enqueued),"
        "    sum(started), sum(completed), sum(failed), sum(expired), sum(cancelled), sum(wait_seconds), sum(run_seconds)"
        " FROM old GROUP BY queue_id, target"
        " ON CONFLICT (queue_id, bucket, shard) DO UPDATE SET pending = c.pending + excluded.pending,"
        "    scheduled = c.scheduled + excluded.scheduled, running = c.running + excluded.running,"
        "    dead = c.dead + excluded.dead, enqueued = c.enqueued + excluded.enqueued,"
        "    started = c.started + excluded.started, completed = c.completed + excluded.completed,"
        "    failed = c.failed + excluded.failed, expired = c.expired + excluded.expired,"
        "    cancelled = c.cancelled + excluded.cancelled, wait_seconds = c.wait_seconds + excluded.wait_seconds,"
        "    run_seconds = c.run_seconds + excluded.run_seconds";
    static Statement fold(fold_sql.c_str(), {});
    uint64 folded = fold.run().affected();

    // 4. Expired leases everywhere, and groups left without a head.
    int64 reaped = 0;
    for (;;) {
        int64 n = reap_expired(std::nullopt, 1000);
        reaped += n;
        if (n < 1000) break;
    }
    static Statement headless(
        "SELECT DISTINCT w.queue_id, w.group_key FROM conveyor.jobs w WHERE w.state = 'waiting'"
        " AND NOT EXISTS (SELECT 1 FROM conveyor.jobs h WHERE h.queue_id = w.queue_id AND h.group_key = w.group_key"
        "                 AND h.state IN ('ready', 'running'))",
        {});
    auto hl = headless.run();
    std::set<GroupKey> groups;
    for (uint64 r = 0; r < hl.size(); ++r) groups.insert({*hl.int4(r, 0), *hl.text(r, 1)});
    groups = try_lock_groups(groups);
    fill_group_heads(groups);

    // 5. Idempotency keys past their time to live.
    int64 keys_purged = 0;
    for (;;) {
        int64 n = idempotency::purge_expired(10000);
        keys_purged += n;
        if (n < 10000) break;
    }

    // 6. Old lock events.
    locks::maintain_locks();

    // 7. Reservations past their time to live free their budget; rate limiter rows that hold no state.
    int64 reservations_expired = 0;
    for (;;) {
        int64 n = costs::expire_reservations(10000);
        reservations_expired += n;
        if (n < 10000) break;
    }
    int64 rate_limits_purged = costs::purge_rate_limits();

    std::string summary = fmt::format(
        "{{\"partitions_dropped\": {}, \"counter_rows_folded\": {}, \"leases_expired\": {}, \"groups_repaired\": {},"
        " \"idempotency_keys_purged\": {}, \"reservations_expired\": {}, \"rate_limits_purged\": {}}}",
        dropped, folded, reaped, groups.size(), keys_purged, reservations_expired, rate_limits_purged);
    // Built after SPI_finish, in the caller's memory context: SPI_finish frees the SPI procedure
    // context, and a result built there would be read after it was freed.
    spi.finish();
    const char *s = summary.c_str();
    Datum result = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
    PG_RETURN_DATUM(result);
}

// At load (src/core/module.cpp): the queue cache and the partitions this backend believes exist
// follow catalog changes and aborts.
void register_callbacks() {
    pg_guard([] {
        CacheRegisterRelcacheCallback(forget_cached_queues, (Datum)0);
        RegisterXactCallback(forget_partitions_on_abort, nullptr);
        RegisterSubXactCallback(forget_partitions_on_subabort, nullptr);
    });
}

} // namespace conveyor::queue
