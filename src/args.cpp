#include "args.hpp"

namespace conveyor {

std::optional<std::string> arg_text(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    return std::string(pg_guard([&] { return (const char *)text_to_cstring(PG_GETARG_TEXT_PP(i)); }));
}

std::string required_text(FunctionCallInfo fcinfo, int i, const char *name) {
    auto v = arg_text(fcinfo, i);
    if (!v) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{} must not be NULL", name));
    return *v;
}

std::string required_name(FunctionCallInfo fcinfo, int i, const char *name, size_t max_bytes) {
    std::string v = required_text(fcinfo, i, name);
    if (v.empty()) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must not be empty", name));
    if (max_bytes > 0 && v.size() > max_bytes)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("{} must be at most {} bytes, not {}", name, max_bytes, v.size()));
    return v;
}

std::optional<int32> arg_int(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    return PG_GETARG_INT32(i);
}

pg_uuid_t required_uuid(FunctionCallInfo fcinfo, int i, const char *name) {
    if (PG_ARGISNULL(i)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{} must not be NULL", name));
    return *PG_GETARG_UUID_P(i);
}

Jsonb *arg_jsonb(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return nullptr;
    return pg_guard([&] { return PG_GETARG_JSONB_P(i); });
}

} // namespace conveyor
