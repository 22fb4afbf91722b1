#include "time.hpp"

#include "message.hpp"

namespace conveyor {

TimestampTz parse_timestamptz(const std::string &text, std::string_view what) {
    const char *s = text.c_str();
    try {
        return pg_guard([&] {
            return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s), ObjectIdGetDatum(InvalidOid),
                                                           Int32GetDatum(-1)));
        });
    } catch (const PgError &e) {
        // timestamptz_in raises its input errors (class 22) before it acquires or changes anything, so
        // catching one needs no subtransaction. Anything else (out of memory, a cancel) goes on as it is.
        if (ERRCODE_TO_CATEGORY(e.sqlstate()) != ERRCODE_DATA_EXCEPTION) throw;
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is not a timestamp: {}", what, quoted(text)));
    }
}

} // namespace conveyor
