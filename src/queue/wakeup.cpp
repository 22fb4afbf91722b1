// Waking workers that LISTEN: the protocol is described in wakeup.hpp. Also the SQL entry points
// conveyor.wait_for and conveyor.stop_waiting.
#include <algorithm>
#include <map>
#include <set>

#include "queue/internal.hpp"

extern "C" {
#include "miscadmin.h"
#include "tcop/utility.h"
}

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

// Queues whose wake lock this session took (worker_found_nothing, wait_for): what stop_waiting(NULL)
// lets go of. pg_advisory_unlock_all() may have released some behind our back: check before releasing.
static std::set<int32> waited_queues;

static bool wait_on(int32 queue_id) {
    LOCKTAG tag = wake_tag(queue_id);
    if (pg_guard([&] { return LockHeldByMe(&tag, ShareLock); })) return false;  // already waiting
    // Waits only for producers in their commit; held for the session, across transactions.
    pg_guard([&] { (void)LockAcquire(&tag, ShareLock, true, false); });
    waited_queues.insert(queue_id);
    return true;
}

static bool stop_waiting_on(int32 queue_id) {
    LOCKTAG tag = wake_tag(queue_id);
    waited_queues.erase(queue_id);
    return pg_guard([&] { return LockHeldByMe(&tag, ShareLock) && LockRelease(&tag, ShareLock, true); });
}

static bool session_listens() {
    static spi::Statement stmt("SELECT 'conveyor' = ANY (ARRAY(SELECT pg_catalog.pg_listening_channels()))", {});
    return *stmt.run().boolean(0, 0);
}

void worker_found_nothing(int32 queue_id, const std::string &queue_name) {
    LOCKTAG tag = wake_tag(queue_id);
    if (pg_guard([&] { return LockHeldByMe(&tag, ShareLock); })) return;  // already waiting
    if (!session_listens()) return;  // a poller: nobody to wake
    wait_on(queue_id);
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

void worker_found_jobs(int32 queue_id) { (void)stop_waiting_on(queue_id); }

// ---- wait_for and stop_waiting: the listening session apart from the one that dequeues ----

constexpr int max_waited_queues = 1000;

// The distinct queue names of a text[] argument, in their order: 22004 for a NULL array or element,
// 22023 for an empty array, an empty name or more than max_waited_queues elements.
static std::vector<std::string> queue_names_arg(FunctionCallInfo fcinfo, int i) {
    require(fcinfo, i, "queues");
    ArrayType *arr = pg_guard([&] { return PG_GETARG_ARRAYTYPE_P(i); });
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] { deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n); });
    if (n == 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "queues must not be empty", "", "Name at least one queue.");
    if (n > max_waited_queues)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("queues must hold at most {} queues, not {}", max_waited_queues, n), "",
                    "Wait on fewer queues per session, or use more sessions.");
    std::vector<std::string> names;
    for (int k = 0; k < n; ++k) {
        if (nulls[k]) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("queues[{}] must not be NULL", k + 1));
        std::string name = pg_guard([&] { return (const char *)TextDatumGetCString(elems[k]); });
        if (name.empty())
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("queues[{}] must not be empty", k + 1), "",
                        "Name each queue.");
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
    }
    return names;
}

static Datum text_array_datum(const std::vector<std::string> &v) {
    std::vector<Datum> elems;
    for (const auto &s : v) elems.push_back(pg_guard([&] { return PointerGetDatum(cstring_to_text_with_len(s.data(), (int)s.size())); }));
    return pg_guard([&] {
        return PointerGetDatum(construct_array(elems.data(), (int)elems.size(), TEXTOID, -1, false, TYPALIGN_INT));
    });
}

CONVEYOR_FUNCTION(conveyor_wait_for) {
    auto names = queue_names_arg(fcinfo, 0);
    spi::Connection spi;
    // Every queue first: a bad one fails the call before it waits on any.
    std::vector<Queue> queues;
    for (const auto &name : names) {
        Queue q = load_queue(name);  // 42704
        if (!q.notify)
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        fmt::format("queue {} sends no notifications", quoted(name)),
                        "It was created or altered with {\"notify\": false}, so no producer would wake the session.",
                        "Turn notifications on with conveyor.alter_queue(queue, '{\"notify\": true}'), or poll this queue.");
        queues.push_back(std::move(q));
    }
    // A LISTEN takes effect when this transaction commits, and a notification committed before then
    // may never reach the session; so may one this transaction's snapshot cannot see (REPEATABLE READ,
    // SERIALIZABLE). Then the look below cannot vouch for an empty queue: every queue is returned, and
    // the caller dequeues and calls wait_for again.
    bool listening = session_listens();
    // Also when it listens already: an UNLISTEN earlier in this transaction would otherwise win.
    // The checks the LISTEN command makes come first.
    if (pg_guard([] { return InSecurityRestrictedOperation(); }))
        throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, "cannot LISTEN within a security-restricted operation");
    pg_guard([] {
        PreventCommandDuringRecovery("LISTEN");
        Async_Listen("conveyor");
    });
    bool can_look = listening && !IsolationUsesXactSnapshot();
    std::vector<int32> ids;
    for (const auto &q : queues) {
        wait_on(q.id);  // idempotent
        ids.push_back(q.id);
    }
    // Producers that committed before we held the locks did not see us: look for due jobs now, as a
    // dequeue would find them (ready, scheduled and come due, or leased and expired). A paused queue
    // hands out nothing: resume_queue wakes its waiters.
    std::vector<std::string> ready;
    if (can_look) {
        static Statement look(
            "SELECT q.queue_id FROM pg_catalog.unnest($1::int4[]) AS q(queue_id)"
            " WHERE EXISTS (SELECT 1 FROM conveyor.jobs j WHERE j.queue_id = q.queue_id"
            "               AND j.state = 'ready')"
            "    OR EXISTS (SELECT 1 FROM conveyor.jobs j WHERE j.queue_id = q.queue_id"
            "               AND j.state = 'scheduled' AND j.run_at <= pg_catalog.now())"
            "    OR EXISTS (SELECT 1 FROM conveyor.jobs j WHERE j.queue_id = q.queue_id"
            "               AND j.state = 'running' AND j.lease_until < pg_catalog.now())",
            {INT4ARRAYOID});
        auto rows = look.run(Params().int4_array(0, ids));
        std::set<int32> due;
        for (uint64 r = 0; r < rows.size(); ++r) due.insert(*rows.int4(r, 0));
        for (const auto &q : queues)
            if (!q.paused && due.count(q.id)) ready.push_back(q.name);
    } else {
        for (const auto &q : queues)
            if (!q.paused) ready.push_back(q.name);
    }
    spi.finish();
    PG_RETURN_DATUM(text_array_datum(ready));
}

CONVEYOR_FUNCTION(conveyor_stop_waiting) {
    int32 released = 0;
    if (PG_ARGISNULL(0)) {
        std::vector<int32> ids(waited_queues.begin(), waited_queues.end());
        for (int32 id : ids) released += stop_waiting_on(id);
        PG_RETURN_INT32(released);
    }
    auto names = queue_names_arg(fcinfo, 0);
    spi::Connection spi;
    std::vector<int32> ids;
    for (const auto &name : names) ids.push_back(load_queue(name).id);  // 42704 before releasing any
    spi.finish();
    for (int32 id : ids) released += stop_waiting_on(id);
    PG_RETURN_INT32(released);
}

} // namespace conveyor::queue
