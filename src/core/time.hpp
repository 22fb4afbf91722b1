// Time as conveyor computes with it.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- time ----
// The transaction's now(), as SQL sees it.
inline TimestampTz tx_now() { return GetCurrentTransactionStartTimestamp(); }

} // namespace conveyor
