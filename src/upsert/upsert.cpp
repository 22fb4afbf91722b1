// Batch upserts that write only what changed: SQL entry points conveyor.upsert and
// conveyor.upsert_counts, with what they record: the operation_id's stored result and the audit log.
//
// The functions are SECURITY INVOKER: every statement on the target runs as the caller, so the
// caller's privileges and the target's row-level security apply exactly as to the caller's own SQL.
// Only conveyor's own tables (idempotency_keys for operation_id, change_log for audit, locks for the
// fence) are touched as the extension's owner, inside an OwnerScope.
//
// How a batch is read, described, planned and run: internal.hpp.
#include "upsert/upsert.hpp"
#include "upsert/internal.hpp"
#include "core/message.hpp"
#include "core/owner.hpp"
#include "core/subxact.hpp"
#include "core/xact_lock.hpp"  // hash64
#include "idempotency/idempotency.hpp"
#include "locks/locks.hpp"
#include "monitor/monitor.hpp"

extern "C" {
#include "catalog/pg_namespace.h"
#include "utils/json.h"
#include "utils/syscache.h"
}

namespace conveyor::upsert {

using spi::Params;
using spi::Statement;

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
    case Action::inserted: return "inserted";
    case Action::updated: return "updated";
    case Action::skipped: return "skipped";
    case Action::duplicate: return "duplicate";
    case Action::exists: return "exists";
    case Action::missing: return "missing";
    case Action::error: return "error";
    default: return "unchanged";
    }
}

static Datum cstring_jsonb(const std::string &s) {
    const char *p = s.c_str();
    return pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(p)); });
}

// The request an operation_id stands for: a repeat with other rows, keys or options is CV004.
static Datum request_of(const Call &call, bool counts_only) {
    Jsonb *rows = call.rows;
    uint64 h = hash64(std::string_view((const char *)VARDATA(rows), VARSIZE(rows) - VARHDRSZ));
    std::vector<std::string> keys;
    for (int c : call.key) keys.push_back(call.t->columns[c].name);
    std::string opts = "null";
    if (call.options) {
        Jsonb *o = call.options;
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

// The counts upsert_counts returns, in its columns' order: inserted, updated, unchanged, skipped,
// duplicates, existing, missing, errors. (A database still at 0.2 declares the first four only: the
// result set takes as many as the declaration has.)
constexpr int n_counts = 8;
static int count_index(Action a) {
    switch (a) {
    case Action::inserted: return 0;
    case Action::updated: return 1;
    case Action::skipped: return 3;
    case Action::duplicate: return 4;
    case Action::exists: return 5;
    case Action::missing: return 6;
    case Action::error: return 7;
    default: return 2;
    }
}

static void emit_counts(ResultSet &out, const int64 counts[n_counts]) {
    Datum values[n_counts];
    bool nulls[n_counts];
    for (int c = 0; c < n_counts; ++c) {
        values[c] = Int64GetDatum(counts[c]);
        nulls[c] = false;
    }
    out.add(values, nulls);
}

static void write_audit(const Call &call) {
    std::vector<Datum> keys, changes;
    std::vector<std::string> actions;
    for (size_t i = 0; i < call.out.size(); ++i) {
        const Outcome &o = call.out[i];
        if (o.action != Action::inserted && o.action != Action::updated) continue;
        keys.push_back(build_key(call, i));
        actions.push_back(action_name(o.action));
        changes.push_back(o.action == Action::updated && o.changed ? o.changed : cstring_jsonb("null"));
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
    if (counts_only && call.opt.has_returning)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "option returning is not available in upsert_counts", "upsert_counts returns counts, not rows.",
                    "Call conveyor.upsert to have the stored rows returned.");

    // An operation done before: its result, and nothing written.
    std::string scope = "upsert", idem_key;
    if (call.opt.operation_id) {
        idem_key = fmt::format("{}:{}", call.t->relid, *call.opt.operation_id);
        Datum request = request_of(call, counts_only);
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
                "SELECT (r OPERATOR(pg_catalog.->>) 0)::pg_catalog.int4, NULLIF(r OPERATOR(pg_catalog.->) 1, 'null'), r OPERATOR(pg_catalog.->>) 2,"
                "       NULLIF(r OPERATOR(pg_catalog.->) 3, 'null'), NULLIF(r OPERATOR(pg_catalog.->) 4, 'null')"
                " FROM pg_catalog.jsonb_array_elements($1 OPERATOR(pg_catalog.->) 'rows') AS e(r)",
                {JSONBOID});
            // Results stored by 0.2 have no row and only the first four counts.
            static Statement counts(
                "SELECT ($1 OPERATOR(pg_catalog.->>) 'inserted')::pg_catalog.int8, ($1 OPERATOR(pg_catalog.->>) 'updated')::pg_catalog.int8,"
                "       ($1 OPERATOR(pg_catalog.->>) 'unchanged')::pg_catalog.int8,"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'skipped')::pg_catalog.int8, 0),"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'duplicates')::pg_catalog.int8, 0),"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'existing')::pg_catalog.int8, 0),"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'missing')::pg_catalog.int8, 0),"
                "       COALESCE(($1 OPERATOR(pg_catalog.->>) 'errors')::pg_catalog.int8, 0)",
                {JSONBOID});
            spi::emit(out, (counts_only ? counts : replay).run(Params().datum(0, PointerGetDatum(stored))));
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

    if (call.opt.skip_errors) {
        run_all_skipping(call);
    } else {
        try {
            in_subtransaction([&] { run_all(call); });
        } catch (const PgError &e) {
            ErrorData *traced = trace_error(call, e.data);
            throw PgError(traced);
        }
    }
    if (call.opt.has_returning && !counts_only) read_returning(call);

    if (call.opt.audit) write_audit(call);

    int64 counts[n_counts] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (const auto &o : call.out) ++counts[count_index(o.action)];

    // An element whose key was never read (on_error 'skip' set it aside before) has a NULL key.
    std::vector<Datum> keys;
    Datum json_null = (Datum)0;
    if (!counts_only || call.opt.operation_id) {
        json_null = cstring_jsonb("null");
        for (size_t i = 0; i < call.out.size(); ++i) keys.push_back(call.out[i].key_read ? build_key(call, i) : json_null);
    }

    if (call.opt.operation_id) {
        // {"inserted": n, "updated": n, "unchanged": n, "skipped": n, "duplicates": n, "existing": n,
        //  "missing": n, "errors": n, "rows": [[ord, key, action, changed, row], ...]}
        static Statement result(
            "SELECT pg_catalog.jsonb_build_object('inserted', $1::pg_catalog.int8, 'updated', $2::pg_catalog.int8,"
            " 'unchanged', $3::pg_catalog.int8, 'skipped', $8::pg_catalog.int8, 'duplicates', $10::pg_catalog.int8,"
            " 'existing', $11::pg_catalog.int8, 'missing', $12::pg_catalog.int8, 'errors', $13::pg_catalog.int8,"
            " 'rows', CASE WHEN $7 THEN '[]'::pg_catalog.jsonb ELSE"
            " (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(u.ord - 1, u.key, u.action, u.changed, u.row) ORDER BY u.ord),"
            "                  '[]'::pg_catalog.jsonb)"
            "  FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.jsonb[]), pg_catalog.unnest($5::pg_catalog.text[]),"
            "                  pg_catalog.unnest($6::pg_catalog.jsonb[]), pg_catalog.unnest($9::pg_catalog.jsonb[]))"
            "  WITH ORDINALITY AS u(key, action, changed, row, ord)) END)",
            {INT8OID, INT8OID, INT8OID, JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, BOOLOID, INT8OID, JSONBARRAYOID,
             INT8OID, INT8OID, INT8OID, INT8OID});
        std::vector<std::string> actions;
        std::vector<Datum> changes, stored_rows;
        for (const auto &o : call.out) {
            actions.push_back(action_name(o.action));
            changes.push_back((o.action == Action::updated || o.action == Action::error) && o.changed ? o.changed : json_null);
            stored_rows.push_back(o.row ? o.row : json_null);
        }
        auto r = result.run(Params()
                                .int8(0, counts[0])
                                .int8(1, counts[1])
                                .int8(2, counts[2])
                                .jsonb_array(3, keys)
                                .text_array(4, actions)
                                .jsonb_array(5, changes)
                                .boolean(6, counts_only)
                                .int8(7, counts[3])
                                .jsonb_array(8, stored_rows)
                                .int8(9, counts[4])
                                .int8(10, counts[5])
                                .int8(11, counts[6])
                                .int8(12, counts[7]));
        Datum stored = r.datum(0, 0);
        OwnerScope owner;
        idempotency::finish(scope, idem_key, stored);
    }

    if (counts_only) {
        emit_counts(out, counts);
    } else {
        // ord, key, action, changed, row (a database still at 0.2 declares the first four only).
        Datum values[5];
        bool nulls[5] = {false, false, false, false, false};
        for (size_t i = 0; i < call.out.size(); ++i) {
            const Outcome &o = call.out[i];
            values[0] = Int32GetDatum((int32)i);
            values[1] = keys[i];
            nulls[1] = !o.key_read;
            const char *a = action_name(o.action);
            values[2] = pg_guard([&] { return PointerGetDatum(cstring_to_text(a)); });
            values[3] = o.changed;
            nulls[3] = (o.action != Action::updated && o.action != Action::error) || !o.changed;
            values[4] = o.row;
            nulls[4] = !o.row;
            out.add(values, nulls);
        }
    }
    spi.finish();
    return (Datum)0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_upsert) { return run_upsert(fcinfo, false); }

CONVEYOR_AUDITED_FUNCTION(conveyor_upsert_counts) { return run_upsert(fcinfo, true); }

} // namespace conveyor::upsert
