// The queue catalog: queue rows and their options, the per-backend cache of them, and the SQL entry
// points that manage queues (conveyor.create_queue, alter_queue, pause_queue, resume_queue,
// drop_queue, and the trigger queues_changed).
#include <unordered_map>
#include <unordered_set>

#include "core/jsonb.hpp"
#include "queue/internal.hpp"

extern "C" {
#include "storage/proc.h"
}

namespace conveyor::queue {

// ---------------------------------------------------------------------------------------------------
// Queues and their options

static constexpr const char *queue_columns =
    "queue_id, name, lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds, job_types, "
    "required_keys, retention_days, notify, event_trail, paused";
// The columns of 0.3, after those (read only in a database at 0.3: catalog_at_0_3()).
static constexpr const char *columns_0_3 =
    "dead_retention_days, payload_schema, display_name, description, metadata::text, status_notify, stats_retention_days";

// The strings of a text[] (its NULL elements left out).
static std::vector<std::string> text_array_strings(Datum array) {
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] {
        deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    });
    std::vector<std::string> out;
    for (int k = 0; k < n; ++k)
        if (!nulls[k]) out.emplace_back(pg_guard([&] { return (const char *)TextDatumGetCString(elems[k]); }));
    return out;
}

static Queue queue_from_row(const spi::Rows &rows, uint64 r, bool at_0_3) {
    Queue q;
    q.id = *rows.int4(r, 0);
    q.name = *rows.text(r, 1);
    q.lease_seconds = *rows.int4(r, 2);
    q.max_attempts = *rows.int4(r, 3);
    q.backoff_base_seconds = *rows.int4(r, 4);
    q.backoff_max_seconds = *rows.int4(r, 5);
    q.job_types = rows.value(r, 6, text_array_strings);
    q.required_keys = rows.value(r, 7, text_array_strings);
    q.retention_days = *rows.int4(r, 8);
    q.notify = *rows.boolean(r, 9);
    q.event_trail = *rows.text(r, 10);
    q.paused = *rows.boolean(r, 11);
    if (at_0_3) {
        q.dead_retention_days = *rows.int4(r, 12);
        if (auto schema = rows.value(r, 13, [](Datum d) { return d; })) q.payload_schema = payload_schema_from_datum(*schema);
        q.display_name = rows.text(r, 14);
        q.description = rows.text(r, 15);
        q.metadata = rows.text(r, 16);
        q.status_notify = *rows.boolean(r, 17);
        q.stats_retention_days = *rows.int4(r, 18);
    }
    return q;
}

static std::optional<Queue> find_queue(const std::string &name) {
    static const std::string sql[2] = {
        fmt::format("SELECT {} FROM conveyor.queues WHERE name = $1", queue_columns),
        fmt::format("SELECT {}, {} FROM conveyor.queues WHERE name = $1", queue_columns, columns_0_3)};
    static Statement stmts[2] = {{sql[0].c_str(), {TEXTOID}}, {sql[1].c_str(), {TEXTOID}}};
    bool at_0_3 = catalog_at_0_3();
    auto rows = stmts[at_0_3].run(Params().text(0, name));
    if (rows.size() == 0) return std::nullopt;
    return queue_from_row(rows, 0, at_0_3);
}

Queue load_queue(const std::string &name) {
    auto q = find_queue(name);
    if (!q)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("queue {} does not exist", quoted(name)), "",
                    "Create it with conveyor.create_queue(queue => ...).");
    return *q;
}

// Queue rows for the hot paths (enqueue, enqueue_batch, dequeue), cached per backend. Every change to
// conveyor.queues fires the statement trigger queues_changed, which invalidates the table's relcache
// entry; each backend's relcache callback then empties its cache: others' changes are taken in at
// their next transaction or lookup (which first accepts pending invalidations), the backend's own at
// the end of the changing statement, and a rollback undoes them the same way.
//
// An entry read under a transaction snapshot (REPEATABLE READ, SERIALIZABLE) may predate a change
// whose invalidation this backend has already taken in: it serves only the transaction that read it.
struct CachedQueue {
    Queue queue;
    LocalTransactionId only_in = InvalidLocalTransactionId;
};
static std::unordered_map<std::string, CachedQueue> queue_cache;
static std::optional<int32> longest_retention_cache;  // the largest retention_days of all queues
static std::optional<std::unordered_set<int32>> status_notify_cache;  // ids of queues with status_notify on
static Oid queue_cache_relid = InvalidOid;
static std::optional<bool> at_0_3_cache;  // catalog_at_0_3()
static Oid at_0_3_relid = InvalidOid;

static void forget_cached_queues(Datum, Oid relid) {
    if (relid == InvalidOid || relid == at_0_3_relid) {
        at_0_3_cache.reset();
        at_0_3_relid = InvalidOid;
    }
    if (relid == InvalidOid || relid == queue_cache_relid) {
        queue_cache.clear();
        longest_retention_cache.reset();
        status_notify_cache.reset();
        queue_cache_relid = InvalidOid;
    }
}

static void take_in_queue_changes() {
    pg_guard([] { AcceptInvalidationMessages(); });
}

bool catalog_at_0_3() {
    take_in_queue_changes();
    if (at_0_3_cache) return *at_0_3_cache;
    Oid relid = conveyor_relid("queues");
    // The update to 0.3 adds all of its columns and tables in one script: one of them stands for all.
    bool at_0_3 = OidIsValid(relid) &&
                  pg_guard([&] { return get_attnum(relid, "dead_retention_days") != InvalidAttrNumber; });
    at_0_3_relid = relid;
    at_0_3_cache = at_0_3;
    return at_0_3;
}

Queue cached_queue(const std::string &name) {
    take_in_queue_changes();
    if (auto it = queue_cache.find(name); it != queue_cache.end()) {
        if (it->second.only_in == InvalidLocalTransactionId || it->second.only_in == MyProc->lxid) return it->second.queue;
        queue_cache.erase(it);
    }
    Oid relid = conveyor_relid("queues");
    Queue q = load_queue(name);  // may take in invalidations, which empty the cache
    queue_cache_relid = relid;
    queue_cache.insert_or_assign(name, CachedQueue{q, IsolationUsesXactSnapshot() ? MyProc->lxid : InvalidLocalTransactionId});
    return q;
}

int32 longest_retention() {
    take_in_queue_changes();
    if (longest_retention_cache) return *longest_retention_cache;
    static Statement stmts[2] = {
        {"SELECT COALESCE(max(retention_days), 7) FROM conveyor.queues", {}},
        {"SELECT COALESCE(max(GREATEST(retention_days, dead_retention_days)), 7) FROM conveyor.queues", {}}};
    bool at_0_3 = catalog_at_0_3();
    Oid relid = conveyor_relid("queues");
    int32 days = *stmts[at_0_3].run().int4(0, 0);
    queue_cache_relid = relid;
    longest_retention_cache = days;
    return days;
}

bool status_notify_on(int32 queue_id) {
    take_in_queue_changes();
    if (!status_notify_cache) {
        std::unordered_set<int32> ids;
        Oid relid = conveyor_relid("queues");
        if (catalog_at_0_3()) {
            static Statement stmt("SELECT queue_id FROM conveyor.queues WHERE status_notify", {});
            auto rows = stmt.run();
            for (uint64 r = 0; r < rows.size(); ++r) ids.insert(*rows.int4(r, 0));
        }
        queue_cache_relid = relid;
        status_notify_cache = std::move(ids);
    }
    return status_notify_cache->count(queue_id) > 0;
}

std::map<int32, Queue> load_queues_by_id(const std::vector<int32> &ids) {
    static const std::string sql[2] = {
        fmt::format("SELECT {} FROM conveyor.queues WHERE queue_id = ANY($1)", queue_columns),
        fmt::format("SELECT {}, {} FROM conveyor.queues WHERE queue_id = ANY($1)", queue_columns, columns_0_3)};
    static Statement stmts[2] = {{sql[0].c_str(), {INT4ARRAYOID}}, {sql[1].c_str(), {INT4ARRAYOID}}};
    bool at_0_3 = catalog_at_0_3();
    auto rows = stmts[at_0_3].run(Params().int4_array(0, ids));
    std::map<int32, Queue> out;
    for (uint64 r = 0; r < rows.size(); ++r) {
        Queue q = queue_from_row(rows, r, at_0_3);
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

// The options that 0.3 added: a database not yet updated has no columns for them (55000).
static void require_0_3_for(const std::string &option) {
    static const char *const options_0_3[] = {"dead_retention_days", "payload_schema", "display_name", "description",
                                              "metadata", "status_notify", "stats_retention_days"};
    for (const char *name : options_0_3)
        if (option == name && !catalog_at_0_3())
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("option {} needs conveyor 0.3", option),
                        "", "Run ALTER EXTENSION conveyor UPDATE.");
}

// Applies a jsonb object of options to q. Unknown names and bad values are errors (22023).
static void apply_options(Queue &q, Jsonb *options) {
    if (!options) return;
    for (const auto &f : jsonb_object_fields(options, "options")) {
        const std::string what = fmt::format("option {}", f.key);
        const JsonbValue &v = f.value;
        require_0_3_for(f.key);
        if (f.key == "lease_seconds") q.lease_seconds = (int32)jsonb_int(v, what, 1, 7 * 86400);
        else if (f.key == "max_attempts") q.max_attempts = (int32)jsonb_int(v, what, 1, 1000);
        else if (f.key == "backoff_base_seconds") q.backoff_base_seconds = (int32)jsonb_int(v, what, 0, 86400);
        else if (f.key == "backoff_max_seconds") q.backoff_max_seconds = (int32)jsonb_int(v, what, 0, 30 * 86400);
        else if (f.key == "retention_days") q.retention_days = (int32)jsonb_int(v, what, 0, 3650);
        else if (f.key == "dead_retention_days")
            q.dead_retention_days = (int32)jsonb_int(v, what, 0, 3650);
        else if (f.key == "stats_retention_days") q.stats_retention_days = (int32)jsonb_int(v, what, 0, 3650);
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
        } else if (f.key == "status_notify") {
            if (v.type != jbvBool)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a boolean, not {}", what, jsonb_type_name(v)));
            q.status_notify = v.val.boolean;
        } else if (!apply_metadata_option(q, f.key, v))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown queue option {}", quoted(f.key)), "",
                        "Options are lease_seconds, max_attempts, backoff_base_seconds, backoff_max_seconds, "
                        "job_types, required_keys, retention_days, dead_retention_days, notify, event_trail, "
                        "payload_schema, display_name, description, metadata, status_notify, stats_retention_days.");
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
// Queue management: create_queue, alter_queue, pause_queue, resume_queue, drop_queue

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
    // The columns of 0.3, in a second statement of the same transaction (one queues_changed more).
    bool at_0_3 = catalog_at_0_3();
    auto rows = (create ? insert : update).run(p);
    if (at_0_3 && rows.size() == 1) {
        static Statement set_0_3(
            "UPDATE conveyor.queues SET dead_retention_days = $2, payload_schema = $3::jsonb, display_name = $4,"
            " description = $5, metadata = $6::jsonb, status_notify = $7, stats_retention_days = $8 WHERE queue_id = $1",
            {INT4OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, INT4OID});
        Params m;
        m.int4(0, *rows.int4(0, 0)).int4(1, q.dead_retention_days);
        if (q.payload_schema) m.text(2, payload_schema_text(*q.payload_schema));
        else m.null(2);
        m.text(3, q.display_name).text(4, q.description).text(5, q.metadata).boolean(6, q.status_notify).int4(7, q.stats_retention_days);
        set_0_3.run(m);
    }
    if (rows.size() == 0 && create)
        throw Error(ERRCODE_DUPLICATE_OBJECT, fmt::format("queue {} already exists", quoted(q.name)), "",
                    "Change its options with conveyor.alter_queue.");
    ensure_history_partitions(std::max(q.retention_days, q.dead_retention_days));
    ensure_event_partitions();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_create_queue) {
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

CONVEYOR_AUDITED_FUNCTION(conveyor_alter_queue) {
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

CONVEYOR_AUDITED_FUNCTION(conveyor_pause_queue) {
    set_paused(fcinfo, true);
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_resume_queue) {
    set_paused(fcinfo, false);
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_drop_queue) {
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

// At load (src/core/module.cpp): the queue cache and the partitions this backend believes exist
// follow catalog changes and aborts.
void register_callbacks() {
    pg_guard([] {
        CacheRegisterRelcacheCallback(forget_cached_queues, (Datum)0);
    });
}

} // namespace conveyor::queue
