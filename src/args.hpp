// Reading the arguments of SQL-callable functions, with the errors every module gives for them:
// NULL where a value is required is 22004, an empty name 22023, each message naming the argument.
#pragma once

#include "guard.hpp"

namespace conveyor {

std::optional<std::string> arg_text(FunctionCallInfo fcinfo, int i);
// Not NULL.
std::string required_text(FunctionCallInfo fcinfo, int i, const char *name);
// Not NULL, not empty and, when max_bytes > 0, at most that long.
std::string required_name(FunctionCallInfo fcinfo, int i, const char *name, size_t max_bytes = 0);
std::optional<int32> arg_int(FunctionCallInfo fcinfo, int i);
pg_uuid_t required_uuid(FunctionCallInfo fcinfo, int i, const char *name);
// The detoasted jsonb, or nullptr for NULL.
Jsonb *arg_jsonb(FunctionCallInfo fcinfo, int i);

} // namespace conveyor
