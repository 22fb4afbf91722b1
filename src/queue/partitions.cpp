// Partitions of conveyor.job_history (by purge day) and conveyor.job_events (by day): created ahead
// by maintain() and on demand by the paths that write to them, dropped by maintain() when past their
// retention.
#include "core/partitions.hpp"
#include "core/subxact.hpp"
#include "queue/internal.hpp"

namespace conveyor::queue {

// Every index here costs each finishing job its upkeep (opened by the statement that inserts it, its
// predicate checked when partial), so each has a reader that needs it. "job_id": get_job and every
// lookup by id. "xid": maintain() finds the jobs finished since its last job_stats fold by it. "dead":
// conveyor.dead_jobs pages through a queue's dead jobs newest first on it (and maintain() counts a
// dropped partition's dead jobs by queue). The last four serve list_jobs: each filter of it (queue,
// status other than completed, group, job type) reads its index in job id order, newest first, and
// stops at the limit. A completed job without group or type enters three of them.
static DailyPartitions history_table = [] {
    DailyPartitions t{"job_history",
                      {{"job_id", "(job_id)"},
                       {"xid", "(xid)"},
                       {"dead", "(queue_id, finished_at DESC, job_id DESC) WHERE status = 'dead'"},
                       {"queue_listing", "(queue_id, job_id)"},
                       {"status_listing", "(status, job_id) WHERE status <> 'completed'"},
                       {"group_listing", "(group_key, job_id) WHERE group_key IS NOT NULL"},
                       {"type_listing", "(job_type, job_id) WHERE job_type IS NOT NULL"}}};
    t.index_needs_column("xid", "xid");  // a database still at 0.2 has no xid column
    return t;
}();
static DailyPartitions events_table{"job_events", {{"job_id_at", "(job_id, at)"}}};

void ensure_history_partitions(int32 retention_days) {
    int64 today = unix_day(tx_now());
    history_table.ensure(today, today + retention_days + 2);
}

void ensure_event_partitions() {
    events_table.ensure_current();
}

int64 maintain_partitions(int64 *busy) {
    // Partitions ahead for every queue's retention (read afresh, not from the cache, which may not
    // yet hold a change made earlier in the calling statement).
    // Dead jobs keep their own retention (0.3's dead_retention_days).
    static Statement max_retention[2] = {
        {"SELECT COALESCE(max(retention_days), 7) FROM conveyor.queues", {}},
        {"SELECT COALESCE(max(GREATEST(retention_days, dead_retention_days)), 7) FROM conveyor.queues", {}}};
    int32 retention = *max_retention[catalog_at_0_3()].run().int4(0, 0);
    // Creating or dropping a partition locks its parent against every job write until maintain()
    // commits: a lock not granted within this waits for the next run.
    constexpr int lock_timeout_ms = 200;
    if (!within_lock_timeout(lock_timeout_ms, [&] {
            ensure_history_partitions(retention);
            int64 today = unix_day(GetCurrentTimestamp());
            events_table.ensure(today, today + 2);
        }))
        ++*busy;

    int64 today = unix_day(tx_now());
    int64 dropped = 0;
    // History partitions whose purge day has passed: their dead jobs leave the gauges with them.
    for (const std::string &part : history_table.before(today)) {
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        auto dead = spi::run_once(fmt::format("SELECT queue_id, count(*) FROM conveyor.{} WHERE status = 'dead' GROUP BY 1",
                                              ident),
                                  {}, Params());
        std::vector<int32> queue_ids;
        std::vector<int32> counts;
        for (uint64 r = 0; r < dead.size(); ++r) {
            queue_ids.push_back(*dead.int4(r, 0));
            counts.push_back((int32)*dead.int8(r, 1));
        }
        if (!history_table.drop(part, lock_timeout_ms)) {
            ++*busy;
            continue;
        }
        if (!queue_ids.empty()) {
            static const std::string sql =
                counts_upsert("SELECT q, -n FROM ROWS FROM (pg_catalog.unnest($1::int4[]), pg_catalog.unnest($2::int4[])) AS d(q, n)", {"dead"});
            static Statement uncount(sql.c_str(), {INT4ARRAYOID, INT4ARRAYOID});
            uncount.run(Params().int4_array(0, queue_ids).int4_array(1, counts));
        }
        ++dropped;
    }
    // Event partitions older than the longest retention.
    for (const std::string &part : events_table.before(today - retention - 1))
        if (events_table.drop(part, lock_timeout_ms)) ++dropped;
        else ++*busy;
    return dropped;
}

} // namespace conveyor::queue
