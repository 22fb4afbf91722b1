// The monitor's internal header: what its files (settings, events, issues, metrics, health, audit) share.
#pragma once

#include "core/message.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"

namespace conveyor::monitor {

// The daily partitions of conveyor.events (events.cpp) and conveyor.metric_points (metrics.cpp).
extern DailyPartitions event_partitions;
extern DailyPartitions point_partitions;
// The daily partitions of conveyor.audit_log (audit.cpp).
extern DailyPartitions audit_partitions;

// At load, from register_callbacks(): the audit's knowledge of functions follows pg_proc.
void register_audit_callbacks();

// Whether this database's conveyor has the monitor's tables: a conveyor.so of this version also
// serves databases still at 0.1 until ALTER EXTENSION conveyor UPDATE, and there the monitor's
// writes and upkeep do nothing.
inline bool monitor_installed() { return OidIsValid(conveyor_relid("events")); }

} // namespace conveyor::monitor
