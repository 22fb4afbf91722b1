// conveyor.maintain(): the periodic upkeep of every module (pg_cron runs it every minute; see
// README). It belongs to no module: it calls each one's upkeep through that module's header, in one
// transaction, and returns what each step did and how long it took.
//
// Safe beside itself: a second run that finds the first one's lock returns at once and says so.
// Safe beside live workers: the steps that only read or write conveyor's own bookkeeping (metrics,
// purges) run first; the steps that lock rows workers use (leases, locks, entities, reservations)
// run late, so those row locks are held only until the quick steps after them commit; partition DDL
// runs last, and a partition drop that cannot get its lock within 200 ms waits for the next run.
#include <chrono>

#include "core/spi.hpp"
#include "core/xact_lock.hpp"
#include "costs/costs.hpp"
#include "idempotency/idempotency.hpp"
#include "locks/locks.hpp"
#include "monitor/monitor.hpp"
#include "queue/queue.hpp"
#include "retention/retention.hpp"

namespace conveyor {

// Runs step(batch) until it does less than a full batch; returns the total it did.
template <typename Step>
static int64 in_batches(int64 batch, Step &&step) {
    int64 total = 0;
    for (;;) {
        int64 n = step(batch);
        total += n;
        if (n < batch) return total;
    }
}

namespace {
// The steps' report: each step's count at the top level ("leases_expired": n, as 0.1 reported them)
// and [{"step": name, "count": n, "ms": t}, ...] in the order they ran.
struct Report {
    std::string counts, steps;
    template <typename F>
    int64 step(const char *name, F &&f) {
        auto start = std::chrono::steady_clock::now();
        int64 n = f();
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        counts += fmt::format("\"{}\": {}, ", name, n);
        steps += fmt::format("{}{{\"step\": \"{}\", \"count\": {}, \"ms\": {:.3f}}}", steps.empty() ? "" : ", ", name, n, ms);
        return n;
    }
};
}  // namespace

static Datum jsonb_result(const std::string &text) {
    const char *s = text.c_str();
    Datum built = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
    return spi::keep(built, false, -1);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_maintain) {
    (void)fcinfo;
    spi::Connection spi;
    // One run at a time per database; the lock is held until this transaction ends.
    if (!try_xact_lock(LockSpace::maintain, 0)) {
        Datum result = jsonb_result("{\"skipped\": true, \"reason\": \"another conveyor.maintain() is running\"}");
        spi.finish();
        PG_RETURN_DATUM(result);
    }
    auto start = std::chrono::steady_clock::now();
    Report r;
    // Bookkeeping first: nothing here locks what workers touch.
    r.step("metric_buckets_rolled_up", [] { return monitor::roll_up_metrics(); });
    r.step("own_metrics_recorded", [] { return monitor::record_own_metrics(); });
    r.step("monitor_rows_purged", [] { return monitor::purge_expired(); });
    r.step("counter_rows_folded", [] { return queue::fold_counters(); });
    r.step("job_stats_folded", [] { return queue::fold_job_stats(); });
    r.step("job_stats_purged", [] { return queue::purge_job_stats(); });
    r.step("lock_events_purged", [] { return locks::maintain_locks(); });
    r.step("idempotency_keys_purged", [] { return in_batches(10000, idempotency::purge_expired); });
    r.step("rate_limits_purged", [] { return costs::purge_rate_limits(); });
    // Applications' own tables (retention rules), each as its owner; only old rows, rarely contended.
    r.step("retention_rows_deleted", [] { return retention::apply_rules(); });
    // Repairs: rows workers use, locked until this transaction commits, which is soon.
    r.step("leases_expired", [] { return queue::expire_leases(); });
    r.step("groups_repaired", [] { return queue::repair_groups(); });
    r.step("stale_locks_cleaned", [] { return locks::clean_stale_leases(); });
    r.step("stuck_entities_reset",
           [] { return locks::reset_stuck_entities((int32)monitor::setting_int("maintain.entity_stuck_seconds")); });
    r.step("reservations_expired", [] { return in_batches(10000, costs::expire_reservations); });
    // Partitions last: created ahead, dropped past retention (a busy one waits for the next run).
    int64 busy = 0;
    r.step("partitions_dropped", [&] { return queue::maintain_partitions(&busy) + monitor::maintain_partitions(&busy); });
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::string summary = fmt::format("{{{}\"steps\": [{}], \"partitions_busy\": {}, \"ms\": {:.3f}}}", r.counts, r.steps, busy, ms);
    monitor::record_event("maintenance_run", "maintain", std::nullopt, summary);
    Datum result = jsonb_result(summary);
    spi.finish();
    PG_RETURN_DATUM(result);
}

} // namespace conveyor
