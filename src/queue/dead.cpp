// Dead letters: conveyor.dead_jobs lists a queue's dead jobs with their story (last error, attempts,
// the reason and details they died with, how they were handled), newest first, a page at a time;
// conveyor.resolve_dead marks one handled. Dead jobs stay in conveyor.job_history until their queue's
// dead_retention_days have passed (the partition by purge day holding them is then dropped).
#include "queue/internal.hpp"

namespace conveyor::queue {

// The page: newest first by (finished_at, job_id), on each history partition's "dead" index. The
// next page starts below the last row of the previous one (keyset), never by skipping rows.
#define DEAD_JOBS_COLUMNS                                                                                         \
    "SELECT h.job_id, h.job_type, h.group_key, h.payload, h.attempt, h.max_attempts, h.last_error, h.reason,"     \
    " h.details, h.worker_id, h.created_at, h.finished_at, h.resolved_at, h.resolution, h.resolved_by"           \
    " FROM conveyor.job_history h WHERE h.queue_id = $1 AND h.status = 'dead' AND h.finished_at >= $2"

CONVEYOR_FUNCTION(conveyor_dead_jobs) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    TimestampTz since = PG_ARGISNULL(1) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(1);
    int32 limit = required_int(fcinfo, 2, "lim", 1, 1000, "lim is at most 1000; pass the last job_id as after for the next page.");
    std::optional<pg_uuid_t> after;
    if (!PG_ARGISNULL(3)) after = *PG_GETARG_UUID_P(3);
    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = load_queue(queue_name);
    static Statement first(DEAD_JOBS_COLUMNS " ORDER BY h.finished_at DESC, h.job_id DESC LIMIT $3",
                           {INT4OID, TIMESTAMPTZOID, INT4OID});
    static Statement next(DEAD_JOBS_COLUMNS
                          " AND h.finished_at <= $4 AND (h.finished_at < $4 OR h.job_id < $5)"
                          " ORDER BY h.finished_at DESC, h.job_id DESC LIMIT $3",
                          {INT4OID, TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID, UUIDOID});
    Params p;
    p.int4(0, q.id).datum(1, TimestampTzGetDatum(since)).int4(2, limit);
    if (!after) {
        spi::emit(out, first.run(p));
    } else {
        static Statement where(
            "SELECT finished_at FROM conveyor.job_history WHERE job_id = $1 AND queue_id = $2 AND status = 'dead'",
            {UUIDOID, INT4OID});
        auto at = where.run(Params().uuid(0, *after).int4(1, q.id));
        if (at.size() == 0)
            throw Error(ERRCODE_UNDEFINED_OBJECT,
                        fmt::format("job {} is not a dead job of queue {}", uuid_text(*after), quoted(q.name)), "",
                        "Pass as after the job_id of the last row of the previous page.");
        p.datum(3, at.datum(0, 0)).uuid(4, *after);
        spi::emit(out, next.run(p));
    }
    spi.finish();
    return (Datum)0;
}
#undef DEAD_JOBS_COLUMNS

// dead -> dead and handled: the resolution, when and by whom (the session's user, as the audit log
// names it), with its event in the trail. A job already resolved keeps its first resolution.
static bool resolve_dead_job(const pg_uuid_t &id, const std::string &resolution) {
    static Statement stmt(
        "WITH r AS ("
        "  UPDATE conveyor.job_history SET resolved_at = pg_catalog.now(), resolution = $2, resolved_by = session_user"
        "  WHERE job_id = $1 AND status = 'dead' AND resolved_at IS NULL RETURNING job_id, resolution, resolved_by), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'resolved',"
        "         pg_catalog.jsonb_build_object('resolution', resolution, 'by', resolved_by) FROM r) "
        "SELECT count(*) FROM r",
        {UUIDOID, TEXTOID});
    return *stmt.run(Params().uuid(0, id).text(1, resolution)).int8(0, 0) > 0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_resolve_dead) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string resolution = required_key(fcinfo, 1, "resolution");
    spi::Connection spi;
    ensure_event_partitions();
    bool resolved = resolve_dead_job(id, resolution);
    if (!resolved && !finished_status(id) && find_jobs({id}).empty())
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    spi.finish();
    PG_RETURN_BOOL(resolved);
}

} // namespace conveyor::queue
