// Tables partitioned by day (RANGE on a timestamptz, one partition per UTC day, named
// <table>_pYYYYMMDD): created ahead by maintain() and on demand by the paths that write to them,
// dropped when past their retention. The queue's job_history and job_events, and the monitor's
// events, metric points and audit log, are such tables.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "pg.hpp"

namespace conveyor {

// Days since 1970-01-01 (UTC) of a time.
int64 unix_day(TimestampTz t);
// "2026-12-03" (or "20261203" when compact) for a day number.
std::string day_text(int64 day, bool compact);

class DailyPartitions {
  public:
    // index_definitions: (name suffix, definition) of the indexes each partition carries. Indexes
    // belong to each partition, not to the extension's parent: pg_dump then restores partitions with
    // their own indexes after CREATE EXTENSION without name clashes.
    DailyPartitions(const char *table, std::vector<std::pair<const char *, const char *>> index_definitions);
    const char *table() const { return table_; }
    // Makes sure partitions exist for days [first, last].
    void ensure(int64 first, int64 last);
    // Makes sure today's and tomorrow's partitions exist (the statement clock's day).
    void ensure_current();
    // The names of the partitions whose day is before `day`, oldest first.
    std::vector<std::string> before(int64 day) const;
    // Drops a partition; false (nothing dropped) when its lock is not granted within lock_timeout_ms,
    // so maintenance never queues behind the hot path for long.
    bool drop(const std::string &partition, int lock_timeout_ms) const;
    // The index of this suffix is made only when the parent has this column (a database not yet
    // updated to the version that added it is served by the same library).
    void index_needs_column(const char *suffix, const char *column) { index_columns_.emplace_back(suffix, column); }

  private:
    friend void forget_partitions();
    const char *table_;
    std::vector<std::pair<const char *, const char *>> index_definitions_;
    std::vector<std::pair<std::string, const char *>> index_columns_;
    int64 ready_until_ = -1;  // partitions exist for every day up to here (this backend's knowledge)
    Oid parent_ = InvalidOid;
};

// The oid of conveyor.<relname>, or InvalidOid when there is no such relation (or no extension).
Oid conveyor_relid(const char *relname);

// At load (src/core/module.cpp): what each backend believes exists is forgotten when a
// (sub)transaction that may have made it aborts.
void register_partition_callbacks();

} // namespace conveyor
