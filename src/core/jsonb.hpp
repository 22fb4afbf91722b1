// Reading jsonb arguments: objects, arrays, strings, integers in a range.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- jsonb reading ----
struct JsonField {
    std::string key;
    JsonbValue value;  // scalars only are meaningful; containers have type jbvBinary
};
// The top-level fields of a jsonb object, in storage order; throws 22023 if it is not an object.
std::vector<JsonField> jsonb_object_fields(Jsonb *jb, const std::string &what);
// The elements of a jsonb array; throws 22023 if it is not an array.
std::vector<JsonbValue> jsonb_array_elements(Jsonb *jb, const std::string &what);
const char *jsonb_type_name(const JsonbValue &v);
std::string jsonb_string(const JsonbValue &v);
// Integral number in [lo, hi]; throws 22023 naming `what` otherwise.
int64 jsonb_int(const JsonbValue &v, const std::string &what, int64 lo, int64 hi);
// A jsonb value (scalar or container) as a standalone Jsonb datum.
Datum jsonb_value_datum(const JsonbValue &v);
// Array of strings (or null); throws 22023 otherwise.
std::optional<std::vector<std::string>> jsonb_text_array(const JsonbValue &v, const std::string &what);

} // namespace conveyor
