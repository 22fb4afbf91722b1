// Listing jobs: conveyor.list_jobs. Pending, running and finished jobs, newest first, a page at a
// time by job id (keyset pagination: `after` is the last id of the previous page, never an OFFSET).
// Job ids are UUID v7, time-ordered, so since/until on creation time become job-id bounds, and every
// filter reads an index in job id order (job_history's partitions carry one per filter, see
// partitions.cpp) and stops at the limit.
#include <algorithm>
#include <map>
#include <memory>

#include "queue/internal.hpp"

namespace conveyor::queue {

// The statuses get_job reports.
static const std::set<std::string> job_statuses = {"pending", "running", "completed", "dead", "cancelled"};

// The smallest UUID v7 of t's millisecond (times before 1970 map to the smallest id): since and
// until count to the millisecond, as the ids do.
static pg_uuid_t uuid_floor(TimestampTz t) {
    int64 unix_us = t + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;
    int64 ms = unix_us <= 0 ? 0 : unix_us / 1000;
    pg_uuid_t u{};
    for (int i = 5; i >= 0; --i, ms >>= 8) u.data[i] = (uint8)(ms & 0xff);
    return u;
}

static pg_uuid_t uuid_max() {
    pg_uuid_t u;
    std::memset(u.data, 0xff, UUID_LEN);
    return u;
}

// The statements differ by which filters are present, so that each plan reads the index its filters
// need: one kept statement per shape.
enum ListingFilter { by_queue = 1, by_group = 2, by_type = 4, by_status = 8, unfinished_only = 16, one_unfinished = 32 };

static std::string listing_sql(int shape) {
    auto filters = [&](const char *t) {
        std::string w = fmt::format(" AND {0}.job_id >= $1 AND {0}.job_id < $2", t);
        if (shape & by_queue) w += fmt::format(" AND {}.queue_id = $6", t);
        if (shape & by_group) w += fmt::format(" AND {}.group_key = $7", t);
        if (shape & by_type) w += fmt::format(" AND {}.job_type = $8", t);
        return w;
    };
    std::string active_status = (shape & by_status)
        ? " AND (CASE WHEN j.state = 'running' THEN 'running' ELSE 'pending' END) = ANY($9)" : "";
    // One finished status other than completed: an equality, so the partial (status, job_id) index
    // yields the rows in id order (an = ANY over several values would not).
    std::string history_status = (shape & one_unfinished)  ? " AND h.status <> 'completed' AND h.status::text = $10"
                                 : (shape & unfinished_only) ? " AND h.status <> 'completed' AND h.status::text = ANY($9)"
                                 : (shape & by_status)     ? " AND h.status::text = ANY($9)"
                                                           : "";
    return fmt::format(
        "SELECT x.job_id, q.name, x.status, x.state, x.job_type, x.group_key, x.dedup_key, x.payload, x.priority,"
        "  x.attempt, x.max_attempts, x.run_at, x.worker_id, x.started_at, x.lease_until, x.last_error, x.created_at,"
        "  x.finished_at, x.percent, x.step, x.reason, x.details, x.resolved_at, x.resolution, x.resolved_by"
        " FROM ("
        "  (SELECT j.job_id, j.queue_id, CASE WHEN j.state = 'running' THEN 'running' ELSE 'pending' END AS status,"
        "     j.state::text AS state, j.job_type, j.group_key, j.dedup_key, j.payload, j.priority::int AS priority,"
        "     j.attempt, j.max_attempts, j.run_at, j.worker_id, j.started_at, j.lease_until, j.last_error, j.created_at,"
        "     NULL::timestamptz AS finished_at, j.percent, j.step, NULL::text AS reason, NULL::jsonb AS details,"
        "     NULL::timestamptz AS resolved_at, NULL::text AS resolution, NULL::text AS resolved_by"
        "   FROM conveyor.jobs j WHERE $4{0}{1} ORDER BY j.job_id DESC LIMIT $3)"
        "  UNION ALL"
        "  (SELECT h.job_id, h.queue_id, h.status::text, h.status::text, h.job_type, h.group_key, h.dedup_key, h.payload,"
        "     h.priority::int, h.attempt, h.max_attempts, h.run_at, h.worker_id, h.started_at, NULL::timestamptz,"
        "     h.last_error, h.created_at, h.finished_at, h.percent, h.step, h.reason, h.details, h.resolved_at,"
        "     h.resolution, h.resolved_by"
        "   FROM conveyor.job_history h WHERE $5{2}{3} ORDER BY h.job_id DESC LIMIT $3)"
        " ) x LEFT JOIN conveyor.queues q ON q.queue_id = x.queue_id"
        " ORDER BY x.job_id DESC LIMIT $3",
        filters("j"), active_status, filters("h"), history_status);
}

struct ListingStatement {
    explicit ListingStatement(int shape)
        : sql(listing_sql(shape)),
          stmt(sql.c_str(), {UUIDOID, UUIDOID, INT4OID, BOOLOID, BOOLOID, INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID}) {}
    std::string sql;
    Statement stmt;
};

static Statement &listing_statement(int shape) {
    static std::map<int, std::unique_ptr<ListingStatement>> kept;
    auto &slot = kept[shape];
    if (!slot) slot = std::make_unique<ListingStatement>(shape);
    return slot->stmt;
}

CONVEYOR_FUNCTION(conveyor_list_jobs) {
    auto queue_name = arg_text(fcinfo, 0);
    std::optional<std::vector<std::string>> statuses;
    if (!PG_ARGISNULL(1)) {
        ArrayType *arr = pg_guard([&] { return PG_GETARG_ARRAYTYPE_P(1); });
        Datum *elems;
        bool *nulls;
        int n;
        pg_guard([&] { deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n); });
        statuses.emplace();
        for (int k = 0; k < n; ++k) {
            if (nulls[k]) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("status[{}] must not be NULL", k + 1));
            std::string s = pg_guard([&] { return (const char *)TextDatumGetCString(elems[k]); });
            if (!job_statuses.count(s))
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown job status {}", quoted(s)), "",
                            "Statuses are pending, running, completed, dead and cancelled.");
            statuses->push_back(s);
        }
    }
    auto group = arg_text(fcinfo, 2);
    auto job_type = arg_text(fcinfo, 3);
    std::optional<TimestampTz> since, until;
    if (!PG_ARGISNULL(4)) since = check_time(PG_GETARG_TIMESTAMPTZ(4), "since");
    if (!PG_ARGISNULL(5)) until = check_time(PG_GETARG_TIMESTAMPTZ(5), "until");
    int32 lim = required_int(fcinfo, 6, "lim", 1, 1000);
    std::optional<pg_uuid_t> after;
    if (!PG_ARGISNULL(7)) after = *DatumGetUUIDP(PG_GETARG_DATUM(7));

    auto wants = [&](const std::string &s) {
        return !statuses || std::find(statuses->begin(), statuses->end(), s) != statuses->end();
    };
    bool want_active = wants("pending") || wants("running");
    bool want_history = wants("completed") || wants("dead") || wants("cancelled");
    pg_uuid_t lo = since ? uuid_floor(*since) : pg_uuid_t{};
    pg_uuid_t hi = until ? uuid_floor(*until) : uuid_max();
    if (after && std::memcmp(after->data, hi.data, UUID_LEN) < 0) hi = *after;

    ResultSet out(fcinfo);
    spi::Connection spi;
    std::optional<int32> queue_id;
    if (queue_name) queue_id = load_queue(*queue_name).id;
    std::optional<std::string> only_unfinished;  // the one finished status asked for, if it is dead or cancelled
    if (statuses && !wants("completed") && wants("dead") != wants("cancelled"))
        only_unfinished = wants("dead") ? "dead" : "cancelled";
    int shape = (queue_id ? by_queue : 0) | (group ? by_group : 0) | (job_type ? by_type : 0) |
                (statuses ? by_status : 0) | (statuses && !wants("completed") ? unfinished_only : 0) |
                (only_unfinished ? one_unfinished : 0);
    Params p;
    p.uuid(0, lo).uuid(1, hi).int4(2, lim).boolean(3, want_active).boolean(4, want_history).int4(5, queue_id);
    p.text(6, group).text(7, job_type);
    if (statuses) p.text_array(8, *statuses);
    else p.null(8);
    p.text(9, only_unfinished);
    spi::emit(out, listing_statement(shape).run(p));
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
