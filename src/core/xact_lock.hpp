// Stable 64-bit hashing of keys and conveyor's own transaction-scoped advisory locks.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- hashing ----
// XXH3 64-bit: frozen output on every platform since xxHash 0.8.0. With seed 0 this is plain
// XXH3_64bits (XXH3_64bits_withSeed(..., 0) is defined to equal it), which conveyor.advisory_key uses.
uint64 hash64(std::string_view bytes, uint64 seed = 0);

// ---- internal transaction-scoped locks ----
// Advisory locks in conveyor's own namespaces (objsubid 3 and up; pg_advisory_* use 1 and 2), held
// until the transaction ends, so they work behind a transaction-mode pooler. Callers that take several
// take them in ascending key order, which keeps them deadlock-free. wake: a queue's wake lock (see
// src/queue/wakeup.hpp); lease: the key of a lease while lock_acquire draws its fencing token (src/locks/locks.cpp);
// account: an account's budget mode (src/costs/costs.cpp); snapshot: a (series, entity) while its captures
// are written (src/snapshot/snapshot.cpp); maintain: one conveyor.maintain() at a time (src/maintain.cpp).
enum class LockSpace : uint16 { group = 3, dedup = 4, partition = 5, wake = 6, lease = 7, account = 8, snapshot = 9,
                              maintain = 10 };
LOCKTAG advisory_tag(LockSpace space, uint64 key);
void xact_lock(LockSpace space, uint64 key);
// The same lock in share mode: it excludes xact_lock holders only, not other sharers.
void xact_lock_shared(LockSpace space, uint64 key);
// Takes the lock only if it is free right now; returns whether it did.
bool try_xact_lock(LockSpace space, uint64 key);

} // namespace conveyor
