// Reading the arguments of SQL-callable functions, with the errors every module gives for them:
// NULL where a value is required is 22004, an empty name 22023, each message naming the argument.
//
// Limits every module applies (README, "Limits"):
//  * keys: every text that ends up in an index or a key (queue job types, group and dedup keys,
//    worker ids, idempotency keys, accounts, services, quotas, rate-limit keys, snapshot series and
//    entity ids, lock keys and owners, entity types and ids) is at most max_key_bytes bytes; a longer
//    one is refused with 22023 naming the argument and the limit, before anything is written (not
//    with 54000 from deep inside an index).
//  * times: a timestamptz that conveyor stores or computes with is finite and within
//    [min_time, max_time) (years 1900 to 9999, UTC); anything else is refused with 22023 naming the
//    argument and the value. Every reader can then subtract, add leases and backoffs, truncate to
//    calendar periods and extract epochs without overflow.
#pragma once

#include <string_view>

#include "guard.hpp"

namespace conveyor {

// One limit for every key, in bytes of the database encoding.
constexpr size_t max_key_bytes = 1024;

// The accepted range of times, in PostgreSQL's microseconds since 2000-01-01 00:00 UTC:
// 1900-01-01 00:00 UTC (36524 days before) up to, not including, 10000-01-01 00:00 UTC
// (20 Gregorian cycles of 146097 days after).
constexpr TimestampTz min_time = -INT64CONST(36524) * USECS_PER_DAY;
constexpr TimestampTz max_time = INT64CONST(2921940) * USECS_PER_DAY;
constexpr std::string_view time_range_text = "1900-01-01 00:00:00+00 and 9999-12-31 23:59:59+00";

std::optional<std::string> arg_text(FunctionCallInfo fcinfo, int i);
// Not NULL.
std::string required_text(FunctionCallInfo fcinfo, int i, const char *name);
// Not NULL, not empty and, when max_bytes > 0, at most that long.
std::string required_name(FunctionCallInfo fcinfo, int i, const char *name, size_t max_bytes = 0);
// A key: not NULL, not empty, at most max_key_bytes.
std::string required_key(FunctionCallInfo fcinfo, int i, const char *name);
// An optional key: NULL is nullopt; otherwise not empty (unless allow_empty) and at most max_key_bytes.
std::optional<std::string> optional_key(FunctionCallInfo fcinfo, int i, const char *name, bool allow_empty = false);
// Throws 22023 "<what> must be at most 1024 bytes, not N" when v is longer than max_key_bytes.
void check_key(std::string_view v, std::string_view what);
std::optional<int32> arg_int(FunctionCallInfo fcinfo, int i);
// 22004 "<name> must not be NULL" when argument i is NULL.
void require(FunctionCallInfo fcinfo, int i, const char *name);
// An int4 in [lo, hi]: 22004 for NULL, 22023 "<name> must be between lo and hi, not v" (with hint).
int32 required_int(FunctionCallInfo fcinfo, int i, const char *name, int32 lo, int32 hi, const char *hint = nullptr);
// The same, NULL being nullopt.
std::optional<int32> optional_int(FunctionCallInfo fcinfo, int i, const char *name, int32 lo, int32 hi,
                                  const char *hint = nullptr);
bool required_bool(FunctionCallInfo fcinfo, int i, const char *name);
// A jsonb object, or nullptr for NULL; 22023 "<name> must be a JSON object, not array|scalar".
Jsonb *optional_object(FunctionCallInfo fcinfo, int i, const char *name);
pg_uuid_t required_uuid(FunctionCallInfo fcinfo, int i, const char *name);
// The detoasted jsonb, or nullptr for NULL.
Jsonb *arg_jsonb(FunctionCallInfo fcinfo, int i);

// A time conveyor stores or computes with: finite and within [min_time, max_time); otherwise 22023
// naming `what` and the value.
TimestampTz check_time(TimestampTz t, std::string_view what);
// A required timestamptz argument, checked as check_time does (22004 for NULL).
TimestampTz required_time(FunctionCallInfo fcinfo, int i, const char *name);
// A timestamptz as the session shows it (for messages).
std::string timestamptz_text(TimestampTz t);

} // namespace conveyor
