// The retention rules: conveyor.retention_define, retention_drop and retention_rules, and the checks
// a rule's table and column pass (here when defined, in apply.cpp each time the rule runs).
//
// define and drop are SECURITY INVOKER: whether the caller owns the table is decided by the rights in
// effect where they are called (the role itself, or the owner of an application's SECURITY DEFINER
// wrapper that calls them), never by conveyor's owner's. The rule is then written as the extension's
// owner (OwnerScope), as upsert writes its bookkeeping.
#include "core/args.hpp"
#include "core/message.hpp"
#include "core/owner.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"
#include "retention/internal.hpp"

extern "C" {
#include "catalog/pg_class.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/syscache.h"
}

namespace conveyor::retention {

using spi::Params;
using spi::Statement;

Target check_table(Oid relid) {
    Target t;
    t.relid = relid;
    bool found = false;
    char relkind = 0, persistence = 0;
    const char *qualified = nullptr;
    pg_guard([&] {
        HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
        if (!HeapTupleIsValid(tuple)) return;
        Form_pg_class c = (Form_pg_class)GETSTRUCT(tuple);
        found = true;
        relkind = c->relkind;
        persistence = c->relpersistence;
        t.owner = c->relowner;
        qualified = quote_qualified_identifier(get_namespace_name(c->relnamespace), pstrdup(NameStr(c->relname)));
        ReleaseSysCache(tuple);
    });
    if (!found)
        throw Error(ERRCODE_UNDEFINED_TABLE, fmt::format("relation with OID {} does not exist", relid), "",
                    "Name an existing table.");
    t.qualified = qualified;
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is not a table", t.qualified),
                    "Retention deletes rows from an ordinary or a partitioned table.", "Name the table that holds the rows.");
    if (persistence == RELPERSISTENCE_TEMP)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} is a temporary table", t.qualified),
                    "maintain() runs in another session, which cannot see it.", "Name a permanent table.");
    Oid owner = t.owner;
    t.owner_name = pg_guard([&] { return (const char *)GetUserNameFromId(owner, false); });
    return t;
}

void check_column(Target &t, const std::string &time_column) {
    Oid relid = t.relid;
    const char *col = time_column.c_str();
    AttrNumber attnum = pg_guard([&] { return get_attnum(relid, col); });
    if (attnum == InvalidAttrNumber)
        throw Error(ERRCODE_UNDEFINED_COLUMN, fmt::format("column {} of table {} does not exist", quoted(time_column), t.qualified),
                    "", "Name the column that holds each row's time.");
    if (attnum < 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("column {} of table {} is a system column", quoted(time_column), t.qualified),
                    "", "Name the column that holds each row's time.");
    Oid type = pg_guard([&] { return get_atttype(relid, attnum); });
    if (type != TIMESTAMPTZOID && type != TIMESTAMPOID && type != DATEOID) {
        const char *type_name = pg_guard([&] { return format_type_be(type); });
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("column {} of table {} is of type {}", quoted(time_column), t.qualified, type_name),
                    "A retention rule compares a time: timestamptz, timestamp or date.", "Name a column of one of those types.");
    }
    t.column = pg_guard([&] { return quote_identifier(col); });
}

// keep: more than zero, and now() - keep a time conveyor can carry (1900 or later).
static void check_keep(Interval *keep) {
    Interval zero{};
    int cmp = pg_guard([&] {
        return DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(keep), IntervalPGetDatum(&zero)));
    });
    TimestampTz now = GetCurrentTransactionStartTimestamp(), cutoff = 0;
    bool ok = converts([&] {
        cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(now), IntervalPGetDatum(keep)));
    });
    if (cmp > 0 && ok && cutoff < now && cutoff >= min_time) return;
    const char *shown = pg_guard([&] { return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(keep))); });
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("keep must be a positive interval, not {}", clipped(shown)),
                fmt::format("Rows older than now() - keep are deleted; that time must lie between {}.", time_range_text),
                "Pass how long rows are kept, e.g. interval '30 days'.");
}

static void require_owner(Oid relid, const std::string &qualified, const char *action) {
    Oid caller = GetUserId();
    bool owns = pg_guard([&] { return pg_class_ownercheck(relid, caller); });
    if (!owns)
        throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE, fmt::format("must be owner of table {} to {} its retention rule", qualified, action),
                    "maintain() deletes the table's rows as its owner: only the owner decides which.",
                    "Call it as the table's owner (or a member of the owning role).");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_retention_define) {
    require(fcinfo, 0, "target");
    Oid relid = PG_GETARG_OID(0);
    std::string column = required_name(fcinfo, 1, "time_column", NAMEDATALEN - 1);
    require(fcinfo, 2, "keep");
    Interval *keep = PG_GETARG_INTERVAL_P(2);
    int32 batch = required_int(fcinfo, 3, "batch", 1, 1000000, "Each maintain() run deletes at most this many rows of the table.");
    check_keep(keep);
    // Held to the end of the transaction: the table cannot be dropped or change owner meanwhile.
    pg_guard([&] { LockRelationOid(relid, AccessShareLock); });
    Target t = check_table(relid);
    require_owner(relid, t.qualified, "define");
    check_column(t, column);
    Oid caller = GetUserId();
    std::string caller_name = pg_guard([&] { return (const char *)GetUserNameFromId(caller, false); });
    spi::Connection spi;
    OwnerScope owner;
    static Statement upsert(
        "INSERT INTO conveyor.retention_rules (target, time_column, keep, batch, table_owner, created_at, created_by)"
        " VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), $6)"
        " ON CONFLICT (target) DO UPDATE SET time_column = EXCLUDED.time_column, keep = EXCLUDED.keep,"
        "     batch = EXCLUDED.batch, table_owner = EXCLUDED.table_owner, created_at = EXCLUDED.created_at,"
        "     created_by = EXCLUDED.created_by, last_error = NULL"
        " RETURNING xmax OPERATOR(pg_catalog.=) 0",
        {REGCLASSOID, TEXTOID, INTERVALOID, INT4OID, TEXTOID, TEXTOID});
    bool inserted = *upsert.run(Params()
                                    .datum(0, ObjectIdGetDatum(relid))
                                    .text(1, column)
                                    .datum(2, IntervalPGetDatum(keep))
                                    .int4(3, batch)
                                    .text(4, t.owner_name)
                                    .text(5, caller_name))
                         .boolean(0, 0);
    spi.finish();
    PG_RETURN_BOOL(inserted);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_retention_drop) {
    require(fcinfo, 0, "target");
    Oid relid = PG_GETARG_OID(0);
    pg_guard([&] { LockRelationOid(relid, AccessShareLock); });
    // A rule whose table is gone (named by its number) may be dropped by any caller allowed here.
    bool exists = pg_guard([&] { return SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)); });
    if (exists) {
        const char *name = pg_guard([&] { return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)); });
        require_owner(relid, name, "drop");
    }
    spi::Connection spi;
    OwnerScope owner;
    static Statement drop("DELETE FROM conveyor.retention_rules WHERE target OPERATOR(pg_catalog.=) $1", {REGCLASSOID});
    bool dropped = drop.run(Params().datum(0, ObjectIdGetDatum(relid))).affected() > 0;
    spi.finish();
    PG_RETURN_BOOL(dropped);
}

CONVEYOR_FUNCTION(conveyor_retention_rules) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement list(
        "SELECT r.target, r.time_column, r.keep, r.batch, r.table_owner, pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text,"
        "       r.created_at, r.created_by, r.last_run_at, r.last_deleted, r.last_error"
        " FROM conveyor.retention_rules r LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.target"
        " ORDER BY r.target::pg_catalog.text",
        {});
    spi::emit(out, list.run());
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::retention
