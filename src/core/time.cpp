#include "time.hpp"

#include "message.hpp"

namespace conveyor {

TimestampTz parse_timestamptz(const std::string &text, std::string_view what) {
    const char *s = text.c_str();
    TimestampTz t = 0;
    if (!converts([&] {
            t = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s), ObjectIdGetDatum(InvalidOid),
                                                        Int32GetDatum(-1)));
        }))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is not a timestamp: {}", what, quoted(text)));
    return t;
}

} // namespace conveyor
