// Time-ordered ids (UUID version 7) made in the backend: job, event and ledger ids.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- UUID version 7 (RFC 9562, section 5.7) ----
// 48-bit Unix milliseconds, version 7, a 12-bit counter in rand_a that keeps ids from one backend
// strictly increasing within a millisecond (method 1 of section 6.2), variant 10, 62 random bits;
// on a shard (setting shard.number, 1 to 65535) bytes 9 and 10 of those random bits carry the shard
// number, big-endian, so a front that sees only the id knows where it lives (46 random bits remain).
pg_uuid_t uuid_v7();
// The shard number in bytes 9 and 10 of an id (meaningful only for ids made on a shard).
uint16 uuid_shard(const pg_uuid_t &u);
// Where uuid_v7() learns this server's shard number (0: a standalone server, ids fully random). The
// monitor module, which owns the settings and their cache, installs it at load; until then, 0.
void set_shard_source(uint16 (*source)());
std::string uuid_text(const pg_uuid_t &u);
// A uuid as a Datum (a palloc'd copy in the current memory context).
Datum uuid_datum(const pg_uuid_t &u);
// Orders uuids bytewise, as PostgreSQL does: for sets and maps of job ids.
struct UuidLess {
    bool operator()(const pg_uuid_t &a, const pg_uuid_t &b) const { return std::memcmp(a.data, b.data, UUID_LEN) < 0; }
};

} // namespace conveyor
