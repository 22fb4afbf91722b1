// Metrics: conveyor.record_metric, record_metrics, aggregate_metrics, metrics, and conveyor's own
// figures recorded by maintain().
//
// Raw points go to conveyor.metric_points (partitioned by day). A rollup bucket (an hour or a UTC day
// of one metric and tag set) is always recomputed from all of its raw points, so percentiles are exact
// and a rerun writes the same values (the upsert skips unchanged rows). Which buckets to recompute is
// decided by transaction ids: a run sees every point of the transactions that ended before its
// snapshot's xmin; the next run recomputes the buckets of points written at or after that xmin, which
// includes every point the previous run could not see.
#include <cmath>

#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "monitor/internal.hpp"

extern "C" {
#include "utils/float.h"
#include "utils/numeric.h"
}

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

DailyPartitions point_partitions{"metric_points", {{"metric_at", "(metric, at)"}, {"xid", "(xid)"}}};

constexpr int32 max_batch_points = 100000;

static double finite_value(double v, const std::string &what) {
    if (!std::isfinite(v))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a finite number, not {}", what, v));
    return v;
}

// A tag set is part of the rollups' primary key with the metric's name (at most max_key_bytes): both
// must fit one btree entry (2704 bytes), so a tag set is refused above max_key_bytes as stored.
static void check_tags(Jsonb *tags, const std::string &what) {
    if (!tags) return;
    jsonb_object_fields(tags, what);  // 22023 unless an object
    size_t size = VARSIZE_ANY_EXHDR(tags);
    if (size > max_key_bytes)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("{} must be at most {} bytes as stored, not {}", what, max_key_bytes, size), "",
                    "Tags name a series (api, queue, status), not the details of one point.");
}

static std::string period_argument(FunctionCallInfo fcinfo, int i) {
    std::string period = required_text(fcinfo, i, "period");
    if (period != "hour" && period != "day")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("invalid period {}", quoted(period)), "",
                    "period is hour or day.");
    return period;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_record_metric) {
    std::string name = required_key(fcinfo, 0, "name");
    require(fcinfo, 1, "value");
    double value = finite_value(PG_GETARG_FLOAT8(1), "value");
    Jsonb *tags = arg_jsonb(fcinfo, 2);
    check_tags(tags, "tags");
    spi::Connection spi;
    point_partitions.ensure_current();
    static Statement insert(
        "INSERT INTO conveyor.metric_points (metric, value, tags, at)"
        " VALUES ($1, $2, COALESCE($3, '{}'::jsonb), pg_catalog.clock_timestamp())",
        {TEXTOID, FLOAT8OID, JSONBOID});
    Params p;
    p.text(0, name).float8(1, value);
    if (tags) p.datum(2, JsonbPGetDatum(tags));
    else p.null(2);
    insert.run(p);
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_record_metrics) {
    require(fcinfo, 0, "points");
    Jsonb *points = arg_jsonb(fcinfo, 0);
    auto elements = jsonb_array_elements(points, "points");
    if (elements.size() > (size_t)max_batch_points)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("points holds {} elements, more than the limit of {}", elements.size(), max_batch_points),
                    "", "Split the batch.");
    // Every element is checked before anything is written: the batch is all or nothing.
    for (size_t i = 0; i < elements.size(); ++i) {
        std::string what = fmt::format("points[{}]", i);
        if (elements[i].type != jbvBinary)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an object, not {}", what, jsonb_type_name(elements[i])));
        Jsonb *element = (Jsonb *)DatumGetPointer(jsonb_value_datum(elements[i]));
        bool has_name = false, has_value = false;
        for (const auto &f : jsonb_object_fields(element, what)) {
            std::string field = fmt::format("{}.{}", what, f.key);
            if (f.key == "name") {
                if (f.value.type != jbvString)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a string, not {}", field, jsonb_type_name(f.value)));
                check_key(jsonb_string(f.value), field);
                has_name = true;
            } else if (f.key == "value") {
                if (f.value.type != jbvNumeric)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a number, not {}", field, jsonb_type_name(f.value)));
                Numeric n = f.value.val.numeric;
                double v;
                try {
                    v = pg_guard([&] { return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(n))); });
                } catch (const PgError &) {
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is out of range for double precision", field));
                }
                finite_value(v, field);
                has_value = true;
            } else if (f.key == "tags") {
                if (f.value.type != jbvBinary)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an object, not {}", field, jsonb_type_name(f.value)));
                check_tags((Jsonb *)DatumGetPointer(jsonb_value_datum(f.value)), field);
            } else {
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown field {} in {}", quoted(f.key), what), "",
                            "A point has name, value and optionally tags.");
            }
        }
        if (!has_name || !has_value)
            throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{} needs {}", what, has_name ? "a value" : "a name"));
    }
    spi::Connection spi;
    point_partitions.ensure_current();
    static Statement insert(
        "INSERT INTO conveyor.metric_points (metric, value, tags, at)"
        " SELECT e->>'name', (e->>'value')::double precision, COALESCE(e->'tags', '{}'::jsonb), pg_catalog.clock_timestamp()"
        " FROM pg_catalog.jsonb_array_elements($1) e",
        {JSONBOID});
    uint64 n = insert.run(Params().datum(0, JsonbPGetDatum(points))).affected();
    spi.finish();
    PG_RETURN_INT32((int32)n);
}

// Recomputes the buckets of one period that have points the previous run could not see; returns
// {"buckets": recomputed, "written": rows changed}.
static std::pair<int64, int64> roll_up(const std::string &period) {
    // The state row serializes runs of one period (a second run waits, then sees the first's work).
    static Statement lock_state(
        "INSERT INTO conveyor.metric_rollup_state (period, next_xmin, rolled_at) VALUES ($1, '0', '-infinity')"
        " ON CONFLICT (period) DO UPDATE SET period = excluded.period RETURNING next_xmin::text",
        {TEXTOID});
    std::string since_xmin = *lock_state.run(Params().text(0, period)).text(0, 0);
    static Statement roll(
        "WITH dirty AS ("
        "  SELECT DISTINCT metric, pg_catalog.date_trunc($1, at, 'UTC') AS bucket_start, tags"
        "  FROM conveyor.metric_points WHERE xid >= $2::xid8),"
        " computed AS ("
        "  SELECT d.metric, d.bucket_start, d.tags, min(p.value) AS mn, max(p.value) AS mx, avg(p.value) AS av,"
        "    sum(p.value) AS sm, count(*) AS n,"
        "    percentile_cont(ARRAY[0.5, 0.95, 0.99]::double precision[]) WITHIN GROUP (ORDER BY p.value) AS pct"
        "  FROM dirty d JOIN conveyor.metric_points p ON p.metric = d.metric AND p.tags = d.tags"
        "    AND p.at >= d.bucket_start"
        "    AND p.at < d.bucket_start + CASE $1 WHEN 'hour' THEN interval '1 hour' ELSE interval '24 hours' END"
        "  GROUP BY d.metric, d.bucket_start, d.tags),"
        " written AS ("
        "  INSERT INTO conveyor.metric_rollups AS r (metric, period, bucket_start, tag_set, min, max, avg, sum, count,"
        "    p50, p95, p99, rolled_at)"
        "  SELECT metric, $1, bucket_start, tags, mn, mx, av, sm, n, pct[1], pct[2], pct[3], pg_catalog.clock_timestamp()"
        "  FROM computed"
        "  ON CONFLICT (metric, period, bucket_start, tag_set) DO UPDATE SET min = excluded.min, max = excluded.max,"
        "    avg = excluded.avg, sum = excluded.sum, count = excluded.count, p50 = excluded.p50, p95 = excluded.p95,"
        "    p99 = excluded.p99, rolled_at = excluded.rolled_at"
        "  WHERE (r.min, r.max, r.avg, r.sum, r.count, r.p50, r.p95, r.p99) IS DISTINCT FROM"
        "    (excluded.min, excluded.max, excluded.avg, excluded.sum, excluded.count, excluded.p50, excluded.p95, excluded.p99)"
        "  RETURNING 1),"
        " state AS ("
        "  UPDATE conveyor.metric_rollup_state"
        "  SET next_xmin = pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()), rolled_at = pg_catalog.clock_timestamp()"
        "  WHERE period = $1 RETURNING 1)"
        " SELECT (SELECT count(*) FROM computed), (SELECT count(*) FROM written), (SELECT count(*) FROM state)",
        {TEXTOID, TEXTOID});
    auto rows = roll.run(Params().text(0, period).text(1, since_xmin));
    return {*rows.int8(0, 0), *rows.int8(0, 1)};
}

int64 roll_up_metrics() {
    if (!monitor_installed()) return 0;
    return roll_up("hour").second + roll_up("day").second;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_aggregate_metrics) {
    std::string period = period_argument(fcinfo, 0);
    spi::Connection spi;
    auto [buckets, written] = roll_up(period);
    std::string summary =
        fmt::format("{{\"period\": {}, \"buckets\": {}, \"written\": {}}}", json_quoted(period), buckets, written);
    const char *s = summary.c_str();
    Datum built = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
    Datum result = spi::keep(built, false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

CONVEYOR_FUNCTION(conveyor_metrics) {
    std::string name = required_key(fcinfo, 0, "name");
    // Filter bounds: any time, infinities too.
    require(fcinfo, 1, "since");
    require(fcinfo, 2, "until");
    TimestampTz since = PG_GETARG_TIMESTAMPTZ(1);
    TimestampTz until = PG_GETARG_TIMESTAMPTZ(2);
    std::string period = period_argument(fcinfo, 3);
    Jsonb *tags = arg_jsonb(fcinfo, 4);
    check_tags(tags, "tags");
    ResultSet out(fcinfo);
    spi::Connection spi;
    // The bucket holding `since` is included; buckets starting at or after `until` are not.
    static Statement stmt(
        "SELECT bucket_start, metric, tag_set, min, max, avg, sum, count, p50, p95, p99 FROM conveyor.metric_rollups"
        " WHERE metric = $1 AND period = $2 AND bucket_start >= pg_catalog.date_trunc($2, $3, 'UTC')"
        "   AND bucket_start < $4 AND ($5::jsonb IS NULL OR tag_set @> $5)"
        " ORDER BY bucket_start, tag_set",
        {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBOID});
    Params p;
    p.text(0, name).text(1, period).datum(2, TimestampTzGetDatum(since)).datum(3, TimestampTzGetDatum(until));
    if (tags) p.datum(4, JsonbPGetDatum(tags));
    else p.null(4);
    spi::emit(out, stmt.run(p));
    spi.finish();
    return (Datum)0;
}

// ---- conveyor's own figures ----------------------------------------------------------------------
int64 record_own_metrics() {
    if (!monitor_installed() || !setting_bool("metrics.record_own")) return 0;
    // Points go to partitions that exist (made ahead by maintain(), or by writers): minutes of
    // yesterday only when its partition is still there.
    int64 today = unix_day(GetCurrentTimestamp());
    point_partitions.ensure_current();
    std::string yesterday = fmt::format("metric_points_p{}", day_text(today - 1, true));
    int64 first_day = OidIsValid(conveyor_relid(yesterday.c_str())) ? today - 1 : today;
    // Jobs enqueued, completed and failed per queue and minute, for each whole minute since the last
    // run (at most the last day: older minutes are folded away). The minute recorded up to is kept
    // in metric_rollup_state under 'own_jobs'.
    static Statement jobs(
        "WITH state AS ("
        "  INSERT INTO conveyor.metric_rollup_state (period, next_xmin, rolled_at)"
        "  VALUES ('own_jobs', '0', pg_catalog.date_trunc('minute', pg_catalog.now()))"
        "  ON CONFLICT (period) DO UPDATE SET rolled_at = pg_catalog.date_trunc('minute', pg_catalog.now())"
        "  RETURNING (SELECT s.rolled_at FROM conveyor.metric_rollup_state s WHERE s.period = 'own_jobs') AS since),"
        " minutes AS ("
        "  SELECT c.queue_id, c.bucket, sum(c.enqueued) AS enqueued, sum(c.completed) AS completed, sum(c.failed) AS failed"
        "  FROM conveyor.queue_counts c, state"
        "  WHERE c.bucket >= GREATEST(COALESCE(state.since, '-infinity'), pg_catalog.now() - interval '24 hours', $1)"
        "    AND c.bucket < pg_catalog.date_trunc('minute', pg_catalog.now())"
        "  GROUP BY c.queue_id, c.bucket)"
        " INSERT INTO conveyor.metric_points (metric, value, tags, at)"
        " SELECT 'conveyor.jobs.' || v.kind, v.n, pg_catalog.jsonb_build_object('queue', q.name), m.bucket"
        " FROM minutes m JOIN conveyor.queues q USING (queue_id)"
        " CROSS JOIN LATERAL (VALUES ('enqueued', m.enqueued), ('completed', m.completed), ('failed', m.failed)) v(kind, n)"
        " WHERE v.n > 0",
        {TIMESTAMPTZOID});
    TimestampTz first = (TimestampTz)((first_day - (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE)) * USECS_PER_DAY);
    int64 n = (int64)jobs.run(Params().datum(0, TimestampTzGetDatum(first))).affected();
    // Spend per account and use per quota, sampled now.
    static Statement gauges(
        "INSERT INTO conveyor.metric_points (metric, value, tags, at)"
        " SELECT 'conveyor.account.spent', a.total, pg_catalog.jsonb_build_object('account', a.account),"
        "   pg_catalog.clock_timestamp() FROM conveyor.account_status() a"
        " UNION ALL"
        " SELECT 'conveyor.quota.used', q.current_quota_used, pg_catalog.jsonb_build_object('quota', q.name),"
        "   pg_catalog.clock_timestamp() FROM conveyor.quota_status() q",
        {});
    n += (int64)gauges.run().affected();
    return n;
}

} // namespace conveyor::monitor
