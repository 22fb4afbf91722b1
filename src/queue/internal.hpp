// The queue's internal header: what its files (catalog, partitions, counters, groups, enqueue,
// dequeue, finish, observe, wakeup) share. Other modules see the queue through queue.hpp only.
//
// Layout of the data (see src/queue/queue.sql): pending and running jobs live in conveyor.jobs, finished
// ones in conveyor.job_history. A job's internal state decides which partial index holds it:
// 'ready' jobs are due and first in line, and they are all that dequeue scans. A grouped job is
// 'ready' only while no other job of its group is ready or running (the unique index
// jobs_group_active enforces it); the rest of the group is 'waiting'. Jobs not yet due are
// 'scheduled' and become ready (or waiting) when a dequeue meets them due.
//
// Locks: every change to which job heads a group happens under that group's transaction-scoped lock
// (LockSpace::group); every insert of a dedup key under the key's lock (LockSpace::dedup). The order
// is: job rows (in id order), then dedup keys, then groups (each set in ascending key order). Whoever
// holds a group lock never waits for a job row: the rows it changes are its own already, or it
// takes them with SKIP LOCKED. Housekeeping (dequeue's, reap, maintain) only try-locks groups and
// skips what is busy, so it never waits for a worker's transaction.
//
// Every function here runs statements: call it inside an open spi::Connection.
#pragma once

#include <map>
#include <set>

#include "core/args.hpp"
#include "core/message.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "core/time.hpp"
#include "core/uuid.hpp"
#include "core/xact_lock.hpp"
#include "queue/queue.hpp"
#include "monitor/monitor.hpp"
#include "queue/wakeup.hpp"

namespace conveyor::queue {

using spi::Params;
using spi::Statement;

// ---- the queue catalog (catalog.cpp): queue rows, their options, the per-backend cache ----

struct Queue {
    int32 id = 0;
    std::string name;
    int32 lease_seconds = 300;
    int32 max_attempts = 5;
    int32 backoff_base_seconds = 10;
    int32 backoff_max_seconds = 3600;
    std::optional<std::vector<std::string>> job_types;
    std::optional<std::vector<std::string>> required_keys;
    int32 retention_days = 7;
    bool notify = true;
    std::string event_trail = "all";
    bool paused = false;
    std::optional<int32> stats_retention_days;  // set when an option names it (0.3 column, written apart)
};

// The queue named so, read from the table; 42704 when there is none.
Queue load_queue(const std::string &name);
// The same from this backend's cache (the hot paths: enqueue, enqueue_batch, dequeue).
Queue cached_queue(const std::string &name);
// The queues with these ids that exist, by id.
std::map<int32, Queue> load_queues_by_id(const std::vector<int32> &ids);
// The largest retention_days of all queues (7 when there are none): history partitions made for it
// fit a job of any queue.
int32 longest_retention();

// Due jobs became ready: workers waiting on the queue get a NOTIFY when this transaction commits.
inline void notify_queue(const Queue &q) {
    if (q.notify) wake_workers_at_commit(q.id, q.name);
}

// ---- partitions of job_history (by purge day) and job_events (by day) (partitions.cpp) ----

// Partitions of job_history for every purge day a job finishing now can have, up to retention_days.
void ensure_history_partitions(int32 retention_days);
// Partitions of job_events for today and tomorrow.
void ensure_event_partitions();

// ---- counters: conveyor.queue_counts (counters.cpp) ----

// The statement that adds per-queue deltas to this backend's row of conveyor.queue_counts for the
// current minute. `select` yields queue_id followed by the named delta columns, one row per queue.
std::string counts_upsert(const std::string &select, std::initializer_list<const char *> columns);
// The same for one queue's deltas given as SQL expressions (parameters or constants), without a
// subquery to read them from.
std::string counts_upsert_values(const std::string &queue_id,
                                 std::initializer_list<std::pair<const char *, const char *>> deltas);

// ---- groups and dedup keys: their locks and who heads a group (groups.cpp) ----

// A group: (queue_id, group_key).
using GroupKey = std::pair<int32, std::string>;

// Takes the locks of these groups, in ascending key order.
void lock_groups(const std::set<GroupKey> &groups);
// The groups whose locks are free right now (and are now ours). Housekeeping uses this so that it
// never waits for a worker's transaction.
std::set<GroupKey> try_lock_groups(const std::set<GroupKey> &groups);
// Takes the locks of these dedup keys of one queue, in ascending key order.
void lock_dedup_keys(int32 queue_id, const std::vector<std::string> &dedup_keys);
// The pending or running job of the queue that holds this dedup key, if any.
std::optional<pg_uuid_t> active_job_with_dedup_key(int32 queue_id, const std::string &key);
// Where a waiting job should run before its group's ready (unclaimed) head, the head steps back to
// waiting, for fill_group_heads to promote the better job. Callers hold the groups' locks.
void rebalance_group_heads(int32 queue_id, const std::vector<std::string> &groups);
// For each group that has no ready or running job, the best waiting job becomes ready. Callers hold
// the groups' locks.
void fill_group_heads(int32 queue_id, const std::vector<std::string> &groups);
void fill_group_heads(const std::set<GroupKey> &groups);

// ---- finishing jobs (finish.cpp) ----

// Expires running jobs whose lease ran out (of one queue, or all), at most `limit`; returns how
// many. Never waits: jobs whose group or row another transaction holds are left for the next pass.
int64 reap_expired(std::optional<int32> queue_id, int limit);

} // namespace conveyor::queue
