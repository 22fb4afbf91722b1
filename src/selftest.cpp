// Entry points that exercise the boundary itself: the regression suite proves with them that a
// PostgreSQL error raised inside SPI and a C++ exception both reach the client intact, that C++
// destructors run on the way out, and that the backend survives.
#include "spi.hpp"
#include "util.hpp"

namespace {

int64 destructors_run = 0;

// An object with a destructor alive across guarded calls, as real entry points have.
struct Witness {
    std::string label{"witness"};
    ~Witness() { ++destructors_run; }
};

} // namespace

CONVEYOR_FUNCTION(conveyor_boundary_selftest) {
    using namespace conveyor;
    if (PG_ARGISNULL(0)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "mode must not be NULL");
    std::string mode = pg_guard([&] { return (const char *)text_to_cstring(PG_GETARG_TEXT_PP(0)); });
    Witness witness;
    if (mode == "destructors") PG_RETURN_INT64(destructors_run);
    if (mode == "sql") {
        if (PG_ARGISNULL(1)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "sql must not be NULL");
        std::string sql = pg_guard([&] { return (const char *)text_to_cstring(PG_GETARG_TEXT_PP(1)); });
        spi::Connection spi;
        Witness inner;
        auto rows = spi::run_once(sql, {}, spi::Params{});
        int64 n = (int64)rows.size();
        spi.finish();
        PG_RETURN_INT64(n);
    }
    if (mode == "error")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "conveyor error from C++", "detail from C++", "hint from C++");
    if (mode == "std") throw std::runtime_error("std::runtime_error from C++");
    if (mode == "bad_alloc") throw std::bad_alloc();
    if (mode == "unknown") throw 42;
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown selftest mode {}", quoted(mode)),
                "", "use one of: sql, error, std, bad_alloc, unknown, destructors");
}

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
