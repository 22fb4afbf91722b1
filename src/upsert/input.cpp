// Reading a call's input: the target, key_columns, options and every element of rows, checked before
// anything is written; and the caller's rights on the columns the call will write and compare.
#include <algorithm>

#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "upsert/internal.hpp"

extern "C" {
#include "catalog/pg_class.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/rls.h"
}

namespace conveyor::upsert {

// ---------------------------------------------------------------------------------------------------
// Key columns and options

static int column_named(const Target &t, const std::string &name, const std::string &what) {
    auto it = t.by_name.find(name);
    if (it == t.by_name.end())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: table {} has no column {}", what, t.display, quoted(name)));
    return it->second;
}

static int64 jsonb_int64(const JsonbValue &v, const std::string &what) {
    if (v.type == jbvNumeric) {
        Numeric num = v.val.numeric;
        bool integral = false;
        int64 out = 0;
        // numeric_int8 raises 22003 past bigint: converts() turns that into "not an integer" below.
        bool fits = converts([&] {
            Datum rounded = DirectFunctionCall2(numeric_round, NumericGetDatum(num), Int32GetDatum(0));
            if (!DatumGetBool(DirectFunctionCall2(numeric_eq, rounded, NumericGetDatum(num)))) return;
            out = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
            integral = true;
        });
        if (fits && integral) return out;
    }
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer (bigint), not {}", what, jsonb_type_name(v)));
}

// One of the words an option allows: its index in `allowed`; 22023 naming the option otherwise.
static size_t option_word(const JsonbValue &v, const std::string &option, std::initializer_list<const char *> allowed) {
    std::vector<std::string> words;
    for (const char *w : allowed) words.push_back(fmt::format("'{}'", w));
    std::string given = v.type == jbvString ? quoted(jsonb_string(v)) : jsonb_type_name(v);
    if (v.type == jbvString) {
        std::string s = jsonb_string(v);
        size_t i = 0;
        for (const char *w : allowed) {
            if (s == w) return i;
            ++i;
        }
    }
    std::string last = words.back();
    words.pop_back();
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                fmt::format("option {} must be {} or {}, not {}", option, fmt::join(words, ", "), last, given));
}

static Options parse_options(const Target &t, Jsonb *options) {
    Options o;
    if (options) {
        for (const auto &f : jsonb_object_fields(options, "options")) {
            const std::string what = "option " + f.key;
            const JsonbValue &v = f.value;
            if (f.key == "touch_columns" || f.key == "immutable_columns") {
                auto names = jsonb_text_array(v, what);
                auto &dst = f.key == "touch_columns" ? o.touch : o.immutable;
                if (names)
                    for (const auto &n : *names) dst.push_back(column_named(t, n, what));
            } else if (f.key == "strict" || f.key == "audit" || f.key == "touch_unchanged") {
                if (v.type != jbvBool)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be true or false, not {}", what, jsonb_type_name(v)));
                (f.key == "strict" ? o.strict : f.key == "audit" ? o.audit : o.touch_unchanged) = v.val.boolean;
            } else if (f.key == "operation_id") {
                if (v.type == jbvNull) continue;
                if (v.type != jbvString || v.val.string.len == 0)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a non-empty string", what));
                o.operation_id = jsonb_string(v);
            } else if (f.key == "fence") {
                if (v.type == jbvNull) continue;
                if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("option fence must be an object {{\"key\": ..., \"token\": ...}}, not {}", jsonb_type_name(v)));
                Jsonb *fence = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
                bool have_token = false;
                for (const auto &g : jsonb_object_fields(fence, "option fence")) {
                    if (g.key == "key") {
                        if (g.value.type != jbvString || g.value.val.string.len == 0)
                            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option fence.key must be a non-empty string");
                        o.fence_key = jsonb_string(g.value);
                    } else if (g.key == "token") {
                        o.fence_token = jsonb_int64(g.value, "option fence.token");
                        have_token = true;
                    } else
                        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("option fence: unknown field {}", quoted(g.key)), "",
                                    "fence is {\"key\": <lease key>, \"token\": <token from lock_acquire>}.");
                }
                if (!o.fence_key || !have_token)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option fence needs both key and token", "",
                                "fence is {\"key\": <lease key>, \"token\": <token from lock_acquire>}.");
            } else if (f.key == "on_duplicate") {
                o.on_duplicate = OnDuplicate(option_word(v, f.key, {"error", "first", "last"}));
            } else if (f.key == "mode") {
                o.mode = Mode(option_word(v, f.key, {"upsert", "insert", "update"}));
            } else if (f.key == "on_error") {
                o.skip_errors = option_word(v, f.key, {"abort", "skip"}) == 1;
            } else if (f.key == "returning") {
                if (v.type == jbvNull) continue;
                auto names = jsonb_text_array(v, what);
                o.has_returning = true;
                if (names)
                    for (const auto &n : *names) {
                        auto it = t.by_name.find(n);
                        if (it == t.by_name.end())
                            throw Error(ERRCODE_UNDEFINED_COLUMN,
                                        fmt::format("option returning: column {} of relation {} does not exist", quoted(n), t.display));
                        o.returning.push_back(it->second);
                    }
            } else
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown option {}", quoted(f.key)), "",
                            "Options are touch_columns, touch_unchanged, immutable_columns, strict, operation_id, fence, audit, "
                            "on_duplicate, returning, mode, on_error.");
        }
    }
    if (auto it = t.by_name.find("created_at"); it != t.by_name.end()) o.immutable.push_back(it->second);
    std::sort(o.touch.begin(), o.touch.end());
    o.touch.erase(std::unique(o.touch.begin(), o.touch.end()), o.touch.end());
    std::sort(o.immutable.begin(), o.immutable.end());
    o.immutable.erase(std::unique(o.immutable.begin(), o.immutable.end()), o.immutable.end());
    for (int c : o.touch)
        if (std::binary_search(o.immutable.begin(), o.immutable.end(), c))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("column {} cannot be both a touch column and immutable", quoted(t.columns[c].name)),
                        "created_at is always immutable.");
    for (int c : o.touch)
        if (t.columns[c].generated)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("option touch_columns: column {} is generated", quoted(t.columns[c].name)));
    // touch_unchanged sets the touch columns: without any it would silently do nothing.
    if (o.touch_unchanged && o.touch.empty())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option touch_unchanged needs touch_columns", "It sets the touch columns of unchanged rows.",
                    "Name the columns to set in the option touch_columns, e.g. [\"last_seen_at\"].");
    if (o.touch_unchanged && o.mode == Mode::insert)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option touch_unchanged does not go with mode 'insert'",
                    "mode 'insert' leaves existing rows alone.", "Use mode 'upsert' or 'update' to touch existing rows.");
    return o;
}

// key_columns must be exactly the columns of a unique index (or constraint) that can arbitrate
// ON CONFLICT.
static std::vector<int> match_key(const Target &t, ArrayType *arr) {
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] { deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n); });
    if (n == 0) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "key_columns must name at least one column");
    std::vector<int> cols;
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
        if (nulls[i]) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "key_columns must not contain NULL");
        Datum d = elems[i];
        std::string name = pg_guard([&] { return (const char *)TextDatumGetCString(d); });
        cols.push_back(column_named(t, name, "key_columns"));
        names.push_back(name);
    }
    std::sort(cols.begin(), cols.end());
    if (std::adjacent_find(cols.begin(), cols.end()) != cols.end())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "key_columns names a column twice");
    std::string unusable;
    for (const auto &k : t.keys) {
        if (k.cols != cols) continue;
        if (k.why_not.empty()) return cols;
        unusable = fmt::format("Unique index {} has these columns, but {}.", quoted(k.index), k.why_not);
    }
    std::vector<std::string> candidates;
    for (const auto &k : t.keys) {
        if (!k.why_not.empty()) continue;
        std::vector<std::string> kn;
        for (int c : k.cols) kn.push_back(t.columns[c].name);
        candidates.push_back("(" + fmt::format("{}", fmt::join(kn, ", ")) + ")");
    }
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                fmt::format("key_columns ({}) do not match a unique index or constraint of table {}", fmt::join(names, ", "), t.display),
                unusable,
                candidates.empty() ? "Create a unique index (not partial, without expressions) on the key columns."
                                   : fmt::format("Unique keys of {}: {}.", t.display, fmt::join(candidates, ", ")));
}

// ---------------------------------------------------------------------------------------------------
// The elements

// The keys of a jsonb object in storage order, read from its entries directly (no iterator, no
// allocation): an object's first n children are its n keys, strings stored one after another. An
// entry holds either its length or, every JB_OFFSET_STRIDE entries, its end offset.
static void object_keys(const JsonbContainer *c, std::vector<std::pair<const char *, int>> &out) {
    uint32 n = JsonContainerSize(c);
    out.resize(n);
    const JEntry *children = c->children;
    const char *base = (const char *)&children[n * 2];
    uint32 offset = 0;
    for (uint32 i = 0; i < n; ++i) {
        JEntry e = children[i];
        uint32 end = JBE_HAS_OFF(e) ? JBE_OFFLENFLD(e) : offset + JBE_OFFLENFLD(e);
        out[i] = {base + offset, (int)(end - offset)};
        offset = end;
    }
}

// The text PostgreSQL's input function gets for a scalar (what jsonb_populate_record passes it):
// keys that give the same text are the same key.
static void append_input_text(std::string &out, const JsonbValue &v) {
    switch (v.type) {
    case jbvString:
        out.append(v.val.string.val, v.val.string.len);
        break;
    case jbvNumeric: {
        Numeric num = v.val.numeric;
        out.append(pg_guard([&] { return (const char *)DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num))); }));
        break;
    }
    case jbvBool:
        out.append(v.val.boolean ? "true" : "false");
        break;
    default: {
        // A container key (an array column): its jsonb text.
        const JsonbValue *src = &v;
        out.append(pg_guard([&] {
            Jsonb *jb = JsonbValueToJsonb(const_cast<JsonbValue *>(src));
            return (const char *)JsonbToCString(NULL, &jb->root, VARSIZE(jb));
        }));
    }
    }
}

std::string key_text(const Call &call, size_t i) {
    std::vector<std::string> parts;
    for (size_t k = 0; k < call.key.size(); ++k) {
        std::string v;
        append_input_text(v, call.key_values[i * call.key.size() + k]);
        parts.push_back(fmt::format("{}={}", call.t->columns[call.key[k]].name, v));
    }
    return fmt::format("{}", fmt::join(parts, ", "));
}

// ---------------------------------------------------------------------------------------------------
// Privileges

static void check_privileges(const Call &call) {
    const Target &t = *call.t;
    Oid user = GetUserId();
    std::vector<int> all_present, compared;
    for (const auto &s : call.shapes) {
        all_present.insert(all_present.end(), s.present.begin(), s.present.end());
        compared.insert(compared.end(), s.compared.begin(), s.compared.end());
    }
    std::sort(all_present.begin(), all_present.end());
    all_present.erase(std::unique(all_present.begin(), all_present.end()), all_present.end());
    std::sort(compared.begin(), compared.end());
    compared.erase(std::unique(compared.begin(), compared.end()), compared.end());
    std::vector<int> ins = all_present, upd = compared, sel = compared;
    ins.insert(ins.end(), call.opt.touch.begin(), call.opt.touch.end());
    upd.insert(upd.end(), call.opt.touch.begin(), call.opt.touch.end());
    sel.insert(sel.end(), call.key.begin(), call.key.end());
    struct Need {
        AclMode mode;
        const char *name;
        const std::vector<int> *cols;
    };
    // mode 'insert' never updates, mode 'update' never inserts: neither right is asked for then.
    std::vector<Need> needs;
    if (call.opt.mode != Mode::update) needs.push_back({ACL_INSERT, "INSERT", &ins});
    if (call.opt.mode != Mode::insert) needs.push_back({ACL_UPDATE, "UPDATE", &upd});
    needs.push_back({ACL_SELECT, "SELECT", &sel});
    Oid relid = t.relid;
    // The returning columns are read as the caller: each must be one the caller may SELECT.
    for (int c : call.opt.returning) {
        AttrNumber attnum = t.columns[c].attnum;
        bool ok = pg_guard([&] {
            return pg_class_aclcheck(relid, user, ACL_SELECT) == ACLCHECK_OK ||
                   pg_attribute_aclcheck(relid, attnum, user, ACL_SELECT) == ACLCHECK_OK;
        });
        if (!ok)
            throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                        fmt::format("permission denied for column {} of table {}", quoted(t.columns[c].name), t.display),
                        "option returning reads the stored row as the calling role.",
                        "Grant SELECT on the column to the calling role, or leave it out of returning.");
    }
    for (const auto &need : needs) {
        AclMode mode = need.mode;
        bool ok = pg_guard([&] { return pg_class_aclcheck(relid, user, mode); }) == ACLCHECK_OK;
        if (!ok && !need.cols->empty()) {
            ok = true;
            for (int c : *need.cols) {
                AttrNumber attnum = t.columns[c].attnum;
                if (pg_guard([&] { return pg_attribute_aclcheck(relid, attnum, user, mode); }) != ACLCHECK_OK) {
                    ok = false;
                    break;
                }
            }
        }
        if (!ok)
            throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, fmt::format("permission denied for table {}", t.display),
                        fmt::format("upsert needs {} on the table (or on every column it {}).", need.name,
                                    need.mode == ACL_SELECT ? "compares" : "writes"),
                        "upsert runs as its caller: grant INSERT, UPDATE and SELECT on the table to the calling role.");
    }
}

// ---------------------------------------------------------------------------------------------------
// The call

// Reads and checks the arguments and every element; nothing is written.
void prepare(Call &call, FunctionCallInfo fcinfo) {
    // NULL is refused here for the three required arguments (core/args.hpp has no reader that refuses
    // it for a regclass, a text[] or a jsonb); rows and options are read with arg_jsonb below.
    require(fcinfo, 0, "target");
    require(fcinfo, 1, "rows");
    require(fcinfo, 2, "key_columns");
    Oid relid = PG_GETARG_OID(0);
    char relkind = pg_guard([&] { return get_rel_relkind(relid); });
    if (relkind == '\0')
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("relation with OID {} does not exist", relid));
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE) {
        const char *name = pg_guard([&] { return get_rel_name(relid); });
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is not a table", quoted(name)), "",
                    "upsert writes to ordinary and partitioned tables.");
    }
    // A role with no right at all on the table may not even lock it.
    Oid user = GetUserId();
    bool any_right = pg_guard([&] {
        return pg_class_aclcheck(relid, user, ACL_INSERT | ACL_UPDATE | ACL_SELECT) == ACLCHECK_OK ||
               pg_attribute_aclcheck_all(relid, user, ACL_INSERT | ACL_UPDATE | ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK;
    });
    if (!any_right) {
        const char *name = pg_guard([&] { return get_rel_name(relid); });
        throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, fmt::format("permission denied for table {}", name), "",
                    "upsert runs as its caller: grant INSERT, UPDATE and SELECT on the table to the calling role.");
    }
    // Lock as the write will, before reading the catalog, so the description cannot change under us.
    pg_guard([&] { LockRelationOid(relid, RowExclusiveLock); });
    call.t = target_for(relid);
    const Target &t = *call.t;
    ArrayType *keys = pg_guard([&] { return PG_GETARG_ARRAYTYPE_P(2); });
    call.key = match_key(t, keys);
    call.options = arg_jsonb(fcinfo, 3);
    call.opt = parse_options(t, call.options);
    for (int c : call.opt.touch)
        if (std::binary_search(call.key.begin(), call.key.end(), c))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("key column {} cannot be a touch column", quoted(t.columns[c].name)));

    call.rows = arg_jsonb(fcinfo, 1);
    Jsonb *rows = call.rows;
    if (!JB_ROOT_IS_ARRAY(rows) || JB_ROOT_IS_SCALAR(rows))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("rows must be a JSON array of objects, not {}", JB_ROOT_IS_SCALAR(rows) ? "a scalar" : "an object"));
    uint32 n = JsonContainerSize(&rows->root);
    if (n > max_rows)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("rows holds {} elements; at most {} per call", n, max_rows), "",
                    "Split the batch into several calls.");
    call.elements.resize(n);
    call.out.assign(n, Outcome{});
    call.misses.assign(n, 0);
    std::vector<JsonbValue> values = jsonb_array_elements(rows, "rows");

    std::vector<char> is_key(t.columns.size(), 0), is_touch(t.columns.size(), 0), is_immutable(t.columns.size(), 0);
    for (int c : call.key) is_key[c] = 1;
    for (int c : call.opt.touch) is_touch[c] = 1;
    for (int c : call.opt.immutable) is_immutable[c] = 1;

    std::unordered_map<std::string, size_t> seen_keys;
    seen_keys.reserve(n);
    std::map<std::vector<int>, size_t> shape_of;
    std::string name, ktext, part;
    std::vector<int> present, last_present;
    size_t last_shape = 0;
    std::vector<std::pair<const char *, int>> names;
    size_t nkeys = call.key.size();
    call.key_values.resize(n * nkeys);
    // Elements of a batch usually carry the same keys, and jsonb stores an object's keys in one order:
    // the column of the f-th key of the previous element is the first guess for the f-th key.
    struct Guess {
        const char *key = nullptr;
        int len = -1;
        int col = -1;  // -1: not a column (or not to be written)
    };
    std::vector<Guess> guesses;
    // The shape of each element kept (-1: none, a dropped duplicate or an error); ords are filled last,
    // as on_duplicate 'last' drops an element after it was read.
    std::vector<int> shape_idx(n, -1);
    auto read_element = [&](size_t i) {
        const JsonbValue &e = values[i];
        call.out[i].key_read = false;
        if (e.type != jbvBinary || !JsonContainerIsObject(e.val.binary.data))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object, not {} {}", at(i),
                                                                     e.type == jbvBinary ? "an" : "a", jsonb_type_name(e)));
        Element &el = call.elements[i];
        el.obj = e.val.binary.data;
        JsonbContainer *obj = const_cast<JsonbContainer *>(el.obj);
        object_keys(obj, names);
        uint32 nf = (uint32)names.size();
        if (guesses.size() < nf) guesses.resize(nf);
        present.clear();
        for (uint32 f = 0; f < nf; ++f) {
            const char *kp = names[f].first;
            int kl = names[f].second;
            Guess &g = guesses[f];
            int c;
            if (g.len == kl && std::memcmp(g.key, kp, kl) == 0) {
                c = g.col;
            } else {
                name.assign(kp, kl);
                auto it = t.by_name.find(name);
                if (it == t.by_name.end()) {
                    if (call.opt.strict)
                        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                                    fmt::format("{}: table {} has no column {}", at(i), t.display, quoted(name)), "",
                                    "Pass the option \"strict\": false to ignore keys that are not columns.");
                    c = -1;
                } else {
                    c = it->second;
                    if (is_touch[c]) {
                        if (call.opt.strict)
                            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                                        fmt::format("{}: {} is a touch column; upsert sets it", at(i), quoted(name)), "",
                                        "Leave it out of the rows, or pass \"strict\": false to ignore it.");
                        c = -1;
                    } else if (t.columns[c].generated)
                        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                                    fmt::format("{}: column {} is generated and cannot be written", at(i), quoted(name)));
                }
                g = Guess{kp, kl, c};
            }
            if (c >= 0) present.push_back(c);
        }
        // jsonb orders keys by length, then bytes: sort the columns for the shape.
        if (!std::is_sorted(present.begin(), present.end())) std::sort(present.begin(), present.end());
        // The key: present, not null; no key twice in a batch.
        ktext.clear();
        for (size_t k = 0; k < nkeys; ++k) {
            const Column &col = t.columns[call.key[k]];
            JsonbValue *v = &call.key_values[i * nkeys + k];
            const char *kn = col.name.c_str();
            int kl = (int)col.name.size();
            bool found = pg_guard([&] { return getKeyJsonValueFromContainer(obj, kn, kl, v) != NULL; });
            if (!found)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: key column {} is missing", at(i), quoted(col.name)));
            if (v->type == jbvNull)
                throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, fmt::format("{}: key column {} must not be null", at(i), quoted(col.name)));
            part.clear();
            append_input_text(part, *v);
            ktext += std::to_string(part.size());
            ktext += ':';
            ktext += part;
        }
        call.out[i].key_read = true;
        auto [dup, fresh] = seen_keys.emplace(ktext, i);
        if (!fresh) {
            if (call.opt.on_duplicate == OnDuplicate::error)
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} and {} have the same key ({})", at(dup->second), at(i), key_text(call, i)),
                            "A batch holds each key once unless the option on_duplicate says which element wins.",
                            "Pass \"on_duplicate\": \"first\" or \"last\", or merge the repeated elements before the call.");
            if (call.opt.on_duplicate == OnDuplicate::first) {
                call.out[i].action = Action::duplicate;
                return;
            }
            call.out[dup->second].action = Action::duplicate;
            shape_idx[dup->second] = -1;
            dup->second = i;
        }
        if (call.shapes.empty() || present != last_present) {
            auto [sh, added] = shape_of.emplace(present, call.shapes.size());
            if (added) {
                Shape s;
                s.present = present;
                for (int c : present)
                    if (!is_key[c] && !is_immutable[c]) s.compared.push_back(c);
                call.shapes.push_back(std::move(s));
            }
            last_shape = sh->second;
            last_present = present;
        }
        shape_idx[i] = (int)last_shape;
    };
    for (size_t i = 0; i < n; ++i) {
        if (!call.opt.skip_errors) {
            read_element(i);
            continue;
        }
        // on_error 'skip': an element that fails its checks is set aside with its error.
        try {
            read_element(i);
        } catch (const Error &err) {
            call.out[i].action = Action::error;
            call.out[i].changed = error_json(err.sqlstate, err.message);
        }
    }
    for (size_t i = 0; i < n; ++i)
        if (shape_idx[i] >= 0) call.shapes[shape_idx[i]].ords.push_back(i);
    call.rls = pg_guard([&] { return check_enable_rls(relid, InvalidOid, true); }) == RLS_ENABLED;
    check_privileges(call);
}

} // namespace conveyor::upsert
