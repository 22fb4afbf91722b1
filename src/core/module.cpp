// The loadable module: its magic block, and _PG_init, which registers every callback conveyor needs
// once, when a backend loads conveyor.so (rather than lazily, behind a flag, at each module's first use).
#include "guard.hpp"
#include "partitions.hpp"
#include "queue/queue.hpp"
#include "queue/wakeup.hpp"
#include "upsert/upsert.hpp"
#include "monitor/monitor.hpp"

extern "C" {
PG_MODULE_MAGIC;

void _PG_init(void);
void _PG_init(void) {
    conveyor::at_boundary([] {
        conveyor::register_partition_callbacks();
        conveyor::queue::register_callbacks();
        conveyor::queue::register_wakeup_callbacks();
        conveyor::upsert::register_callbacks();
        conveyor::monitor::register_callbacks();
    });
}
}
