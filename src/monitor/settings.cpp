// Settings: conveyor.settings(), get_setting, set_setting and the trigger settings_changed.
//
// Every key, its default, its kind and bounds, and its description are defined here, once; the table
// conveyor.settings holds only what an operator changed. Each backend caches the effective values;
// a change fires settings_changed, which invalidates the table's relcache entry, and every backend's
// relcache callback empties its cache (the same way the queue cache follows conveyor.queues).
#include <cmath>
#include <map>

#include "core/args.hpp"
#include "core/message.hpp"
#include "core/owner.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "core/uuid.hpp"
#include "monitor/internal.hpp"

extern "C" {
#include "commands/trigger.h"
#include "utils/inval.h"
}

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

enum class Kind { integer, number, boolean };

struct SettingDefinition {
    const char *key;
    const char *default_value;
    Kind kind;
    double lo, hi;  // bounds of integer and number settings
    const char *description;
};

constexpr double day_seconds = 86400;

// Sorted by key (settings() lists them in this order).
static const SettingDefinition definitions[] = {
    {"audit.worker_calls", "off", Kind::boolean, 0, 0,
     "Also audit workers' calls (queue, locks, upserts, charges), not only admin actions."},
    {"health.budget_ratio_warning", "0.8", Kind::number, 0, 1,
     "An account whose spend reaches this share of its budget is near it (warning); at 1 it is over (critical)."},
    {"health.dead_jobs_critical", "100", Kind::integer, 1, 1e12, "Dead jobs still in history that make queue health critical."},
    {"health.dead_jobs_warning", "1", Kind::integer, 1, 1e12, "Dead jobs still in history that make queue health a warning."},
    {"health.entities_critical", "10", Kind::integer, 1, 1e12,
     "Stuck, failed or dead entities (each counted on its own) that make entity health critical."},
    {"health.entities_warning", "1", Kind::integer, 1, 1e12,
     "Stuck, failed or dead entities (each counted on its own) that make entity health a warning."},
    {"health.entity_stuck_seconds", "1800", Kind::integer, 1, 30 * day_seconds,
     "An entity IN_PROGRESS without progress for this long counts as stuck."},
    {"health.expired_leases_critical", "10", Kind::integer, 1, 1e12, "Running jobs past their lease that make queue health critical."},
    {"health.expired_leases_warning", "1", Kind::integer, 1, 1e12, "Running jobs past their lease that make queue health a warning."},
    // The horizon: how long the oldest transaction that holds a snapshot may stay open (a forgotten
    // session is the usual cause; it harms nothing until claims arrive, so time catches it on a quiet
    // database), and how many transactions may have begun since the oldest xmin (what the damage
    // follows: each claim is one, and 20,000 claims under a held snapshot made a dequeue about 20
    // times slower in bench/README.md's measurement). 0 makes any holder count.
    {"health.horizon_transaction_critical_seconds", "1800", Kind::integer, 0, 365 * day_seconds,
     "Age of the oldest transaction or prepared transaction holding back the xmin horizon that makes horizon health critical."},
    {"health.horizon_transaction_warning_seconds", "300", Kind::integer, 0, 365 * day_seconds,
     "Age of the oldest transaction or prepared transaction holding back the xmin horizon that makes horizon health a warning."},
    {"health.horizon_xmin_age_critical", "100000", Kind::integer, 0, 2e9,
     "Age in transactions of the oldest xmin held by a session, replication slot or prepared transaction that makes horizon health critical."},
    {"health.horizon_xmin_age_warning", "20000", Kind::integer, 0, 2e9,
     "Age in transactions of the oldest xmin held by a session, replication slot or prepared transaction that makes horizon health a warning."},
    {"health.open_issues_critical", "5", Kind::integer, 1, 1e12,
     "Open worker issues that make worker health critical (one open critical issue always does)."},
    {"health.open_issues_warning", "1", Kind::integer, 1, 1e12,
     "Open worker issues (of severity warning or worse) that make worker health a warning."},
    {"health.pending_age_critical_seconds", "3600", Kind::integer, 1, 365 * day_seconds,
     "Age of the oldest due pending job that makes queue health critical."},
    {"health.pending_age_warning_seconds", "300", Kind::integer, 1, 365 * day_seconds,
     "Age of the oldest due pending job that makes queue health a warning."},
    {"health.stale_locks_critical", "10", Kind::integer, 1, 1e12, "Stale leases (past their ttl, not yet taken over) that make lock health critical."},
    {"health.stale_locks_warning", "1", Kind::integer, 1, 1e12, "Stale leases that make lock health a warning."},
    {"maintain.entity_stuck_seconds", "3600", Kind::integer, 60, 30 * day_seconds,
     "maintain() resets entities IN_PROGRESS without progress for this long to PENDING."},
    {"metrics.record_own", "on", Kind::boolean, 0, 0,
     "maintain() records conveyor's own figures as metrics (jobs per minute per queue, spend, quota use)."},
    {"retention.audit_days", "90", Kind::integer, 1, 3650, "Days the audit log is kept."},
    {"retention.events_days", "7", Kind::integer, 1, 3650, "Days monitoring events are kept."},
    {"retention.metric_daily_days", "730", Kind::integer, 1, 36500, "Days daily metric rollups are kept."},
    {"retention.metric_hourly_days", "90", Kind::integer, 1, 3650, "Days hourly metric rollups are kept."},
    {"retention.metric_points_days", "7", Kind::integer, 2, 3650,
     "Days raw metric points are kept (at least 2, so a day's rollup can always be recomputed)."},
    {"retention.resolved_issues_days", "30", Kind::integer, 1, 3650, "Days resolved worker issues are kept."},
    // Read by the id generator (src/core/uuid.cpp) for every new id: cached below as a number.
    {"shard.number", "0", Kind::integer, 0, 65535,
     "This server's shard number, carried in bytes 9-10 of every new id (0: a standalone server). Set once."},
};

static const SettingDefinition *find_definition(std::string_view key) {
    for (const auto &d : definitions)
        if (key == d.key) return &d;
    return nullptr;
}

static const SettingDefinition &known_definition(FunctionCallInfo fcinfo, int i) {
    std::string key = required_text(fcinfo, i, "key");
    const SettingDefinition *d = find_definition(key);
    if (!d)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("unknown setting {}", quoted(key)), "",
                    "conveyor.settings() lists every setting.");
    return *d;
}

// The value in canonical form ("on"/"off", integers without sign or fraction noise), or 22023.
static std::string canonical(const SettingDefinition &d, const std::string &value) {
    auto bad = [&](const std::string &why) {
        return Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("invalid value {} for setting {}", quoted(value), d.key),
                     why, fmt::format("{} Its default is {}.", d.description, d.default_value));
    };
    if (d.kind == Kind::boolean) {
        if (value == "on" || value == "true") return "on";
        if (value == "off" || value == "false") return "off";
        throw bad("It takes on or off.");
    }
    size_t used = 0;
    double v = 0;
    try {
        v = std::stod(value, &used);
    } catch (...) {
        used = 0;
    }
    if (used == 0 || used != value.size() || !std::isfinite(v)) throw bad("It takes a number.");
    if (d.kind == Kind::integer && v != std::floor(v)) throw bad("It takes a whole number.");
    if (v < d.lo || v > d.hi) throw bad(fmt::format("It takes a value from {} to {}.", d.lo, d.hi));
    return d.kind == Kind::integer ? fmt::format("{}", (int64)v) : fmt::format("{}", v);
}

// ---- the cache --------------------------------------------------------------------------------------
static std::map<std::string, std::string> stored_cache;  // what conveyor.settings holds
static bool cache_valid = false;
static Oid cache_relid = InvalidOid;

static void forget_cached_settings(Datum, Oid relid) {
    if (relid == InvalidOid || relid == cache_relid) cache_valid = false;
}

// shard.number as uuid_v7() wants it: parsed once per cache load (ids are made on the enqueue path).
static int32 cached_shard = -1;
static bool cached_shard_valid = false;

static const std::map<std::string, std::string> &stored_settings() {
    pg_guard([] { AcceptInvalidationMessages(); });
    if (cache_valid) return stored_cache;
    static Statement stmt("SELECT key, value FROM conveyor.settings", {});
    Oid relid = conveyor_relid("settings");
    std::map<std::string, std::string> loaded;
    if (!OidIsValid(relid)) {  // at 0.1: every setting at its default
        cached_shard_valid = false;
        return stored_cache = {};
    }
    {
        // As the owner: invoker functions (upsert) read settings too, for their caller's audit.
        OwnerScope owner;
        spi::Connection spi;  // nested: callers may or may not be connected
        auto rows = stmt.run();
        for (uint64 r = 0; r < rows.size(); ++r) loaded.emplace(*rows.text(r, 0), *rows.text(r, 1));
        spi.finish();
    }
    stored_cache = std::move(loaded);
    cache_relid = relid;
    cache_valid = true;
    cached_shard_valid = false;
    return stored_cache;
}

std::string setting(const char *key) {
    const SettingDefinition *d = find_definition(key);
    if (!d) throw Error(ERRCODE_INTERNAL_ERROR, fmt::format("conveyor has no setting {}", key));
    const auto &stored = stored_settings();
    auto it = stored.find(key);
    return it != stored.end() ? it->second : d->default_value;
}

int64 setting_int(const char *key) { return (int64)std::stod(setting(key)); }
double setting_number(const char *key) { return std::stod(setting(key)); }
bool setting_bool(const char *key) { return setting(key) == "on"; }

// The id generator's shard number: one cache check per id, the setting parsed again only after a
// change (settings_changed empties the cache in every backend).
static uint16 shard_number() {
    const auto &stored = stored_settings();
    if (!cached_shard_valid) {
        auto it = stored.find("shard.number");
        cached_shard = it != stored.end() ? (int32)std::stol(it->second) : 0;
        cached_shard_valid = true;
    }
    return (uint16)cached_shard;
}

void register_callbacks() {
    pg_guard([] { CacheRegisterRelcacheCallback(forget_cached_settings, (Datum)0); });
    set_shard_source(shard_number);
    register_audit_callbacks();
}

// ---- entry points ---------------------------------------------------------------------------------

CONVEYOR_FUNCTION(conveyor_settings) {
    ResultSet out(fcinfo);
    for (const auto &d : definitions) {
        std::string value = setting(d.key);
        Datum values[4];
        bool nulls[4] = {false, false, false, false};
        const char *texts[4] = {d.key, value.c_str(), d.default_value, d.description};
        pg_guard([&] {
            for (int i = 0; i < 4; ++i) values[i] = CStringGetTextDatum(texts[i]);
        });
        out.add(values, nulls);
    }
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_get_setting) {
    const SettingDefinition &d = known_definition(fcinfo, 0);
    std::string value = setting(d.key);
    const char *v = value.c_str();
    return pg_guard([&] { return CStringGetTextDatum(v); });
}

CONVEYOR_AUDITED_FUNCTION(conveyor_set_setting) {
    const SettingDefinition &d = known_definition(fcinfo, 0);
    std::optional<std::string> value = arg_text(fcinfo, 1);
    spi::Connection spi;
    if (value) {
        std::string v = canonical(d, *value);
        static Statement upsert(
            "INSERT INTO conveyor.settings (key, value, updated_at, updated_by)"
            " VALUES ($1, $2, pg_catalog.now(), SESSION_USER)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,"
            "   updated_by = excluded.updated_by",
            {TEXTOID, TEXTOID});
        upsert.run(Params().text(0, d.key).text(1, v));
        record_event("setting_changed", "monitor", std::string(d.key),
                     fmt::format("{{\"value\": {}}}", json_quoted(v)));
    } else {
        static Statement remove("DELETE FROM conveyor.settings WHERE key = $1", {TEXTOID});
        remove.run(Params().text(0, d.key));
        record_event("setting_changed", "monitor", std::string(d.key),
                     fmt::format("{{\"value\": {}, \"default\": true}}", json_quoted(d.default_value)));
    }
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_FUNCTION(conveyor_settings_changed) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw Error(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, "settings_changed must be called as a trigger");
    Relation rel = ((TriggerData *)fcinfo->context)->tg_relation;
    pg_guard([&] { CacheInvalidateRelcache(rel); });
    return PointerGetDatum(nullptr);
}

} // namespace conveyor::monitor
