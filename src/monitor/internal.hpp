// The monitor's internal header: what its files (settings, events, issues, metrics, health) share.
#pragma once

#include "core/message.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"

namespace conveyor::monitor {

// The daily partitions of conveyor.events (events.cpp) and conveyor.metric_points (metrics.cpp).
extern DailyPartitions event_partitions;
extern DailyPartitions point_partitions;

} // namespace conveyor::monitor
