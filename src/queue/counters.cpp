// conveyor.queue_counts: the counters queue_metrics reads. Every statement that changes jobs adds its
// per-queue deltas to a row of its own (one per queue, minute and backend, so writers never wait on
// each other); maintain() folds old rows together.
#include "queue/internal.hpp"

namespace conveyor::queue {

// The bucket and shard of the row a statement adds its deltas to: the current minute, and this
// backend's pid (pg_backend_pid()), so concurrent writers never update the same row.
static constexpr const char *counts_bucket_shard =
    "pg_catalog.date_bin('1 minute', pg_catalog.now(), 'epoch'), pg_catalog.pg_backend_pid()";

// `rows` yields queue_id, the delta columns named, then bucket and shard (counts_bucket_shard).
static std::string counts_upsert_rows(const std::string &rows, const std::vector<const char *> &columns) {
    std::string cols, sets;
    for (const char *c : columns) {
        cols += fmt::format(", {}", c);
        sets += fmt::format("{}{} = c.{} + excluded.{}", sets.empty() ? "" : ", ", c, c, c);
    }
    return fmt::format("INSERT INTO conveyor.queue_counts AS c (queue_id{}, bucket, shard) {} "
                       "ON CONFLICT (queue_id, bucket, shard) DO UPDATE SET {}",
                       cols, rows, sets);
}

std::string counts_upsert(const std::string &select, std::initializer_list<const char *> columns) {
    return counts_upsert_rows(fmt::format("SELECT s.*, {} FROM ({}) s", counts_bucket_shard, select), columns);
}

// The row this backend writes for the current minute is its own (the shard is its pid), and after
// its first statement of the minute it exists: a plain UPDATE finds it through the primary key and
// changes it in place (a HOT update: no indexed column changes), where INSERT ... ON CONFLICT DO
// UPDATE would also plan and run the insert, probe the index for the conflict and lock the row (a
// WAL record of its own) before the same update.
std::string counts_update_values(const std::string &cte, const std::string &queue_id,
                                 std::initializer_list<std::pair<const char *, const char *>> deltas) {
    std::string sets;
    for (const auto &[column, value] : deltas)
        sets += fmt::format("{}{} = c.{} + {}", sets.empty() ? "" : ", ", column, column, value);
    return fmt::format("{} AS (UPDATE conveyor.queue_counts c SET {} WHERE c.queue_id = {}"
                       " AND c.bucket = pg_catalog.date_bin('1 minute', pg_catalog.now(), 'epoch')"
                       " AND c.shard = pg_catalog.pg_backend_pid() RETURNING 1)",
                       cte, sets, queue_id);
}

void add_enqueue_counts(int32 queue_id, int64 pending, int64 scheduled, int64 enqueued) {
    static const std::string sql =
        counts_upsert_rows("VALUES ($1, $2, $3, $4, " + std::string(counts_bucket_shard) + ")", {"pending", "scheduled", "enqueued"});
    static Statement stmt(sql.c_str(), {INT4OID, INT8OID, INT8OID, INT8OID});
    stmt.run(Params().int4(0, queue_id).int8(1, pending).int8(2, scheduled).int8(3, enqueued));
}

// Folds minute rows older than 65 minutes into one row per queue and minute (shard 0, never a
// backend's pid, so folded rows never collide with live writers), and rows older than 25 hours into
// one row per queue at bucket -infinity. Minutes stay minutes, so the 24-hour window of queue_metrics
// stays exact. Returns how many folded rows it wrote (inserted or added to).
int64 fold_counters() {
    static const char *fold_sql =
        "WITH old AS ("
        "  DELETE FROM conveyor.queue_counts c"
        "  WHERE c.bucket > '-infinity' AND c.bucket < pg_catalog.now() - interval '65 minutes'"
        "    AND (c.shard <> 0 OR c.bucket < pg_catalog.now() - interval '25 hours')"
        "  RETURNING c.*,"
        "    CASE WHEN c.bucket < pg_catalog.now() - interval '25 hours' THEN '-infinity'::timestamptz"
        "         ELSE c.bucket END AS target) "
        "INSERT INTO conveyor.queue_counts AS c (queue_id, bucket, shard, pending, scheduled, running, dead, enqueued,"
        "    started, completed, failed, expired, cancelled, wait_seconds, run_seconds)"
        " SELECT queue_id, target, 0, sum(pending), sum(scheduled), sum(running), sum(dead), sum(enqueued),"
        "    sum(started), sum(completed), sum(failed), sum(expired), sum(cancelled), sum(wait_seconds), sum(run_seconds)"
        " FROM old GROUP BY queue_id, target"
        " ON CONFLICT (queue_id, bucket, shard) DO UPDATE SET pending = c.pending + excluded.pending,"
        "    scheduled = c.scheduled + excluded.scheduled, running = c.running + excluded.running,"
        "    dead = c.dead + excluded.dead, enqueued = c.enqueued + excluded.enqueued,"
        "    started = c.started + excluded.started, completed = c.completed + excluded.completed,"
        "    failed = c.failed + excluded.failed, expired = c.expired + excluded.expired,"
        "    cancelled = c.cancelled + excluded.cancelled, wait_seconds = c.wait_seconds + excluded.wait_seconds,"
        "    run_seconds = c.run_seconds + excluded.run_seconds";
    static Statement fold(fold_sql, {});
    return (int64)fold.run().affected();
}

} // namespace conveyor::queue
