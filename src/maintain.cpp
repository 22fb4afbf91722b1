// conveyor.maintain(): the periodic upkeep of every module (pg_cron runs it every minute; see README).
// It belongs to no module: it calls each one's upkeep through that module's header, in one
// transaction, and returns a summary of what was done.
#include "core/spi.hpp"
#include "costs/costs.hpp"
#include "idempotency/idempotency.hpp"
#include "locks/locks.hpp"
#include "queue/queue.hpp"

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

CONVEYOR_FUNCTION(conveyor_maintain) {
    (void)fcinfo;
    spi::Connection spi;
    // The queue: partitions ahead and past their retention, old counter rows folded, expired leases
    // everywhere, and groups left without a head.
    int64 partitions_dropped = queue::maintain_partitions();
    int64 counter_rows_folded = queue::fold_counters();
    int64 leases_expired = queue::expire_leases();
    int64 groups_repaired = queue::repair_groups();
    // Idempotency keys past their time to live.
    int64 keys_purged = in_batches(10000, idempotency::purge_expired);
    // Old lock events.
    locks::maintain_locks();
    // Reservations past their time to live free their budget; rate limiter rows that hold no state.
    int64 reservations_expired = in_batches(10000, costs::expire_reservations);
    int64 rate_limits_purged = costs::purge_rate_limits();

    std::string summary = fmt::format(
        "{{\"partitions_dropped\": {}, \"counter_rows_folded\": {}, \"leases_expired\": {}, \"groups_repaired\": {},"
        " \"idempotency_keys_purged\": {}, \"reservations_expired\": {}, \"rate_limits_purged\": {}}}",
        partitions_dropped, counter_rows_folded, leases_expired, groups_repaired, keys_purged, reservations_expired,
        rate_limits_purged);
    const char *s = summary.c_str();
    // Built in SPI's memory, which SPI_finish frees: kept (copied out) before it.
    Datum built = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
    Datum result = spi::keep(built, false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

} // namespace conveyor
