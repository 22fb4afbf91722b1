// Partitions of conveyor.job_history (by purge day) and conveyor.job_events (by day): created ahead
// by maintain() and on demand by the paths that write to them, dropped by maintain() when past their
// retention.
#include <algorithm>

#include "queue/internal.hpp"

namespace conveyor::queue {

static int64 unix_day(TimestampTz t) {
    int64 secs = t / USECS_PER_SEC + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
    return secs >= 0 ? secs / SECS_PER_DAY : -((-secs + SECS_PER_DAY - 1) / SECS_PER_DAY);
}

static std::string day_text(int64 day, bool compact) {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    int64 z = day + 719468;
    int64 era = (z >= 0 ? z : z - 146096) / 146097;
    int64 doe = z - era * 146097;
    int64 yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64 y = yoe + era * 400;
    int64 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64 mp = (5 * doy + 2) / 153;
    int64 d = doy - (153 * mp + 2) / 5 + 1;
    int64 m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) ++y;
    return compact ? fmt::format("{:04}{:02}{:02}", y, m, d) : fmt::format("{:04}-{:02}-{:02}", y, m, d);
}

struct PartitionedTable {
    const char *name;
    std::vector<std::pair<const char *, const char *>> index_definitions;  // name suffix, definition
    int64 ready_until = -1;  // partitions exist for every day up to here (this backend's knowledge)
    Oid parent = InvalidOid;
};

static PartitionedTable history_table{
    "job_history", {{"job_id", "(job_id)"}, {"unfinished", "(queue_id, status) WHERE status <> 'completed'"}}};
static PartitionedTable events_table{"job_events", {{"job_id_at", "(job_id, at)"}}};

// Partitions created by a transaction that aborts are gone: forget what this backend believes.
static void forget_partitions_on_abort(XactEvent event, void *) {
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        history_table.ready_until = -1;
        events_table.ready_until = -1;
    }
}

static void forget_partitions_on_subabort(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        history_table.ready_until = -1;
        events_table.ready_until = -1;
    }
}

// Makes sure partitions exist for days [first, last] of table t.
static void ensure_partitions(PartitionedTable &t, int64 first, int64 last) {
    Oid parent = conveyor_relid(t.name);
    if (parent != t.parent) {  // first use, or the extension was dropped and created again
        t.parent = parent;
        t.ready_until = -1;
    }
    if (last <= t.ready_until) return;
    for (int64 day = std::max(first, t.ready_until + 1); day <= last; ++day) {
        std::string part = fmt::format("{}_p{}", t.name, day_text(day, true));
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        // Serialize creators of one partition; then look again.
        xact_lock(LockSpace::partition, hash64(part));
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        std::string sql = fmt::format(
            "CREATE TABLE conveyor.{} PARTITION OF conveyor.{} FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
            ident, t.name, day_text(day, false), day_text(day + 1, false));
        spi::run_once(sql, {}, Params());
        // Indexes belong to each partition, not to the extension's parent: pg_dump then restores
        // partitions with their own indexes after CREATE EXTENSION without name clashes.
        for (const auto &[suffix, definition] : t.index_definitions) {
            std::string name = part + "_" + suffix;
            const char *name_c = name.c_str();
            const char *index_ident = pg_guard([&] { return quote_identifier(name_c); });
            spi::run_once(fmt::format("CREATE INDEX {} ON conveyor.{} {}", index_ident, ident, definition), {}, Params());
        }
    }
    t.ready_until = last;
}

void ensure_history_partitions(int32 retention_days) {
    int64 today = unix_day(tx_now());
    ensure_partitions(history_table, today, today + retention_days + 2);
}

void ensure_event_partitions() {
    int64 today = unix_day(GetCurrentTimestamp());
    ensure_partitions(events_table, today, today + 1);
}

void register_partition_callbacks() {
    pg_guard([] {
        RegisterXactCallback(forget_partitions_on_abort, nullptr);
        RegisterSubXactCallback(forget_partitions_on_subabort, nullptr);
    });
}

int64 maintain_partitions() {
    // Partitions ahead for every queue's retention (read afresh, not from the cache, which may not
    // yet hold a change made earlier in the calling statement).
    static Statement max_retention("SELECT COALESCE(max(retention_days), 7) FROM conveyor.queues", {});
    int32 retention = *max_retention.run().int4(0, 0);
    ensure_history_partitions(retention);
    ensure_event_partitions();

    // Drop history partitions whose purge day has passed, taking their dead jobs off the gauges;
    // drop event partitions older than the longest retention.
    static Statement partitions(
        "SELECT c.relname, p.relname FROM pg_catalog.pg_inherits i"
        " JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_class p ON p.oid = i.inhparent"
        " WHERE p.relnamespace = 'conveyor'::regnamespace AND p.relname IN ('job_history', 'job_events')"
        " ORDER BY 1",
        {});
    auto rows = partitions.run();
    std::vector<std::pair<std::string, std::string>> parts;
    for (uint64 r = 0; r < rows.size(); ++r) parts.emplace_back(*rows.text(r, 0), *rows.text(r, 1));
    std::string today = day_text(unix_day(tx_now()), true);
    std::string events_cutoff = day_text(unix_day(tx_now()) - retention - 1, true);
    int64 dropped = 0;
    for (const auto &[part, parent] : parts) {
        std::string suffix = part.substr(part.size() - 8);
        bool expired = parent == "job_history" ? suffix < today : suffix < events_cutoff;
        if (!expired) continue;
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        if (parent == "job_history") {
            std::string sql = "WITH d AS (SELECT queue_id, count(*) AS n FROM conveyor." + std::string(ident) +
                              " WHERE status = 'dead' GROUP BY queue_id) " +
                              counts_upsert("SELECT queue_id, -n FROM d", {"dead"});
            spi::run_once(sql, {}, Params());
        }
        spi::run_once(fmt::format("DROP TABLE conveyor.{}", ident), {}, Params());
        ++dropped;
    }
    return dropped;
}

} // namespace conveyor::queue
