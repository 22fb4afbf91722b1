// The monitor's part of maintain(): its partitions (events, metric points, the audit log) ahead and past retention, and the purge of rollups
// and resolved issues past theirs.
#include "core/subxact.hpp"
#include "monitor/internal.hpp"

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

// Creating or dropping a partition locks its parent against every reader and writer until maintain()
// commits: a lock not granted within this waits for the next run.
constexpr int partition_lock_timeout_ms = 200;
// Partitions are made this many days ahead, so writers rarely create one themselves.
constexpr int64 days_ahead = 2;

static int64 roll_partitions(DailyPartitions &t, int64 retention_days, int64 *busy) {
    int64 today = unix_day(GetCurrentTimestamp());
    if (!within_lock_timeout(partition_lock_timeout_ms, [&] { t.ensure(today, today + days_ahead); })) ++*busy;
    int64 dropped = 0;
    for (const std::string &part : t.before(today - retention_days)) {
        if (t.drop(part, partition_lock_timeout_ms)) ++dropped;
        else ++*busy;
    }
    return dropped;
}

int64 maintain_partitions(int64 *busy) {
    if (!monitor_installed()) return 0;
    return roll_partitions(event_partitions, setting_int("retention.events_days"), busy) +
           roll_partitions(point_partitions, setting_int("retention.metric_points_days"), busy) +
           roll_partitions(audit_partitions, setting_int("retention.audit_days"), busy);
}

int64 purge_expired() {
    if (!monitor_installed()) return 0;
    static Statement rollups(
        "DELETE FROM conveyor.metric_rollups WHERE (period = 'hour' AND bucket_start < pg_catalog.now() - $1 * interval '1 day')"
        " OR (period = 'day' AND bucket_start < pg_catalog.now() - $2 * interval '1 day')",
        {INT8OID, INT8OID});
    static Statement issues(
        "DELETE FROM conveyor.worker_issues WHERE resolved_at < pg_catalog.now() - $1 * interval '1 day'", {INT8OID});
    int64 n = (int64)rollups
                  .run(Params()
                           .int8(0, setting_int("retention.metric_hourly_days"))
                           .int8(1, setting_int("retention.metric_daily_days")))
                  .affected();
    n += (int64)issues.run(Params().int8(0, setting_int("retention.resolved_issues_days"))).affected();
    return n;
}

} // namespace conveyor::monitor
