// Leases with fencing tokens, entity processing states and text-keyed advisory locks (src/locks/locks.cpp):
// what other modules use of them.
#pragma once

#include "core/spi.hpp"

namespace conveyor::locks {

// Is `token` the live holder's token of lease `key` right now (server clock)? When it is, the lease
// row stays locked (FOR SHARE) until the caller's transaction ends, so no takeover, release or
// cleanup of that lease can commit before the caller's write does: a fenced write checks this and
// writes in the same transaction. Call with an open spi::Connection. Under REPEATABLE READ or
// SERIALIZABLE a lease changed since the snapshot raises 40001, never a stale true.
bool lock_token_is_live(const std::string &key, int64 token);

// Periodic upkeep, called by conveyor.maintain(): deletes lock events older than 7 days; returns how many.
int64 maintain_locks();
// Deletes leases past their own ttl (as conveyor.locks_cleanup() does); returns how many.
int64 clean_stale_leases();
// Resets entities IN_PROGRESS for longer than stuck_seconds to PENDING (as conveyor.entity_reset()
// does for every type); returns how many.
int64 reset_stuck_entities(int32 stuck_seconds);

} // namespace conveyor::locks
