// maintain()'s retention step: each rule deletes at most its batch of rows older than its keep, as
// the table's owner.
//
// The table's triggers, RLS policies, rewrite rules, and any function its planning or deletion calls
// are the owner's code: they run as the owner, never as conveyor's owner (who is often a superuser).
// The DELETE runs under SetUserIdAndSecContext(owner, SECURITY_LOCAL_USERID_CHANGE |
// SECURITY_RESTRICTED_OPERATION), as PostgreSQL runs a table owner's index functions during
// maintenance: nothing there can SET ROLE, create temporary objects or leave a deferred trigger
// behind. Its search_path is pinned to pg_catalog, pg_temp, and every setting the owner's code changes
// is rolled back when the DELETE ends (a plain SET would otherwise outlive it). Each rule runs in its
// own subtransaction: a rule that fails is recorded and the next one runs.
#include "core/args.hpp"
#include "core/message.hpp"
#include "core/partitions.hpp"
#include "core/owner.hpp"
#include "core/spi.hpp"
#include "core/subxact.hpp"
#include "monitor/monitor.hpp"
#include "retention/internal.hpp"

extern "C" {
#include "storage/lmgr.h"
#include "utils/syscache.h"
}

namespace conveyor::retention {

using spi::Params;
using spi::Statement;

// A rule's DELETE waits at most this long for a lock (the table's, a partition's); past it the rule
// waits for the next run.
constexpr int lock_timeout_ms = 200;

namespace {

struct Rule {
    Oid relid = InvalidOid;
    std::string target;  // as regclass shows it (its number once the table is gone)
    std::string column;
    Interval keep{};
    int32 batch = 0;
    std::string table_owner;
    TimestampTz created_at = 0;
};

} // namespace

static std::vector<Rule> load_rules() {
    static Statement stmt(
        "SELECT target::pg_catalog.oid, target::pg_catalog.text, time_column, keep, batch, table_owner, created_at"
        " FROM conveyor.retention_rules ORDER BY 1",
        {});
    spi::Rows rows = stmt.run();
    std::vector<Rule> rules;
    for (uint64 i = 0; i < rows.size(); ++i) {
        Rule r;
        r.relid = DatumGetObjectId(rows.datum(i, 0));
        r.target = *rows.text(i, 1);
        r.column = *rows.text(i, 2);
        r.keep = *DatumGetIntervalP(rows.datum(i, 3));
        r.batch = *rows.int4(i, 4);
        r.table_owner = *rows.text(i, 5);
        r.created_at = DatumGetTimestampTz(rows.datum(i, 6));
        rules.push_back(std::move(r));
    }
    return rules;
}

// The oldest rows first, those another transaction has locked skipped (they wait for the next run);
// tableoid with ctid names a row of a partitioned table. Every identifier is quoted, every operator
// qualified; the values are parameters.
static int64 delete_as_owner(const Target &t, const Interval &keep, int32 batch) {
    std::string sql = fmt::format(
        "DELETE FROM {0} WHERE (tableoid, ctid) OPERATOR(pg_catalog.=) ANY ("
        "SELECT tableoid, ctid FROM {0} WHERE {1} OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $1)"
        " ORDER BY {1} LIMIT $2 FOR UPDATE SKIP LOCKED)",
        t.qualified, t.column);
    const char *q = sql.c_str();
    Interval keep_copy = keep;
    Oid types[2] = {INTERVALOID, INT8OID};
    Datum values[2] = {IntervalPGetDatum(&keep_copy), Int64GetDatum(batch)};
    int64 deleted = 0;
    RoleScope owner(t.owner);  // the table's owner, restricted
    int level = push_setting("search_path", "pg_catalog, pg_temp");
    try {
        pg_guard([&] {
            int rc = SPI_execute_with_args(q, 2, types, values, nullptr, false, 0);
            if (rc != SPI_OK_DELETE) elog(ERROR, "retention DELETE returned %d", rc);
            deleted = (int64)SPI_processed;
        });
    } catch (...) {
        pop_settings(level, false);
        throw;
    }
    pop_settings(level, false);  // whatever the owner's code SET is undone too
    return deleted;
}

// Runs one rule in a subtransaction: the rows deleted, or why none were (error), or that its table is
// gone (removed).
static int64 run_rule(const Rule &rule, std::string &error, bool &removed) {
    int64 deleted = 0;
    try {
        in_subtransaction([&] {
            with_setting("lock_timeout", std::to_string(lock_timeout_ms).c_str(), [&] {
                Oid relid = rule.relid;
                pg_guard([&] { LockRelationOid(relid, RowExclusiveLock); });
                if (!pg_guard([&] { return SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)); })) {
                    removed = true;
                    return;
                }
                // Locked: neither the owner, the column nor its type can change before the DELETE.
                Target t = check_table(relid);
                check_column(t, rule.column);
                if (t.owner_name != rule.table_owner)
                    throw Error(ERRCODE_INSUFFICIENT_PRIVILEGE,
                                fmt::format("the owner of {} changed from {} to {}: its new owner must define the rule again",
                                            t.qualified, rule.table_owner, t.owner_name));
                deleted = delete_as_owner(t, rule.keep, rule.batch);
            });
        });
    } catch (const PgError &e) {
        // A cancel or shutdown ends the whole run; any other failure is this rule's alone.
        if (ERRCODE_TO_CATEGORY(e.sqlstate()) == ERRCODE_TO_CATEGORY(ERRCODE_QUERY_CANCELED)) throw;
        if (e.sqlstate() == ERRCODE_LOCK_NOT_AVAILABLE)
            error = fmt::format("{} was busy: a lock was not granted within {} ms", rule.target, lock_timeout_ms);
        else
            error = clipped(e.what(), 1000);
        deleted = 0;
    } catch (const Error &e) {
        error = e.message;
        deleted = 0;
    }
    return deleted;
}

int64 apply_rules() {
    if (!OidIsValid(conveyor_relid("retention_rules"))) return 0;
    spi::Connection spi;
    std::vector<Rule> rules = load_rules();
    static Statement record(
        "UPDATE conveyor.retention_rules SET last_run_at = pg_catalog.now(), last_deleted = $2, last_error = $3"
        " WHERE target OPERATOR(pg_catalog.=) $1 AND created_at OPERATOR(pg_catalog.=) $4",
        {REGCLASSOID, INT8OID, TEXTOID, TIMESTAMPTZOID});
    static Statement remove("DELETE FROM conveyor.retention_rules WHERE target OPERATOR(pg_catalog.=) $1", {REGCLASSOID});
    int64 total = 0;
    for (const Rule &rule : rules) {
        std::string error;
        bool removed = false;
        int64 deleted = run_rule(rule, error, removed);
        if (removed) {
            remove.run(Params().datum(0, ObjectIdGetDatum(rule.relid)));
            monitor::record_event("retention_rule_removed", "retention", rule.target,
                                  "{\"reason\": \"the table was dropped\"}");
            continue;
        }
        total += deleted;
        std::optional<std::string> last_error;
        if (!error.empty()) last_error = error;
        record.run(Params()
                       .datum(0, ObjectIdGetDatum(rule.relid))
                       .int8(1, deleted)
                       .text(2, last_error)
                       .datum(3, TimestampTzGetDatum(rule.created_at)));
        if (!error.empty())
            monitor::record_event("retention_rule_failed", "retention", rule.target,
                                  fmt::format("{{\"error\": {}}}", monitor::json_quoted(error)));
    }
    spi.finish();
    return total;
}

} // namespace conveyor::retention
