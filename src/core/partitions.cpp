// Daily partitions (see partitions.hpp).
#include "partitions.hpp"

#include <algorithm>

#include "spi.hpp"
#include "subxact.hpp"
#include "xact_lock.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
}

namespace conveyor {

int64 unix_day(TimestampTz t) {
    int64 secs = t / USECS_PER_SEC + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
    return secs >= 0 ? secs / SECS_PER_DAY : -((-secs + SECS_PER_DAY - 1) / SECS_PER_DAY);
}

std::string day_text(int64 day, bool compact) {
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

Oid conveyor_relid(const char *relname) {
    return pg_guard([&] {
        Oid ns = get_namespace_oid("conveyor", true);
        return OidIsValid(ns) ? get_relname_relid(relname, ns) : InvalidOid;
    });
}

// Every partitioned table of the module, so an abort can make each forget what it believed.
static std::vector<DailyPartitions *> &all_tables() {
    static std::vector<DailyPartitions *> tables;
    return tables;
}

DailyPartitions::DailyPartitions(const char *table, std::vector<std::pair<const char *, const char *>> index_definitions)
    : table_(table), index_definitions_(std::move(index_definitions)) {
    all_tables().push_back(this);
}

void forget_partitions() {
    for (DailyPartitions *t : all_tables()) t->ready_until_ = -1;
}

void DailyPartitions::ensure(int64 first, int64 last) {
    Oid parent = conveyor_relid(table_);
    if (parent != parent_) {  // first use, or the extension was dropped and created again
        parent_ = parent;
        ready_until_ = -1;
    }
    if (last <= ready_until_) return;
    for (int64 day = std::max(first, ready_until_ + 1); day <= last; ++day) {
        std::string part = fmt::format("{}_p{}", table_, day_text(day, true));
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        // Serialize creators of one partition; then look again, after taking in the catalog changes
        // of whoever held the lock (an advisory lock, unlike a relation lock, does not do that).
        xact_lock(LockSpace::partition, hash64(part));
        pg_guard([] { AcceptInvalidationMessages(); });
        if (OidIsValid(conveyor_relid(part.c_str()))) continue;
        const char *part_name = part.c_str();
        const char *ident = pg_guard([&] { return quote_identifier(part_name); });
        // CREATE TABLE ... PARTITION OF would take an ACCESS EXCLUSIVE lock on the parent, which waits
        // for every transaction that has written to or read the table; one of them waiting in turn for
        // this partition (on the advisory lock above) is a deadlock. ATTACH PARTITION takes only SHARE
        // UPDATE EXCLUSIVE on the parent, which readers and writers do not hold.
        spi::run_once(fmt::format("CREATE TABLE conveyor.{} (LIKE conveyor.{} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                                  ident, table_),
                      {}, spi::Params());
        spi::run_once(fmt::format("ALTER TABLE conveyor.{} ATTACH PARTITION conveyor.{} FOR VALUES FROM ('{} 00:00:00+00') "
                                  "TO ('{} 00:00:00+00')",
                                  table_, ident, day_text(day, false), day_text(day + 1, false)),
                      {}, spi::Params());
        for (const auto &[suffix, definition] : index_definitions_) {
            bool wanted = true;
            for (const auto &[needing, column] : index_columns_)
                if (needing == suffix) {
                    const char *col = column;
                    wanted = pg_guard([&] { return get_attnum(parent, col); }) != InvalidAttrNumber;
                }
            if (!wanted) continue;
            std::string name = part + "_" + suffix;
            const char *name_c = name.c_str();
            const char *index_ident = pg_guard([&] { return quote_identifier(name_c); });
            spi::run_once(fmt::format("CREATE INDEX {} ON conveyor.{} {}", index_ident, ident, definition), {}, spi::Params());
        }
    }
    ready_until_ = last;
}

void DailyPartitions::ensure_current() {
    int64 today = unix_day(GetCurrentTimestamp());
    ensure(today, today + 1);
}

std::vector<std::string> DailyPartitions::before(int64 day) const {
    static spi::Statement partitions(
        "SELECT c.relname::text FROM pg_catalog.pg_inherits i"
        " JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_class p ON p.oid = i.inhparent"
        " WHERE p.relnamespace OPERATOR(pg_catalog.=) 'conveyor'::pg_catalog.regnamespace"
        "   AND p.relname OPERATOR(pg_catalog.=) $1::pg_catalog.name ORDER BY 1",
        {TEXTOID});
    auto rows = partitions.run(spi::Params().text(0, table_));
    std::string cutoff = fmt::format("{}_p{}", table_, day_text(day, true));
    std::vector<std::string> old;
    for (uint64 r = 0; r < rows.size(); ++r) {
        std::string name = *rows.text(r, 0);
        // Only partitions named by this scheme, compared by their day suffix.
        if (name.size() == cutoff.size() && name < cutoff) old.push_back(std::move(name));
    }
    return old;
}

bool DailyPartitions::drop(const std::string &partition, int lock_timeout_ms) const {
    const char *part_name = partition.c_str();
    const char *ident = pg_guard([&] { return quote_identifier(part_name); });
    std::string sql = fmt::format("DROP TABLE conveyor.{}", ident);
    return within_lock_timeout(lock_timeout_ms, [&] { spi::run_once(sql, {}, spi::Params()); });
}

static void forget_partitions_on_abort(XactEvent event, void *) {
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) forget_partitions();
}

static void forget_partitions_on_subabort(SubXactEvent event, SubTransactionId, SubTransactionId, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB) forget_partitions();
}

void register_partition_callbacks() {
    pg_guard([] {
        RegisterXactCallback(forget_partitions_on_abort, nullptr);
        RegisterSubXactCallback(forget_partitions_on_subabort, nullptr);
    });
}

} // namespace conveyor
