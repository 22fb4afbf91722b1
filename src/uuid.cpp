// SQL entry points of the time-ordered ids (src/util.cpp makes them): conveyor.uuid_v7 and
// conveyor.uuid_v7_time.
#include "util.hpp"

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
