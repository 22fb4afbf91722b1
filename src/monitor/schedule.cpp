// conveyor.schedule_maintenance and conveyor.unschedule_maintenance: conveyor.maintain() as a pg_cron
// job, one per database, named conveyor-maintain:<database>.
//
// pg_cron keeps its jobs in one database (cron.database_name) and runs each job as the user that
// scheduled it. These functions are SECURITY DEFINER, so the job belongs to, and runs as, the
// extension's owner; its command is always the constant below and the caller's text only ever
// reaches pg_cron as the schedule, which pg_cron parses. Where pg_cron cannot schedule from this
// database, the error's HINT gives the statement to run in the database that can.
// Both are operator actions: the audit trail records each call (src/monitor/audit.cpp).
#include "core/args.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "monitor/monitor.hpp"

extern "C" {
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "utils/guc.h"
}

namespace conveyor::monitor {

using spi::Params;

static constexpr const char *maintain_command = "SELECT conveyor.maintain()";
static constexpr const char *job_prefix = "conveyor-maintain:";

static std::string current_database_name() {
    const char *name = pg_guard([] { return get_database_name(MyDatabaseId); });
    return name ? std::string(name) : std::string();
}

// pg_cron's job names are of type name: cut to fit at a character boundary, so the name looked up is
// the name stored.
static std::string job_name(const std::string &database) {
    std::string full = std::string(job_prefix) + database;
    const char *s = full.c_str();
    int len = (int)full.size();
    int cut = pg_guard([&] { return pg_mbcliplen(s, len, NAMEDATALEN - 1); });
    return full.substr(0, (size_t)cut);
}

// A SQL string literal (for the statements hints suggest; never for statements conveyor runs).
static std::string literal(const std::string &value) {
    const char *v = value.c_str();
    const char *lit = pg_guard([&] { return quote_literal_cstr(v); });
    return std::string(lit);
}

// The database pg_cron schedules from, or nullopt when the server did not preload pg_cron (then its
// settings are unknown or mere placeholders).
static std::optional<std::string> cron_database() {
    const char *value = nullptr;
    bool placeholder = pg_guard([&] {
        value = GetConfigOption("cron.database_name", true, false);
        return value != nullptr && (GetConfigOptionFlags("cron.database_name", true) & GUC_CUSTOM_PLACEHOLDER) != 0;
    });
    if (value == nullptr || placeholder) return std::nullopt;
    return std::string(value);
}

// Throws unless pg_cron can schedule conveyor-maintain:<this database> from here: preloaded, and this
// database is cron.database_name (`instead` is the statement to run in that database). Returns whether
// pg_cron's extension is created here.
static bool cron_here(const std::string &database, const std::string &instead) {
    std::optional<std::string> cron_db = cron_database();
    if (!cron_db)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "pg_cron is not loaded",
                    "conveyor.maintain() is scheduled with pg_cron, which runs only when the server preloads it.",
                    fmt::format("Add pg_cron to shared_preload_libraries and set cron.database_name = {} in "
                                "postgresql.conf, restart the server, then run CREATE EXTENSION pg_cron in database {}.",
                                literal(database), quoted(database)));
    if (*cron_db != database)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fmt::format("pg_cron schedules jobs from database {}, not from {}", quoted(*cron_db), quoted(database)),
                    "pg_cron keeps its jobs in the database named by cron.database_name.",
                    fmt::format("Run this in database {}: {}", quoted(*cron_db), instead));
    return pg_guard([] { return OidIsValid(get_extension_oid("pg_cron", true)); });
}

// The job's id, whether it is active, and the database it runs in; nullopt when there is none.
struct Job {
    int64 id;
    bool active;
    std::string database;
};
static std::optional<Job> find_job(const std::string &name) {
    spi::Rows rows = spi::run_once(
        "SELECT jobid, active, database FROM cron.job"
        " WHERE jobname OPERATOR(pg_catalog.=) $1::pg_catalog.name AND username OPERATOR(pg_catalog.=) CURRENT_USER",
        {TEXTOID}, Params().text(0, name));
    if (rows.size() == 0) return std::nullopt;
    return Job{*rows.int8(0, 0), *rows.boolean(0, 1), rows.text(0, 2).value_or("")};
}

CONVEYOR_AUDITED_FUNCTION(conveyor_schedule_maintenance) {
    std::string schedule = required_name(fcinfo, 0, "schedule", max_key_bytes);
    std::string database = current_database_name();
    std::string name = job_name(database);
    bool created = cron_here(database, fmt::format("SELECT cron.schedule_in_database({}, {}, {}, {})", literal(name),
                                                   literal(clipped(schedule)), literal(maintain_command), literal(database)));
    if (!created)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("extension pg_cron is not created in database {}", quoted(database)),
                    "pg_cron is preloaded and schedules jobs from this database, but its extension is not created here.",
                    "Run CREATE EXTENSION pg_cron in this database, then call conveyor.schedule_maintenance again.");
    spi::Connection spi;
    // cron.schedule(job_name, ...) updates the schedule and command of this user's job of that name,
    // if there is one, instead of adding another.
    int64 job_id;
    try {
        spi::Rows rows = spi::run_once("SELECT cron.schedule($1, $2, $3)", {TEXTOID, TEXTOID, TEXTOID},
                                       Params().text(0, name).text(1, schedule).text(2, maintain_command));
        job_id = *rows.int8(0, 0);
    } catch (const PgError &e) {
        if (e.sqlstate() != ERRCODE_INVALID_PARAMETER_VALUE) throw;
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("schedule {} is not a cron schedule", quoted(schedule)),
                    "pg_cron accepts five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ...",
                    "Pass a schedule such as '* * * * *' (every minute) or '*/5 * * * *' (every 5 minutes).");
    }
    // It leaves a job someone paused paused: scheduling means running.
    std::optional<Job> job = find_job(name);
    if (job && (!job->active || job->database != database))
        spi::run_once("SELECT cron.alter_job($1, database => $2, active => true)", {INT8OID, TEXTOID},
                      Params().int8(0, job_id).text(1, database));
    spi.finish();
    PG_RETURN_INT64(job_id);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_unschedule_maintenance) {
    (void)fcinfo;
    std::string database = current_database_name();
    std::string name = job_name(database);
    // Without pg_cron's extension there is no job to remove.
    if (!cron_here(database, fmt::format("SELECT cron.unschedule({})", literal(name)))) PG_RETURN_BOOL(false);
    spi::Connection spi;
    std::optional<Job> job = find_job(name);
    if (job) spi::run_once("SELECT cron.unschedule($1)", {INT8OID}, Params().int8(0, job->id));
    spi.finish();
    PG_RETURN_BOOL(job.has_value());
}

} // namespace conveyor::monitor
