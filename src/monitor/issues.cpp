// Worker issues: conveyor.report_issue, resolve_issue, worker_issues, worker_issue_stats.
//
// A repeat of an open issue (same worker, type and message) is one row whose occurrences and
// last_seen grow: the unique partial index worker_issues_open decides it in one statement, so two
// workers reporting the same issue at once still make one row.
#include "core/args.hpp"
#include "monitor/internal.hpp"

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

constexpr size_t max_message_bytes = 8192;

static std::string required_severity(FunctionCallInfo fcinfo, int i) {
    std::string s = required_text(fcinfo, i, "severity");
    if (s != "info" && s != "warning" && s != "error" && s != "critical")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("invalid severity {}", quoted(s)), "",
                    "severity is one of info, warning, error, critical.");
    return s;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_report_issue) {
    std::string worker = required_key(fcinfo, 0, "worker_name");
    std::string type = required_key(fcinfo, 1, "issue_type");
    std::string severity = required_severity(fcinfo, 2);
    std::string message = required_name(fcinfo, 3, "message", max_message_bytes);
    Jsonb *details = arg_jsonb(fcinfo, 4);
    spi::Connection spi;
    // xmax = 0: the row was inserted (a new issue), not updated (a repeat).
    static Statement report(
        "INSERT INTO conveyor.worker_issues AS i (worker_name, issue_type, severity, message, details, first_seen, last_seen)"
        " VALUES ($1, $2, $3, $4, $5, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp())"
        " ON CONFLICT (worker_name, issue_type, pg_catalog.md5(message)) WHERE resolved_at IS NULL"
        " DO UPDATE SET occurrences = i.occurrences + 1, last_seen = excluded.last_seen,"
        "   severity = excluded.severity, details = COALESCE(excluded.details, i.details)"
        " RETURNING issue_id, xmax = 0, occurrences",
        {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID});
    Params p;
    p.text(0, worker).text(1, type).text(2, severity).text(3, message);
    if (details) p.datum(4, JsonbPGetDatum(details));
    else p.null(4);
    auto rows = report.run(p);
    int64 id = *rows.int8(0, 0);
    bool is_new = *rows.boolean(0, 1);
    if (is_new)
        record_event("issue_reported", "monitor", worker,
                     fmt::format("{{\"issue_id\": {}, \"issue_type\": {}, \"severity\": {}, \"message\": {}}}", id,
                                 json_quoted(type), json_quoted(severity), json_quoted(clipped(message))));
    spi.finish();
    PG_RETURN_INT64(id);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_resolve_issue) {
    require(fcinfo, 0, "issue_id");
    int64 id = PG_GETARG_INT64(0);
    std::optional<std::string> resolution = arg_text(fcinfo, 1);
    if (resolution && resolution->size() > max_message_bytes)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("resolution is {} bytes, more than the limit of {}", resolution->size(), max_message_bytes));
    spi::Connection spi;
    static Statement resolve(
        "UPDATE conveyor.worker_issues SET resolved_at = pg_catalog.clock_timestamp(), resolution = $2"
        " WHERE issue_id = $1 AND resolved_at IS NULL RETURNING worker_name, issue_type",
        {INT8OID, TEXTOID});
    auto rows = resolve.run(Params().int8(0, id).text(1, resolution));
    bool resolved = rows.size() == 1;
    if (resolved) {
        record_event("issue_resolved", "monitor", rows.text(0, 0),
                     fmt::format("{{\"issue_id\": {}, \"issue_type\": {}, \"resolution\": {}}}", id,
                                 json_quoted(*rows.text(0, 1)),
                                 resolution ? json_quoted(clipped(*resolution)) : std::string("null")));
    } else {
        static Statement exists("SELECT 1 FROM conveyor.worker_issues WHERE issue_id = $1", {INT8OID});
        if (exists.run(Params().int8(0, id)).size() == 0)
            throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("worker issue {} does not exist", id), "",
                        "conveyor.worker_issues() lists the open issues and their ids.");
    }
    spi.finish();
    PG_RETURN_BOOL(resolved);
}

CONVEYOR_FUNCTION(conveyor_worker_issues) {
    std::optional<bool> resolved;
    if (!PG_ARGISNULL(0)) resolved = PG_GETARG_BOOL(0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT issue_id, worker_name, issue_type, severity, message, details, occurrences, first_seen, last_seen,"
        " resolved_at, resolution FROM conveyor.worker_issues"
        " WHERE $1::boolean IS NULL OR (resolved_at IS NOT NULL) = $1 ORDER BY last_seen DESC, issue_id DESC",
        {BOOLOID});
    Params p;
    if (resolved) p.boolean(0, *resolved);
    else p.null(0);
    spi::emit(out, stmt.run(p));
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_worker_issue_stats) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT worker_name, issue_type, severity, count(*) FILTER (WHERE resolved_at IS NULL),"
        " count(*) FILTER (WHERE resolved_at IS NOT NULL), sum(occurrences)::bigint, max(last_seen)"
        " FROM conveyor.worker_issues GROUP BY worker_name, issue_type, severity"
        " ORDER BY worker_name, issue_type, severity",
        {});
    spi::emit(out, stmt.run());
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::monitor
