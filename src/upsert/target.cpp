// The target table, as the catalog describes it: cached per backend, retired on relcache invalidation.
//
// Descriptions are shared: every call holds the one it uses for as long as it runs. A call on the
// stack (an upsert whose target's trigger calls upsert again, after a GRANT or ANALYZE invalidated the
// table) may still be executing the kept statements of a description that a later call found stale:
// such a description is retired, and its plans are freed only once no call holds it any more.
#include <algorithm>

#include "upsert/internal.hpp"
#include "upsert/upsert.hpp"

extern "C" {
#include "access/genam.h"
#include "access/relation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
}

namespace conveyor::upsert {

// The current description of each target.
static std::unordered_map<Oid, std::shared_ptr<Target>> targets;
// Stale descriptions taken out of `targets`; their plans are freed once no call holds them.
static std::vector<std::shared_ptr<Target>> retired;

// Relcache invalidation of a target (ALTER TABLE, CREATE INDEX, ...): its description and kept
// statements are dropped at the next call (never here: a statement may be running).
static void target_changed(Datum, Oid relid) {
    for (auto &[oid, t] : targets)
        if (relid == InvalidOid || oid == relid) t->stale = true;
}

void register_callbacks() {
    pg_guard([] { CacheRegisterRelcacheCallback(target_changed, (Datum)0); });
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

void Statements::release() {
    for (Kept *k : {&probe_all, &probe_some, &lock_compare_update, &insert_first, &map_inserted_keys, &classify, &classify_some, &returning})
        if (k->statement) k->statement->release();
}

static void release_plans(Target &t) {
    for (auto &[sig, p] : t.plans) p->release();
    t.plans.clear();
}

std::shared_ptr<Target> target_for(Oid relid) {
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

} // namespace conveyor::upsert
