// UUID version 7 (RFC 9562, section 5.7), and its SQL entry points conveyor.uuid_v7 and
// conveyor.uuid_v7_time.
#include "uuid.hpp"

extern "C" {
#include "common/pg_prng.h"
}

namespace conveyor {

// ---- UUID version 7 ----

static int64 last_ms = 0;
static uint16 counter = 0;
static uint16 (*shard_source)() = nullptr;

void set_shard_source(uint16 (*source)()) { shard_source = source; }

uint16 uuid_shard(const pg_uuid_t &u) { return (uint16)((u.data[9] << 8) | u.data[10]); }

static pg_uuid_t uuid_v7_at(int64 ms, uint16 shard) {
    // Keep ids from this backend strictly increasing: within one millisecond the 12-bit counter
    // advances; if it overflows, or the clock stepped back, borrow the next millisecond.
    if (ms <= last_ms) {
        ms = last_ms;
        if (++counter > 0x0FFF) {
            ++ms;
            counter = (uint16)(pg_prng_uint32(&pg_global_prng_state) & 0x01FF);
        }
    } else {
        // Start each millisecond at a random low counter so ids stay hard to guess yet leave room.
        counter = (uint16)(pg_prng_uint32(&pg_global_prng_state) & 0x01FF);
    }
    last_ms = ms;
    uint64 rnd = pg_prng_uint64(&pg_global_prng_state);
    pg_uuid_t u;
    u.data[0] = (uint8)(ms >> 40);
    u.data[1] = (uint8)(ms >> 32);
    u.data[2] = (uint8)(ms >> 24);
    u.data[3] = (uint8)(ms >> 16);
    u.data[4] = (uint8)(ms >> 8);
    u.data[5] = (uint8)ms;
    u.data[6] = (uint8)(0x70 | ((counter >> 8) & 0x0F));
    u.data[7] = (uint8)(counter & 0xFF);
    u.data[8] = (uint8)(0x80 | ((rnd >> 56) & 0x3F));
    for (int i = 9; i < 16; ++i) u.data[i] = (uint8)(rnd >> (8 * (15 - i)));
    if (shard != 0) {
        u.data[9] = (uint8)(shard >> 8);
        u.data[10] = (uint8)shard;
    }
    return u;
}

pg_uuid_t uuid_v7() {
    TimestampTz now = GetCurrentTimestamp();  // microseconds since 2000-01-01
    int64 unix_ms = now / 1000 + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
    return uuid_v7_at(unix_ms, shard_source ? shard_source() : 0);
}

Datum uuid_datum(const pg_uuid_t &u) {
    const pg_uuid_t *src = &u;
    return pg_guard([&] {
        auto *copy = (pg_uuid_t *)palloc(sizeof(pg_uuid_t));
        *copy = *src;
        return UUIDPGetDatum(copy);
    });
}

std::string uuid_text(const pg_uuid_t &u) {
    static const char hex[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
        s.push_back(hex[u.data[i] >> 4]);
        s.push_back(hex[u.data[i] & 0x0F]);
    }
    return s;
}

} // namespace conveyor

CONVEYOR_FUNCTION(conveyor_uuid_v7) {
    (void)fcinfo;
    return conveyor::uuid_datum(conveyor::uuid_v7());
}

CONVEYOR_FUNCTION(conveyor_uuid_v7_time) {
    pg_uuid_t *u = DatumGetUUIDP(PG_GETARG_DATUM(0));
    if ((u->data[6] >> 4) != 7)
        throw conveyor::Error(ERRCODE_INVALID_PARAMETER_VALUE, "not a version 7 UUID",
                              fmt::format("its version nibble is {}", u->data[6] >> 4));
    int64 ms = 0;
    for (int i = 0; i < 6; ++i) ms = (ms << 8) | u->data[i];
    int64 pg_us = ms * 1000 - (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;
    PG_RETURN_TIMESTAMPTZ(pg_us);
}

CONVEYOR_FUNCTION(conveyor_uuid_shard) {
    pg_uuid_t *u = DatumGetUUIDP(PG_GETARG_DATUM(0));
    if ((u->data[6] >> 4) != 7)
        throw conveyor::Error(ERRCODE_INVALID_PARAMETER_VALUE, "not a version 7 UUID",
                              fmt::format("its version nibble is {}", u->data[6] >> 4));
    PG_RETURN_INT32((int32)conveyor::uuid_shard(*u));
}
