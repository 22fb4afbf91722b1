// The queue's internal header: what its files (catalog, partitions, counters, groups, enqueue,
// dequeue, finish, observe, wakeup, status, progress, listing) share. Other modules see the queue
// through queue.hpp only.
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
#include <memory>
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

struct PayloadSchema;  // a compiled payload_schema (schema.cpp)

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
    // Columns of 0.3; a database not yet updated has none of them (catalog_at_0_3()).
    int32 dead_retention_days = 30;  // dead jobs' own retention (retention_days before)
    // The schema is compiled once per cache entry (schema.cpp); metadata is jsonb text.
    std::shared_ptr<const PayloadSchema> payload_schema;
    std::optional<std::string> display_name, description, metadata;
    int32 stats_retention_days = 400;  // how long job_stats keeps the queue's hours
    bool status_notify = false;  // every status change and progress update NOTIFY'd on conveyor_status
};

// Whether this database's conveyor objects are at 0.3 (its queue options, job_history columns and
// tables): a database still at 0.1 or 0.2 is served by this conveyor.so until ALTER EXTENSION
// conveyor UPDATE, and the statements then keep to the older columns; 0.3's options give 55000.
// Looked up once per change of conveyor.queues (its relcache entry), not per call.
bool catalog_at_0_3();

// The queue named so, read from the table; 42704 when there is none.
Queue load_queue(const std::string &name);
// The same from this backend's cache (the hot paths: enqueue, enqueue_batch, dequeue).
Queue cached_queue(const std::string &name);
// The queues with these ids that exist, by id.
std::map<int32, Queue> load_queues_by_id(const std::vector<int32> &ids);
// The largest retention_days or dead_retention_days of all queues (7 when there are none): history
// partitions made for it fit a job of any queue, dead or not.
int32 longest_retention();

// ---- payload schemas and descriptive metadata (schema.cpp) ----

// Applies the option `key` if it is payload_schema, display_name, description or metadata (22023
// for a bad value, a schema that is not valid draft 7 included); false for any other option.
bool apply_metadata_option(Queue &q, const std::string &key, const JsonbValue &v);
// The stored payload_schema (a jsonb datum) compiled.
std::shared_ptr<const PayloadSchema> payload_schema_from_datum(Datum jsonb);
// The schema as jsonb text, as it is stored.
const std::string &payload_schema_text(const PayloadSchema &s);
// 22023 naming `at` (the batch element) and the JSON pointer of the first violation when the payload
// does not match q's payload_schema, which q must have.
void check_payload_schema(const Queue &q, Jsonb *payload, const std::string &at);

// Due jobs became ready: workers waiting on the queue get a NOTIFY when this transaction commits.
inline void notify_queue(const Queue &q) {
    if (q.notify) wake_workers_at_commit(q.id, q.name);
}

// ---- status notifications (status.cpp) ----

// The NOTIFY channel of status changes.
constexpr const char *status_channel = "conveyor_status";
// Whether the queue with this id has status_notify on (from this backend's cache; false on a
// database without the option). What every transition asks before it builds anything.
bool status_notify_on(int32 queue_id);
// The one call every state transition makes after its statement has changed the jobs: when the
// queue has status_notify on, each job's current status is sent on conveyor_status at commit, in
// the order of these calls (and of commits across transactions). Free when the option is off.
void status_changed(int32 queue_id, const std::vector<pg_uuid_t> &job_ids);
// The same for jobs of any queues: (queue_id, job_id) pairs, in the order given.
void status_changed(const std::vector<std::pair<int32, pg_uuid_t>> &jobs);

// ---- partitions of job_history (by purge day) and job_events (by day) (partitions.cpp) ----

// Partitions of job_history for every purge day a job finishing now can have, up to retention_days.
void ensure_history_partitions(int32 retention_days);
// Partitions of job_events for today and tomorrow.
void ensure_event_partitions();

// ---- counters: conveyor.queue_counts (counters.cpp) ----

// The statement that adds per-queue deltas to this backend's row of conveyor.queue_counts for the
// current minute. `select` yields queue_id followed by the named delta columns, one row per queue.
std::string counts_upsert(const std::string &select, std::initializer_list<const char *> columns);
// An UPDATE of this backend's row of the current minute adding one queue's deltas, given as SQL
// expressions (parameters or constants), as the CTE `cte` of a WITH list: it returns a row when the
// row existed. When it did not, the caller adds the deltas with add_enqueue_counts (whose INSERT
// makes the row) in the same transaction.
std::string counts_update_values(const std::string &cte, const std::string &queue_id,
                                 std::initializer_list<std::pair<const char *, const char *>> deltas);
void add_enqueue_counts(int32 queue_id, int64 pending, int64 scheduled, int64 enqueued);

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

// ---- finishing jobs (finish.cpp), shared with the operator actions (operator.cpp) ----

// A job a statement changed, with its new state: ready/waiting/scheduled, or completed/dead/cancelled.
struct Changed {
    pg_uuid_t id;
    int32 queue_id;
    std::optional<std::string> group_key;
    std::string state;
};
// Rows of job_id, queue_id, group_key, state.
std::vector<Changed> changed_rows(const spi::Rows &rows);
// status_changed for each of these jobs (every transition that changes a job's status calls it).
void report_status(const std::vector<Changed> &changes);

// A pending or running job as its callers need it.
struct JobRef {
    pg_uuid_t id;
    int32 queue_id;
    std::optional<std::string> group_key;
    std::string state;
    std::optional<std::string> worker_id;
    int32 retention_days;  // of its queue: where it lands in job_history when it finishes
};
// The jobs with these ids that are pending or running. lock: also lock their rows (in id order),
// which every change to a job does before it takes its group's lock.
std::vector<JobRef> find_jobs(const std::vector<pg_uuid_t> &ids, bool lock = false);
// The status of a finished job (completed, dead, cancelled), if it is one.
std::optional<std::string> finished_status(const pg_uuid_t &id);
// "running" or "pending", as users see an internal state.
std::string public_status(const std::string &state);
// The groups whose head left (finished, or went back to scheduled or waiting) need a new head.
std::set<GroupKey> groups_losing_head(const std::vector<Changed> &changes);
// History partitions for these jobs' retention, and today's event partitions.
void ensure_partitions_for(const std::vector<JobRef> &jobs);
// Throws 22023 when a delay is negative.
void check_delay(const std::optional<int32> &delay, const char *name);
// The attempt argument i of a worker's call (ack, heartbeat, release, progress, job_log; 0.3), 1 or
// more: the call then acts only on the lease that dequeue reported with that attempt. Absent (the
// function of a database at 0.2 passes fewer arguments) or NULL: whatever the worker holds.
std::optional<int32> lease_attempt(FunctionCallInfo fcinfo, int i);

// Expires running jobs whose lease ran out (of one queue, or all), at most `limit`; returns how
// many. Never waits: jobs whose group or row another transaction holds are left for the next pass.
int64 reap_expired(std::optional<int32> queue_id, int limit);

} // namespace conveyor::queue
