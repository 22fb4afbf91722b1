// conveyor.schedule_maintenance and conveyor.unschedule_maintenance: conveyor.maintain() as a pg_cron
// job, one per database, named conveyor-maintain:<database>.
//
// pg_cron keeps its jobs in one database (cron.database_name) and runs each job as the user that
// scheduled it. These functions are SECURITY DEFINER, so the job belongs to, and runs as, the
// extension's owner; its command is always the constant below and the caller's text only ever
// reaches pg_cron as the schedule, which pg_cron parses. Where pg_cron cannot schedule from this
// database, the error's HINT gives the statement to run in the database that can.
// Both are operator actions: the audit trail records each call (src/monitor/audit.cpp).
#include <functional>

#include "core/args.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "core/time.hpp"
#include "core/uuid.hpp"
#include "monitor/monitor.hpp"
#include "queue/queue.hpp"

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

// Throws unless pg_cron can schedule from here: preloaded, and this database is cron.database_name
// (`instead` says what to do in that database: given the cron database's quoted name, the hint).
// `what` names what is scheduled. Returns whether pg_cron's extension is created here.
static bool cron_here(const std::string &database, const char *what,
                      const std::function<std::string(const std::string &)> &instead) {
    std::optional<std::string> cron_db = cron_database();
    if (!cron_db)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "pg_cron is not loaded",
                    fmt::format("{} scheduled with pg_cron, which runs only when the server preloads it.", what),
                    fmt::format("Add pg_cron to shared_preload_libraries and set cron.database_name = {} in "
                                "postgresql.conf, restart the server, then run CREATE EXTENSION pg_cron in database {}.",
                                literal(database), quoted(database)));
    if (*cron_db != database)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fmt::format("pg_cron schedules jobs from database {}, not from {}", quoted(*cron_db), quoted(database)),
                    "pg_cron keeps its jobs in the database named by cron.database_name.",
                    instead(*cron_db));
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

// Creates or updates this user's pg_cron job of that name (cron.schedule replaces the schedule and
// command of an existing one instead of adding another), active and running in `database`: a job
// someone paused is resumed, since scheduling means running. A schedule pg_cron refuses is 22023
// with the forms it accepts. Returns the job's id. Inside an SPI connection.
static int64 upsert_cron_job(const std::string &name, const std::string &schedule, const std::string &command,
                             const std::string &database) {
    int64 job_id;
    try {
        spi::Rows rows = spi::run_once("SELECT cron.schedule($1, $2, $3)", {TEXTOID, TEXTOID, TEXTOID},
                                       Params().text(0, name).text(1, schedule).text(2, command));
        job_id = *rows.int8(0, 0);
    } catch (const PgError &e) {
        if (e.sqlstate() != ERRCODE_INVALID_PARAMETER_VALUE) throw;
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("schedule {} is not a cron schedule", quoted(schedule)),
                    "pg_cron accepts five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, ...",
                    "Pass a schedule such as '* * * * *' (every minute) or '*/5 * * * *' (every 5 minutes).");
    }
    std::optional<Job> job = find_job(name);
    if (job && (!job->active || job->database != database))
        spi::run_once("SELECT cron.alter_job($1, database => $2, active => true)", {INT8OID, TEXTOID},
                      Params().int8(0, job_id).text(1, database));
    return job_id;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_schedule_maintenance) {
    std::string schedule = required_name(fcinfo, 0, "schedule", max_key_bytes);
    std::string database = current_database_name();
    std::string name = job_name(database);
    bool created = cron_here(database, "conveyor.maintain() is", [&](const std::string &cron_db) {
        return fmt::format("Run this in database {}: SELECT cron.schedule_in_database({}, {}, {}, {})", quoted(cron_db),
                           literal(name), literal(clipped(schedule)), literal(maintain_command), literal(database));
    });
    if (!created)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("extension pg_cron is not created in database {}", quoted(database)),
                    "pg_cron is preloaded and schedules jobs from this database, but its extension is not created here.",
                    "Run CREATE EXTENSION pg_cron in this database, then call conveyor.schedule_maintenance again.");
    spi::Connection spi;
    int64 job_id = upsert_cron_job(name, schedule, maintain_command, database);
    spi.finish();
    PG_RETURN_INT64(job_id);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_unschedule_maintenance) {
    (void)fcinfo;
    std::string database = current_database_name();
    std::string name = job_name(database);
    // Without pg_cron's extension there is no job to remove.
    bool created = cron_here(database, "conveyor.maintain() is", [&](const std::string &cron_db) {
        return fmt::format("Run this in database {}: SELECT cron.unschedule({})", quoted(cron_db), literal(name));
    });
    if (!created) PG_RETURN_BOOL(false);
    spi::Connection spi;
    std::optional<Job> job = find_job(name);
    if (job) spi::run_once("SELECT cron.unschedule($1)", {INT8OID}, Params().int8(0, job->id));
    spi.finish();
    PG_RETURN_BOOL(job.has_value());
}

// ---------------------------------------------------------------------------------------------------
// Recurring jobs: conveyor.schedule_enqueue, unschedule_enqueue, list_schedules and run_schedule.
//
// A schedule's definition is a row of conveyor.schedules, checked as enqueue checks a job when it is
// made; its pg_cron job, conveyor-enqueue:<database>:<name>, belongs to and runs as the extension's
// owner, like maintenance, and its command is SELECT conveyor.run_schedule('<name>'): the name as a
// quoted literal is the only caller text pg_cron ever runs, and run_schedule only reads the row and
// enqueues (no code of any caller runs). Only conveyor_admin may make schedules: a job enqueued by a
// schedule is enqueued by conveyor itself, whoever made it, as long as the schedule exists.

static constexpr const char *enqueue_job_prefix = "conveyor-enqueue:";

// conveyor-enqueue:<database>:<name>, refused with 22023 when it does not fit pg_cron's job name (a
// clipped name could be another schedule's).
static std::string enqueue_job_name(const std::string &database, const std::string &name) {
    std::string full = fmt::format("{}{}:{}", enqueue_job_prefix, database, name);
    if (full.size() > NAMEDATALEN - 1) {
        size_t room = NAMEDATALEN - 1 - (full.size() - name.size());
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("name {} is too long for a schedule: at most {} bytes in database {}", quoted(name), room,
                                quoted(database)),
                    fmt::format("The pg_cron job is named {}<database>:<name>, at most {} bytes.", enqueue_job_prefix,
                                NAMEDATALEN - 1),
                    "Pass a shorter name.");
    }
    return full;
}

static std::string run_command(const std::string &name) {
    return fmt::format("SELECT conveyor.run_schedule({})", literal(name));
}

// Throws unless this database schedules with pg_cron and its extension is created here.
static void require_cron(const std::string &database, const char *function) {
    bool created = cron_here(database, "Recurring jobs are", [&](const std::string &cron_db) {
        return fmt::format("Recurring jobs are kept in the database pg_cron schedules from: create the queue and the "
                           "schedule in database {}, or set cron.database_name = {} and restart the server.",
                           quoted(cron_db), literal(database));
    });
    if (!created)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("extension pg_cron is not created in database {}", quoted(database)),
                    "pg_cron is preloaded and schedules jobs from this database, but its extension is not created here.",
                    fmt::format("Run CREATE EXTENSION pg_cron in this database, then call conveyor.{} again.", function));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_schedule_enqueue) {
    std::string name = required_name(fcinfo, 0, "name", max_key_bytes);
    std::string schedule = required_name(fcinfo, 1, "schedule", max_key_bytes);
    std::string queue = required_name(fcinfo, 2, "queue", max_key_bytes);
    Jsonb *payload = arg_jsonb(fcinfo, 3);
    if (!payload) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "payload must not be NULL", "", "Pass '{}' for an empty payload.");
    std::optional<std::string> job_type = optional_key(fcinfo, 4, "job_type", true);
    std::optional<std::string> group_key = optional_key(fcinfo, 5, "group_key", true);
    require(fcinfo, 6, "priority");
    int32 priority = PG_GETARG_INT32(6);
    std::optional<int32> max_attempts = arg_int(fcinfo, 7);
    std::string database = current_database_name();
    std::string job = enqueue_job_name(database, name);
    require_cron(database, "schedule_enqueue");

    spi::Connection spi;
    // What every tick will enqueue, checked now: the queue, the job type, the payload's keys and schema.
    queue::check_job(queue, payload, job_type, priority, max_attempts);
    // Scheduling again changes the definition and keeps last_tick: the current tick never enqueues twice.
    spi::run_once(
        "INSERT INTO conveyor.schedules AS s (name, queue, payload, job_type, group_key, priority, max_attempts, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, pg_catalog.now(), pg_catalog.now())"
        " ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, payload = excluded.payload, job_type = excluded.job_type,"
        " group_key = excluded.group_key, priority = excluded.priority, max_attempts = excluded.max_attempts,"
        " updated_at = excluded.updated_at",
        {TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, INT4OID, INT4OID},
        Params().text(0, name).text(1, queue).datum(2, PointerGetDatum(payload)).text(3, job_type).text(4, group_key)
            .int4(5, priority).int4(6, max_attempts));
    int64 job_id = upsert_cron_job(job, schedule, run_command(name), database);
    spi.finish();
    PG_RETURN_INT64(job_id);
}

CONVEYOR_AUDITED_FUNCTION(conveyor_unschedule_enqueue) {
    std::string name = required_name(fcinfo, 0, "name", max_key_bytes);
    std::string database = current_database_name();
    std::string job = enqueue_job_name(database, name);
    require_cron(database, "unschedule_enqueue");
    spi::Connection spi;
    std::optional<Job> found = find_job(job);
    if (found) spi::run_once("SELECT cron.unschedule($1)", {INT8OID}, Params().int8(0, found->id));
    bool had_row = spi::run_once("DELETE FROM conveyor.schedules WHERE name = $1", {TEXTOID}, Params().text(0, name)).affected() > 0;
    spi.finish();
    PG_RETURN_BOOL(found.has_value() || had_row);
}

// True when pg_cron schedules from this database and its extension is created here (readers of
// cron.job only: they work without it, and never raise).
static bool cron_usable_here(const std::string &database) {
    std::optional<std::string> cron_db = cron_database();
    return cron_db && *cron_db == database && pg_guard([] { return OidIsValid(get_extension_oid("pg_cron", true)); });
}

CONVEYOR_FUNCTION(conveyor_list_schedules) {
    ResultSet out(fcinfo);
    std::string database = current_database_name();
    bool with_cron = cron_usable_here(database);
    spi::Connection spi;
    static constexpr const char *columns =
        "s.name, {schedule}, {active}, s.queue, s.payload, s.job_type, s.group_key, s.priority, s.max_attempts,"
        " s.last_tick, s.last_job_id, {jobid}, s.created_at, s.updated_at FROM conveyor.schedules s";
    std::string sql =
        with_cron ? fmt::format(fmt::runtime(std::string("SELECT ") + columns +
                                             " LEFT JOIN cron.job j ON j.jobname OPERATOR(pg_catalog.=)"
                                             " ($1 OPERATOR(pg_catalog.||) s.name)::pg_catalog.name"
                                             " AND j.username OPERATOR(pg_catalog.=) CURRENT_USER ORDER BY s.name"),
                                fmt::arg("schedule", "j.schedule"), fmt::arg("active", "j.active"), fmt::arg("jobid", "j.jobid"))
                  : fmt::format(fmt::runtime(std::string("SELECT ") + columns + " WHERE $1 IS NOT NULL ORDER BY s.name"),
                                fmt::arg("schedule", "NULL::text"), fmt::arg("active", "NULL::boolean"),
                                fmt::arg("jobid", "NULL::bigint"));
    spi::Rows rows = spi::run_once(sql, {TEXTOID}, Params().text(0, fmt::format("{}{}:", enqueue_job_prefix, database)));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// The length of a tick in seconds: pg_cron's 'N seconds' schedules (pg_cron 1.5 and later) tick every N
// seconds; a cron expression starts at most once a minute.
static int64 tick_seconds(const std::optional<std::string> &schedule) {
    if (!schedule) return 60;
    const std::string &s = *schedule;
    size_t i = s.find_first_not_of(' ');
    if (i == std::string::npos || !isdigit((unsigned char)s[i])) return 60;
    int64 n = 0;
    while (i < s.size() && isdigit((unsigned char)s[i]) && n < 1000) n = n * 10 + (s[i++] - '0');
    while (i < s.size() && s[i] == ' ') ++i;
    std::string rest = s.substr(i);
    while (!rest.empty() && rest.back() == ' ') rest.pop_back();
    if ((rest == "second" || rest == "seconds") && n >= 1 && n <= 59) return n;
    return 60;
}

// The start of the tick `now` falls in: Unix time rounded down to a multiple of the tick's length.
static TimestampTz tick_of(TimestampTz now, int64 seconds) {
    // PostgreSQL counts from 2000-01-01 00:00 UTC, 946684800 s after the Unix epoch.
    constexpr int64 unix_offset = INT64CONST(946684800) * USECS_PER_SEC;
    int64 period = seconds * USECS_PER_SEC;
    int64 unix_us = now + unix_offset;
    int64 rem = unix_us % period;
    if (rem < 0) rem += period;
    return unix_us - rem - unix_offset;
}

// One run of a schedule: claims the current tick (a row lock orders runs of one schedule; one that
// finds the tick, or a later one, claimed enqueues nothing and returns NULL) and enqueues its job in
// the same transaction, with the dedup key schedule:<name>@<tick in UTC>. A failed enqueue (queue
// dropped, payload no longer valid) fails the run and leaves the tick unclaimed.
CONVEYOR_FUNCTION(conveyor_run_schedule) {
    std::string name = required_name(fcinfo, 0, "name", max_key_bytes);
    std::string database = current_database_name();
    bool with_cron = cron_usable_here(database);
    spi::Connection spi;
    std::optional<std::string> schedule;
    if (with_cron && (NAMEDATALEN - 1) >= (int)(strlen(enqueue_job_prefix) + database.size() + 1 + name.size())) {
        spi::Rows rows = spi::run_once(
            "SELECT schedule FROM cron.job WHERE jobname OPERATOR(pg_catalog.=) $1::pg_catalog.name"
            " AND username OPERATOR(pg_catalog.=) CURRENT_USER",
            {TEXTOID}, Params().text(0, fmt::format("{}{}:{}", enqueue_job_prefix, database, name)));
        if (rows.size() > 0) schedule = rows.text(0, 0);
    }
    TimestampTz tick = tick_of(tx_now(), tick_seconds(schedule));
    spi::Rows claimed = spi::run_once(
        "WITH s AS (UPDATE conveyor.schedules SET last_tick = $2"
        "           WHERE name = $1 AND (last_tick IS NULL OR last_tick < $2)"
        "           RETURNING queue, payload, job_type, group_key, priority, max_attempts)"
        " SELECT e.job_id FROM s, conveyor.enqueue(s.queue, s.payload, s.job_type, s.group_key, s.priority, NULL,"
        "   'schedule:' || $1 || '@' || pg_catalog.to_char($2 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "   s.max_attempts) e",
        {TEXTOID, TIMESTAMPTZOID}, Params().text(0, name).datum(1, TimestampTzGetDatum(tick)));
    if (claimed.size() == 0) {
        if (spi::run_once("SELECT 1 FROM conveyor.schedules WHERE name = $1", {TEXTOID}, Params().text(0, name)).size() == 0)
            throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("schedule {} does not exist", quoted(name)), "",
                        "conveyor.list_schedules() lists the schedules; unschedule_enqueue removes a pg_cron job left without one.");
        spi.finish();
        PG_RETURN_NULL();
    }
    pg_uuid_t job_id = *claimed.uuid(0, 0);
    spi::run_once("UPDATE conveyor.schedules SET last_job_id = $2 WHERE name = $1", {TEXTOID, UUIDOID},
                  Params().text(0, name).uuid(1, job_id));
    spi.finish();
    return uuid_datum(job_id);
}

} // namespace conveyor::monitor
