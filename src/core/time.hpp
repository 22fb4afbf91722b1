// Time as conveyor computes with it.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- time ----
// The transaction's now(), as SQL sees it.
inline TimestampTz tx_now() { return GetCurrentTransactionStartTimestamp(); }

// A timestamptz written as text (in a JSON element), read as the session's TimeZone and DateStyle read
// it; text that is no timestamp is 22023 "<what> is not a timestamp: "<text>"". The one place conveyor
// turns a PostgreSQL input error into its own.
TimestampTz parse_timestamptz(const std::string &text, std::string_view what);

} // namespace conveyor
