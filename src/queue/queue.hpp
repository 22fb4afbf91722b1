// The queue, as other parts of conveyor see it. (Its own files share src/queue/internal.hpp.)
#pragma once

#include "core/guard.hpp"

namespace conveyor::queue {

// At load: the per-backend queue cache and partition bookkeeping follow catalog changes and aborts.
void register_callbacks();

// Checks a job as conveyor.enqueue does before writing it: the queue exists, priority and max_attempts
// (the queue's when nullopt) are in range, the payload is an object with the queue's required keys that
// matches its payload schema, and the job type is one the queue allows; throws enqueue's errors.
// Inside an open SPI connection.
void check_job(const std::string &queue, Jsonb *payload, const std::optional<std::string> &job_type,
               int32 priority, std::optional<int32> max_attempts);

// ---- upkeep, called by conveyor.maintain() (src/maintain.cpp) inside an open SPI connection ----

// Creates the history and event partitions ahead for every queue's retention, then drops history
// partitions whose purge day has passed (taking their dead jobs off the gauges) and event
// partitions older than the longest retention; returns how many partitions it dropped, and adds to
// *busy those whose lock was not granted in time (the next run drops them).
int64 maintain_partitions(int64 *busy);

// Folds old rows of conveyor.queue_counts together; returns how many folded rows it wrote.
int64 fold_counters();

// Expires the running jobs of every queue whose lease ran out, as conveyor.reap() does; returns how many.
int64 expire_leases();

// Gives each group that has waiting jobs but no ready or running one its next head, skipping groups
// whose lock is busy; returns how many groups it repaired.
int64 repair_groups();

// Recomputes the job_stats hours that received finished jobs since the last fold; returns how many
// rows it wrote. Nothing when the extension is older than job_stats.
int64 fold_job_stats();
// Deletes job_stats rows older than their queue's stats_retention_days; returns how many.
int64 purge_job_stats();

} // namespace conveyor::queue
