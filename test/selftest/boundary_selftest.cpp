// conveyor_selftest: a test-only extension (never part of an install) whose one function exercises
// conveyor's C++/PostgreSQL boundary, built from the same src/guard, src/spi and src/util objects as
// conveyor.so. The regression suite proves with it that a PostgreSQL error raised inside SPI and a
// C++ exception both reach the client intact, that C++ destructors run on the way out, and that the
// backend survives. Its 'sql' mode runs any SQL given: it must never ship in the extension.
#include "core/message.hpp"
#include "core/spi.hpp"

extern "C" {
PG_MODULE_MAGIC;
}

namespace {

int64 destructors_run = 0;

// An object with a destructor alive across guarded calls, as real entry points have.
struct Witness {
    std::string label{"witness"};
    ~Witness() { ++destructors_run; }
};

} // namespace

CONVEYOR_FUNCTION(conveyor_test_boundary_selftest) {
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
    if (mode == "throw_in_guard") {
        // A C++ exception thrown inside a guarded lambda (never through PostgreSQL code), caught here;
        // then a PostgreSQL error, which longjmps through PG_exception_stack: that must not point into
        // the guard's dead frame.
        try {
            pg_guard([] { throw std::runtime_error("thrown inside a guard"); });
        } catch (const std::runtime_error &) {
        }
        spi::Connection spi;
        spi::run_once("SELECT 1 / 0", {}, spi::Params{});
        spi.finish();
        PG_RETURN_INT64(0);
    }
    if (mode == "error")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "conveyor error from C++", "detail from C++", "hint from C++");
    if (mode == "std") throw std::runtime_error("std::runtime_error from C++");
    if (mode == "bad_alloc") throw std::bad_alloc();
    if (mode == "unknown") throw 42;
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown selftest mode {}", quoted(mode)),
                "", "use one of: sql, throw_in_guard, error, std, bad_alloc, unknown, destructors");
}
