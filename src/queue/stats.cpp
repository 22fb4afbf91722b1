// Long-term job statistics: conveyor.job_stats, and the fold and purge maintain() runs.
//
// conveyor.job_stats holds one row per queue and UTC hour (and one per group and hour) with the
// hour's finished, failed, dead and cancelled jobs, run and wait times and the exact 95th percentile
// of run times. No statement is added to ack, fail or expiry: the finishing transaction's id lands in
// job_history.xid (a column default), and maintain() recomputes, from job_history, every hour that
// received jobs of transactions at or after the snapshot xmin of its previous fold. A job of a
// transaction that commits after a fold began is therefore seen by the next fold, and counted once,
// since an hour is always recomputed whole. The rows of an hour are found by an xid range too: every
// fold records (clock, snapshot xmax), and a job finished after that clock has an xid at least that
// xmax. Rows outlive the history they came from (a purged hour is never recomputed) and are purged
// after the queue's stats_retention_days.
#include "queue/internal.hpp"

namespace conveyor::queue {

struct DirtyHours {
    std::vector<int32> queue_ids;
    std::vector<TimestampTz> hours;
    std::optional<uint64> low_xid;  // nullopt: some hour predates every mark, scan all
};

// Takes the fold's state, records this fold's mark and returns the hours with jobs finished by
// transactions at or after the previous fold's xmin. next_xmin is taken from this statement's
// snapshot: what it did not see, the next fold will.
static DirtyHours dirty_hours() {
    static Statement lock_state(
        "INSERT INTO conveyor.job_stats_state AS s (singleton, next_xmin, folded_at) VALUES (true, '0', '-infinity')"
        " ON CONFLICT (singleton) DO UPDATE SET singleton = s.singleton RETURNING s.next_xmin::text",
        {});
    std::string since_xmin = *lock_state.run().text(0, 0);
    static Statement dirty(
        "WITH mark AS ("
        "  INSERT INTO conveyor.job_stats_marks (taken_at, snapshot_xmax)"
        "  VALUES (pg_catalog.clock_timestamp(), pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()))"
        "  ON CONFLICT (taken_at) DO NOTHING), "
        "state AS ("
        "  UPDATE conveyor.job_stats_state SET next_xmin = pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()),"
        "    folded_at = pg_catalog.clock_timestamp() RETURNING 1) "
        "SELECT d.queue_id, d.hour,"
        "  (SELECT m.snapshot_xmax::text FROM conveyor.job_stats_marks m WHERE m.taken_at <= d.hour ORDER BY m.taken_at DESC LIMIT 1),"
        "  (SELECT count(*) FROM state)"
        " FROM (SELECT DISTINCT h.queue_id, pg_catalog.date_trunc('hour', h.finished_at, 'UTC') AS hour"
        "       FROM conveyor.job_history h WHERE h.xid >= $1::pg_catalog.xid8) d",
        {TEXTOID});
    auto rows = dirty.run(Params().text(0, since_xmin));
    DirtyHours out;
    bool unbounded = false;
    for (uint64 r = 0; r < rows.size(); ++r) {
        out.queue_ids.push_back(*rows.int4(r, 0));
        out.hours.push_back(DatumGetTimestampTz(rows.datum(r, 1)));
        auto mark = rows.text(r, 2);
        if (!mark) unbounded = true;
        else {
            uint64 x = std::stoull(*mark);
            if (!out.low_xid || x < *out.low_xid) out.low_xid = x;
        }
    }
    if (unbounded) out.low_xid.reset();
    return out;
}

int64 fold_job_stats() {
    if (!catalog_at_0_3()) return 0;
    DirtyHours d = dirty_hours();
    if (d.queue_ids.empty()) return 0;
    static Statement recompute(
        "WITH d AS ("
        "  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int4[]), pg_catalog.unnest($2::pg_catalog.timestamptz[]))"
        "    AS d(queue_id, hour)), "
        "src AS MATERIALIZED ("
        "  SELECT h.queue_id, d.hour, h.group_key, h.status, h.attempt, h.finished_at,"
        "    CASE WHEN h.status = 'completed' AND h.started_at IS NOT NULL"
        "         THEN GREATEST(extract(epoch FROM h.finished_at - h.started_at), 0)::float8 END AS run_s,"
        "    CASE WHEN h.started_at IS NOT NULL AND pg_catalog.isfinite(h.run_at)"
        "         THEN GREATEST(extract(epoch FROM h.started_at - h.run_at), 0)::float8 END AS wait_s"
        "  FROM conveyor.job_history h JOIN d ON d.queue_id = h.queue_id AND h.finished_at >= d.hour"
        "    AND h.finished_at < d.hour OPERATOR(pg_catalog.+) interval '1 hour'"
        "  WHERE h.xid >= $3::pg_catalog.xid8), "
        "w AS ("
        "  SELECT src.*,"
        "    max(finished_at) FILTER (WHERE status = 'completed') OVER (PARTITION BY queue_id, hour) AS lc_queue,"
        "    max(finished_at) FILTER (WHERE status = 'completed') OVER (PARTITION BY queue_id, hour, group_key) AS lc_group"
        "  FROM src), "
        "computed AS ("
        "  SELECT queue_id, hour, GROUPING(group_key) = 0 AS grouped, COALESCE(group_key, '') AS group_key,"
        "    count(*) FILTER (WHERE status = 'completed') AS completed,"
        "    COALESCE(sum(CASE status WHEN 'completed' THEN GREATEST(attempt - 1, 0) WHEN 'dead' THEN attempt ELSE 0 END), 0)"
        "      AS failed,"
        "    count(*) FILTER (WHERE status = 'dead') AS dead,"
        "    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,"
        "    count(run_s) AS run_count, COALESCE(sum(run_s), 0) AS run_seconds,"
        "    percentile_disc(0.95) WITHIN GROUP (ORDER BY run_s) AS p95,"
        "    count(wait_s) AS queued_count, COALESCE(sum(wait_s), 0) AS queue_seconds,"
        "    max(finished_at) FILTER (WHERE status = 'completed') AS last_completed_at,"
        "    CASE WHEN GROUPING(group_key) = 0"
        "      THEN count(*) FILTER (WHERE status = 'dead' AND (lc_group IS NULL OR finished_at > lc_group))"
        "      ELSE count(*) FILTER (WHERE status = 'dead' AND (lc_queue IS NULL OR finished_at > lc_queue)) END AS trailing_dead"
        "  FROM w GROUP BY GROUPING SETS ((queue_id, hour), (queue_id, hour, group_key))"
        "  HAVING GROUPING(group_key) = 1 OR group_key IS NOT NULL), "
        "written AS ("
        "  INSERT INTO conveyor.job_stats AS s (queue_id, grouped, group_key, bucket_start, completed, failed, dead,"
        "    cancelled, run_count, run_seconds, p95_run_seconds, queued_count, queue_seconds, last_completed_at, trailing_dead)"
        "  SELECT queue_id, grouped, group_key, hour, completed, failed, dead, cancelled, run_count, run_seconds, p95,"
        "    queued_count, queue_seconds, last_completed_at, trailing_dead FROM computed"
        "  ON CONFLICT (queue_id, grouped, group_key, bucket_start) DO UPDATE SET completed = excluded.completed,"
        "    failed = excluded.failed, dead = excluded.dead, cancelled = excluded.cancelled,"
        "    run_count = excluded.run_count, run_seconds = excluded.run_seconds, p95_run_seconds = excluded.p95_run_seconds,"
        "    queued_count = excluded.queued_count, queue_seconds = excluded.queue_seconds,"
        "    last_completed_at = excluded.last_completed_at, trailing_dead = excluded.trailing_dead"
        "  WHERE (s.completed, s.failed, s.dead, s.cancelled, s.run_count, s.run_seconds, s.p95_run_seconds,"
        "         s.queued_count, s.queue_seconds, s.last_completed_at, s.trailing_dead) IS DISTINCT FROM"
        "        (excluded.completed, excluded.failed, excluded.dead, excluded.cancelled, excluded.run_count,"
        "         excluded.run_seconds, excluded.p95_run_seconds, excluded.queued_count, excluded.queue_seconds,"
        "         excluded.last_completed_at, excluded.trailing_dead)"
        "  RETURNING 1) "
        "SELECT count(*) FROM written",
        {INT4ARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID});
    std::string low = d.low_xid ? std::to_string(*d.low_xid) : std::string("0");
    auto rows = recompute.run(Params().int4_array(0, d.queue_ids).timestamptz_array(1, d.hours).text(2, low));
    return *rows.int8(0, 0);
}

int64 purge_job_stats() {
    if (!catalog_at_0_3()) return 0;
    // Rows of a dropped queue go after the default 400 days.
    static Statement purge(
        "WITH marks AS (DELETE FROM conveyor.job_stats_marks WHERE taken_at < pg_catalog.now() - interval '7 days') "
        "DELETE FROM conveyor.job_stats s"
        " WHERE s.bucket_start < pg_catalog.now() - pg_catalog.make_interval(days =>"
        "         LEAST((SELECT min(q.stats_retention_days) FROM conveyor.queues q), 400))"
        "   AND s.bucket_start < pg_catalog.now() - pg_catalog.make_interval(days => COALESCE("
        "         (SELECT q.stats_retention_days FROM conveyor.queues q WHERE q.queue_id = s.queue_id), 400))",
        {});
    return (int64)purge.run().affected();
}

CONVEYOR_FUNCTION(conveyor_job_stats) {
    // job_stats(queue, since, until, bucket, group_key)
    std::string name = required_text(fcinfo, 0, "queue");
    require(fcinfo, 1, "since");
    require(fcinfo, 2, "until");
    std::string bucket = required_text(fcinfo, 3, "bucket");
    if (bucket != "hour" && bucket != "day" && bucket != "week" && bucket != "month")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("bucket must be 'hour', 'day', 'week' or 'month', not {}", quoted(bucket)),
                    "", "Buckets are UTC hours, days, ISO weeks or months.");
    auto group_key = arg_text(fcinfo, 4);
    if (group_key) check_key(*group_key, "group_key");
    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = load_queue(name);
    // Hours before `until` of the queue (or group), oldest first: consecutive failures at an hour
    // are the trailing dead jobs of the last hour with a completion plus the dead jobs after it.
    static Statement stmt(
        "WITH h AS ("
        "  SELECT s.*, sum(s.dead) OVER w AS cum_dead,"
        "    max(s.bucket_start) FILTER (WHERE s.completed > 0) OVER w AS anchor,"
        "    max(s.last_completed_at) OVER w AS last_completed"
        "  FROM conveyor.job_stats s"
        "  WHERE s.queue_id = $1 AND s.grouped = ($5::text IS NOT NULL) AND s.group_key = COALESCE($5, '')"
        "    AND s.bucket_start < $3"
        "  WINDOW w AS (ORDER BY s.bucket_start)), "
        "c AS ("
        "  SELECT h.*, CASE WHEN anchor IS NULL THEN cum_dead"
        "    ELSE first_value(trailing_dead) OVER a + cum_dead - first_value(cum_dead) OVER a END AS consecutive"
        "  FROM h WINDOW a AS (PARTITION BY anchor ORDER BY bucket_start)) "
        "SELECT pg_catalog.date_trunc($4, bucket_start, 'UTC') AS b, sum(completed)::bigint, sum(failed)::bigint,"
        "  sum(dead)::bigint, sum(cancelled)::bigint,"
        "  pg_catalog.round((sum(run_seconds) / NULLIF(sum(run_count), 0))::numeric, 3),"
        "  pg_catalog.round(max(p95_run_seconds)::numeric, 3),"
        "  pg_catalog.round((sum(queue_seconds) / NULLIF(sum(queued_count), 0))::numeric, 3),"
        "  max(last_completed), (pg_catalog.array_agg(consecutive ORDER BY bucket_start DESC))[1]::bigint"
        " FROM c WHERE bucket_start >= pg_catalog.date_trunc($4, $2, 'UTC')"
        " GROUP BY 1 ORDER BY 1",
        {INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID});
    auto rows = stmt.run(Params()
                             .int4(0, q.id)
                             .datum(1, PG_GETARG_DATUM(1))
                             .datum(2, PG_GETARG_DATUM(2))
                             .text(3, bucket)
                             .text(4, group_key));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
