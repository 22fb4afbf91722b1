// Idempotency keys: the one mechanism behind idempotency_begin/finish, upsert's operation_id and
// charge's idempotency_key. A key lives in a scope ('user' for the SQL functions, one per caller
// inside conveyor), holds the request it was first used with, and, once finished, the result that
// every later use of the key gets back instead of doing the work again.
//
// A racing duplicate never surfaces as 23505: a second begin on a key whose first begin is not yet
// committed waits for that transaction (the primary key's insertion wait), then gets its result, or
// acquires the key if that transaction rolled back.
#pragma once

#include "core/guard.hpp"

namespace conveyor::idempotency {

struct Claim {
    bool acquired = false;     // the caller owns the key now and does the work
    std::string state;         // 'in_progress' or 'completed'
    Datum result = (Datum)0;   // jsonb, when completed with a result; lives until the entry point returns
    bool result_null = true;
};

// request: jsonb or (Datum)0 for none. A request that differs from the key's first non-NULL
// request raises CV004. Call inside an open SPI connection.
Claim begin(const std::string &scope, const std::string &key, Datum request, int32 ttl_seconds);

// Stores the result of the work and marks the key completed; raises 55000 unless it is in progress.
void finish(const std::string &scope, const std::string &key, Datum result);

// Gives up a key in progress (the work failed and may be tried again); false if it was not.
bool release(const std::string &scope, const std::string &key);

// Deletes keys whose time to live has passed; returns how many (maintenance).
int64 purge_expired(int64 limit);

} // namespace conveyor::idempotency
