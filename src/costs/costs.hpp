// Costs, budgets and quotas: the ledger with its accounts and reservations, calendar quotas and GCRA
// rate limits. The SQL entry points live in costs.cpp; maintenance calls in here.
#pragma once

#include "core/guard.hpp"

namespace conveyor::costs {

// Expires open reservations whose time to live has passed (at most `limit`), freeing their amounts
// on their accounts in the same statement; returns how many. Call inside an open SPI connection.
int64 expire_reservations(int64 limit);

// Deletes rate limiter rows that hold no state any more (their theoretical arrival time has passed);
// returns how many.
int64 purge_rate_limits();

} // namespace conveyor::costs
