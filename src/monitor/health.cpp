// conveyor.health(): one document with the health of queues, locks, entities, workers and costs, and
// of the xmin horizon their cleanup waits on.
//
// Each figure comes from an index or a small table, never from counting a large one: queue figures
// from queue_metrics (counter rows and the hot jobs table), leases from conveyor.locks, entity figures
// from partial indexes with counts capped at count_cap, issues from the open-issue index, costs from
// the accounts and quotas, the horizon from the server's views of sessions, replication slots and
// prepared transactions (one entry per connection, slot or prepared transaction). Thresholds are
// settings (health.*).
#include "core/args.hpp"
#include "monitor/internal.hpp"

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

constexpr int64 count_cap = 10000;  // entity counts stop here ("counts_capped_at" in the document)

enum Status { healthy = 0, warning = 1, critical = 2 };
static const char *status_name(Status s) { return s == critical ? "critical" : s == warning ? "warning" : "healthy"; }

static Status by_thresholds(double value, double warn, double crit) {
    return value >= crit ? critical : value >= warn ? warning : healthy;
}

static Status worst(Status a, Status b) { return a > b ? a : b; }

static std::string number_or_null(const std::optional<std::string> &v) { return v ? *v : "null"; }

struct Section {
    Status status;
    std::string json;
};

// What holds back the xmin horizon of this database's tables: a snapshot or transaction id that a
// session, a replication slot (its xmin, as a standby's hot_standby_feedback sets it) or a prepared
// transaction still holds. While one is held, no row version deleted or updated after it can be
// removed and index entries pointing at such versions cannot be marked dead: every claimed job leaves
// one at the head of jobs_ready that each dequeue walks (bench/README.md, the soak with xmin pinned).
// Sessions of other databases do not hold back this database's tables and are left out, as are
// autovacuum (its snapshots are brief, and VACUUM's do not hold back others), parallel workers (their
// leader is listed) and the calling session. health() runs as conveyor's owner, a superuser, so it
// sees every role's sessions; a holder is named by pid, role, application name, backend type, state
// and ages, never by its query or client address.
static Section horizon_section() {
    static Statement holders(
        "WITH holders AS ("
        "  SELECT pg_catalog.jsonb_build_object('kind', 'backend', 'pid', a.pid, 'role', a.usename,"
        "           'application_name', a.application_name, 'backend_type', a.backend_type, 'state', a.state,"
        "           'transaction_seconds', pg_catalog.round(v.seconds, 3), 'xmin_age', v.xmin_age) AS holder,"
        "         v.seconds, v.xmin_age"
        "  FROM pg_catalog.pg_stat_activity a"
        "  CROSS JOIN LATERAL (SELECT EXTRACT(epoch FROM pg_catalog.clock_timestamp() - a.xact_start) AS seconds,"
        "                             GREATEST(pg_catalog.age(a.backend_xmin), pg_catalog.age(a.backend_xid)) AS xmin_age) v"
        "  WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)"
        "    AND a.pid <> pg_catalog.pg_backend_pid() AND a.leader_pid IS NULL"
        "    AND a.backend_type NOT IN ('autovacuum worker', 'autovacuum launcher')"
        "    AND (a.datname = pg_catalog.current_database() OR a.datid IS NULL)"
        "  UNION ALL"
        "  SELECT pg_catalog.jsonb_build_object('kind', 'replication_slot', 'slot_name', s.slot_name,"
        "           'slot_type', s.slot_type, 'active', s.active, 'active_pid', s.active_pid,"
        "           'xmin_age', pg_catalog.age(s.xmin)),"
        "         NULL, pg_catalog.age(s.xmin)"
        "  FROM pg_catalog.pg_replication_slots s"
        "  WHERE s.xmin IS NOT NULL"
        "    AND (s.database IS NULL OR s.database = pg_catalog.current_database())"
        "  UNION ALL"
        "  SELECT pg_catalog.jsonb_build_object('kind', 'prepared_transaction', 'gid', p.gid, 'role', p.owner,"
        "           'transaction_seconds', pg_catalog.round(EXTRACT(epoch FROM"
        "              pg_catalog.clock_timestamp() - p.prepared), 3),"
        "           'xmin_age', pg_catalog.age(p.transaction)),"
        "         EXTRACT(epoch FROM pg_catalog.clock_timestamp() - p.prepared),"
        "         pg_catalog.age(p.transaction)"
        "  FROM pg_catalog.pg_prepared_xacts p"
        "  WHERE p.database = pg_catalog.current_database())"
        " SELECT (SELECT count(*) FROM holders),"
        "        (SELECT max(xmin_age) FROM holders)::int8,"
        "        (SELECT max(seconds) FROM holders)::float8::text,"
        "        (SELECT holder FROM holders ORDER BY xmin_age DESC LIMIT 1)::text,"
        "        (SELECT holder FROM holders WHERE seconds IS NOT NULL ORDER BY seconds DESC LIMIT 1)::text",
        {});
    auto row = holders.run();
    int64 count = row.int8(0, 0).value_or(0);
    std::optional<int64> xmin_age = row.int8(0, 1);
    std::optional<std::string> seconds = row.text(0, 2);
    // With no holder there is nothing to hold against the thresholds (which may be 0).
    Status status = healthy;
    if (xmin_age)
        status = by_thresholds((double)*xmin_age, setting_int("health.horizon_xmin_age_warning"),
                               setting_int("health.horizon_xmin_age_critical"));
    if (seconds)
        status = worst(status, by_thresholds(std::stod(*seconds), setting_int("health.horizon_transaction_warning_seconds"),
                                             setting_int("health.horizon_transaction_critical_seconds")));
    std::string json = fmt::format(
        "{{\"status\": \"{}\", \"holders\": {}, \"oldest_xmin_age\": {}, \"longest_transaction_seconds\": {},"
        " \"oldest_xmin\": {}, \"longest_transaction\": {}}}",
        status_name(status), count, xmin_age ? fmt::format("{}", *xmin_age) : "null",
        seconds ? fmt::format("{:.3f}", std::stod(*seconds)) : "null", number_or_null(row.text(0, 3)),
        number_or_null(row.text(0, 4)));
    return {status, json};
}

CONVEYOR_FUNCTION(conveyor_health) {
    (void)fcinfo;
    spi::Connection spi;

    // ---- queues
    static Statement queues(
        "SELECT queue, pending, running, expired_leases, dead, oldest_pending_seconds::text"
        " FROM conveyor.queue_metrics() ORDER BY queue",
        {});
    int64 age_warn = setting_int("health.pending_age_warning_seconds"), age_crit = setting_int("health.pending_age_critical_seconds");
    int64 exp_warn = setting_int("health.expired_leases_warning"), exp_crit = setting_int("health.expired_leases_critical");
    int64 dead_warn = setting_int("health.dead_jobs_warning"), dead_crit = setting_int("health.dead_jobs_critical");
    auto q = queues.run();
    Status queues_status = healthy;
    std::string queue_items;
    int64 total_pending = 0, total_running = 0, total_expired = 0, total_dead = 0;
    for (uint64 r = 0; r < q.size(); ++r) {
        int64 pending = q.int8(r, 1).value_or(0), running = q.int8(r, 2).value_or(0);
        int64 expired = q.int8(r, 3).value_or(0), dead = q.int8(r, 4).value_or(0);
        std::optional<std::string> oldest = q.text(r, 5);
        double age = oldest ? std::stod(*oldest) : 0;
        Status s = worst(by_thresholds(age, age_warn, age_crit),
                         worst(by_thresholds(expired, exp_warn, exp_crit), by_thresholds(dead, dead_warn, dead_crit)));
        queues_status = worst(queues_status, s);
        total_pending += pending, total_running += running, total_expired += expired, total_dead += dead;
        queue_items += fmt::format(
            "{}{{\"queue\": {}, \"status\": \"{}\", \"pending\": {}, \"running\": {}, \"expired_leases\": {}, \"dead\": {},"
            " \"oldest_pending_seconds\": {}}}",
            r ? ", " : "", json_quoted(*q.text(r, 0)), status_name(s), pending, running, expired, dead, number_or_null(oldest));
    }

    // ---- locks, entities, workers, costs: one row
    static Statement rest(
        "SELECT"
        " (SELECT count(*) FROM conveyor.locks),"
        " (SELECT count(*) FROM conveyor.locks"
        "   WHERE heartbeat_at + ttl_seconds * interval '1 second' < pg_catalog.clock_timestamp()),"
        " (SELECT count(*) FROM (SELECT 1 FROM conveyor.entities WHERE state = 'IN_PROGRESS'"
        "   AND last_processed_at < pg_catalog.clock_timestamp() - $1 * interval '1 second' LIMIT $2) s),"
        " (SELECT count(*) FROM (SELECT 1 FROM conveyor.entities WHERE state = 'FAILED' LIMIT $2) f),"
        " (SELECT count(*) FROM (SELECT 1 FROM conveyor.entities WHERE state = 'DEAD' LIMIT $2) d),"
        " w.info, w.warning, w.error, w.critical, w.workers,"
        " a.near, a.over, qs.at_risk, qs.exhausted"
        " FROM (SELECT count(*) FILTER (WHERE severity = 'info') AS info, count(*) FILTER (WHERE severity = 'warning') AS warning,"
        "              count(*) FILTER (WHERE severity = 'error') AS error,"
        "              count(*) FILTER (WHERE severity = 'critical') AS critical, count(DISTINCT worker_name) AS workers"
        "       FROM conveyor.worker_issues WHERE resolved_at IS NULL) w,"
        "      (SELECT count(*) FILTER (WHERE budget > 0 AND total >= budget * $3 AND total < budget) AS near,"
        "              count(*) FILTER (WHERE budget IS NOT NULL AND total >= budget) AS over"
        "       FROM conveyor.account_status()) a,"
        "      (SELECT count(*) FILTER (WHERE risk_level = 'high') AS at_risk,"
        "              count(*) FILTER (WHERE risk_level = 'exhausted') AS exhausted"
        "       FROM conveyor.quota_status()) qs",
        {INT8OID, INT8OID, FLOAT8OID});
    auto row = rest.run(Params()
                            .int8(0, setting_int("health.entity_stuck_seconds"))
                            .int8(1, count_cap)
                            .float8(2, setting_number("health.budget_ratio_warning")));
    auto n = [&](int col) { return row.int8(0, col).value_or(0); };
    int64 held = n(0), stale = n(1), stuck = n(2), failed = n(3), dead = n(4);
    int64 info = n(5), warn = n(6), error = n(7), crit = n(8), workers = n(9);
    int64 near = n(10), over = n(11), at_risk = n(12), exhausted = n(13);

    Status locks_status =
        by_thresholds(stale, setting_int("health.stale_locks_warning"), setting_int("health.stale_locks_critical"));
    int64 ent_warn = setting_int("health.entities_warning"), ent_crit = setting_int("health.entities_critical");
    Status entities_status = worst(by_thresholds(stuck, ent_warn, ent_crit),
                                   worst(by_thresholds(failed, ent_warn, ent_crit), by_thresholds(dead, ent_warn, ent_crit)));
    // Info issues are reported, not alarming; one open critical issue is critical on its own.
    Status workers_status = by_thresholds(warn + error + crit, setting_int("health.open_issues_warning"),
                                          setting_int("health.open_issues_critical"));
    if (crit > 0) workers_status = critical;
    Status costs_status = over > 0 || exhausted > 0 ? critical : near > 0 || at_risk > 0 ? warning : healthy;
    Section horizon = horizon_section();
    Status overall = worst(worst(worst(queues_status, locks_status), worst(entities_status, worst(workers_status, costs_status))),
                           horizon.status);

    std::string doc = fmt::format(
        "{{\"at\": {}, \"overall_status\": \"{}\","
        " \"queues\": {{\"status\": \"{}\", \"pending\": {}, \"running\": {}, \"expired_leases\": {}, \"dead\": {},"
        " \"queues\": [{}]}},"
        " \"locks\": {{\"status\": \"{}\", \"held\": {}, \"stale\": {}}},"
        " \"entities\": {{\"status\": \"{}\", \"stuck\": {}, \"failed\": {}, \"dead\": {}, \"counts_capped_at\": {}}},"
        " \"workers\": {{\"status\": \"{}\", \"open_issues\": {}, \"by_severity\": {{\"info\": {}, \"warning\": {},"
        " \"error\": {}, \"critical\": {}}}, \"workers_with_issues\": {}}},"
        " \"costs\": {{\"status\": \"{}\", \"accounts_near_budget\": {}, \"accounts_over_budget\": {},"
        " \"quotas_at_risk\": {}, \"quotas_exhausted\": {}}}, \"horizon\": {}}}",
        json_quoted(timestamptz_text(GetCurrentTimestamp())), status_name(overall), status_name(queues_status),
        total_pending, total_running, total_expired, total_dead, queue_items, status_name(locks_status), held, stale,
        status_name(entities_status), stuck, failed, dead, count_cap, status_name(workers_status),
        info + warn + error + crit, info, warn, error, crit, workers, status_name(costs_status), near, over, at_risk,
        exhausted, horizon.json);
    const char *s = doc.c_str();
    Datum built = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
    Datum result = spi::keep(built, false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

} // namespace conveyor::monitor
