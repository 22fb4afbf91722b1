// Observing the queue: conveyor.get_job, job_events, queue_metrics and list_queues. Read only.
#include "queue/internal.hpp"

namespace conveyor::queue {

// get_job's statement; at_0_3: with 0.3's keys (progress; a dead or cancelled job's reason, details
// and resolution), where the database has their columns.
static std::string get_job_sql(bool at_0_3) {
    std::string jobs_progress = at_0_3 ? " OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('percent', j.percent, 'step', j.step,"
                                         " 'reason', NULL, 'details', NULL, 'resolved_at', NULL, 'resolution', NULL, 'resolved_by', NULL)" : "";
    std::string history_progress = at_0_3 ? " OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('percent', h.percent, 'step', h.step,"
                                            " 'reason', h.reason, 'details', h.details, 'resolved_at', h.resolved_at,"
                                            " 'resolution', h.resolution, 'resolved_by', h.resolved_by)" : "";
    return std::string() +
        "SELECT pg_catalog.jsonb_build_object('job_id', j.job_id, 'queue', q.name,"
        "  'status', CASE WHEN j.state = 'running' THEN 'running' ELSE 'pending' END, 'state', j.state,"
        "  'job_type', j.job_type, 'group_key', j.group_key, 'dedup_key', j.dedup_key, 'payload', j.payload,"
        "  'priority', j.priority, 'attempt', j.attempt, 'max_attempts', j.max_attempts, 'run_at', j.run_at,"
        "  'worker_id', j.worker_id, 'started_at', j.started_at, 'lease_until', j.lease_until,"
        "  'last_error', j.last_error, 'created_at', j.created_at, 'finished_at', NULL)" + jobs_progress +
        " FROM conveyor.jobs j LEFT JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = $1"
        " UNION ALL "
        "SELECT pg_catalog.jsonb_build_object('job_id', h.job_id, 'queue', q.name, 'status', h.status,"
        "  'state', h.status, 'job_type', h.job_type, 'group_key', h.group_key, 'dedup_key', h.dedup_key,"
        "  'payload', h.payload, 'priority', h.priority, 'attempt', h.attempt, 'max_attempts', h.max_attempts,"
        "  'run_at', h.run_at, 'worker_id', h.worker_id, 'started_at', h.started_at, 'lease_until', NULL,"
        "  'last_error', h.last_error, 'created_at', h.created_at, 'finished_at', h.finished_at)" + history_progress +
        " FROM conveyor.job_history h LEFT JOIN conveyor.queues q USING (queue_id) WHERE h.job_id = $1"
        " LIMIT 1";
}

CONVEYOR_FUNCTION(conveyor_get_job) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    spi::Connection spi;
    static const std::string sql[2] = {get_job_sql(false), get_job_sql(true)};
    static Statement stmts[2] = {{sql[0].c_str(), {UUIDOID}}, {sql[1].c_str(), {UUIDOID}}};
    auto rows = stmts[catalog_at_0_3()].run(Params().uuid(0, id));
    if (rows.size() == 0) throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
    Datum result = spi::keep(rows.datum(0, 0), false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

// The trail: the rows of job_events, and in a database at 0.3 the job's 'enqueued' event, which is
// not stored there but read from the job itself (in jobs or job_history; src/queue/enqueue.cpp):
// at its created_at, with the details a stored one had (priority, the run_at it was enqueued with,
// group_key; none of them changes later). A job enqueued under 0.2 has its event stored instead
// (and no enqueued_run_at), so either way it shows once. On a tie in time the enqueued event comes
// first.
//
// The enqueued event of a job in `table` (jobs or job_history); k 0 orders it before stored events.
static std::string enqueued_event_sql(const char *table) {
    return fmt::format("SELECT created_at, 'enqueued', NULL::text, pg_catalog.jsonb_build_object('priority', priority,"
                       " 'run_at', enqueued_run_at, 'group_key', group_key), 0 FROM conveyor.{} WHERE job_id = $1"
                       " AND enqueued_run_at IS NOT NULL",
                       table);
}

static std::string job_events_sql() {
    return "SELECT at, event, worker_id, details FROM (" + enqueued_event_sql("jobs") + " UNION ALL " +
           enqueued_event_sql("job_history") +
           " UNION ALL SELECT at, event, worker_id, details, 1 FROM conveyor.job_events WHERE job_id = $1)"
           " e(at, event, worker_id, details, k) ORDER BY at, k";
}

CONVEYOR_FUNCTION(conveyor_job_events) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    ResultSet out(fcinfo);
    spi::Connection spi;
    static const std::string at_0_3_sql = job_events_sql();
    static Statement stmts[2] = {
        {"SELECT at, event, worker_id, details FROM conveyor.job_events WHERE job_id = $1 ORDER BY at", {UUIDOID}},
        {at_0_3_sql.c_str(), {UUIDOID}}};
    auto rows = stmts[catalog_at_0_3()].run(Params().uuid(0, id));
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
        "  CASE WHEN o.oldest IS NOT NULL THEN"  // GREATEST ignores NULL: no pending job has no age
        "    pg_catalog.round(extract(epoch FROM pg_catalog.now() - GREATEST(o.oldest, " MIN_TIME_SQL "))::numeric, 3) END"
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

// Sums over every counter row of a queue: rows are folded together, never dropped, so each total
// only grows (history partitions dropped past retention take dead jobs off the dead gauge only).
CONVEYOR_FUNCTION(conveyor_queue_totals) {
    auto name = arg_text(fcinfo, 0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    if (name) load_queue(*name);
    static Statement stmt(
        "SELECT q.name, COALESCE(sum(c.enqueued), 0)::bigint, COALESCE(sum(c.started), 0)::bigint,"
        "  COALESCE(sum(c.completed), 0)::bigint, COALESCE(sum(c.failed), 0)::bigint,"
        "  COALESCE(sum(c.expired), 0)::bigint, COALESCE(sum(c.cancelled), 0)::bigint"
        " FROM conveyor.queues q LEFT JOIN conveyor.queue_counts c ON c.queue_id = q.queue_id"
        " WHERE $1::text IS NULL OR q.name = $1 GROUP BY q.name ORDER BY q.name",
        {TEXTOID});
    spi::emit(out, stmt.run(Params().text(0, name)));
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_list_queues) {
    ResultSet out(fcinfo);
    spi::Connection spi;
#define LIST_QUEUES_OPTIONS                                                                                      \
    "pg_catalog.jsonb_build_object('lease_seconds', lease_seconds, 'max_attempts', max_attempts,"                 \
    " 'backoff_base_seconds', backoff_base_seconds, 'backoff_max_seconds', backoff_max_seconds,"                  \
    " 'job_types', job_types, 'required_keys', required_keys, 'retention_days', retention_days,"                  \
    " 'notify', notify, 'event_trail', event_trail)"
    // 0.3's options where the database has them.
    static Statement stmts[2] = {
        {"SELECT name, paused, " LIST_QUEUES_OPTIONS ", created_at FROM conveyor.queues ORDER BY name", {}},
        {"SELECT name, paused, " LIST_QUEUES_OPTIONS " OPERATOR(pg_catalog.||)"
         " pg_catalog.jsonb_build_object('dead_retention_days', dead_retention_days, 'payload_schema', payload_schema,"
         " 'display_name', display_name, 'description', description, 'metadata', metadata, 'status_notify', status_notify,"
         " 'stats_retention_days', stats_retention_days), created_at"
         " FROM conveyor.queues ORDER BY name", {}}};
#undef LIST_QUEUES_OPTIONS
    auto rows = stmts[catalog_at_0_3()].run();
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
