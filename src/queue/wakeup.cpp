// Waking workers that LISTEN: the protocol is described in wakeup.hpp.
#include <map>

#include "core/spi.hpp"
#include "core/xact_lock.hpp"
#include "queue/wakeup.hpp"

namespace conveyor::queue {

static LOCKTAG wake_tag(int32 queue_id) { return advisory_tag(LockSpace::wake, (uint64)(uint32)queue_id); }

static void notify(const std::string &queue_name) {
    const char *payload = queue_name.c_str();
    // PostgreSQL folds identical notifications of one transaction into one.
    pg_guard([&] { Async_Notify("conveyor", payload); });
}

// ---- producers ----

// Queues (id -> name) that got due jobs in the current transaction.
static std::map<int32, std::string> pending_wakeups;

static void wake_at_pre_commit() {
    for (const auto &[queue_id, name] : pending_wakeups) {
        LOCKTAG tag = wake_tag(queue_id);
        bool no_waiter = pg_guard([&] { return LockAcquire(&tag, RowExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL; });
        if (!no_waiter) notify(name);
    }
}

static void wakeup_xact_callback(XactEvent event, void *) {
    switch (event) {
    case XACT_EVENT_PRE_COMMIT:
        if (!pending_wakeups.empty()) at_boundary([] { wake_at_pre_commit(); });
        break;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PREPARE:  // a prepared transaction cannot NOTIFY; its jobs wake no one
    case XACT_EVENT_PARALLEL_COMMIT:
    case XACT_EVENT_PARALLEL_ABORT:
        pending_wakeups.clear();
        break;
    default:
        break;
    }
}

void register_wakeup_callbacks() {
    pg_guard([] { RegisterXactCallback(wakeup_xact_callback, nullptr); });
}

void wake_workers_at_commit(int32 queue_id, const std::string &queue_name) {
    // A rolled-back subtransaction leaves its entry: a needless wakeup costs a worker one empty dequeue.
    pending_wakeups.emplace(queue_id, queue_name);
}

// ---- workers ----

static bool session_listens() {
    static spi::Statement stmt("SELECT 'conveyor' = ANY (ARRAY(SELECT pg_catalog.pg_listening_channels()))", {});
    return *stmt.run().boolean(0, 0);
}

void worker_found_nothing(int32 queue_id, const std::string &queue_name) {
    LOCKTAG tag = wake_tag(queue_id);
    if (pg_guard([&] { return LockHeldByMe(&tag, ShareLock); })) return;  // already waiting
    if (!session_listens()) return;  // a poller: nobody to wake
    // Waits only for producers in their commit; held for the session, across transactions.
    pg_guard([&] { (void)LockAcquire(&tag, ShareLock, true, false); });
    // Producers that committed before we got the lock did not see us: look again. Under REPEATABLE
    // READ or SERIALIZABLE this transaction cannot see them, so the worker just looks once more.
    bool ready = true;
    if (!IsolationUsesXactSnapshot()) {
        static spi::Statement look(
            "SELECT EXISTS (SELECT 1 FROM conveyor.jobs WHERE queue_id = $1 AND state = 'ready')", {INT4OID});
        ready = *look.run(spi::Params().int4(0, queue_id)).boolean(0, 0);
    }
    if (ready) notify(queue_name);
}

void worker_found_jobs(int32 queue_id) {
    LOCKTAG tag = wake_tag(queue_id);
    pg_guard([&] {
        if (LockHeldByMe(&tag, ShareLock)) (void)LockRelease(&tag, ShareLock, true);
    });
}

} // namespace conveyor::queue
