#include "args.hpp"

#include "message.hpp"

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

static Error too_long(std::string_view what, size_t max_bytes, size_t size) {
    return Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be at most {} bytes, not {}", what, max_bytes, size));
}

std::string required_name(FunctionCallInfo fcinfo, int i, const char *name, size_t max_bytes) {
    std::string v = required_text(fcinfo, i, name);
    if (v.empty()) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must not be empty", name));
    if (max_bytes > 0 && v.size() > max_bytes) throw too_long(name, max_bytes, v.size());
    return v;
}

std::string required_key(FunctionCallInfo fcinfo, int i, const char *name) {
    return required_name(fcinfo, i, name, max_key_bytes);
}

void check_key(std::string_view v, std::string_view what) {
    if (v.size() > max_key_bytes) throw too_long(what, max_key_bytes, v.size());
}

std::optional<std::string> optional_key(FunctionCallInfo fcinfo, int i, const char *name, bool allow_empty) {
    auto v = arg_text(fcinfo, i);
    if (!v) return v;
    if (v->empty() && !allow_empty) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must not be empty", name));
    check_key(*v, name);
    return v;
}

std::optional<int32> arg_int(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    return PG_GETARG_INT32(i);
}

void require(FunctionCallInfo fcinfo, int i, const char *name) {
    if (PG_ARGISNULL(i)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{} must not be NULL", name));
}

static int32 int_in(int32 v, const char *name, int32 lo, int32 hi, const char *hint) {
    if (v < lo || v > hi)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be between {} and {}, not {}", name, lo, hi, v), "",
                    hint ? hint : "");
    return v;
}

int32 required_int(FunctionCallInfo fcinfo, int i, const char *name, int32 lo, int32 hi, const char *hint) {
    require(fcinfo, i, name);
    return int_in(PG_GETARG_INT32(i), name, lo, hi, hint);
}

std::optional<int32> optional_int(FunctionCallInfo fcinfo, int i, const char *name, int32 lo, int32 hi, const char *hint) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    return int_in(PG_GETARG_INT32(i), name, lo, hi, hint);
}

bool required_bool(FunctionCallInfo fcinfo, int i, const char *name) {
    require(fcinfo, i, name);
    return PG_GETARG_BOOL(i);
}

Jsonb *optional_object(FunctionCallInfo fcinfo, int i, const char *name) {
    Jsonb *jb = arg_jsonb(fcinfo, i);
    if (jb && (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb)))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("{} must be a JSON object, not {}", name, JB_ROOT_IS_SCALAR(jb) ? "scalar" : "array"));
    return jb;
}

pg_uuid_t required_uuid(FunctionCallInfo fcinfo, int i, const char *name) {
    require(fcinfo, i, name);
    return *PG_GETARG_UUID_P(i);
}

Jsonb *arg_jsonb(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return nullptr;
    return pg_guard([&] { return PG_GETARG_JSONB_P(i); });
}

std::string timestamptz_text(TimestampTz t) {
    return pg_guard([&] { return (const char *)DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t))); });
}

TimestampTz check_time(TimestampTz t, std::string_view what) {
    if (t >= min_time && t < max_time) return t;
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                fmt::format("{} must be between {}, not {}", what, time_range_text, quoted(timestamptz_text(t))),
                "conveyor stores only finite times it can compute with (subtract, add leases and backoffs, truncate to periods).");
}

TimestampTz required_time(FunctionCallInfo fcinfo, int i, const char *name) {
    if (PG_ARGISNULL(i)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{} must not be NULL", name));
    return check_time(PG_GETARG_TIMESTAMPTZ(i), name);
}

} // namespace conveyor
