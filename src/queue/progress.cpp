// Progress and custom trail events of a running job: conveyor.progress and conveyor.job_log. Both
// are fenced like heartbeat: only the worker that holds the job's lease (on the attempt named, if
// one is) may write, and a worker whose lease was taken over gets false and changes nothing.
#include <cmath>

#include "queue/internal.hpp"

namespace conveyor::queue {

// The job exists (pending, running or finished)? Tells "not yours any more" (false) from an unknown
// job (42704), as heartbeat does.
static void check_job_exists(const pg_uuid_t &id) {
    static Statement stmt(
        "SELECT EXISTS (SELECT 1 FROM conveyor.jobs WHERE job_id = $1)"
        "    OR EXISTS (SELECT 1 FROM conveyor.job_history WHERE job_id = $1)",
        {UUIDOID});
    if (!*stmt.run(Params().uuid(0, id)).boolean(0, 0))
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("job {} does not exist", uuid_text(id)));
}

// percent: NULL, or a number from 0 to 100 (NaN refused).
static std::optional<Datum> read_percent(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    Datum d = PG_GETARG_DATUM(i);
    double v = pg_guard([&] { return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d)); });
    if (!(v >= 0 && v <= 100)) {
        std::string text = pg_guard([&] { return (const char *)DatumGetCString(DirectFunctionCall1(numeric_out, d)); });
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("percent must be between 0 and 100, not {}", clipped(text)));
    }
    return d;
}

// Sets the progress of a running job held by this worker. The job keeps its percent and step (a NULL
// argument keeps the stored value); a step that differs from the stored one is an event in the trail,
// with the details. Returns whether the worker still holds the job.
CONVEYOR_AUDITED_FUNCTION(conveyor_progress) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    auto percent = read_percent(fcinfo, 2);
    auto step = optional_key(fcinfo, 3, "step");
    Jsonb *details = arg_jsonb(fcinfo, 4);
    auto attempt = lease_attempt(fcinfo, 5);
    spi::Connection spi;
    ensure_event_partitions();
    // The row lock of `o` makes a concurrent takeover (reap, then another worker's dequeue) either
    // wait for us or, if it went first, leave us nothing to update.
    static Statement stmt(
        "WITH o AS ("
        "  SELECT job_id, step FROM conveyor.jobs WHERE job_id = $1 AND state = 'running' AND worker_id = $2"
        "    AND ($6::int IS NULL OR attempt = $6)"
        "  FOR UPDATE), "
        "u AS ("
        "  UPDATE conveyor.jobs j SET percent = COALESCE($3, j.percent), step = COALESCE($4, j.step)"
        "  FROM o WHERE j.job_id = o.job_id"
        "  RETURNING j.job_id, j.queue_id, j.attempt, j.percent, j.step, o.step AS previous_step), "
        "ev AS ("
        "  INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        "  SELECT job_id, pg_catalog.clock_timestamp(), 'progress', $2,"
        "         pg_catalog.jsonb_build_object('step', step, 'previous_step', previous_step, 'percent', percent,"
        "           'attempt', attempt, 'details', $5::jsonb)"
        "  FROM u WHERE $4::text IS NOT NULL AND previous_step IS DISTINCT FROM step) "
        "SELECT queue_id FROM u",
        {UUIDOID, TEXTOID, NUMERICOID, TEXTOID, JSONBOID, INT4OID});
    Params p;
    p.uuid(0, id).text(1, worker).text(3, step).int4(5, attempt);
    if (percent) p.datum(2, *percent);
    else p.null(2);
    if (details) p.datum(4, PointerGetDatum(details));
    else p.null(4);
    auto rows = stmt.run(p);
    bool held = rows.size() == 1;
    if (held) status_changed(*rows.int4(0, 0), {id});
    else check_job_exists(id);
    spi.finish();
    PG_RETURN_BOOL(held);
}

// Custom events are stored as "log:<event>": conveyor's own events never contain a colon, so a
// worker's event can never pass for one of them, whatever events conveyor adds later.
static constexpr const char *custom_event_prefix = "log:";
static constexpr size_t max_event_bytes = 64;

static void check_event_name(const std::string &event) {
    bool ok = !event.empty() && event.size() <= max_event_bytes;
    for (char c : event)
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '-');
    if (!ok)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("event name {} is not allowed", quoted(event)),
                    fmt::format("An event name is 1 to {} letters, digits, '_', '.' or '-'.", max_event_bytes),
                    "It is stored as \"log:\" followed by the name, e.g. log:fetch.done.");
}

// Appends a custom event to the trail of a running job held by this worker; false when the worker
// no longer holds it.
CONVEYOR_AUDITED_FUNCTION(conveyor_job_log) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "job_id");
    std::string worker = required_text(fcinfo, 1, "worker_id");
    check_key(worker, "worker_id");
    std::string event = required_text(fcinfo, 2, "event");
    check_event_name(event);
    Jsonb *details = arg_jsonb(fcinfo, 3);
    auto attempt = lease_attempt(fcinfo, 4);
    spi::Connection spi;
    ensure_event_partitions();
    // FOR SHARE: a takeover in progress (which updates the row) is waited for, then re-checked.
    static Statement stmt(
        "INSERT INTO conveyor.job_events (job_id, at, event, worker_id, details)"
        " SELECT job_id, pg_catalog.clock_timestamp(), $3, $2, $4::jsonb FROM ("
        "   SELECT job_id FROM conveyor.jobs WHERE job_id = $1 AND state = 'running' AND worker_id = $2"
        "     AND ($5::int IS NULL OR attempt = $5) FOR SHARE) j",
        {UUIDOID, TEXTOID, TEXTOID, JSONBOID, INT4OID});
    Params p;
    p.uuid(0, id).text(1, worker).text(2, std::string(custom_event_prefix) + event).int4(4, attempt);
    if (details) p.datum(3, PointerGetDatum(details));
    else p.null(3);
    bool held = stmt.run(p).affected() == 1;
    if (!held) check_job_exists(id);
    spi.finish();
    PG_RETURN_BOOL(held);
}

} // namespace conveyor::queue
