// Period snapshots with deltas: SQL entry points conveyor.snapshot, snapshot_batch and snapshot_series.
//
// A series (e.g. 'channel_stats') holds, per entity, one row per period ('hour' or 'day' in a time
// zone, or 'none': one per capture): the metrics of the period's latest capture, with
//   delta      each numeric metric minus the previous period's last value, and
//   delta_day  each numeric metric minus the latest snapshot captured at least 24 hours earlier.
// A capture in a period that already has a row updates it; one whose metrics equal the stored ones
// writes nothing. With skip_unchanged, a capture that would start a period writes nothing either when
// its metrics equal the latest earlier period's: that row stands for the new period too (its values
// carry forward), and the capture reports it with the deltas it would have had. Captures of one entity serialize on a transaction-scoped lock of (series, entity);
// a batch takes its entities' locks in ascending key order and writes all of them in one statement
// per round (an entity captured several times in one batch goes in several rounds, oldest first).
#include <algorithm>
#include <map>

#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "core/partitions.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"
#include "core/time.hpp"
#include "core/uuid.hpp"
#include "core/xact_lock.hpp"

namespace conveyor::snapshot {

using spi::Params;
using spi::Statement;

constexpr size_t max_captures = 10000;

struct Capture {
    int32 ord = 0;
    std::string entity;
    Datum metrics = (Datum)0;  // jsonb object
    TimestampTz at = 0;
};

struct Settings {
    std::string series, period, tz;
    bool skip_unchanged = false;
};

static Settings settings(FunctionCallInfo fcinfo, int series_arg, int period_arg, int tz_arg) {
    Settings s;
    s.series = required_key(fcinfo, series_arg, "series");
    s.period = required_name(fcinfo, period_arg, "period");
    if (s.period != "hour" && s.period != "day" && s.period != "none")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("period must be 'hour', 'day' or 'none', not {}", quoted(s.period)),
                    "", "'none' keeps every capture as its own snapshot.");
    s.tz = required_name(fcinfo, tz_arg, "tz");
    const char *tz = s.tz.c_str();
    if (!converts([&] {
            DirectFunctionCall3(timestamptz_trunc_zone, CStringGetTextDatum("day"), TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
                                CStringGetTextDatum(tz));
        }))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("tz: unknown time zone {}", quoted(s.tz)), "",
                    "Use a name from pg_timezone_names, e.g. 'UTC' or 'America/Los_Angeles'.");
    return s;
}

static void check_metrics(Jsonb *m, const std::string &what) {
    if (!JB_ROOT_IS_OBJECT(m) || JB_ROOT_IS_SCALAR(m))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object of metrics", what), "",
                    "For example {\"subscribers\": 1200, \"views\": 48000}.");
}


struct Stored {
    int32 ord;
    pg_uuid_t id;
    bool is_new;
    Datum delta, delta_day;
    bool delta_null, delta_day_null;
};

// Writes the captures (at most one per entity) in one statement. $8 (skip_unchanged): a capture with
// no row in its period whose metrics equal the previous period's row is not inserted (x.skip); it
// reports that row's id, not a new period, and its deltas as computed (zero for every numeric metric).
// The write of a round; with_metrics: also keeps conveyor.snapshot_metrics (0.3) in step with the rows
// it inserts or changes.
static std::string write_round_sql(bool with_metrics) {
    return std::string(
        "WITH c AS ("
        "  SELECT u.ord, u.entity_id, u.metrics, u.captured_at,"
        "         CASE WHEN $6 OPERATOR(pg_catalog.=) 'none' THEN u.captured_at"
        "              ELSE pg_catalog.date_trunc($6, u.captured_at, $7) END AS bucket"
        "  FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.text[]),"
        "                  pg_catalog.unnest($4::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.timestamptz[]))"
        "       AS u(ord, entity_id, metrics, captured_at)), "
        "x AS MATERIALIZED ("
        "  SELECT c.*, cur.snapshot_id AS cur_id, cur.metrics AS cur_metrics, cur.captured_at AS cur_at,"
        "         cur.delta AS cur_delta, cur.delta_day AS cur_delta_day, prev.snapshot_id AS prev_id,"
        "         $8 AND cur.snapshot_id IS NULL AND prev.metrics OPERATOR(pg_catalog.=) c.metrics AS skip,"
        "         conveyor.metrics_delta(c.metrics, prev.metrics) AS delta,"
        "         conveyor.metrics_delta(c.metrics, day.metrics) AS delta_day"
        "  FROM c"
        "  LEFT JOIN LATERAL (SELECT s.snapshot_id, s.metrics, s.captured_at, s.delta, s.delta_day FROM conveyor.snapshots s"
        "                     WHERE s.series = $1 AND s.entity_id = c.entity_id AND s.period_start = c.bucket LIMIT 1) cur ON true"
        "  LEFT JOIN LATERAL (SELECT s.snapshot_id, s.metrics FROM conveyor.snapshots s"
        "                     WHERE s.series = $1 AND s.entity_id = c.entity_id AND s.period_start < c.bucket"
        "                     ORDER BY s.period_start DESC LIMIT 1) prev ON true"
        "  LEFT JOIN LATERAL (SELECT s.metrics FROM conveyor.snapshots s"
        "                     WHERE s.series = $1 AND s.entity_id = c.entity_id"
        "                       AND s.period_start <= c.captured_at OPERATOR(pg_catalog.-) interval '24 hours'"
        "                       AND s.captured_at <= c.captured_at OPERATOR(pg_catalog.-) interval '24 hours'"
        "                     ORDER BY s.period_start DESC LIMIT 1) day ON true), "
        "ins AS ("
        "  INSERT INTO conveyor.snapshots (series, entity_id, period_start, snapshot_id, period, tz, first_captured_at,"
        "                                  captured_at, captures, metrics, delta, delta_day)"
        "  SELECT $1, x.entity_id, x.bucket, conveyor.uuid_v7(), $6, $7, x.captured_at, x.captured_at, 1, x.metrics,"
        "         x.delta, x.delta_day"
        "  FROM x WHERE x.cur_id IS NULL AND x.skip IS NOT TRUE ORDER BY x.entity_id"
        "  RETURNING entity_id, snapshot_id), "
        "upd AS ("
        "  UPDATE conveyor.snapshots s SET metrics = x.metrics, captured_at = x.captured_at, captures = s.captures + 1,"
        "         delta = x.delta, delta_day = x.delta_day"
        "  FROM x WHERE x.cur_id IS NOT NULL AND s.series = $1 AND s.entity_id = x.entity_id AND s.period_start = x.bucket"
        "    AND x.captured_at >= x.cur_at AND x.metrics OPERATOR(pg_catalog.<>) x.cur_metrics"
        "  RETURNING s.entity_id)") +
        (with_metrics ?
        ", w AS (SELECT entity_id FROM ins UNION ALL SELECT entity_id FROM upd), "
        "mv AS ("
        "  SELECT x.entity_id, x.bucket, m.key, m.value::pg_catalog.numeric AS value,"
        "         (x.delta OPERATOR(pg_catalog.->>) m.key)::pg_catalog.numeric AS delta,"
        "         (x.delta_day OPERATOR(pg_catalog.->>) m.key)::pg_catalog.numeric AS delta_day"
        "  FROM x JOIN w ON w.entity_id = x.entity_id CROSS JOIN LATERAL pg_catalog.jsonb_each(x.metrics) AS m"
        "  WHERE pg_catalog.jsonb_typeof(m.value) OPERATOR(pg_catalog.=) 'number'), "
        // An updated row's metrics that are gone (or no longer numbers): each deleted by its whole
        // primary key, found from the row's previous metrics, so no scan of the period's rows.
        "gone AS MATERIALIZED ("
        "  SELECT x.entity_id, x.bucket, k.key FROM x JOIN upd ON upd.entity_id = x.entity_id"
        "  CROSS JOIN LATERAL pg_catalog.jsonb_object_keys(x.cur_metrics) AS k(key)"
        "  WHERE NOT EXISTS (SELECT 1 FROM mv WHERE mv.entity_id = x.entity_id AND mv.key = k.key)), "
        "msd AS ("
        "  DELETE FROM conveyor.snapshot_metrics sm USING gone"
        "  WHERE sm.series = $1 AND sm.period_start = gone.bucket AND sm.metric = gone.key"
        "    AND sm.entity_id = gone.entity_id), "
        "msi AS ("
        "  INSERT INTO conveyor.snapshot_metrics AS sm (series, period_start, metric, entity_id, value, delta, delta_day)"
        "  SELECT $1, mv.bucket, mv.key, mv.entity_id, mv.value, mv.delta, mv.delta_day FROM mv"
        "  ON CONFLICT (series, period_start, metric, entity_id) DO UPDATE SET value = excluded.value,"
        "    delta = excluded.delta, delta_day = excluded.delta_day)" : "") +
        " SELECT x.ord, COALESCE(i.snapshot_id, x.cur_id, x.prev_id), x.cur_id IS NULL AND x.skip IS NOT TRUE,"
        "       CASE WHEN x.cur_id IS NULL OR u.entity_id IS NOT NULL THEN x.delta ELSE x.cur_delta END,"
        "       CASE WHEN x.cur_id IS NULL OR u.entity_id IS NOT NULL THEN x.delta_day ELSE x.cur_delta_day END"
        " FROM x LEFT JOIN ins i ON i.entity_id = x.entity_id LEFT JOIN upd u ON u.entity_id = x.entity_id";
}

static void write_round(const Settings &s, const std::vector<const Capture *> &round, std::vector<Stored> &out) {
    static const std::string plain_sql = write_round_sql(false), with_metrics_sql = write_round_sql(true);
    static const std::vector<Oid> types{TEXTOID, INT4ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID, TEXTOID, BOOLOID};
    static Statement plain(plain_sql.c_str(), types), with_metrics(with_metrics_sql.c_str(), types);
    // A database not yet updated to 0.3 has no snapshot_metrics.
    Statement &stmt = OidIsValid(conveyor_relid("snapshot_metrics")) ? with_metrics : plain;
    std::vector<int32> ords;
    std::vector<std::string> entities;
    std::vector<Datum> metrics;
    std::vector<TimestampTz> times;
    for (const Capture *c : round) {
        ords.push_back(c->ord);
        entities.push_back(c->entity);
        metrics.push_back(c->metrics);
        times.push_back(c->at);
    }
    auto rows = stmt.run(Params()
                             .text(0, s.series)
                             .int4_array(1, ords)
                             .text_array(2, entities)
                             .jsonb_array(3, metrics)
                             .timestamptz_array(4, times)
                             .text(5, s.period)
                             .text(6, s.tz)
                             .boolean(7, s.skip_unchanged));
    for (uint64 r = 0; r < rows.size(); ++r) {
        Stored st;
        st.ord = *rows.int4(r, 0);
        st.id = *rows.uuid(r, 1);
        st.is_new = *rows.boolean(r, 2);
        st.delta = rows.datum(r, 3, &st.delta_null);
        st.delta_day = rows.datum(r, 4, &st.delta_day_null);
        out.push_back(st);
    }
}

// Locks the captures' entities (ascending key order), then writes them round by round.
static std::vector<Stored> capture_all(const Settings &s, std::vector<Capture> &captures) {
    std::vector<uint64> keys;
    for (const auto &c : captures) keys.push_back(hash64(s.series + '\x1f' + c.entity));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (uint64 k : keys) xact_lock(LockSpace::snapshot, k);

    // Oldest capture of each entity first.
    std::vector<Capture *> order;
    for (auto &c : captures) order.push_back(&c);
    std::stable_sort(order.begin(), order.end(), [](const Capture *a, const Capture *b) {
        return a->entity != b->entity ? a->entity < b->entity : a->at < b->at;
    });
    std::vector<Stored> out;
    std::vector<std::vector<const Capture *>> rounds;
    size_t i = 0;
    while (i < order.size()) {
        size_t j = i;
        while (j < order.size() && order[j]->entity == order[i]->entity) {
            if (rounds.size() <= j - i) rounds.emplace_back();
            rounds[j - i].push_back(order[j]);
            ++j;
        }
        i = j;
    }
    for (const auto &round : rounds) write_round(s, round, out);
    std::sort(out.begin(), out.end(), [](const Stored &a, const Stored &b) { return a.ord < b.ord; });
    return out;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_snapshot) {
    // snapshot(series, entity_id, metrics, captured_at, period, tz, skip_unchanged)
    Settings s = settings(fcinfo, 0, 4, 5);
    // A database still at 0.2 declares six arguments.
    s.skip_unchanged = PG_NARGS() > 6 && required_bool(fcinfo, 6, "skip_unchanged");
    Capture c;
    c.entity = required_key(fcinfo, 1, "entity_id");
    require(fcinfo, 2, "metrics");
    Jsonb *m = pg_guard([&] { return PG_GETARG_JSONB_P(2); });
    check_metrics(m, "metrics");
    c.metrics = PointerGetDatum(m);
    require(fcinfo, 3, "captured_at");
    c.at = check_time(PG_GETARG_TIMESTAMPTZ(3), "captured_at");
    ResultSet out(fcinfo);
    spi::Connection spi;
    std::vector<Capture> captures{c};
    for (const auto &st : capture_all(s, captures)) {
        Datum values[4] = {uuid_datum(st.id), BoolGetDatum(st.is_new), st.delta, st.delta_day};
        bool nulls[4] = {false, false, st.delta_null, st.delta_day_null};
        out.add(values, nulls);
    }
    spi.finish();
    return (Datum)0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_snapshot_batch) {
    // snapshot_batch(series, captures, period, tz, skip_unchanged)
    Settings s = settings(fcinfo, 0, 2, 3);
    // A database still at 0.2 declares four arguments.
    s.skip_unchanged = PG_NARGS() > 4 && required_bool(fcinfo, 4, "skip_unchanged");
    require(fcinfo, 1, "captures");
    Jsonb *batch = pg_guard([&] { return PG_GETARG_JSONB_P(1); });
    std::vector<JsonbValue> elements = jsonb_array_elements(batch, "captures");
    if (elements.size() > max_captures)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("captures holds {} elements; at most {} per call", elements.size(), max_captures), "",
                    "Split the batch into several calls.");
    TimestampTz now = tx_now();
    std::vector<Capture> captures(elements.size());
    for (size_t i = 0; i < elements.size(); ++i) {
        const std::string at = fmt::format("captures[{}]", i);
        const JsonbValue &e = elements[i];
        if (e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object, not {}", at, jsonb_type_name(e)));
        Capture &c = captures[i];
        c.ord = (int32)i;
        c.at = now;
        Jsonb *obj = (Jsonb *)DatumGetPointer(jsonb_value_datum(e));
        for (const auto &f : jsonb_object_fields(obj, at)) {
            const JsonbValue &v = f.value;
            if (f.key == "entity_id") {
                if (v.type != jbvString || v.val.string.len == 0)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}.entity_id must be a non-empty string", at));
                c.entity = jsonb_string(v);
                check_key(c.entity, at + ".entity_id");
            } else if (f.key == "metrics") {
                Datum d = jsonb_value_datum(v);
                check_metrics((Jsonb *)DatumGetPointer(d), at + ".metrics");
                c.metrics = d;
            } else if (f.key == "captured_at") {
                if (v.type == jbvNull) continue;
                if (v.type != jbvString)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}.captured_at must be a timestamp string, not {}", at, jsonb_type_name(v)));
                c.at = check_time(parse_timestamptz(jsonb_string(v), at + ".captured_at"), at + ".captured_at");
            } else
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: unknown field {}", at, quoted(f.key)), "",
                            "Fields are entity_id, metrics and captured_at (default now()).");
        }
        if (c.entity.empty()) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: entity_id is missing", at));
        if (!c.metrics) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: metrics is missing", at));
    }
    ResultSet out(fcinfo);
    spi::Connection spi;
    for (const auto &st : capture_all(s, captures)) {
        const char *entity = captures[st.ord].entity.c_str();
        Datum values[6] = {Int32GetDatum(st.ord), (Datum)0, uuid_datum(st.id), BoolGetDatum(st.is_new), st.delta, st.delta_day};
        values[1] = pg_guard([&] { return PointerGetDatum(cstring_to_text(entity)); });
        bool nulls[6] = {false, false, false, false, st.delta_null, st.delta_day_null};
        out.add(values, nulls);
    }
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_snapshot_series) {
    // snapshot_series(series, entity_id, since, until)
    std::string series = required_key(fcinfo, 0, "series");
    std::string entity = required_key(fcinfo, 1, "entity_id");
    // since and until are filter bounds: NULL or an infinite bound leaves that side open.
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT period_start, captured_at, metrics, delta, delta_day, captures, snapshot_id FROM conveyor.snapshots"
        " WHERE series = $1 AND entity_id = $2 AND period_start >= COALESCE($3, '-infinity')"
        "   AND period_start < COALESCE($4, 'infinity')"
        " ORDER BY period_start",
        {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID});
    Params p;
    p.text(0, series).text(1, entity);
    if (PG_ARGISNULL(2)) p.null(2);
    else p.datum(2, PG_GETARG_DATUM(2));
    if (PG_ARGISNULL(3)) p.null(3);
    else p.datum(3, PG_GETARG_DATUM(3));
    auto rows = stmt.run(p);
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_snapshot_top) {
    // snapshot_top(series, period_start, metric, lim, by)
    std::string series = required_key(fcinfo, 0, "series");
    require(fcinfo, 1, "period_start");
    std::string metric = required_key(fcinfo, 2, "metric");
    require(fcinfo, 3, "lim");
    int32 lim = PG_GETARG_INT32(3);
    if (lim < 1 || lim > (int32)max_captures)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("lim must be between 1 and {}, not {}", max_captures, lim));
    std::string by = required_text(fcinfo, 4, "by");
    // One statement per ordering, each read from its own index of snapshot_metrics.
    static Statement by_delta(
        "SELECT entity_id, value, delta, delta_day FROM conveyor.snapshot_metrics"
        " WHERE series = $1 AND period_start = $2 AND metric = $3 AND delta IS NOT NULL"
        " ORDER BY delta DESC NULLS LAST, entity_id LIMIT $4",
        {TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID});
    static Statement by_delta_day(
        "SELECT entity_id, value, delta, delta_day FROM conveyor.snapshot_metrics"
        " WHERE series = $1 AND period_start = $2 AND metric = $3 AND delta_day IS NOT NULL"
        " ORDER BY delta_day DESC NULLS LAST, entity_id LIMIT $4",
        {TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID});
    static Statement by_value(
        "SELECT entity_id, value, delta, delta_day FROM conveyor.snapshot_metrics"
        " WHERE series = $1 AND period_start = $2 AND metric = $3"
        " ORDER BY value DESC, entity_id LIMIT $4",
        {TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID});
    Statement *stmt = by == "delta" ? &by_delta : by == "delta_day" ? &by_delta_day : by == "value" ? &by_value : nullptr;
    if (!stmt)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("by must be 'delta', 'delta_day' or 'value', not {}", quoted(by)),
                    "", "delta compares with the previous period, delta_day with 24 hours earlier.");
    ResultSet out(fcinfo);
    spi::Connection spi;
    auto rows = stmt->run(Params().text(0, series).datum(1, PG_GETARG_DATUM(1)).text(2, metric).int4(3, lim));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::snapshot
