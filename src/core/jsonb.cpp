#include "jsonb.hpp"

#include "message.hpp"

namespace conveyor {

// ---- jsonb ----

const char *jsonb_type_name(const JsonbValue &v) {
    switch (v.type) {
    case jbvNull: return "null";
    case jbvString: return "string";
    case jbvNumeric: return "number";
    case jbvBool: return "boolean";
    case jbvBinary: {
        const JsonbContainer *c = v.val.binary.data;
        return JsonContainerIsArray(c) ? "array" : "object";
    }
    case jbvArray: return "array";
    case jbvObject: return "object";
    default: return "unknown";
    }
}

static const char *container_kind(Jsonb *jb) {
    if (JB_ROOT_IS_SCALAR(jb)) return "scalar";
    return JB_ROOT_IS_ARRAY(jb) ? "array" : "object";
}

std::vector<JsonField> jsonb_object_fields(Jsonb *jb, const std::string &what) {
    if (!JB_ROOT_IS_OBJECT(jb))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object, not {}", what, container_kind(jb)));
    std::vector<JsonField> out;
    JsonbContainer *root = &jb->root;
    uint32 n = JsonContainerSize(root);
    out.reserve(n);
    // Use the iterator once: WJB_KEY followed by WJB_VALUE (containers arrive as jbvBinary).
    struct Pair { JsonbValue k, v; };
    std::vector<Pair> pairs(n);
    Pair *dst = pairs.data();
    pg_guard([&] {
        JsonbIterator *it = JsonbIteratorInit(root);
        JsonbValue v;
        JsonbIteratorToken tok;
        uint32 idx = 0;
        bool have_key = false;
        while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE) {
            if (tok == WJB_KEY) {
                dst[idx].k = v;
                have_key = true;
            } else if (tok == WJB_VALUE && have_key) {
                dst[idx].v = v;
                ++idx;
                have_key = false;
            }
        }
    });
    for (auto &p : pairs) out.push_back(JsonField{std::string(p.k.val.string.val, p.k.val.string.len), p.v});
    return out;
}

std::vector<JsonbValue> jsonb_array_elements(Jsonb *jb, const std::string &what) {
    if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON array, not {}", what, container_kind(jb)));
    JsonbContainer *root = &jb->root;
    uint32 n = JsonContainerSize(root);
    std::vector<JsonbValue> out(n);
    JsonbValue *dst = out.data();
    pg_guard([&] {
        JsonbIterator *it = JsonbIteratorInit(root);
        JsonbValue v;
        JsonbIteratorToken tok;
        uint32 idx = 0;
        while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
            if (tok == WJB_ELEM) dst[idx++] = v;
    });
    return out;
}

std::string jsonb_string(const JsonbValue &v) { return std::string(v.val.string.val, v.val.string.len); }

int64 jsonb_int(const JsonbValue &v, const std::string &what, int64 lo, int64 hi) {
    if (v.type != jbvNumeric)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer, not {}", what, jsonb_type_name(v)));
    Numeric num = v.val.numeric;
    bool ok = false;
    int64 out = pg_guard([&] {
        // numeric_int4_opt_error reports non-integral or out-of-range values without raising.
        Datum rounded = DirectFunctionCall2(numeric_round, NumericGetDatum(num), Int32GetDatum(0));
        bool integral = DatumGetBool(DirectFunctionCall2(numeric_eq, rounded, NumericGetDatum(num)));
        bool err = false;
        int64 r = integral ? (int64)numeric_int4_opt_error(num, &err) : 0;
        ok = integral && !err;
        return r;
    });
    if (ok && out >= lo && out <= hi) return out;
    std::string text = clipped(pg_guard([&] { return (const char *)numeric_normalize(num); }));
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer between {} and {}, not {}", what, lo, hi, text));
}

Datum jsonb_value_datum(const JsonbValue &v) {
    const JsonbValue *src = &v;
    return pg_guard([&] { return JsonbPGetDatum(JsonbValueToJsonb(const_cast<JsonbValue *>(src))); });
}

std::optional<std::vector<std::string>> jsonb_text_array(const JsonbValue &v, const std::string &what) {
    if (v.type == jbvNull) return std::nullopt;
    if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) || JsonContainerIsScalar(v.val.binary.data))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an array of strings, not {}", what, jsonb_type_name(v)));
    Jsonb *jb = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
    std::vector<std::string> out;
    for (const auto &e : jsonb_array_elements(jb, what)) {
        if (e.type != jbvString)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an array of strings; found a {}", what, jsonb_type_name(e)));
        out.push_back(jsonb_string(e));
    }
    return out;
}

} // namespace conveyor
