// The statements of one shape (the set of columns a batch's elements carry), generated once per
// (target, shape, options) and kept: Probe-and-insert, Classify, Lock-compare-update, Insert-first and
// Map-inserted-keys (internal.hpp says what each does; run.cpp runs them).
//
// Every statement reads the elements from the rows array itself ($1) with jsonb_populate_record(set)
// as rows of the target's type, so PostgreSQL converts each value with its column's input function.
#include "upsert/internal.hpp"

namespace conveyor::upsert {

static std::string shape_signature(const std::vector<int> &key, const Options &o, const std::vector<int> &present) {
    return fmt::format("k{}|t{}|i{}|p{}|u{}", fmt::join(key, ","), fmt::join(o.touch, ","), fmt::join(o.immutable, ","),
                       fmt::join(present, ","), o.touch_unchanged ? 1 : 0);
}

// "differs" for one column between the target row t and the input s.
static std::string distinct_expr(const Column &c) {
    std::string l = "t." + c.ident, r = "s." + c.ident;
    std::string eq = c.eq.empty() ? fmt::format("CAST({} AS pg_catalog.text) OPERATOR(pg_catalog.=) CAST({} AS pg_catalog.text)", l, r)
                                  : fmt::format("{} {} {}", l, c.eq, r);
    return fmt::format("(CASE WHEN {0} IS NULL THEN {1} IS NOT NULL WHEN {1} IS NULL THEN true ELSE NOT ({2}) END)", l, r, eq);
}

// A classification code as the statements spell it.
static int code(Classification c) { return (int)c; }

Statements &statements_for(Target &t, const std::vector<int> &key, const Options &o, const Shape &shape) {
    std::string sig = shape_signature(key, o, shape.present);
    auto it = t.plans.find(sig);
    if (it != t.plans.end()) return *it->second;

    auto p = std::make_unique<Statements>();
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

    // Probe-and-insert. One probe of the key's index per element: found and equal (unchanged), found
    //    and different (differs), or not found (not_found): those are inserted in key order, and the
    //    ones the insert took are reported (inserted). An element not found whose insert met a row
    //    committed meanwhile stays not_found (another round). A last row (count, insert_count) says
    //    how many rows the insert took.
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
    auto probe_and_insert = [&](const std::string &from) {
        return fmt::format(
            "WITH e AS ({from}), "
            "s AS MATERIALIZED (SELECT s.*, t.conveyor_found IS NOT NULL AS conveyor_found,"
            "  t.conveyor_found IS NOT NULL AND {differs} AS conveyor_differs"
            "  FROM e s LEFT JOIN LATERAL (SELECT true AS conveyor_found{probe_cols} FROM {t} t WHERE {join_t} LIMIT 1) t ON true), "
            "ins AS (INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM s WHERE NOT s.conveyor_found ORDER BY {keys_s}, s.{ord}"
            " ON CONFLICT ({keys}) DO NOTHING RETURNING {keys_t}) "
            "SELECT s.{ord}, CASE WHEN s.conveyor_found THEN CASE WHEN s.conveyor_differs THEN {differs_code} ELSE {unchanged_code} END"
            "                     WHEN i.{first_key} IS NOT NULL THEN {inserted_code} ELSE {not_found_code} END"
            " FROM s LEFT JOIN ins i ON {join_i} AND NOT s.conveyor_found "
            "UNION ALL SELECT pg_catalog.count(*)::pg_catalog.int4, {insert_count_code} FROM ins",
            fmt::arg("from", from), fmt::arg("probe_cols", probe_cols), fmt::arg("t", t.qualified),
            fmt::arg("first_key", t.columns[key[0]].ident),
            fmt::arg("cols", fmt::join(ins_cols, ", ")), fmt::arg("vals", fmt::join(ins_vals, ", ")),
            fmt::arg("keys_s", fmt::join(key_s, ", ")), fmt::arg("ord", ord), fmt::arg("keys", fmt::join(key_idents, ", ")),
            fmt::arg("keys_t", "t." + fmt::format("{}", fmt::join(key_idents, ", t."))),
            fmt::arg("join_i", fmt::join(key_join_i, " AND ")), fmt::arg("join_t", fmt::join(key_join_t, " AND ")),
            fmt::arg("differs", any_differs), fmt::arg("differs_code", code(Classification::differs)),
            fmt::arg("unchanged_code", code(Classification::unchanged)), fmt::arg("inserted_code", code(Classification::inserted)),
            fmt::arg("not_found_code", code(Classification::not_found)),
            fmt::arg("insert_count_code", code(Classification::insert_count)));
    };
    p->probe_all.sql = probe_and_insert(from_all);
    p->probe_some.sql = probe_and_insert(from_some);
    // Classify. When the previous batch found every row: Probe-and-insert's lookup and comparison
    //    alone, streamed (no insert, nothing kept in between): not_found, differs or unchanged.
    //    Elements not found then take the way through Probe-and-insert.
    //    classify_some: the same over the positions $2 lists, for mode 'update', which never inserts
    //    (prepared on first use).
    auto classify = [&](const std::string &from) {
        return fmt::format(
            "SELECT s.{ord}, CASE WHEN t.conveyor_found IS NULL THEN {not_found_code} WHEN {differs} THEN {differs_code} ELSE {unchanged_code} END"
            " FROM ({from}) s LEFT JOIN LATERAL (SELECT true AS conveyor_found{probe_cols} FROM {t} t WHERE {join_t} LIMIT 1) t ON true",
            fmt::arg("ord", ord), fmt::arg("differs", any_differs), fmt::arg("from", from), fmt::arg("probe_cols", probe_cols),
            fmt::arg("t", t.qualified), fmt::arg("join_t", fmt::join(key_join_t, " AND ")),
            fmt::arg("not_found_code", code(Classification::not_found)), fmt::arg("differs_code", code(Classification::differs)),
            fmt::arg("unchanged_code", code(Classification::unchanged)));
    };
    p->classify.sql = classify(from_all);
    p->classify_some.sql = classify(from_some);

    // Lock-compare-update's report of what changed: {"column": {"old": ..., "new": ...}, ...} over the
    //    compared columns that differ.
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
    // Lock-compare-update. The elements in key order, each row locked in turn by the LATERAL subquery
    //    (a nested loop keeps the outer order); EvalPlanQual hands the latest version of a row changed
    //    meanwhile, so `differs` and `changed` are computed against it. Then the rows that still
    //    differ are updated from the same parsed elements (the UPDATE's own EvalPlanQual reaches the
    //    version the lock took); it returns the positions it updated (a BEFORE UPDATE trigger may
    //    skip a row). $3: whether to compute `changed` at all.
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
        p->lock_compare_update.sql = fmt::format(
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
    // Touch-unchanged (option touch_unchanged). The elements found unchanged, in key order, each row
    //    locked in turn and compared again against its latest version; the rows still equal get
    //    their touch columns set to now() and nothing else (UPDATE on the touch columns is all it
    //    needs). Returns each locked element's position, whether it now differs (a concurrent change:
    //    to Lock-compare-update) and whether it was touched (row-level security or a BEFORE UPDATE
    //    trigger may keep it from it).
    if (o.touch_unchanged) {
        std::vector<std::string> touch_sets;
        for (int c : o.touch) touch_sets.push_back(fmt::format("{} = pg_catalog.now()", t.columns[c].ident));
        p->touch_unchanged.sql = fmt::format(
            "WITH e AS ({from}), "
            "b AS MATERIALIZED (SELECT s.{ord}, {b_cols}, {differs} AS conveyor_differs"
            "  FROM (SELECT * FROM e s ORDER BY {keys_e}) s"
            "  CROSS JOIN LATERAL (SELECT {key_t}{probe_cols} FROM {t} t WHERE {join_t} FOR UPDATE) t), "
            "u AS (UPDATE {t} t SET {sets} FROM b WHERE NOT b.conveyor_differs AND {join_b} RETURNING b.{ord}) "
            "SELECT b.{ord}, b.conveyor_differs, u.{ord} IS NOT NULL FROM b LEFT JOIN u ON u.{ord} OPERATOR(pg_catalog.=) b.{ord}",
            fmt::arg("from", from_some), fmt::arg("ord", ord), fmt::arg("b_cols", fmt::join(b_cols, ", ")),
            fmt::arg("differs", any_differs), fmt::arg("key_t", fmt::join(key_t, ", ")), fmt::arg("keys_e", fmt::join(key_s, ", ")),
            fmt::arg("probe_cols", probe_cols), fmt::arg("t", t.qualified), fmt::arg("join_t", fmt::join(key_join_t, " AND ")),
            fmt::arg("sets", fmt::join(touch_sets, ", ")), fmt::arg("join_b", fmt::join(key_join_b, " AND ")));
    }
    // Insert-first. When the previous batch was all new: insert every element in key order, and
    //    nothing else (no lookup, no classification). If some were not inserted (their keys exist),
    //    Map-inserted-keys tells which were from the keys it returns, and the others take the way
    //    through Probe-and-insert.
    p->insert_first.sql = fmt::format(
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
            p->insert_first.sql.clear();
            break;
        }
        map_types.push_back(arr);
        unnests.push_back(fmt::format("pg_catalog.unnest(${})", k + 3));
    }
    // Map-inserted-keys. The positions of the elements whose keys ($3, $4, ...: one array per key
    //    column) Insert-first returned.
    if (!p->insert_first.sql.empty())
        p->map_inserted_keys.sql = fmt::format(
            "SELECT s.{ord} FROM ({from}) s JOIN ROWS FROM ({unnests}) AS i({keys}) ON {join_i}",
            fmt::arg("ord", ord), fmt::arg("from", from_all), fmt::arg("unnests", fmt::join(unnests, ", ")),
            fmt::arg("keys", fmt::join(key_idents, ", ")), fmt::arg("join_i", fmt::join(key_join_i, " AND ")));

    const std::vector<Oid> types{JSONBOID, INT4ARRAYOID};
    if (!p->insert_first.sql.empty()) {
        p->insert_first.keep(types);
        p->map_inserted_keys.keep(map_types);
    }
    p->probe_all.keep(types);
    p->classify.keep(types);
    p->probe_some.keep(types);
    if (!p->lock_compare_update.sql.empty()) p->lock_compare_update.keep({JSONBOID, INT4ARRAYOID, BOOLOID});
    if (!p->touch_unchanged.sql.empty()) p->touch_unchanged.keep({JSONBOID, INT4ARRAYOID});
    return *t.plans.emplace(sig, std::move(p)).first->second;
}

// Returning: the positions $2 lists with, for each whose row is found by its key, that row's
// returning columns as one jsonb object (to_jsonb of a subquery's row: no limit on the column count).
// Kept under its own signature in the target's plans, beside the shapes' statements.
Statements::Kept &returning_for(Target &t, const std::vector<int> &key, const std::vector<int> &returning) {
    std::string sig = fmt::format("returning|k{}|r{}", fmt::join(key, ","), fmt::join(returning, ","));
    auto it = t.plans.find(sig);
    if (it != t.plans.end()) return it->second->returning;
    auto p = std::make_unique<Statements>();
    std::vector<std::string> key_cols, join_t, ret_cols;
    for (int c : key) {
        const Column &col = t.columns[c];
        key_cols.push_back("r." + col.ident);
        join_t.push_back(fmt::format("s.{0} {1} t.{0}", col.ident, col.eq.empty() ? "OPERATOR(pg_catalog.=)" : col.eq));
    }
    for (int c : returning) ret_cols.push_back("t." + t.columns[c].ident);
    p->returning.sql = fmt::format(
        "SELECT s.{ord}, pg_catalog.to_jsonb(t) FROM (SELECT u.n AS {ord}, {key_cols} FROM pg_catalog.unnest($2::pg_catalog.int4[]) AS u(n),"
        " LATERAL pg_catalog.jsonb_populate_record(NULL::{t}, $1 OPERATOR(pg_catalog.->) u.n) AS r) s"
        " CROSS JOIN LATERAL (SELECT {ret_cols} FROM {t} t WHERE {join_t} LIMIT 1) t",
        fmt::arg("ord", t.ord_alias), fmt::arg("key_cols", fmt::join(key_cols, ", ")), fmt::arg("t", t.qualified),
        fmt::arg("ret_cols", ret_cols.empty() ? std::string() : fmt::format("{}", fmt::join(ret_cols, ", "))),
        fmt::arg("join_t", fmt::join(join_t, " AND ")));
    p->returning.keep({JSONBOID, INT4ARRAYOID});
    return t.plans.emplace(sig, std::move(p)).first->second->returning;
}

} // namespace conveyor::upsert
