// Waking workers that LISTEN on the channel 'conveyor', with a NOTIFY only when one is waiting.
//
// PostgreSQL serializes the commits of all transactions that NOTIFY (a database-wide lock held
// through each commit's WAL flush), so one NOTIFY per enqueue would let producers commit only one
// at a time. Instead, each queue has a wake lock (LockSpace::wake, keyed by queue id):
//  * A worker whose dequeue finds nothing, in a session that LISTENs on 'conveyor', takes the wake
//    lock of the queue in ShareLock mode for its session ("I am waiting"). Taking it waits only for
//    producers that are committing at that moment. Then it looks again with a fresh snapshot and, if
//    a job became ready meanwhile, notifies itself. Its next dequeue that returns jobs lets go.
//  * A transaction that made due jobs ready in a queue tries, at pre-commit, to take the same lock
//    in RowExclusiveLock mode (producers never conflict with each other) without waiting, and holds
//    it until its commit is complete. Only if a waiter holds or awaits the lock does it NOTIFY.
// Nothing is missed: a producer that finds no waiter holds the lock through its commit, so a worker
// that starts waiting later takes the lock only after that commit and its second look sees the job.
// A session that ends drops its locks with it, so no waiter outlives its worker.
// conveyor.wait_for takes the same locks for a session that only listens (its worker dequeues through
// a transaction-mode pooler, on other sessions) and looks for due jobs itself; conveyor.stop_waiting
// lets them go.
#pragma once

#include "core/xact_lock.hpp"

namespace conveyor::queue {

// Due jobs became ready in this queue in the current transaction: at commit, wake waiting workers.
// At load (src/core/module.cpp): the commit callback that sends the wakeups.
void register_wakeup_callbacks();
void wake_workers_at_commit(int32 queue_id, const std::string &queue_name);

// The current session's dequeue found no job: wait on the queue's wake lock if the session listens.
void worker_found_nothing(int32 queue_id, const std::string &queue_name);

// The current session's dequeue returned jobs: it no longer waits on this queue.
void worker_found_jobs(int32 queue_id);

} // namespace conveyor::queue
