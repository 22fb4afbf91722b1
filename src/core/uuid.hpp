// Time-ordered ids (UUID version 7) made in the backend: job, event and ledger ids.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- UUID version 7 (RFC 9562, section 5.7) ----
// 48-bit Unix milliseconds, version 7, a 12-bit counter in rand_a that keeps ids from one backend
// strictly increasing within a millisecond (method 1 of section 6.2), variant 10, 62 random bits.
pg_uuid_t uuid_v7();
std::string uuid_text(const pg_uuid_t &u);
// A uuid as a Datum (a palloc'd copy in the current memory context).
Datum uuid_datum(const pg_uuid_t &u);
// Orders uuids bytewise, as PostgreSQL does: for sets and maps of job ids.
struct UuidLess {
    bool operator()(const pg_uuid_t &a, const pg_uuid_t &b) const { return std::memcmp(a.data, b.data, UUID_LEN) < 0; }
};

} // namespace conveyor
