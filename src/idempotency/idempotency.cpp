// Idempotency keys (see idempotency.hpp) and their SQL entry points conveyor.idempotency_*.
#include "core/args.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"
#include "idempotency/idempotency.hpp"

namespace conveyor::idempotency {

using spi::Params;
using spi::Statement;

static Error reused_with_other_request(const std::string &key) {
    return Error(errcode_idempotency_reused, fmt::format("idempotency key {} was already used with a different request", quoted(key)),
                 "A key names one request; its first use decides which.", "Use a new key for a new request.");
}

Claim begin(const std::string &scope, const std::string &key, Datum request, int32 ttl_seconds) {
    // Every caller checks its key argument by name first; this keeps any other caller within the
    // limit too (scope and key share one index entry).
    check_key(key, "idempotency key");
    // The insert waits for a racing, uncommitted insert of the same key and then does nothing if
    // that one committed. Under REPEATABLE READ a key committed after the snapshot raises 40001.
    static Statement insert(
        "INSERT INTO conveyor.idempotency_keys (scope, key, request, state, created_at, expires_at)"
        " VALUES ($1, $2, $3, 'in_progress', pg_catalog.now(), pg_catalog.now() + pg_catalog.make_interval(secs => $4))"
        " ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
        {TEXTOID, TEXTOID, JSONBOID, INT4OID});
    static Statement read(
        "SELECT request, state, result, expires_at <= pg_catalog.now(), request IS NOT NULL AND $3::jsonb IS NOT NULL"
        "       AND request OPERATOR(pg_catalog.<>) $3::jsonb"
        " FROM conveyor.idempotency_keys WHERE scope = $1 AND key = $2",
        {TEXTOID, TEXTOID, JSONBOID});
    // An expired key is as good as absent: its next user takes it over.
    static Statement take_over(
        "UPDATE conveyor.idempotency_keys SET request = $3, state = 'in_progress', result = NULL,"
        "  created_at = pg_catalog.now(), completed_at = NULL,"
        "  expires_at = pg_catalog.now() + pg_catalog.make_interval(secs => $4)"
        " WHERE scope = $1 AND key = $2 AND expires_at <= pg_catalog.now() RETURNING 1",
        {TEXTOID, TEXTOID, JSONBOID, INT4OID});
    Params p;
    p.text(0, scope).text(1, key).int4(3, ttl_seconds);
    if (request) p.datum(2, request);
    else p.null(2);
    // A key can vanish between the two statements (released, purged): then try again.
    for (int round = 0; round < 10; ++round) {
        if (insert.run(p).size() == 1) return Claim{true, "in_progress"};
        auto row = read.run(p);
        if (row.size() == 0) continue;
        if (*row.boolean(0, 3)) {
            if (take_over.run(p).size() == 1) return Claim{true, "in_progress"};
            continue;
        }
        if (*row.boolean(0, 4)) throw reused_with_other_request(key);
        Claim c;
        c.state = *row.text(0, 1);
        bool null;
        Datum result = row.datum(0, 2, &null);
        if (!null) {
            c.result = spi::keep(result, false, -1);  // the caller reads it after this statement's rows are gone
            c.result_null = false;
        }
        return c;
    }
    throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE, fmt::format("idempotency key {} keeps changing concurrently", quoted(key)),
                "", "Retry the transaction.");
}

void finish(const std::string &scope, const std::string &key, Datum result) {
    static Statement stmt(
        "UPDATE conveyor.idempotency_keys SET state = 'completed', result = $3, completed_at = pg_catalog.now()"
        " WHERE scope = $1 AND key = $2 AND state = 'in_progress' RETURNING 1",
        {TEXTOID, TEXTOID, JSONBOID});
    static Statement state("SELECT state FROM conveyor.idempotency_keys WHERE scope = $1 AND key = $2", {TEXTOID, TEXTOID});
    Params p;
    p.text(0, scope).text(1, key);
    if (result) p.datum(2, result);
    else p.null(2);
    if (stmt.run(p).size() == 1) return;
    auto row = state.run(p);
    if (row.size() == 0)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("idempotency key {} does not exist", quoted(key)),
                    "It was never begun, or it expired and was purged.", "Call idempotency_begin first.");
    throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                fmt::format("idempotency key {} is already {}", quoted(key), *row.text(0, 0)), "",
                "Only a key in progress can be finished, once.");
}

bool release(const std::string &scope, const std::string &key) {
    static Statement stmt(
        "DELETE FROM conveyor.idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress' RETURNING 1",
        {TEXTOID, TEXTOID});
    return stmt.run(Params().text(0, scope).text(1, key)).size() == 1;
}

int64 purge_expired(int64 limit) {
    static Statement stmt(
        "DELETE FROM conveyor.idempotency_keys WHERE (scope, key) IN ("
        "  SELECT scope, key FROM conveyor.idempotency_keys WHERE expires_at <= pg_catalog.now()"
        "  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        {INT8OID});
    return (int64)stmt.run(Params().int8(0, limit)).affected();
}

// ---------------------------------------------------------------------------------------------------
// SQL entry points (scope 'user')

static std::string required_key(FunctionCallInfo fcinfo) { return conveyor::required_key(fcinfo, 0, "key"); }

CONVEYOR_AUDITED_FUNCTION(conveyor_idempotency_begin) {
    std::string key = required_key(fcinfo);
    Datum request = PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1);
    int32 ttl = required_int(fcinfo, 2, "ttl_seconds", 1, 366 * 86400);
    ResultSet out(fcinfo);
    spi::Connection spi;
    Claim c = begin("user", key, request, ttl);
    Datum values[3] = {BoolGetDatum(c.acquired), (Datum)0, c.result};
    const char *state = c.state.c_str();
    values[1] = pg_guard([&] { return PointerGetDatum(cstring_to_text(state)); });
    bool nulls[3] = {false, false, c.result_null};
    out.add(values, nulls);
    spi.finish();
    return (Datum)0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_idempotency_finish) {
    std::string key = required_key(fcinfo);
    Datum result = PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1);
    spi::Connection spi;
    finish("user", key, result);
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_idempotency_release) {
    std::string key = required_key(fcinfo);
    spi::Connection spi;
    bool released = release("user", key);
    spi.finish();
    PG_RETURN_BOOL(released);
}

} // namespace conveyor::idempotency
