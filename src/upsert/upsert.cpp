// Batch upserts that write only what changed: SQL entry points conveyor.upsert and
// conveyor.upsert_counts.
//
// The functions are SECURITY INVOKER: every statement on the target runs as the caller, so the
// caller's privileges and the target's row-level security apply exactly as to the caller's own SQL.
// Only conveyor's own tables (idempotency_keys for operation_id, change_log for audit, locks for the
// fence) are touched as the extension's owner, inside an OwnerScope.
//
// A batch, per shape (the set of columns its elements carry; usually one per batch), in a few
// set-based statements whose SQL is generated once per (target, shape, options) and kept:
//   A. Each element's row looked up by its key (one index probe): equal rows are 'unchanged' and get
//      no lock and no write; missing ones are inserted in key order, ON CONFLICT (key) DO NOTHING.
//   B. The differing rows, locked FOR UPDATE in key order and compared again against their latest
//      version (a concurrent change is seen here), with the changed columns as {"col": {"old",
//      "new"}}, then updated where they still differ, in the same statement.
//   I. After a batch of only new rows, the next batch of the shape is first tried as a plain insert
//      in key order (no lookups); the elements it did not insert take the way through A.
// Elements whose row vanished or appeared between the statements (a concurrent delete or insert)
// go round again, a bounded number of times. Keys are inserted and locked in one fixed order (the
// key's order; bytewise for collatable types), so concurrent batches over overlapping keys never
// deadlock.
//
// The statements run in one subtransaction. If it fails, the error is traced to its element (each
// element replayed alone in a subtransaction that is rolled back) and, for a value that does not
// convert, to its column; the caller gets the original error with the element's index in front.
#include <algorithm>
#include <map>
#include <memory>
#include <unordered_map>

#include "upsert/upsert.hpp"
#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "core/subxact.hpp"
#include "core/xact_lock.hpp"
#include "idempotency/idempotency.hpp"
#include "locks/locks.hpp"

extern "C" {
#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/json.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
}

namespace conveyor::upsert {

using spi::Params;
using spi::Statement;

// The most elements one call takes. Larger inputs are split by the caller into several calls.
constexpr size_t max_rows = 10000;
// Rounds for elements whose row was inserted or deleted concurrently between two statements.
constexpr int max_rounds = 5;

// ---------------------------------------------------------------------------------------------------
// The target table, as the catalog describes it (cached per backend, dropped on relcache invalidation)

struct Column {
    std::string name;   // as in the catalog
    std::string ident;  // quoted for SQL
    std::string literal; // quoted as a string literal (jsonb keys in generated SQL)
    AttrNumber attnum = 0;
    std::string type;   // as format_type_be spells it
    Oid type_oid = InvalidOid;
    std::string lock_order;  // ' COLLATE "C"' for collatable types, else empty
    bool generated = false;
    // "OPERATOR(schema.=)" of the type's default equality, or empty: compared as text.
    std::string eq;
};

struct Plans {
    std::string sql_a_all, sql_a, sql_b, sql_i, sql_map, sql_k;
    std::unique_ptr<Statement> a_all, a, b, i, map, k;
    std::vector<Oid> key_array_types;  // of the key columns, for sql_map's parameters
    // The last batch of this shape was all new rows: the next one is tried with an insert first.
    bool insert_first = false;
    // The last batch of this shape found every row: the next one is classified first (K).
    bool classify_first = false;
};

struct Target {
    Oid relid = InvalidOid;
    bool stale = false;
    // BEFORE ROW triggers may skip a row (return NULL) or change it: their decisions are reported.
    bool before_insert_trigger = false;
    bool before_update_trigger = false;
    std::string qualified;  // "schema"."table", quoted
    std::string display;    // schema.table, for messages
    std::vector<Column> columns;
    std::unordered_map<std::string, int> by_name;
    // Usable ON CONFLICT arbiters: unique, immediate, valid, no predicate, no expressions.
    struct Key {
        std::string index;
        std::vector<int> cols;  // indexes into columns, sorted
        std::string why_not;    // set when the index cannot serve (partial, expressions, deferrable)
    };
    std::vector<Key> keys;
    std::string ord_alias;  // a column name for the element's position that no column of the table has
    std::map<std::string, std::unique_ptr<Plans>> plans;  // by shape signature
};

// Descriptions are shared: every call holds the one it uses for as long as it runs. A call on the
// stack (an upsert whose target's trigger calls upsert again, after a GRANT or ANALYZE invalidated the
// table) may still be executing the kept plans of a description that a later call found stale.
static std::unordered_map<Oid, std::shared_ptr<Target>> targets;
// Stale descriptions taken out of `targets`; their plans are freed once no call holds them.
static std::vector<std::shared_ptr<Target>> retired;

// Relcache invalidation of a target (ALTER TABLE, CREATE INDEX, ...): its description and kept
// statements are dropped at the next call (never here: a statement may be running).
static void target_changed(Datum, Oid relid) {
    for (auto &[oid, t] : targets)
        if (relid == InvalidOid || oid == relid) t->stale = true;
}

static std::string quote_ident(const char *name) {
    return std::string(pg_guard([&] { return quote_identifier(name); }));
}

// "OPERATOR(schema.=)" for the default equality of `type`, or empty if the type has none.
static std::string equality_operator(Oid type) {
    Oid opr = pg_guard([&] { return lookup_type_cache(type, TYPECACHE_EQ_OPR)->eq_opr; });
    if (!OidIsValid(opr)) return {};
    const char *nsp = nullptr;
    const char *name = nullptr;
    pg_guard([&] {
        HeapTuple tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opr));
        if (!HeapTupleIsValid(tup)) elog(ERROR, "cache lookup failed for operator %u", opr);
        Form_pg_operator op = (Form_pg_operator)GETSTRUCT(tup);
        nsp = get_namespace_name(op->oprnamespace);
        name = pstrdup(NameStr(op->oprname));
        ReleaseSysCache(tup);
    });
    return fmt::format("OPERATOR({}.{})", quote_ident(nsp), name);
}

static std::shared_ptr<Target> describe(Oid relid) {
    auto t = std::make_shared<Target>();
    t->relid = relid;
    struct Att {
        const char *name;
        AttrNumber attnum;
        Oid type;
        bool generated;
    };
    std::vector<Att> atts;
    std::vector<Oid> index_oids;
    const char *nsp = nullptr;
    const char *rel = nullptr;
    int natts = 0;
    Relation r = pg_guard([&] { return relation_open(relid, NoLock); });
    natts = RelationGetNumberOfAttributes(r);
    atts.resize(natts);
    Att *dst = atts.data();
    int kept = 0;
    pg_guard([&] {
        TupleDesc td = RelationGetDescr(r);
        for (int i = 0; i < td->natts; ++i) {
            Form_pg_attribute a = TupleDescAttr(td, i);
            if (a->attisdropped) continue;
            dst[kept++] = Att{pstrdup(NameStr(a->attname)), a->attnum, a->atttypid, a->attgenerated != '\0'};
        }
        nsp = get_namespace_name(RelationGetNamespace(r));
        rel = pstrdup(RelationGetRelationName(r));
    });
    if (const TriggerDesc *td = r->trigdesc) {
        t->before_insert_trigger = td->trig_insert_before_row;
        t->before_update_trigger = td->trig_update_before_row;
    }
    atts.resize(kept);
    List *indexes = pg_guard([&] { return RelationGetIndexList(r); });
    for (int i = 0; i < (indexes ? list_length(indexes) : 0); ++i) index_oids.push_back(list_nth_oid(indexes, i));
    pg_guard([&] { relation_close(r, NoLock); });

    t->qualified = quote_ident(nsp) + "." + quote_ident(rel);
    t->display = std::string(nsp) + "." + rel;
    for (const auto &a : atts) {
        Column c;
        c.name = a.name;
        c.ident = quote_ident(a.name);
        const char *lit = pg_guard([&] { return quote_literal_cstr(a.name); });
        c.literal = lit;
        c.attnum = a.attnum;
        Oid type = a.type;
        c.type = pg_guard([&] { return (const char *)format_type_be(type); });
        c.type_oid = type;
        if (OidIsValid(pg_guard([&] { return get_typcollation(type); }))) c.lock_order = " COLLATE pg_catalog.\"C\"";
        c.generated = a.generated;
        c.eq = equality_operator(a.type);
        t->by_name.emplace(c.name, (int)t->columns.size());
        t->columns.push_back(std::move(c));
    }
    for (Oid ix : index_oids) {
        struct {
            bool unique, immediate, valid, partial, exprs;
            int nkeys;
            AttrNumber attnums[INDEX_MAX_KEYS];
            const char *name;
        } info{};
        pg_guard([&] {
            Relation ir = index_open(ix, AccessShareLock);
            Form_pg_index fi = ir->rd_index;
            info.unique = fi->indisunique;
            info.immediate = fi->indimmediate;
            info.valid = fi->indisvalid;
            info.partial = !heap_attisnull(ir->rd_indextuple, Anum_pg_index_indpred, NULL);
            info.exprs = !heap_attisnull(ir->rd_indextuple, Anum_pg_index_indexprs, NULL);
            info.nkeys = fi->indnkeyatts;
            for (int k = 0; k < fi->indnkeyatts; ++k) info.attnums[k] = fi->indkey.values[k];
            info.name = pstrdup(RelationGetRelationName(ir));
            index_close(ir, AccessShareLock);
        });
        if (!info.unique) continue;
        Target::Key key;
        key.index = info.name;
        for (int k = 0; k < info.nkeys; ++k) {
            if (info.attnums[k] == 0) continue;  // an expression
            for (size_t c = 0; c < t->columns.size(); ++c)
                if (t->columns[c].attnum == info.attnums[k]) key.cols.push_back((int)c);
        }
        std::sort(key.cols.begin(), key.cols.end());
        if (info.partial) key.why_not = "it is a partial index";
        else if (info.exprs) key.why_not = "it indexes an expression";
        else if (!info.immediate) key.why_not = "it is deferrable";
        else if (!info.valid) key.why_not = "it is not valid";
        t->keys.push_back(std::move(key));
    }
    t->ord_alias = "conveyor_ord";
    while (t->by_name.count(t->ord_alias)) t->ord_alias += "_";
    return t;
}

static void release_plans(Target &t) {
    for (auto &[sig, p] : t.plans)
        for (auto *s : {p->a_all.get(), p->a.get(), p->b.get(), p->i.get(), p->map.get(), p->k.get()})
            if (s) s->release();
    t.plans.clear();
}

void register_callbacks() {
    pg_guard([] { CacheRegisterRelcacheCallback(target_changed, (Datum)0); });
}

static std::shared_ptr<Target> target_for(Oid relid) {
    // Retire every description a catalog change made stale (a dropped table's too)...
    for (auto it = targets.begin(); it != targets.end();) {
        if (!it->second->stale) {
            ++it;
            continue;
        }
        retired.push_back(std::move(it->second));
        it = targets.erase(it);
    }
    // ... and free the plans of those no call on the stack holds any more.
    for (auto it = retired.begin(); it != retired.end();) {
        if (it->use_count() > 1) {
            ++it;
            continue;
        }
        release_plans(**it);
        it = retired.erase(it);
    }
    auto it = targets.find(relid);
    if (it == targets.end()) it = targets.emplace(relid, describe(relid)).first;
    return it->second;
}

// ---------------------------------------------------------------------------------------------------
// Arguments and options

struct Options {
    std::vector<int> touch;      // column indexes
    std::vector<int> immutable;  // column indexes, created_at included when the table has it
    bool strict = true;
    std::optional<std::string> operation_id;
    std::optional<std::string> fence_key;
    int64 fence_token = 0;
    bool audit = false;
};

static int column_named(const Target &t, const std::string &name, const std::string &what) {
    auto it = t.by_name.find(name);
    if (it == t.by_name.end())
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{}: table {} has no column {}", what, t.display, quoted(name)));
    return it->second;
}

static int64 jsonb_int64(const JsonbValue &v, const std::string &what) {
    if (v.type == jbvNumeric) {
        Numeric num = v.val.numeric;
        bool ok = false;
        int64 out = 0;
        try {
            out = pg_guard([&] {
                Datum rounded = DirectFunctionCall2(numeric_round, NumericGetDatum(num), Int32GetDatum(0));
                if (!DatumGetBool(DirectFunctionCall2(numeric_eq, rounded, NumericGetDatum(num)))) return (int64)0;
                ok = true;
                return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num)));
            });
        } catch (const PgError &) {
            ok = false;
        }
        if (ok) return out;
    }
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer (bigint), not {}", what, jsonb_type_name(v)));
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
            } else if (f.key == "strict" || f.key == "audit") {
                if (v.type != jbvBool)
                    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be true or false, not {}", what, jsonb_type_name(v)));
                (f.key == "strict" ? o.strict : o.audit) = v.val.boolean;
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
            } else
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("unknown option {}", quoted(f.key)), "",
                            "Options are touch_columns, immutable_columns, strict, operation_id, fence, audit.");
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

struct Element {
    const JsonbContainer *obj = nullptr;
};

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

static std::string at(size_t i) { return fmt::format("rows[{}]", i); }

// ---------------------------------------------------------------------------------------------------
// The extension owner, for conveyor's own tables

class OwnerScope {
  public:
    OwnerScope() {
        GetUserIdAndSecContext(&saved_user_, &saved_context_);
        Oid owner = pg_guard([] {
            HeapTuple tup = SearchSysCache1(NAMESPACENAME, CStringGetDatum("conveyor"));
            if (!HeapTupleIsValid(tup)) elog(ERROR, "schema conveyor does not exist");
            Oid o = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
            ReleaseSysCache(tup);
            return o;
        });
        // Restricted, as for a maintenance command run as a table's owner: nothing in the scope may
        // change the session's role or authorization, even if something unexpected ran there.
        SetUserIdAndSecContext(owner, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    }
    ~OwnerScope() { SetUserIdAndSecContext(saved_user_, saved_context_); }
    OwnerScope(const OwnerScope &) = delete;
    OwnerScope &operator=(const OwnerScope &) = delete;

  private:
    Oid saved_user_ = InvalidOid;
    int saved_context_ = 0;
};

// Errors that callers retry, or that stop the call: never traced to an element, never wrapped.
static bool passes_through(int sqlstate) {
    return sqlstate == ERRCODE_T_R_SERIALIZATION_FAILURE || sqlstate == ERRCODE_T_R_DEADLOCK_DETECTED ||
           sqlstate == ERRCODE_LOCK_NOT_AVAILABLE || sqlstate == ERRCODE_QUERY_CANCELED ||
           sqlstate == ERRCODE_ADMIN_SHUTDOWN || sqlstate == ERRCODE_OUT_OF_MEMORY ||
           ERRCODE_TO_CATEGORY(sqlstate) == ERRCODE_INSUFFICIENT_RESOURCES;
}

// ---------------------------------------------------------------------------------------------------
// The statements of one shape

struct Shape {
    std::vector<int> present;  // column indexes the elements carry (touch columns excluded), sorted
    std::vector<int> compared; // present, minus key, immutable (and created_at) columns
    std::vector<size_t> ords;  // elements of this shape, in input order
};

static std::string shape_signature(const std::vector<int> &key, const Options &o, const std::vector<int> &present) {
    return fmt::format("k{}|t{}|i{}|p{}", fmt::join(key, ","), fmt::join(o.touch, ","), fmt::join(o.immutable, ","),
                       fmt::join(present, ","));
}

// "differs" for one column between the target row t and the input s.
static std::string distinct_expr(const Column &c) {
    std::string l = "t." + c.ident, r = "s." + c.ident;
    std::string eq = c.eq.empty() ? fmt::format("CAST({} AS pg_catalog.text) OPERATOR(pg_catalog.=) CAST({} AS pg_catalog.text)", l, r)
                                  : fmt::format("{} {} {}", l, c.eq, r);
    return fmt::format("(CASE WHEN {0} IS NULL THEN {1} IS NOT NULL WHEN {1} IS NULL THEN true ELSE NOT ({2}) END)", l, r, eq);
}

static Plans &plans_for(Target &t, const std::vector<int> &key, const Options &o, const Shape &shape) {
    std::string sig = shape_signature(key, o, shape.present);
    auto it = t.plans.find(sig);
    if (it != t.plans.end()) return *it->second;

    auto p = std::make_unique<Plans>();
    const std::string &ord = t.ord_alias;
    std::vector<std::string> src_cols, key_s, key_join_i, key_join_t, key_idents;
    for (int c : shape.present) src_cols.push_back("r." + t.columns[c].ident);
    for (int c : key) {
        const Column &col = t.columns[c];
        key_idents.push_back(col.ident);
        // The order rows are inserted and locked in: the same in every session. Collatable keys
        // sort bytewise (COLLATE "C"), which is cheaper than the column's collation and as fixed.
        key_s.push_back("s." + col.ident + col.lock_order);
        std::string eq = col.eq.empty() ? "OPERATOR(pg_catalog.=)" : col.eq;
        key_join_i.push_back(fmt::format("s.{0} {1} i.{0}", col.ident, eq));
        key_join_t.push_back(fmt::format("s.{0} {1} t.{0}", col.ident, eq));
    }
    // The elements as rows of the target's type: all of them (one pass over the array), or those
    // whose positions $2 lists. Either way $1 is the rows array and `ord` the element's position.
    std::string from_all = fmt::format(
        "SELECT (r.ordinality OPERATOR(pg_catalog.-) 1)::pg_catalog.int4 AS {0}, {1}"
        " FROM pg_catalog.jsonb_populate_recordset(NULL::{2}, $1) WITH ORDINALITY AS r",
        ord, fmt::join(src_cols, ", "), t.qualified);
    std::string from_some = fmt::format(
        "SELECT u.n AS {0}, {1} FROM pg_catalog.unnest($2::pg_catalog.int4[]) AS u(n),"
        " LATERAL pg_catalog.jsonb_populate_record(NULL::{2}, $1 OPERATOR(pg_catalog.->) u.n) AS r",
        ord, fmt::join(src_cols, ", "), t.qualified);
    std::vector<std::string> differs;
    for (int c : shape.compared) differs.push_back(distinct_expr(t.columns[c]));
    std::string any_differs = differs.empty() ? "false" : fmt::format("({})", fmt::join(differs, " OR "));

    // A. One probe of the key's index per element: found and equal (2), found and different (3), or
    //    not found (0): those are inserted in key order, and the ones the insert took are reported (1).
    //    An element not found whose insert met a row committed meanwhile stays 0 (another round).
    std::vector<std::string> ins_cols, ins_vals;
    for (int c : shape.present) {
        ins_cols.push_back(t.columns[c].ident);
        ins_vals.push_back("s." + t.columns[c].ident);
    }
    for (int c : o.touch) {
        ins_cols.push_back(t.columns[c].ident);
        ins_vals.push_back("pg_catalog.now()");
    }
    // The target's row for an element, looked up by its key (a LATERAL subquery with LIMIT: always a
    // probe of the key's index, never a join that could scan the table).
    std::vector<std::string> t_cols;
    for (int c : shape.compared) t_cols.push_back("t." + t.columns[c].ident);
    std::string probe_cols = t_cols.empty() ? std::string() : fmt::format(", {}", fmt::join(t_cols, ", "));
    auto statement_a = [&](const std::string &from) {
        return fmt::format(
            "WITH e AS ({from}), "
            "s AS MATERIALIZED (SELECT s.*, t.conveyor_found IS NOT NULL AS conveyor_found,"
            "  t.conveyor_found IS NOT NULL AND {differs} AS conveyor_differs"
            "  FROM e s LEFT JOIN LATERAL (SELECT true AS conveyor_found{probe_cols} FROM {t} t WHERE {join_t} LIMIT 1) t ON true), "
            "ins AS (INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM s WHERE NOT s.conveyor_found ORDER BY {keys_s}, s.{ord}"
            " ON CONFLICT ({keys}) DO NOTHING RETURNING {keys_t}) "
            "SELECT s.{ord}, CASE WHEN s.conveyor_found THEN CASE WHEN s.conveyor_differs THEN 3 ELSE 2 END"
            "                     WHEN i.{first_key} IS NOT NULL THEN 1 ELSE 0 END"
            " FROM s LEFT JOIN ins i ON {join_i} AND NOT s.conveyor_found "
            "UNION ALL SELECT pg_catalog.count(*)::pg_catalog.int4, 4 FROM ins",
            fmt::arg("from", from), fmt::arg("probe_cols", probe_cols), fmt::arg("t", t.qualified),
            fmt::arg("first_key", t.columns[key[0]].ident),
            fmt::arg("cols", fmt::join(ins_cols, ", ")), fmt::arg("vals", fmt::join(ins_vals, ", ")),
            fmt::arg("keys_s", fmt::join(key_s, ", ")), fmt::arg("ord", ord), fmt::arg("keys", fmt::join(key_idents, ", ")),
            fmt::arg("keys_t", "t." + fmt::format("{}", fmt::join(key_idents, ", t."))),
            fmt::arg("join_i", fmt::join(key_join_i, " AND ")), fmt::arg("join_t", fmt::join(key_join_t, " AND ")),
            fmt::arg("differs", any_differs));
    };
    p->sql_a_all = statement_a(from_all);
    p->sql_a = statement_a(from_some);
    // K. When the previous batch found every row: A's lookup and comparison alone, streamed (no
    //    insert, nothing kept in between); elements not found then take the way through A.
    p->sql_k = fmt::format(
        "SELECT s.{ord}, CASE WHEN t.conveyor_found IS NULL THEN 0 WHEN {differs} THEN 3 ELSE 2 END"
        " FROM ({from}) s LEFT JOIN LATERAL (SELECT true AS conveyor_found{probe_cols} FROM {t} t WHERE {join_t} LIMIT 1) t ON true",
        fmt::arg("ord", ord), fmt::arg("differs", any_differs), fmt::arg("from", from_all), fmt::arg("probe_cols", probe_cols),
        fmt::arg("t", t.qualified), fmt::arg("join_t", fmt::join(key_join_t, " AND ")));

    // B. Lock the differing rows in key order; compare again against the latest version.
    std::vector<std::string> changed;
    for (int c : shape.compared) {
        const Column &col = t.columns[c];
        changed.push_back(fmt::format(
            "CASE WHEN {0} THEN pg_catalog.jsonb_build_object({1}, pg_catalog.jsonb_build_object('old', pg_catalog.to_jsonb(t.{2}),"
            " 'new', pg_catalog.to_jsonb(s.{2}))) ELSE '{{}}'::pg_catalog.jsonb END",
            distinct_expr(col), col.literal, col.ident));
    }
    std::string changed_expr = changed.empty() ? "'{}'::pg_catalog.jsonb"
                                               : fmt::format("{}", fmt::join(changed, " OPERATOR(pg_catalog.||) "));
    // B. The elements in key order, each row locked in turn by the LATERAL subquery (a nested loop
    //    keeps the outer order); EvalPlanQual hands the latest version of a row changed meanwhile, so
    //    `differs` and `changed` are computed against it. Then the rows that still differ are updated
    //    from the same parsed elements (the UPDATE's own EvalPlanQual reaches the version B locked);
    //    it returns the positions it updated (a BEFORE UPDATE trigger may skip a row).
    std::vector<std::string> key_t, b_cols, sets;
    for (const auto &k : key_idents) key_t.push_back("t." + k);
    for (int c : key) b_cols.push_back("s." + t.columns[c].ident);
    for (int c : shape.compared) b_cols.push_back("s." + t.columns[c].ident);
    for (int c : shape.compared) sets.push_back(fmt::format("{0} = b.{0}", t.columns[c].ident));
    for (int c : o.touch) sets.push_back(fmt::format("{} = pg_catalog.now()", t.columns[c].ident));
    std::vector<std::string> key_join_b;
    for (int c : key) {
        const Column &col = t.columns[c];
        key_join_b.push_back(fmt::format("b.{0} {1} t.{0}", col.ident, col.eq.empty() ? "OPERATOR(pg_catalog.=)" : col.eq));
    }
    if (!shape.compared.empty())
        p->sql_b = fmt::format(
            "WITH e AS ({from}), "
            "b AS MATERIALIZED (SELECT s.{ord}, {b_cols}, {differs} AS conveyor_differs,"
            "  CASE WHEN $3 THEN {changed} END AS conveyor_changed,"
            "  ROW({key_t}, NULL)::pg_catalog.text AS conveyor_row"
            "  FROM (SELECT * FROM e s ORDER BY {keys_e}) s"
            "  CROSS JOIN LATERAL (SELECT {key_t}{probe_cols} FROM {t} t WHERE {join_t} FOR UPDATE) t), "
            "u AS (UPDATE {t} t SET {sets} FROM b WHERE b.conveyor_differs AND {join_b} RETURNING b.{ord}) "
            "SELECT b.{ord}, b.conveyor_differs, b.conveyor_changed, b.conveyor_row, u.{ord} IS NOT NULL"
            " FROM b LEFT JOIN u ON u.{ord} OPERATOR(pg_catalog.=) b.{ord}",
            fmt::arg("from", from_some), fmt::arg("ord", ord), fmt::arg("b_cols", fmt::join(b_cols, ", ")),
            fmt::arg("differs", any_differs), fmt::arg("changed", changed_expr), fmt::arg("key_t", fmt::join(key_t, ", ")),
            fmt::arg("keys_e", fmt::join(key_s, ", ")), fmt::arg("probe_cols", probe_cols), fmt::arg("t", t.qualified),
            fmt::arg("join_t", fmt::join(key_join_t, " AND ")), fmt::arg("sets", fmt::join(sets, ", ")),
            fmt::arg("join_b", fmt::join(key_join_b, " AND ")));
    // I. When the previous batch was all new: insert every element in key order, and nothing else
    //    (no lookup, no classification). If some were not inserted (their keys exist), the keys it
    //    returns say which were (MAP), and the others take the way through A.
    p->sql_i = fmt::format(
        "INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM pg_catalog.jsonb_populate_recordset(NULL::{t}, $1) s ORDER BY {keys_s}"
        " ON CONFLICT ({keys}) DO NOTHING RETURNING {keys_t}",
        fmt::arg("t", t.qualified), fmt::arg("cols", fmt::join(ins_cols, ", ")), fmt::arg("vals", fmt::join(ins_vals, ", ")),
        fmt::arg("keys_s", fmt::join(key_s, ", ")),
        fmt::arg("keys", fmt::join(key_idents, ", ")), fmt::arg("keys_t", "t." + fmt::format("{}", fmt::join(key_idents, ", t."))));
    std::vector<std::string> unnests;
    std::vector<Oid> map_types{JSONBOID, INT4ARRAYOID};
    for (size_t k = 0; k < key.size(); ++k) {
        Oid elem = t.columns[key[k]].type_oid;
        Oid arr = pg_guard([&] { return get_array_type(elem); });
        if (!OidIsValid(arr)) {
            p->sql_i.clear();
            break;
        }
        p->key_array_types.push_back(arr);
        map_types.push_back(arr);
        unnests.push_back(fmt::format("pg_catalog.unnest(${})", k + 3));
    }
    if (!p->sql_i.empty())
        p->sql_map = fmt::format(
            "SELECT s.{ord} FROM ({from}) s JOIN ROWS FROM ({unnests}) AS i({keys}) ON {join_i}",
            fmt::arg("ord", ord), fmt::arg("from", from_all), fmt::arg("unnests", fmt::join(unnests, ", ")),
            fmt::arg("keys", fmt::join(key_idents, ", ")), fmt::arg("join_i", fmt::join(key_join_i, " AND ")));

    std::initializer_list<Oid> types{JSONBOID, INT4ARRAYOID};
    if (!p->sql_i.empty()) {
        p->i = std::make_unique<Statement>(p->sql_i.c_str(), types);
        p->map = std::make_unique<Statement>(p->sql_map.c_str(), map_types);
    }
    p->a_all = std::make_unique<Statement>(p->sql_a_all.c_str(), types);
    p->k = std::make_unique<Statement>(p->sql_k.c_str(), types);
    p->a = std::make_unique<Statement>(p->sql_a.c_str(), types);
    if (!p->sql_b.empty())
        p->b = std::make_unique<Statement>(p->sql_b.c_str(), std::initializer_list<Oid>{JSONBOID, INT4ARRAYOID, BOOLOID});
    return *t.plans.emplace(sig, std::move(p)).first->second;
}

// ---------------------------------------------------------------------------------------------------
// One call

// skipped: a BEFORE ROW trigger on the target returned NULL for the element's insert or update.
enum Action : char { none = 0, inserted = 'i', updated = 'u', unchanged = '=', skipped = 's' };

struct Outcome {
    Action action = none;
    Datum changed = (Datum)0;  // jsonb, for updated rows
};

struct Call {
    std::shared_ptr<Target> t;  // held for the whole call (see `retired`)
    std::vector<int> key;
    Options opt;
    Jsonb *rows = nullptr;
    std::vector<Element> elements;
    std::vector<JsonbValue> key_values;  // element i's key column k at [i * key.size() + k]
    std::vector<Shape> shapes;
    std::vector<Outcome> out;
    std::vector<uint8_t> misses;  // rounds in which element i was neither found nor inserted
    bool rls = false;
    bool want_changed = true;  // false: only counts are returned, and nothing records what changed
};

static std::string key_text(const Call &call, size_t i) {
    std::vector<std::string> parts;
    for (size_t k = 0; k < call.key.size(); ++k) {
        std::string v;
        append_input_text(v, call.key_values[i * call.key.size() + k]);
        parts.push_back(fmt::format("{}={}", call.t->columns[call.key[k]].name, v));
    }
    return fmt::format("{}", fmt::join(parts, ", "));
}

// The fields of element i that are columns to write, (column, value) in storage order (error paths).
static std::vector<std::pair<int, JsonbValue>> fields_of(const Call &call, size_t i) {
    const JsonbContainer *obj = call.elements[i].obj;
    uint32 nf = JsonContainerSize(obj);
    std::vector<JsonbValue> kv(2 * nf);
    JsonbValue *dst = kv.data();
    pg_guard([&] {
        JsonbIterator *it = JsonbIteratorInit(const_cast<JsonbContainer *>(obj));
        JsonbValue v;
        JsonbIteratorToken tok;
        uint32 k = 0;
        while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
            if (tok == WJB_KEY || tok == WJB_VALUE) dst[k++] = v;
    });
    std::vector<std::pair<int, JsonbValue>> out;
    for (uint32 f = 0; f < nf; ++f) {
        auto it = call.t->by_name.find(std::string(kv[2 * f].val.string.val, kv[2 * f].val.string.len));
        if (it == call.t->by_name.end() || std::binary_search(call.opt.touch.begin(), call.opt.touch.end(), it->second)) continue;
        out.emplace_back(it->second, kv[2 * f + 1]);
    }
    return out;
}

// Upserts the elements `ords` (all of one shape) until each has an outcome.
// B: locks, compares again and updates the elements `differ` (whose rows A or K found different).
static void run_b(Call &call, Plans &p, std::vector<int32> &differ) {
    std::sort(differ.begin(), differ.end());
    auto b = p.b->run(Params().datum(0, PointerGetDatum(call.rows)).int4_array(1, differ).boolean(2, call.want_changed));
    std::map<std::string, int32> by_key;
    for (uint64 r = 0; r < b.size(); ++r) {
        int32 n = *b.int4(r, 0);
        std::string row_key = *b.text(r, 3);
        auto [it, fresh] = by_key.emplace(row_key, n);
        if (!fresh)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                        fmt::format("{} and {} have the same key", at(std::min(it->second, n)), at(std::max(it->second, n))),
                        "Their key values are equal for the key column's type.", "Send each key once per batch.");
        Outcome &o = call.out[n];
        if (!*b.boolean(r, 1)) {
            o.action = unchanged;
        } else if (*b.boolean(r, 4)) {
            o.action = updated;
            bool no_changes;
            Datum changed = b.datum(r, 2, &no_changes);
            o.changed = no_changes ? (Datum)0 : changed;
        } else if (call.rls) {
            // Locked, yet not updated: an UPDATE policy's USING clause hides the row.
            throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                        fmt::format("{}: row-level security does not let you update the row of {} with key ({})", at(n),
                                    call.t->display, key_text(call, n)),
                        "", "Only rows your policies let you see and update can be upserted.");
        } else {
            // Locked, yet not updated: a BEFORE UPDATE trigger returned NULL for it.
            o.action = skipped;
        }
    }
}

static std::vector<int32> without_outcome(const Call &call, const std::vector<int32> &ords) {
    std::vector<int32> rest;
    for (int32 n : ords)
        if (call.out[n].action == none) rest.push_back(n);
    return rest;
}

// The insert returned keys that are not the elements' own: two elements equal for the key column's type,
// or a BEFORE INSERT trigger that changed a key (the row cannot be told apart from its element).
static Error inserted_unmatched(const Call &call) {
    if (call.t->before_insert_trigger)
        return Error(ERRCODE_TRIGGERED_ACTION_EXCEPTION,
                     fmt::format("a BEFORE INSERT trigger on {} changed the key of a row upsert inserted", call.t->display),
                     "upsert tells each inserted row's element by its key, as given.",
                     "Leave the key columns as they are in the trigger, or normalise the keys before the call.");
    return Error(ERRCODE_INVALID_PARAMETER_VALUE, "rows holds two elements with the same key",
                 "Their key values differ as text but are equal for the key column's type.", "Send each key once per batch.");
}

// I: inserts every element; returns false if some were not inserted (those are left without outcome).
static bool run_i(Call &call, Plans &p) {
    Datum rows = PointerGetDatum(call.rows);
    auto ins = p.i->run(Params().datum(0, rows));
    uint64 n = ins.size();
    if (n == call.elements.size()) {
        for (auto &o : call.out) o.action = inserted;
        return true;
    }
    if (n == 0) return false;
    // MAP: which elements the returned keys belong to.
    Params mp;
    mp.datum(0, rows).null(1);
    for (size_t k = 0; k < call.key.size(); ++k) {
        std::vector<Datum> vals(n);
        for (uint64 r = 0; r < n; ++r) vals[r] = ins.datum(r, (int)k);
        Oid elem = call.t->columns[call.key[k]].type_oid;
        Datum *vp = vals.data();
        mp.datum((int)k + 2, pg_guard([&] {
            int16 typlen;
            bool byval;
            char align;
            get_typlenbyvalalign(elem, &typlen, &byval, &align);
            return PointerGetDatum(construct_array(vp, (int)n, elem, typlen, byval, align));
        }));
    }
    auto m = p.map->run(mp);
    if (m.size() != n) throw inserted_unmatched(call);
    for (uint64 r = 0; r < m.size(); ++r) call.out[*m.int4(r, 0)].action = inserted;
    return false;
}

// K: classifies every element without writing; runs B for the differing ones.
static void run_k(Call &call, Plans &p) {
    auto k = p.k->run(Params().datum(0, PointerGetDatum(call.rows)));
    std::vector<int32> differ;
    for (uint64 r = 0; r < k.size(); ++r) {
        int32 n = *k.int4(r, 0);
        int32 code = *k.int4(r, 1);
        if (code == 2) call.out[n].action = unchanged;
        else if (code == 3) differ.push_back(n);
    }
    if (!differ.empty()) run_b(call, p, differ);
}

// Upserts the elements `ords` (all of one shape) until each has an outcome.
static void run_shape(Call &call, const Shape &shape, const std::vector<size_t> &ords) {
    Plans &p = plans_for(*call.t, call.key, call.opt, shape);
    std::vector<int32> pending(ords.begin(), ords.end());
    Datum rows = PointerGetDatum(call.rows);
    int rounds = call.rls ? 2 : max_rounds;
    // The whole batch is of this shape: the previous batch's outcome picks the first statement.
    bool all = pending.size() == call.elements.size();
    if (all && p.insert_first && p.i) {
        if (run_i(call, p)) return;  // all new again
        pending = without_outcome(call, pending);
        all = false;
    } else if (all && p.classify_first) {
        run_k(call, p);
        pending = without_outcome(call, pending);
        all = false;
    }
    for (int round = 0; round < rounds && !pending.empty(); ++round) {
        // A. (All elements of the batch, in order: one pass over the array.)
        all = all && round == 0;
        auto a = (all ? p.a_all : p.a)->run(Params().datum(0, rows).int4_array(1, pending));
        std::vector<int32> differ;
        int64 marked_inserted = 0, really_inserted = 0;
        // Not found, and not inserted either: an insert that met a row committed meanwhile (found in
        // the next round), or one a BEFORE INSERT trigger skipped (twice in a row: it skips it).
        for (uint64 r = 0; r < a.size(); ++r) {
            int32 n = *a.int4(r, 0);
            int32 code = *a.int4(r, 1);
            if (code == 4) {
                really_inserted = n;
                continue;
            }
            Outcome &o = call.out[n];
            if (code == 1) {
                o.action = inserted;
                ++marked_inserted;
            } else if (code == 2) {
                o.action = unchanged;
            } else if (code == 3) {
                differ.push_back(n);
            } else if (code == 0 && call.t->before_insert_trigger && !call.rls && ++call.misses[n] >= 2) {
                o.action = skipped;
            }
        }
        if (marked_inserted != really_inserted) throw inserted_unmatched(call);
        if (!differ.empty()) run_b(call, p, differ);
        pending = without_outcome(call, pending);
    }
    if (!pending.empty()) {
        size_t first = *std::min_element(pending.begin(), pending.end());
        if (call.rls)
            throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                        fmt::format("{}: a row of {} with key ({}) exists, but row-level security hides it from you", at(first),
                                    call.t->display, key_text(call, first)),
                        "", "Only rows your policies let you see and update can be upserted.");
        throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE,
                    fmt::format("{}: the row with key ({}) kept changing concurrently", at(first), key_text(call, first)), "",
                    "Retry the transaction.");
    }
    // What this batch was decides how the next one of the shape starts.
    if (ords.size() == call.elements.size() && !ords.empty()) {
        size_t ins = 0;
        for (size_t o : ords) ins += call.out[o].action == inserted;
        p.insert_first = ins == ords.size();
        p.classify_first = ins == 0;
    }
}

static void run_all(Call &call) {
    for (const auto &shape : call.shapes) run_shape(call, shape, shape.ords);
}

// The batch failed with `error`: find the first element that fails alone and, for a value that
// does not convert, its column. Returns the error to raise.
static ErrorData *trace_error(Call &call, ErrorData *error) {
    if (passes_through(error->sqlerrcode)) return error;
    std::vector<Outcome> saved = call.out;
    for (size_t s = 0; s < call.shapes.size(); ++s) {
        for (size_t i : call.shapes[s].ords) {
            ErrorData *e = try_and_roll_back([&] {
                std::fill(call.out.begin(), call.out.end(), Outcome{});
                std::fill(call.misses.begin(), call.misses.end(), 0);
                run_shape(call, call.shapes[s], {i});
            });
            if (!e) continue;
            if (passes_through(e->sqlerrcode)) return e;
            // A value that does not fit its column: which one?
            for (const auto &[col, v] : fields_of(call, i)) {
                Datum value = jsonb_value_datum(v);
                std::string sql = fmt::format("SELECT 1 FROM pg_catalog.jsonb_populate_record(NULL::{},"
                                              " pg_catalog.jsonb_build_object($1::pg_catalog.text, $2::pg_catalog.jsonb))",
                                              call.t->qualified);
                const std::string &name = call.t->columns[col].name;
                ErrorData *ce = try_and_roll_back([&] { spi::run_once(sql, {TEXTOID, JSONBOID}, Params().text(0, name).datum(1, value)); });
                if (!ce) continue;
                std::string message = fmt::format("{}.{}: not a valid {}", at(i), name, call.t->columns[col].type);
                std::string detail = ce->message ? ce->message : "";
                std::string hint = ce->detail ? ce->detail : "";
                throw Error(ERRCODE_INVALID_PARAMETER_VALUE, message, detail, hint);
            }
            // Otherwise the original error (its SQLSTATE, detail, constraint), named by its element.
            const char *prefix_msg = e->message ? e->message : "";
            std::string msg = fmt::format("{}: {}", at(i), prefix_msg);
            std::string hint;
            if (e->sqlerrcode == ERRCODE_NOT_NULL_VIOLATION && e->column_name) {
                std::string col = e->column_name;
                bool given = false;
                for (const auto &[c, v] : fields_of(call, i))
                    if (call.t->columns[c].name == col) given = true;
                if (!given) hint = fmt::format("{} has no {} and the column has no default: give it a value.", at(i), quoted(col));
            }
            // Without the context line: the generated SQL says nothing the message does not.
            return reworded(e, msg, hint);
        }
    }
    call.out = saved;
    return error;
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
    } needs[] = {{ACL_INSERT, "INSERT", &ins}, {ACL_UPDATE, "UPDATE", &upd}, {ACL_SELECT, "SELECT", &sel}};
    Oid relid = t.relid;
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
// Entry points

// The stored result of an operation: {"inserted": n, "updated": n, "unchanged": n, "skipped": n, "rows": [...]}.
struct Result {
    int64 counts[4] = {0, 0, 0, 0};
};

static Datum build_key(const Call &call, size_t i) {
    struct Pair {
        const char *name;
        int len;
        const JsonbValue *value;
    };
    std::vector<Pair> pairs;
    for (size_t k = 0; k < call.key.size(); ++k) {
        const std::string &name = call.t->columns[call.key[k]].name;
        pairs.push_back({name.c_str(), (int)name.size(), &call.key_values[i * call.key.size() + k]});
    }
    Pair *ps = pairs.data();
    size_t n = pairs.size();
    return pg_guard([&] {
        JsonbParseState *st = NULL;
        pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
        for (size_t k = 0; k < n; ++k) {
            JsonbValue key;
            key.type = jbvString;
            key.val.string.val = const_cast<char *>(ps[k].name);
            key.val.string.len = ps[k].len;
            pushJsonbValue(&st, WJB_KEY, &key);
            pushJsonbValue(&st, WJB_VALUE, const_cast<JsonbValue *>(ps[k].value));
        }
        JsonbValue *res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
        return JsonbPGetDatum(JsonbValueToJsonb(res));
    });
}

static const char *action_name(Action a) {
    switch (a) {
    case inserted: return "inserted";
    case updated: return "updated";
    case skipped: return "skipped";
    default: return "unchanged";
    }
}

static Datum cstring_jsonb(const std::string &s) {
    const char *p = s.c_str();
    return pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(p)); });
}

// Reads and checks the arguments and every element; nothing is written.
static void prepare(Call &call, FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "target must not be NULL");
    if (PG_ARGISNULL(1)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "rows must not be NULL");
    if (PG_ARGISNULL(2)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "key_columns must not be NULL");
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
    Jsonb *options = PG_ARGISNULL(3) ? nullptr : pg_guard([&] { return PG_GETARG_JSONB_P(3); });
    call.opt = parse_options(t, options);
    for (int c : call.opt.touch)
        if (std::binary_search(call.key.begin(), call.key.end(), c))
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("key column {} cannot be a touch column", quoted(t.columns[c].name)));

    call.rows = pg_guard([&] { return PG_GETARG_JSONB_P(1); });
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
    for (size_t i = 0; i < n; ++i) {
        const JsonbValue &e = values[i];
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
        auto [dup, fresh] = seen_keys.emplace(ktext, i);
        if (!fresh)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} and {} have the same key ({})", at(dup->second), at(i), key_text(call, i)),
                        "A batch holds each key once: which element should win is not defined.",
                        "Merge or drop the repeated elements before the call.");
        if (i == 0 || present != last_present) {
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
        call.shapes[last_shape].ords.push_back(i);
    }
    call.rls = pg_guard([&] { return check_enable_rls(relid, InvalidOid, true); }) == RLS_ENABLED;
    check_privileges(call);
}

// The request an operation_id stands for: a repeat with other rows, keys or options is CV004.
static Datum request_of(const Call &call, FunctionCallInfo fcinfo, bool counts_only) {
    Jsonb *rows = call.rows;
    uint64 h = hash64(std::string_view((const char *)VARDATA(rows), VARSIZE(rows) - VARHDRSZ));
    std::vector<std::string> keys;
    for (int c : call.key) keys.push_back(call.t->columns[c].name);
    std::string opts = "null";
    if (!PG_ARGISNULL(3)) {
        Jsonb *o = pg_guard([&] { return PG_GETARG_JSONB_P(3); });
        opts = pg_guard([&] { return (const char *)JsonbToCString(NULL, &o->root, VARSIZE(o)); });
    }
    const char *tbl = call.t->display.c_str();
    std::string table = pg_guard([&] {
        StringInfoData buf;
        initStringInfo(&buf);
        escape_json(&buf, tbl);
        return (const char *)buf.data;
    });
    std::string keys_json;
    for (size_t k = 0; k < keys.size(); ++k) {
        const char *kk = keys[k].c_str();
        keys_json += (k ? "," : "") + std::string(pg_guard([&] {
                         StringInfoData buf;
                         initStringInfo(&buf);
                         escape_json(&buf, kk);
                         return (const char *)buf.data;
                     }));
    }
    return cstring_jsonb(fmt::format("{{\"function\": \"{}\", \"table\": {}, \"key_columns\": [{}], \"rows_xxh3\": \"{:016x}\", \"options\": {}}}",
                                     counts_only ? "upsert_counts" : "upsert", table, keys_json, h, opts));
}

static void emit_counts(ResultSet &out, const int64 counts[4]) {
    Datum values[4] = {Int64GetDatum(counts[0]), Int64GetDatum(counts[1]), Int64GetDatum(counts[2]), Int64GetDatum(counts[3])};
    bool nulls[4] = {false, false, false, false};
    out.add(values, nulls);
}

static void write_audit(const Call &call) {
    std::vector<Datum> keys, changes;
    std::vector<std::string> actions;
    for (size_t i = 0; i < call.out.size(); ++i) {
        const Outcome &o = call.out[i];
        if (o.action != inserted && o.action != updated) continue;
        keys.push_back(build_key(call, i));
        actions.push_back(action_name(o.action));
        changes.push_back(o.action == updated && o.changed ? o.changed : cstring_jsonb("null"));
    }
    if (keys.empty()) return;
    static Statement stmt(
        "INSERT INTO conveyor.change_log (at, target, key, action, changed, operation_id, changed_by)"
        " SELECT pg_catalog.clock_timestamp(), $1, u.key, u.action,"
        "        CASE WHEN u.action = 'updated' THEN u.changed END, $5, $6"
        " FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.jsonb[]), pg_catalog.unnest($3::pg_catalog.text[]),"
        "                 pg_catalog.unnest($4::pg_catalog.jsonb[])) AS u(key, action, changed)",
        {TEXTOID, JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TEXTOID, TEXTOID});
    Oid user = GetUserId();
    std::string caller = pg_guard([&] { return (const char *)GetUserNameFromId(user, false); });
    OwnerScope owner;
    stmt.run(Params()
                 .text(0, call.t->display)
                 .jsonb_array(1, keys)
                 .text_array(2, actions)
                 .jsonb_array(3, changes)
                 .text(4, call.opt.operation_id)
                 .text(5, caller));
}

static Datum run_upsert(FunctionCallInfo fcinfo, bool counts_only) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    Call call;
    prepare(call, fcinfo);
    call.want_changed = !counts_only || call.opt.audit;

    // An operation done before: its result, and nothing written.
    std::string scope = "upsert", idem_key;
    if (call.opt.operation_id) {
        idem_key = fmt::format("{}:{}", call.t->relid, *call.opt.operation_id);
        Datum request = request_of(call, fcinfo, counts_only);
        idempotency::Claim claim;
        {
            OwnerScope owner;
            try {
                claim = idempotency::begin(scope, idem_key, request, 86400);
            } catch (const Error &e) {
                if (e.sqlstate != errcode_idempotency_reused) throw;
                throw Error(errcode_idempotency_reused,
                            fmt::format("operation_id {} was already used with a different request", quoted(*call.opt.operation_id)),
                            "An operation_id names one call: its table, rows, key_columns and options.",
                            "Use a new operation_id for new data.");
            }
        }
        if (!claim.acquired) {
            if (claim.state != "completed" || claim.result_null)
                throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                            fmt::format("operation {} is still in progress", quoted(*call.opt.operation_id)), "",
                            "Retry when the first call's transaction has ended.");
            Jsonb *stored = (Jsonb *)DatumGetPointer(claim.result);
            static Statement replay(
                "SELECT (r OPERATOR(pg_catalog.->>) 0)::pg_catalog.int4, r OPERATOR(pg_catalog.->) 1, r OPERATOR(pg_catalog.->>) 2,"
                "       CASE WHEN pg_catalog.jsonb_typeof(r OPERATOR(pg_catalog.->) 3) OPERATOR(pg_catalog.<>) 'null'"
                "            THEN r OPERATOR(pg_catalog.->) 3 END"
                " FROM pg_catalog.jsonb_array_elements($1 OPERATOR(pg_catalog.->) 'rows') AS e(r)",
                {JSONBOID});
            static Statement counts(
                "SELECT ($1 OPERATOR(pg_catalog.->>) 'inserted')::pg_catalog.int8, ($1 OPERATOR(pg_catalog.->>) 'updated')::pg_catalog.int8,"
                "       ($1 OPERATOR(pg_catalog.->>) 'unchanged')::pg_catalog.int8,"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'skipped')::pg_catalog.int8, 0)",
                {JSONBOID});
            auto rows = (counts_only ? counts : replay).run(Params().datum(0, PointerGetDatum(stored)));
            std::vector<Datum> values(4);
            bool nulls[4];
            for (uint64 r = 0; r < rows.size(); ++r) {
                for (int c = 0; c < out.natts(); ++c) values[c] = rows.datum(r, c, &nulls[c]);
                out.add(values.data(), nulls);
            }
            spi.finish();
            return (Datum)0;
        }
    }

    // The fence: the lease must be the live holder's for the whole transaction.
    if (call.opt.fence_key) {
        bool live;
        {
            OwnerScope owner;
            live = locks::lock_token_is_live(*call.opt.fence_key, call.opt.fence_token);
        }
        if (!live)
            throw Error(errcode_lease_lost,
                        fmt::format("lease {} is no longer held with token {}", quoted(*call.opt.fence_key), call.opt.fence_token),
                        "The lease expired or was taken over; nothing was written.",
                        "Stop working on this entity: another worker holds it now.");
    }

    try {
        in_subtransaction([&] { run_all(call); });
    } catch (const PgError &e) {
        ErrorData *traced = trace_error(call, e.data);
        throw PgError(traced);
    }

    if (call.opt.audit) write_audit(call);

    int64 counts[4] = {0, 0, 0, 0};
    for (const auto &o : call.out) ++counts[o.action == inserted ? 0 : o.action == updated ? 1 : o.action == skipped ? 3 : 2];

    std::vector<Datum> keys;
    if (!counts_only || call.opt.operation_id)
        for (size_t i = 0; i < call.out.size(); ++i) keys.push_back(build_key(call, i));

    if (call.opt.operation_id) {
        // {"inserted": n, "updated": n, "unchanged": n, "skipped": n, "rows": [[ord, key, action, changed], ...]}
        static Statement result(
            "SELECT pg_catalog.jsonb_build_object('inserted', $1::pg_catalog.int8, 'updated', $2::pg_catalog.int8,"
            " 'unchanged', $3::pg_catalog.int8, 'skipped', $8::pg_catalog.int8, 'rows', CASE WHEN $7 THEN '[]'::pg_catalog.jsonb ELSE"
            " (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(u.ord - 1, u.key, u.action, u.changed) ORDER BY u.ord),"
            "                  '[]'::pg_catalog.jsonb)"
            "  FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.text[]),"
            "                  pg_catalog.unnest($6::pg_catalog.jsonb[])) WITH ORDINALITY AS u(key, action, changed, ord)) END)",
            {INT8OID, INT8OID, INT8OID, JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, BOOLOID, INT8OID});
        std::vector<std::string> actions;
        std::vector<Datum> changes;
        Datum json_null = cstring_jsonb("null");
        for (const auto &o : call.out) {
            actions.push_back(action_name(o.action));
            changes.push_back(o.action == updated && o.changed ? o.changed : json_null);
        }
        auto r = result.run(Params()
                                .int8(0, counts[0])
                                .int8(1, counts[1])
                                .int8(2, counts[2])
                                .jsonb_array(3, keys)
                                .text_array(4, actions)
                                .jsonb_array(5, changes)
                                .boolean(6, counts_only)
                                .int8(7, counts[3]));
        Datum stored = r.datum(0, 0);
        OwnerScope owner;
        idempotency::finish(scope, idem_key, stored);
    }

    if (counts_only) {
        emit_counts(out, counts);
    } else {
        Datum values[4];
        bool nulls[4] = {false, false, false, false};
        for (size_t i = 0; i < call.out.size(); ++i) {
            const Outcome &o = call.out[i];
            values[0] = Int32GetDatum((int32)i);
            values[1] = keys[i];
            const char *a = action_name(o.action);
            values[2] = pg_guard([&] { return PointerGetDatum(cstring_to_text(a)); });
            values[3] = o.changed;
            nulls[3] = o.action != updated || !o.changed;
            out.add(values, nulls);
        }
    }
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_upsert) { return run_upsert(fcinfo, false); }

CONVEYOR_FUNCTION(conveyor_upsert_counts) { return run_upsert(fcinfo, true); }

} // namespace conveyor::upsert
