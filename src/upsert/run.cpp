// Running a call's statements: per shape, in rounds, until every element has an outcome; and, when
// the batch fails, tracing the error to its element (and, for a value that does not convert, to its
// column).
//
// The statements run in one subtransaction (upsert.cpp). If it fails, the error is traced to its
// element (each element replayed alone in a subtransaction that is rolled back); the caller gets the
// original error with the element's index in front.
#include <algorithm>

#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "core/subxact.hpp"
#include "upsert/internal.hpp"

namespace conveyor::upsert {

using spi::Params;

// Errors that callers retry, or that stop the call: never traced to an element, never wrapped.
static bool passes_through(int sqlstate) {
    return sqlstate == ERRCODE_T_R_SERIALIZATION_FAILURE || sqlstate == ERRCODE_T_R_DEADLOCK_DETECTED ||
           sqlstate == ERRCODE_LOCK_NOT_AVAILABLE || sqlstate == ERRCODE_QUERY_CANCELED ||
           sqlstate == ERRCODE_ADMIN_SHUTDOWN || sqlstate == ERRCODE_OUT_OF_MEMORY ||
           ERRCODE_TO_CATEGORY(sqlstate) == ERRCODE_INSUFFICIENT_RESOURCES;
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

// Lock-compare-update: locks, compares again and updates the elements `differ` (whose rows
// Probe-and-insert or Classify found different).
static void lock_compare_update(Call &call, Statements &p, std::vector<int32> &differ) {
    std::sort(differ.begin(), differ.end());
    auto b = p.lock_compare_update.run(Params().datum(0, PointerGetDatum(call.rows)).int4_array(1, differ).boolean(2, call.want_changed));
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
            o.action = Action::unchanged;
        } else if (*b.boolean(r, 4)) {
            o.action = Action::updated;
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
            o.action = Action::skipped;
        }
    }
}

static std::vector<int32> without_outcome(const Call &call, const std::vector<int32> &ords) {
    std::vector<int32> rest;
    for (int32 n : ords)
        if (call.out[n].action == Action::none) rest.push_back(n);
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

// Insert-first: inserts every element; returns false if some were not inserted (those are left
// without outcome).
static bool insert_first(Call &call, Statements &p) {
    Datum rows = PointerGetDatum(call.rows);
    auto ins = p.insert_first.run(Params().datum(0, rows));
    uint64 n = ins.size();
    if (n == call.elements.size()) {
        for (auto &o : call.out) o.action = Action::inserted;
        return true;
    }
    if (n == 0) return false;
    // Map-inserted-keys: which elements the returned keys belong to.
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
    auto m = p.map_inserted_keys.run(mp);
    if (m.size() != n) throw inserted_unmatched(call);
    for (uint64 r = 0; r < m.size(); ++r) call.out[*m.int4(r, 0)].action = Action::inserted;
    return false;
}

// Classify: classifies every element without writing; runs Lock-compare-update for the differing
// ones. Those not found are left without outcome.
static void classify(Call &call, Statements &p) {
    auto k = p.classify.run(Params().datum(0, PointerGetDatum(call.rows)));
    std::vector<int32> differ;
    for (uint64 r = 0; r < k.size(); ++r) {
        int32 n = *k.int4(r, 0);
        auto found = Classification(*k.int4(r, 1));
        if (found == Classification::unchanged || found == Classification::differs) {
            if (call.opt.mode == Mode::insert) call.out[n].action = Action::exists;
            else if (found == Classification::unchanged) call.out[n].action = Action::unchanged;
            else differ.push_back(n);
        }
    }
    if (!differ.empty()) lock_compare_update(call, p, differ);
}

// mode 'update': classifies the elements without inserting; those found different go through
// Lock-compare-update, those not found are missing. A row deleted between the two statements is
// classified again in the next round (and found missing).
static void update_only(Call &call, Statements &p, std::vector<int32> pending) {
    if (!p.classify_some) p.classify_some.keep({JSONBOID, INT4ARRAYOID});
    Datum rows = PointerGetDatum(call.rows);
    for (int round = 0; round < max_rounds && !pending.empty(); ++round) {
        auto k = p.classify_some.run(Params().datum(0, rows).int4_array(1, pending));
        std::vector<int32> differ;
        for (uint64 r = 0; r < k.size(); ++r) {
            int32 n = *k.int4(r, 0);
            auto found = Classification(*k.int4(r, 1));
            if (found == Classification::unchanged) call.out[n].action = Action::unchanged;
            else if (found == Classification::differs) differ.push_back(n);
            else call.out[n].action = Action::missing;
        }
        if (!differ.empty()) lock_compare_update(call, p, differ);
        pending = without_outcome(call, pending);
    }
    if (!pending.empty()) {
        size_t first = *std::min_element(pending.begin(), pending.end());
        throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE,
                    fmt::format("{}: the row with key ({}) kept changing concurrently", at(first), key_text(call, first)), "",
                    "Retry the transaction.");
    }
}

// Upserts the elements `ords` (all of one shape) until each has an outcome.
static void write_shape(Call &call, const Shape &shape, const std::vector<size_t> &ords) {
    Statements &p = statements_for(*call.t, call.key, call.opt, shape);
    std::vector<int32> pending(ords.begin(), ords.end());
    if (call.opt.mode == Mode::update) return update_only(call, p, std::move(pending));
    Datum rows = PointerGetDatum(call.rows);
    int rounds = call.rls ? 2 : max_rounds;
    // The whole batch is of this shape: the previous batch's outcome picks the first statement.
    bool all = pending.size() == call.elements.size();
    if (all && p.start == Start::insert_first && p.insert_first) {
        if (insert_first(call, p)) return;  // all new again
        pending = without_outcome(call, pending);
        all = false;
    } else if (all && p.start == Start::classify) {
        classify(call, p);
        pending = without_outcome(call, pending);
        all = false;
    }
    for (int round = 0; round < rounds && !pending.empty(); ++round) {
        // Probe-and-insert. (All elements of the batch, in order: one pass over the array.)
        all = all && round == 0;
        auto a = (all ? p.probe_all : p.probe_some).run(Params().datum(0, rows).int4_array(1, pending));
        std::vector<int32> differ;
        int64 marked_inserted = 0, really_inserted = 0;
        // Not found, and not inserted either: an insert that met a row committed meanwhile (found in
        // the next round), or one a BEFORE INSERT trigger skipped (twice in a row: it skips it).
        for (uint64 r = 0; r < a.size(); ++r) {
            int32 n = *a.int4(r, 0);
            auto found = Classification(*a.int4(r, 1));
            if (found == Classification::insert_count) {
                really_inserted = n;
                continue;
            }
            Outcome &o = call.out[n];
            if (found == Classification::inserted) {
                o.action = Action::inserted;
                ++marked_inserted;
            } else if (call.opt.mode == Mode::insert && (found == Classification::unchanged || found == Classification::differs)) {
                o.action = Action::exists;
            } else if (found == Classification::unchanged) {
                o.action = Action::unchanged;
            } else if (found == Classification::differs) {
                differ.push_back(n);
            } else if (found == Classification::not_found && call.t->before_insert_trigger && !call.rls && ++call.misses[n] >= 2) {
                o.action = Action::skipped;
            }
        }
        if (marked_inserted != really_inserted) throw inserted_unmatched(call);
        if (!differ.empty()) lock_compare_update(call, p, differ);
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
        for (size_t o : ords) ins += call.out[o].action == Action::inserted;
        p.start = ins == ords.size() ? Start::insert_first : ins == 0 ? Start::classify : Start::probe;
    }
}

// Option touch_unchanged: sets the touch columns of the rows of `ords` found unchanged, and nothing
// else; they stay unchanged. A row changed meanwhile goes through Lock-compare-update instead; one
// deleted meanwhile is left alone (unchanged when it was looked up, as without the option); one that
// row-level security keeps the caller from updating is 42501, as for a changed row.
static void touch_unchanged(Call &call, Statements &p, const std::vector<size_t> &ords) {
    std::vector<int32> same;
    for (size_t n : ords)
        if (call.out[n].action == Action::unchanged) same.push_back((int32)n);
    if (same.empty()) return;
    auto r = p.touch_unchanged.run(Params().datum(0, PointerGetDatum(call.rows)).int4_array(1, same));
    // Rows not locked (hidden by a policy, or deleted meanwhile) are not in r.
    std::vector<bool> touched(call.out.size(), false);
    std::vector<int32> differ;
    for (uint64 j = 0; j < r.size(); ++j) {
        int32 n = *r.int4(j, 0);
        if (*r.boolean(j, 1)) {
            call.out[n].action = Action::none;
            differ.push_back(n);
        } else {
            touched[n] = *r.boolean(j, 2);
        }
    }
    if (!differ.empty()) lock_compare_update(call, p, differ);
    if (!call.rls) return;
    for (int32 n : same)
        if (!touched[n] && call.out[n].action == Action::unchanged)
            throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                        fmt::format("{}: row-level security does not let you update the row of {} with key ({})", at(n),
                                    call.t->display, key_text(call, n)),
                        "Option touch_unchanged updates the touch columns of unchanged rows.",
                        "Only rows your policies let you see and update can be upserted.");
}

// Upserts the elements `ords` (all of one shape) until each has an outcome; then, with the option
// touch_unchanged, touches the unchanged ones.
static void run_shape(Call &call, const Shape &shape, const std::vector<size_t> &ords) {
    write_shape(call, shape, ords);
    if (call.opt.touch_unchanged) touch_unchanged(call, statements_for(*call.t, call.key, call.opt, shape), ords);
}

void run_all(Call &call) {
    for (const auto &shape : call.shapes)
        if (!shape.ords.empty()) run_shape(call, shape, shape.ords);
}

Datum error_json(int sqlstate, const std::string &message) {
    const char *code = pg_guard([&] { return unpack_sql_state(sqlstate); });
    std::string c(code), m(message);
    return pg_guard([&] {
        JsonbParseState *st = NULL;
        pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
        const std::pair<const char *, const std::string *> fields[] = {{"sqlstate", &c}, {"message", &m}};
        for (const auto &[k, v] : fields) {
            JsonbValue key, val;
            key.type = jbvString;
            key.val.string.val = const_cast<char *>(k);
            key.val.string.len = (int)strlen(k);
            val.type = jbvString;
            val.val.string.val = const_cast<char *>(v->data());
            val.val.string.len = (int)v->size();
            pushJsonbValue(&st, WJB_KEY, &key);
            pushJsonbValue(&st, WJB_VALUE, &val);
        }
        return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL)));
    });
}

// on_error 'skip': the elements `ords` of one shape in a subtransaction; if it fails, each half in
// its own, down to the single elements that fail, which get the action error. A batch where nothing
// fails runs exactly as without the option (one subtransaction); k failing elements cost about
// 2k log2(n) more statements.
static void run_skipping(Call &call, const Shape &shape, const std::vector<size_t> &ords) {
    if (ords.empty()) return;
    int sqlstate = 0;
    std::string message;
    try {
        in_subtransaction([&] { run_shape(call, shape, ords); });
        return;
    } catch (const PgError &e) {
        if (passes_through(e.sqlstate())) throw;
        sqlstate = e.sqlstate();
        message = e.data->message ? e.data->message : "";
    } catch (const Error &e) {
        if (passes_through(e.sqlstate)) throw;
        sqlstate = e.sqlstate;
        message = e.message;
    }
    // Rolled back: whatever the attempt said of these elements is void.
    for (size_t i : ords) {
        call.out[i] = Outcome{};
        call.misses[i] = 0;
    }
    if (ords.size() == 1) {
        call.out[ords[0]].action = Action::error;
        call.out[ords[0]].changed = error_json(sqlstate, message);
        return;
    }
    size_t half = ords.size() / 2;
    run_skipping(call, shape, std::vector<size_t>(ords.begin(), ords.begin() + half));
    run_skipping(call, shape, std::vector<size_t>(ords.begin() + half, ords.end()));
}

void run_all_skipping(Call &call) {
    for (const auto &shape : call.shapes) run_skipping(call, shape, shape.ords);
}

// Reads the returning columns of the stored row of every element that has one.
void read_returning(Call &call) {
    std::vector<int32> ords;
    for (size_t i = 0; i < call.out.size(); ++i) {
        Action a = call.out[i].action;
        if (a == Action::inserted || a == Action::updated || a == Action::unchanged || a == Action::exists) ords.push_back((int32)i);
    }
    if (ords.empty()) return;
    Statements::Kept &k = returning_for(*call.t, call.key, call.opt.returning);
    auto r = k.run(Params().datum(0, PointerGetDatum(call.rows)).int4_array(1, ords));
    for (uint64 j = 0; j < r.size(); ++j) call.out[*r.int4(j, 0)].row = r.datum(j, 1);
}

// The batch failed with `error`: find the first element that fails alone and, for a value that
// does not convert, its column. Returns the error to raise.
ErrorData *trace_error(Call &call, ErrorData *error) {
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

} // namespace conveyor::upsert
