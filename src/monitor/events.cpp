// The monitoring event log: conveyor.events() and record_event, which every capability calls in the
// transaction of the change it reports (so an event never outlives a rolled-back change).
#include "core/args.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "monitor/internal.hpp"

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

DailyPartitions event_partitions{"events", {{"at", "(at)"}, {"event_at", "(event, at)"}}};

std::string json_quoted(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out.push_back('"');
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) out += fmt::format("\\u{:04x}", c);
                else out.push_back((char)c);
        }
    }
    out.push_back('"');
    return out;
}

void record_events(const char *event, const char *source, const std::vector<std::string> &subjects,
                   const std::vector<std::string> &details_json) {
    if (subjects.empty() || !monitor_installed()) return;
    spi::Connection spi;
    event_partitions.ensure_current();
    // One statement for the whole batch; an empty subject or details text stands for NULL.
    static Statement insert(
        "INSERT INTO conveyor.events (event_id, at, event, source, subject, details)"
        " SELECT pg_catalog.nextval('conveyor.event_id_seq'), pg_catalog.clock_timestamp(), $1, $2,"
        "   NULLIF(e.subject, ''), NULLIF(e.details, '')::jsonb"
        " FROM ROWS FROM (pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[])) AS e(subject, details)",
        {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID});
    insert.run(Params().text(0, event).text(1, source).text_array(2, subjects).text_array(3, details_json));
    spi.finish();
}

void record_event(const char *event, const char *source, const std::optional<std::string> &subject,
                  const std::string &details_json) {
    record_events(event, source, {subject.value_or("")}, {details_json});
}

CONVEYOR_FUNCTION(conveyor_events) {
    require(fcinfo, 0, "since");  // a filter bound: any time, infinities too
    TimestampTz since = PG_GETARG_TIMESTAMPTZ(0);
    std::optional<std::string> event_type = optional_key(fcinfo, 1, "event_type");
    int32 limit = required_int(fcinfo, 2, "lim", 1, 100000, "lim is at most 100000; page on event_id.");
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT event_id, at, event, source, subject, details FROM conveyor.events"
        " WHERE at >= $1 AND ($2::text IS NULL OR event = $2) ORDER BY at, event_id LIMIT $3",
        {TIMESTAMPTZOID, TEXTOID, INT4OID});
    spi::emit(out, stmt.run(Params().datum(0, TimestampTzGetDatum(since)).text(1, event_type).int4(2, limit)));
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::monitor
