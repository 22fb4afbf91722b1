// Payload schemas and descriptive metadata of queues: the options payload_schema, display_name,
// description and metadata, the check of payloads at enqueue and enqueue_batch, and
// conveyor.validate_payload.
//
// A payload_schema is a JSON Schema (draft 7) checked with valijson over nlohmann::json documents
// built from jsonb. valijson throws on bad input only when VALIJSON_USE_EXCEPTIONS is set (otherwise
// it aborts the process); its exceptions never leave this file's functions except as conveyor::Error
// or std::exception, which the boundary turns into an ereport. The compiled schema hangs on the
// queue's cache entry (catalog.cpp), so it is compiled once per backend and queue change.
//
// "pattern" and "patternProperties" are matched by PostgreSQL's regular expression engine (the one
// behind ~), not by valijson's std::regex: std::regex recurses once per pattern term when compiling
// and once per state and character when matching, so a long pattern or a nested one overflows the
// backend's stack, and it backtracks exponentially ("^(a|a)*$") where no cancel or statement_timeout
// can stop it. PostgreSQL's engine checks its stack depth, its size and for interrupts, and raises
// errors that pg_guard carries across valijson's frames. The date/time formats still use valijson's
// fixed std::regex patterns, whose recursion grows with the string: under a schema that uses them (or
// patterns), payload strings and keys longer than max_regex_subject bytes are refused before
// validation.
#define VALIJSON_USE_EXCEPTIONS 1
#include <algorithm>
#include <memory>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/adapters/std_string_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "core/jsonb.hpp"
#include "queue/internal.hpp"

extern "C" {
#include "catalog/pg_collation.h"
#include "mb/pg_wchar.h"
#include "regex/regex.h"
}

namespace conveyor::queue {

// Whether subject contains a match of pattern (both in the database encoding, as jsonb holds them),
// by PostgreSQL's advanced regular expressions under the C collation (\d, \w and [[:alpha:]] are
// ASCII, as in ECMA-262). PostgreSQL caches the compiled pattern. Raises 2201B for a pattern it
// cannot compile, 57014 when cancelled.
static bool regex_search(const std::string &pattern, const std::string &subject) {
    const char *p = pattern.data();
    const int plen = (int)pattern.size();
    char *s = const_cast<char *>(subject.data());
    const int slen = (int)subject.size();
    return pg_guard([&] {
        text *re = cstring_to_text_with_len(p, plen);
        bool found = RE_compile_and_execute(re, s, slen, REG_ADVANCED, C_COLLATION_OID, 0, nullptr);
        pfree(re);
        return found;
    });
}

} // namespace conveyor::queue

// valijson 1.0 matches with std::regex and has no hook for another engine: its two matching steps
// are specialized here, for the adapters this file validates with, to call regex_search above. Only
// this file instantiates valijson's validator, so every use sees these specializations.
namespace valijson {

template <>
bool ValidationVisitor<adapters::NlohmannJsonAdapter>::visit(const constraints::PatternConstraint &constraint) {
    if ((m_strictTypes && !m_target.isString()) || !m_target.maybeString()) return true;
    if (conveyor::queue::regex_search(constraint.getPattern<std::string::allocator_type>(), m_target.asString())) return true;
    if (m_results) m_results->pushError(m_context, "Failed to match regex specified by 'pattern' constraint.");
    return false;
}

// Every subschema a value is checked against passes here: a cancel or statement_timeout is honoured
// between subschemas, and a schema that recurses without descending into the value ({"allOf":
// [{"$ref": "#"}]}) ends in PostgreSQL's "stack depth limit exceeded" (54001), not a crash.
template <typename Visitor>
static bool validate_subschema(Visitor &visitor, const Subschema &subschema, ValidationResults *results,
                               bool (*callback)(const constraints::Constraint &, Visitor &)) {
    conveyor::pg_guard([] {
        CHECK_FOR_INTERRUPTS();
        check_stack_depth();
    });
    if (subschema.getAlwaysInvalid()) return false;
    Subschema::ApplyFunction fn([&](const constraints::Constraint &c) { return callback(c, visitor); });
    // Without results the first failure ends the check; with them every constraint reports.
    return results ? subschema.apply(fn) : subschema.applyStrict(fn);
}

template <>
bool ValidationVisitor<adapters::NlohmannJsonAdapter>::validateSchema(const Subschema &subschema) {
    return validate_subschema(*this, subschema, m_results, &validationCallback);
}

template <>
bool ValidationVisitor<adapters::StdStringAdapter>::validateSchema(const Subschema &subschema) {
    return validate_subschema(*this, subschema, m_results, &validationCallback);
}

// "format" constrains strings only: valijson's own check reads every value as a string and throws on
// anything else. A string is checked by valijson's check, run on a string adapter.
template <>
bool ValidationVisitor<adapters::NlohmannJsonAdapter>::visit(const constraints::FormatConstraint &constraint) {
    if (!m_target.isString()) return true;
    const std::string value = m_target.asString();
    adapters::StdStringAdapter as_string(value);
    ValidationVisitor<adapters::StdStringAdapter> string_visitor(as_string, m_context, m_strictTypes, m_results, m_regexesCache);
    return string_visitor.visit(constraint);
}

// A "pattern" under "propertyNames", applied to each key.
template <>
bool ValidationVisitor<adapters::StdStringAdapter>::visit(const constraints::PatternConstraint &constraint) {
    if (conveyor::queue::regex_search(constraint.getPattern<std::string::allocator_type>(), m_target.asString())) return true;
    if (m_results) m_results->pushError(m_context, "Failed to match regex specified by 'pattern' constraint.");
    return false;
}

// One entry of "patternProperties": every property whose key matches must match the subschema; the
// keys matched are recorded, so that "additionalProperties" leaves them out.
template <>
template <>
bool ValidationVisitor<adapters::NlohmannJsonAdapter>::ValidatePatternPropertySubschemas::operator()(
    const constraints::PropertiesConstraint::String &pattern_property, const Subschema *subschema) const {
    const std::string pattern(pattern_property.c_str(), pattern_property.size());
    bool any_matched = false;
    for (const auto member : m_object) {
        if (!conveyor::queue::regex_search(pattern, member.first)) continue;
        any_matched = true;
        if (m_propertiesMatched) m_propertiesMatched->insert(member.first);
        std::vector<std::string> context = m_context;
        context.push_back("[" + member.first + "]");
        ValidationVisitor value_validator(member.second, context, m_strictTypes, m_results, m_regexesCache);
        if (value_validator.validateSchema(*subschema)) continue;
        if (m_results) m_results->pushError(m_context, "Failed to validate against schema associated with pattern '" + pattern + "'.");
        if (m_validated) *m_validated = false;
        if (!m_continueOnFailure) return false;
    }
    if (!any_matched && !m_continueIfUnmatched) return false;
    return m_continueOnSuccess;
}

} // namespace valijson

namespace conveyor::queue {

using nlohmann::json;

static constexpr size_t max_schema_bytes = 65536;
static constexpr size_t max_regex_subject = 1000;
static constexpr size_t max_display_name_chars = 200;
static constexpr size_t max_description_chars = 4000;
static constexpr size_t max_metadata_bytes = 16384;
// valijson and the walks here recurse once per level of nesting: deeper documents are refused before
// they could exhaust the stack.
static constexpr size_t max_depth = 128;

struct PayloadSchema {
    std::string text;  // the schema as jsonb prints it, for writing the queue row back
    valijson::Schema schema;
    mutable valijson::Validator validator;  // keeps the compiled patterns
    bool uses_regex = false;                // pattern, patternProperties or a date/time format
};

// ---------------------------------------------------------------------------------------------------
// jsonb to nlohmann::json

// A jsonb number as JSON: integral values (1 and 1.0 alike, as JSON Schema counts them) become
// integers when they fit in int64, the rest doubles.
static json number_json(Numeric n) {
    const char *s = pg_guard([&] { return (const char *)DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n))); });
    std::string_view text(s);
    if (text.find_first_of(".eE") == std::string_view::npos) {
        errno = 0;
        char *end;
        long long v = std::strtoll(s, &end, 10);
        if (errno == 0 && *end == '\0') return json(static_cast<int64_t>(v));
    }
    double d = std::strtod(s, nullptr);
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9007199254740992.0) return json(static_cast<int64_t>(d));
    return json(d);
}

static json scalar_json(const JsonbValue &v) {
    switch (v.type) {
    case jbvNull: return json(nullptr);
    case jbvBool: return json(v.val.boolean);
    case jbvString: return json(std::string(v.val.string.val, v.val.string.len));
    case jbvNumeric: return number_json(v.val.numeric);
    default: throw Error(ERRCODE_INTERNAL_ERROR, "unexpected jsonb scalar");
    }
}

// The document, and in *depth how deeply it nests (a scalar is 0).
static json to_json(JsonbContainer *root, size_t *depth) {
    JsonbIterator *it = pg_guard([&] { return JsonbIteratorInit(root); });
    json doc;
    std::vector<json *> open;  // the containers being filled, innermost last
    std::string key;
    bool raw_scalar = false;
    auto place = [&](json value) -> json * {
        if (open.empty()) {
            doc = std::move(value);
            return &doc;
        }
        json &top = *open.back();
        if (top.is_object()) return &(top[key] = std::move(value));
        top.push_back(std::move(value));
        return &top.back();
    };
    for (;;) {
        JsonbValue v;
        JsonbIteratorToken tok = pg_guard([&] {
            CHECK_FOR_INTERRUPTS();
            return JsonbIteratorNext(&it, &v, false);
        });
        if (tok == WJB_DONE) break;
        switch (tok) {
        case WJB_BEGIN_ARRAY:
            if (v.val.array.rawScalar) raw_scalar = true;
            else open.push_back(place(json::array()));
            break;
        case WJB_BEGIN_OBJECT: open.push_back(place(json::object())); break;
        case WJB_KEY: key.assign(v.val.string.val, v.val.string.len); break;
        case WJB_VALUE:
        case WJB_ELEM: place(scalar_json(v)); break;
        case WJB_END_ARRAY:
            if (raw_scalar) raw_scalar = false;
            else open.pop_back();
            break;
        case WJB_END_OBJECT: open.pop_back(); break;
        default: break;
        }
        *depth = std::max(*depth, open.size());
    }
    return doc;
}

// ---------------------------------------------------------------------------------------------------
// Compiling a schema

// The JSON Schema draft 7 meta-schema (json-schema.org/draft-07/schema): what a valid schema is.
static const char *draft7_meta_schema = R"json({
  "definitions": {
    "schemaArray": {"type": "array", "minItems": 1, "items": {"$ref": "#"}},
    "nonNegativeInteger": {"type": "integer", "minimum": 0},
    "nonNegativeIntegerDefault0": {"allOf": [{"$ref": "#/definitions/nonNegativeInteger"}, {"default": 0}]},
    "simpleTypes": {"enum": ["array", "boolean", "integer", "null", "number", "object", "string"]},
    "stringArray": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "default": []}
  },
  "type": ["object", "boolean"],
  "properties": {
    "$id": {"type": "string"},
    "$schema": {"type": "string"},
    "$ref": {"type": "string"},
    "$comment": {"type": "string"},
    "title": {"type": "string"},
    "description": {"type": "string"},
    "readOnly": {"type": "boolean"},
    "writeOnly": {"type": "boolean"},
    "examples": {"type": "array"},
    "multipleOf": {"type": "number", "exclusiveMinimum": 0},
    "maximum": {"type": "number"},
    "exclusiveMaximum": {"type": "number"},
    "minimum": {"type": "number"},
    "exclusiveMinimum": {"type": "number"},
    "maxLength": {"$ref": "#/definitions/nonNegativeInteger"},
    "minLength": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "pattern": {"type": "string"},
    "additionalItems": {"$ref": "#"},
    "items": {"anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/schemaArray"}]},
    "maxItems": {"$ref": "#/definitions/nonNegativeInteger"},
    "minItems": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "uniqueItems": {"type": "boolean"},
    "contains": {"$ref": "#"},
    "maxProperties": {"$ref": "#/definitions/nonNegativeInteger"},
    "minProperties": {"$ref": "#/definitions/nonNegativeIntegerDefault0"},
    "required": {"$ref": "#/definitions/stringArray"},
    "additionalProperties": {"$ref": "#"},
    "definitions": {"type": "object", "additionalProperties": {"$ref": "#"}},
    "properties": {"type": "object", "additionalProperties": {"$ref": "#"}},
    "patternProperties": {"type": "object", "additionalProperties": {"$ref": "#"}},
    "dependencies": {"type": "object", "additionalProperties": {"anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/stringArray"}]}},
    "propertyNames": {"$ref": "#"},
    "enum": {"type": "array", "minItems": 1},
    "type": {"anyOf": [{"$ref": "#/definitions/simpleTypes"},
                       {"type": "array", "items": {"$ref": "#/definitions/simpleTypes"}, "minItems": 1, "uniqueItems": true}]},
    "format": {"type": "string"},
    "contentMediaType": {"type": "string"},
    "contentEncoding": {"type": "string"},
    "if": {"$ref": "#"},
    "then": {"$ref": "#"},
    "else": {"$ref": "#"},
    "allOf": {"$ref": "#/definitions/schemaArray"},
    "anyOf": {"$ref": "#/definitions/schemaArray"},
    "oneOf": {"$ref": "#/definitions/schemaArray"},
    "not": {"$ref": "#"}
  }
})json";

static const PayloadSchema &meta_schema() {
    static std::unique_ptr<PayloadSchema> meta;
    if (!meta) {
        auto m = std::make_unique<PayloadSchema>();
        json doc = json::parse(draft7_meta_schema);
        valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
        parser.populateSchema(valijson::adapters::NlohmannJsonAdapter(doc), m->schema);
        meta = std::move(m);
    }
    return *meta;
}

// Pointer and message of each violation valijson reported, leaves first (the "failed to validate
// against the schema of property x" lines that follow a nested failure are left out).
struct Violation {
    std::string pointer, message;
};

// valijson names positions "<root>", then "[key]" or "[index]": resolved against the document to a
// JSON pointer (RFC 6901: ~ and / escaped).
static std::string json_pointer(const std::vector<std::string> &context, const json &doc) {
    std::string out;
    const json *node = &doc;
    for (size_t i = 1; i < context.size(); ++i) {
        const std::string &c = context[i];
        std::string token = c.size() >= 2 && c.front() == '[' && c.back() == ']' ? c.substr(1, c.size() - 2) : c;
        if (node && node->is_object()) {
            auto it = node->find(token);
            node = it == node->end() ? nullptr : &*it;
        } else if (node && node->is_array()) {
            size_t k = std::strtoul(token.c_str(), nullptr, 10);
            node = k < node->size() ? &(*node)[k] : nullptr;
        }
        out += '/';
        for (char ch : token) {
            if (ch == '~') out += "~0";
            else if (ch == '/') out += "~1";
            else out += ch;
        }
    }
    return out;
}

static std::vector<Violation> violations(const PayloadSchema &s, const json &doc) {
    valijson::ValidationResults results;
    // The verdict is validate's: some failures (propertyNames) leave no message in results.
    if (s.validator.validate(s.schema, valijson::adapters::NlohmannJsonAdapter(doc), &results)) return {};
    std::vector<Violation> out;
    valijson::ValidationResults::Error e;
    // The proper prefixes of the contexts reported so far: a context among them reported a nested
    // failure. A set, so that a payload with many violations costs n log n, not n squared.
    std::set<std::vector<std::string>> above_reported;
    while (results.popError(e)) {
        pg_guard([] { CHECK_FOR_INTERRUPTS(); });
        if (above_reported.count(e.context) && e.description.rfind("Failed to validate", 0) == 0) continue;
        for (size_t n = 0; n < e.context.size(); ++n) above_reported.emplace(e.context.begin(), e.context.begin() + n);
        out.push_back({json_pointer(e.context, doc), e.description});
    }
    if (out.empty()) out.push_back({"", "The value does not match the schema (a constraint such as propertyNames failed)."});
    return out;
}

// Whether the schema document uses keywords that match regular expressions; with `compile`, each
// pattern must compile (the meta-schema only says it is a string). Walks the schema positions only.
static bool check_patterns(const json &schema, const std::string &at, bool compile_them) {
    if (!schema.is_object()) return false;
    bool uses = false;
    auto compile = [&](const std::string &pattern, const std::string &where) {
        uses = true;
        if (!compile_them) return;
        std::string why;
        try {
            regex_search(pattern, std::string());
        } catch (const PgError &e) {
            if (e.sqlstate() != ERRCODE_INVALID_REGULAR_EXPRESSION) throw;
            why = e.what();
        }
        if (!why.empty())
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("option payload_schema holds an invalid regular expression {} at {}", conveyor::quoted(pattern),
                                    conveyor::quoted(where)),
                        clipped(why, 1000), "Patterns are PostgreSQL regular expressions, as for the ~ operator.");
    };
    for (auto it = schema.begin(); it != schema.end(); ++it) {
        const std::string &k = it.key();
        const json &v = it.value();
        std::string where = at + "/" + k;
        if (k == "pattern" && v.is_string()) compile(v.get<std::string>(), where);
        else if (k == "format" && v.is_string()) {
            std::string f = v.get<std::string>();
            uses = uses || f == "date" || f == "time" || f == "date-time";
        } else if (k == "patternProperties" && v.is_object()) {
            for (auto p = v.begin(); p != v.end(); ++p) {
                compile(p.key(), where);
                uses = check_patterns(p.value(), where + "/" + p.key(), compile_them) || uses;
            }
        } else if ((k == "properties" || k == "definitions" || k == "dependencies") && v.is_object()) {
            for (auto p = v.begin(); p != v.end(); ++p) uses = check_patterns(p.value(), where + "/" + p.key(), compile_them) || uses;
        } else if ((k == "items" || k == "allOf" || k == "anyOf" || k == "oneOf") && v.is_array()) {
            for (size_t i = 0; i < v.size(); ++i) uses = check_patterns(v[i], where + "/" + std::to_string(i), compile_them) || uses;
        } else if (k == "items" || k == "additionalItems" || k == "additionalProperties" || k == "contains" ||
                   k == "propertyNames" || k == "not" || k == "if" || k == "then" || k == "else")
            uses = check_patterns(v, where, compile_them) || uses;
    }
    return uses;
}

// Refuses a schema that can reach itself without descending into the payload: through $ref, allOf,
// anyOf, oneOf, not, if, then, else or dependencies alone ({"$ref": "#"}, {"allOf": [{"$ref": "#"}]}).
// Checking a value against it would never end, and valijson's parser recurses forever on a cycle of
// bare $refs. Keywords that descend (properties, items, ...) end a cycle: the payload's depth is bounded.
class SelfReferenceCheck {
public:
    explicit SelfReferenceCheck(const json &root) : root_(root) {}
    void run() { every_position(root_, ""); }

private:
    const json &root_;
    std::unordered_map<const json *, int> state_;  // 1 while its in-place closure is explored, 2 after

    static std::string token(const std::string &key) {
        std::string out;
        for (char ch : key) out += ch == '~' ? "~0" : ch == '/' ? "~1" : std::string(1, ch);
        return out;
    }

    // The node a local "$ref" ("#" or "#/json/pointer") names, or nullptr (valijson reports that).
    const json *resolve(const std::string &ref) const {
        if (ref.empty() || ref[0] != '#') return nullptr;
        const json *node = &root_;
        size_t pos = 1;
        while (pos < ref.size()) {
            if (ref[pos] != '/') return nullptr;
            size_t end = std::min(ref.find('/', pos + 1), ref.size());
            std::string key;
            for (size_t i = pos + 1; i < end; ++i) {
                if (ref[i] == '~' && i + 1 < end && (ref[i + 1] == '0' || ref[i + 1] == '1')) key += ref[++i] == '0' ? '~' : '/';
                else key += ref[i];
            }
            if (node->is_object()) {
                auto it = node->find(key);
                if (it == node->end()) return nullptr;
                node = &*it;
            } else if (node->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string::npos &&
                       key.size() < 10 && std::stoul(key) < node->size()) {
                node = &(*node)[std::stoul(key)];
            } else
                return nullptr;
            pos = end;
        }
        return node;
    }

    void in_place(const json &node, const std::string &at) {
        if (!node.is_object()) return;
        conveyor::pg_guard([] { check_stack_depth(); });
        int &st = state_[&node];
        if (st == 2) return;
        if (st == 1)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("option payload_schema refers to itself at {} without descending into the payload", conveyor::quoted(at)),
                        "Checking a value against it would never end.",
                        "Reach a schema again only through a keyword that descends, such as properties or items.");
        st = 1;
        for (auto it = node.begin(); it != node.end(); ++it) {
            const std::string &k = it.key();
            const json &v = it.value();
            std::string where = at + "/" + token(k);
            if (k == "$ref" && v.is_string()) {
                if (const json *target = resolve(v.get<std::string>())) in_place(*target, v.get<std::string>().substr(1));
            } else if ((k == "allOf" || k == "anyOf" || k == "oneOf") && v.is_array()) {
                for (size_t i = 0; i < v.size(); ++i) in_place(v[i], where + "/" + std::to_string(i));
            } else if (k == "not" || k == "if" || k == "then" || k == "else") {
                in_place(v, where);
            } else if (k == "dependencies" && v.is_object()) {
                for (auto d = v.begin(); d != v.end(); ++d) in_place(d.value(), where + "/" + token(d.key()));
            }
        }
        st = 2;
    }

    // Every schema position of the document (its depth is bounded before this runs).
    void every_position(const json &node, const std::string &at) {
        if (!node.is_object()) return;
        in_place(node, at);
        for (auto it = node.begin(); it != node.end(); ++it) {
            const std::string &k = it.key();
            const json &v = it.value();
            std::string where = at + "/" + token(k);
            if ((k == "properties" || k == "patternProperties" || k == "definitions" || k == "dependencies") && v.is_object()) {
                for (auto p = v.begin(); p != v.end(); ++p) every_position(p.value(), where + "/" + token(p.key()));
            } else if ((k == "items" || k == "allOf" || k == "anyOf" || k == "oneOf") && v.is_array()) {
                for (size_t i = 0; i < v.size(); ++i) every_position(v[i], where + "/" + std::to_string(i));
            } else if (k == "items" || k == "additionalItems" || k == "additionalProperties" || k == "contains" ||
                       k == "propertyNames" || k == "not" || k == "if" || k == "then" || k == "else") {
                every_position(v, where);
            }
        }
    }
};

// `check_regexes`: refuse patterns PostgreSQL cannot compile (when a schema is set; a stored one is
// taken as it is, so that alter_queue can still replace it, and a bad pattern raises at match time).
static std::shared_ptr<const PayloadSchema> compile_payload_schema(Jsonb *schema, bool check_regexes) {
    const std::string what = "option payload_schema";
    if (!JB_ROOT_IS_OBJECT(schema) || JB_ROOT_IS_SCALAR(schema))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object (a JSON Schema, draft 7)", what), "",
                    "Use null to remove the schema.");
    if (VARSIZE(schema) > max_schema_bytes)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be at most {} bytes, not {}", what, max_schema_bytes, (size_t)VARSIZE(schema)));
    size_t depth = 0;
    json doc = to_json(&schema->root, &depth);
    if (depth > max_depth)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} nests deeper than {} levels", what, max_depth));
    if (auto s = doc.find("$schema"); s != doc.end() && s->is_string()) {
        std::string uri = s->get<std::string>();
        if (uri != "http://json-schema.org/draft-07/schema#" && uri != "http://json-schema.org/draft-07/schema")
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} declares $schema {}; only draft 7 is supported", what, conveyor::quoted(uri)),
                        "", "Write \"$schema\": \"http://json-schema.org/draft-07/schema#\" or leave it out.");
    }
    auto bad = violations(meta_schema(), doc);
    if (!bad.empty())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("{} is not a valid JSON Schema (draft 7) at {}", what, conveyor::quoted(bad[0].pointer)),
                    clipped(bad[0].message, 1000));
    SelfReferenceCheck(doc).run();
    auto out = std::make_shared<PayloadSchema>();
    out->uses_regex = check_patterns(doc, "", check_regexes);
    try {
        valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
        parser.populateSchema(valijson::adapters::NlohmannJsonAdapter(doc), out->schema);
    } catch (const std::exception &e) {
        // What the meta-schema lets pass but valijson cannot use: a $ref to another document or to
        // nothing, an unknown type name.
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is not a usable JSON Schema (draft 7)", what),
                    clipped(e.what(), 1000), "References ($ref) must point inside the schema itself.");
    }
    out->text = pg_guard([&] { return (const char *)JsonbToCString(nullptr, &schema->root, VARSIZE(schema)); });
    return out;
}

const std::string &payload_schema_text(const PayloadSchema &s) { return s.text; }

// ---------------------------------------------------------------------------------------------------
// Checking payloads

// The first string or key longer than max_regex_subject bytes, as a JSON pointer.
static std::optional<std::string> long_string(const json &node, const std::string &at) {
    auto escape = [](const std::string &token) {
        std::string out;
        for (char ch : token) out += ch == '~' ? "~0" : ch == '/' ? "~1" : std::string(1, ch);
        return out;
    };
    if (node.is_string() && node.get_ref<const std::string &>().size() > max_regex_subject) return at;
    if (node.is_object())
        for (auto it = node.begin(); it != node.end(); ++it) {
            std::string where = at + "/" + escape(it.key());
            if (it.key().size() > max_regex_subject) return where;
            if (auto found = long_string(it.value(), where)) return found;
        }
    if (node.is_array())
        for (size_t i = 0; i < node.size(); ++i)
            if (auto found = long_string(node[i], at + "/" + std::to_string(i))) return found;
    return std::nullopt;
}

static std::vector<Violation> payload_violations(const PayloadSchema &s, const json &doc, size_t depth, bool all) {
    if (depth > max_depth)
        return {{"", fmt::format("The payload nests deeper than {} levels, the most a payload_schema checks.", max_depth)}};
    if (s.uses_regex)
        if (auto at = long_string(doc, ""))
            return {{*at, fmt::format("String or key longer than {} bytes, the most a payload_schema with patterns or "
                                      "date/time formats checks.", max_regex_subject)}};
    if (!all && s.validator.validate(s.schema, valijson::adapters::NlohmannJsonAdapter(doc), nullptr)) return {};
    return violations(s, doc);
}

void check_payload_schema(const Queue &q, Jsonb *payload, const std::string &at) {
    size_t depth = 0;
    json doc = to_json(&payload->root, &depth);
    auto bad = payload_violations(*q.payload_schema, doc, depth, false);
    if (bad.empty()) return;
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                fmt::format("{}payload does not match the payload_schema of queue {} at {}", at, conveyor::quoted(q.name),
                            conveyor::quoted(bad[0].pointer)),
                clipped(bad[0].message, 1000), "conveyor.validate_payload(queue, payload) lists every violation.");
}

// ---------------------------------------------------------------------------------------------------
// Options

bool apply_metadata_option(Queue &q, const std::string &key, const JsonbValue &v) {
    const std::string what = fmt::format("option {}", key);
    auto text_option = [&](std::optional<std::string> &dst, size_t max_chars) {
        if (v.type == jbvNull) {
            dst.reset();
            return;
        }
        if (v.type != jbvString)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a string or null, not {}", what, jsonb_type_name(v)));
        std::string s = jsonb_string(v);
        size_t chars = pg_guard([&] { return (size_t)pg_mbstrlen_with_len(s.data(), (int)s.size()); });
        if (chars == 0 || chars > max_chars)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be 1 to {} characters, not {}", what, max_chars, chars));
        dst = std::move(s);
    };
    if (key == "display_name") text_option(q.display_name, max_display_name_chars);
    else if (key == "description") text_option(q.description, max_description_chars);
    else if (key == "metadata") {
        if (v.type == jbvNull) {
            q.metadata.reset();
            return true;
        }
        if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object or null, not {}", what, jsonb_type_name(v)));
        Jsonb *obj = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
        if (VARSIZE(obj) > max_metadata_bytes)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be at most {} bytes, not {}", what, max_metadata_bytes, (size_t)VARSIZE(obj)));
        q.metadata = pg_guard([&] { return (const char *)JsonbToCString(nullptr, &obj->root, VARSIZE(obj)); });
    } else if (key == "payload_schema") {
        if (v.type == jbvNull) q.payload_schema.reset();
        else if (v.type != jbvBinary)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("{} must be a JSON object (a JSON Schema, draft 7) or null, not {}", what, jsonb_type_name(v)));
        else q.payload_schema = compile_payload_schema((Jsonb *)DatumGetPointer(jsonb_value_datum(v)), true);
    } else
        return false;
    return true;
}

std::shared_ptr<const PayloadSchema> payload_schema_from_datum(Datum jsonb) {
    Jsonb *schema = pg_guard([&] { return DatumGetJsonbP(jsonb); });
    return compile_payload_schema(schema, false);
}

// ---------------------------------------------------------------------------------------------------
// conveyor.validate_payload(queue, payload): what enqueue would say of the payload, without enqueuing

CONVEYOR_FUNCTION(conveyor_validate_payload) {
    std::string queue_name = required_text(fcinfo, 0, "queue");
    Jsonb *payload = arg_jsonb(fcinfo, 1);
    if (!payload) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "payload must not be NULL");
    ResultSet out(fcinfo);
    spi::Connection spi;
    Queue q = cached_queue(queue_name);
    std::vector<Violation> bad;
    if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload)) bad.push_back({"", "The payload must be a JSON object."});
    else {
        size_t depth = 0;
        json doc = to_json(&payload->root, &depth);
        if (q.required_keys)
            for (const auto &k : *q.required_keys)
                if (!doc.contains(k)) bad.push_back({"", fmt::format("Required key {} is missing (option required_keys).", conveyor::quoted(k))});
        if (q.payload_schema)
            for (auto &v : payload_violations(*q.payload_schema, doc, depth, true)) bad.push_back(std::move(v));
    }
    json errors = json::array();
    for (const auto &v : bad) errors.push_back({{"pointer", v.pointer}, {"message", v.message}});
    std::string text = errors.dump(-1, ' ', false, json::error_handler_t::replace);
    Datum values[2];
    bool nulls[2] = {false, false};
    values[0] = BoolGetDatum(bad.empty());
    values[1] = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(text.c_str())); });
    out.add(values, nulls);
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::queue
