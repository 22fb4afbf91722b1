// The monitor module as the other modules and maintain() see it: settings, the event log, upkeep.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/guard.hpp"

namespace conveyor::monitor {

// ---- settings (settings.cpp) ----
// The value of a setting (stored or default), from this backend's cache; the key must be one that
// settings.cpp defines (an unknown key here is a programming error: XX000).
std::string setting(const char *key);
int64 setting_int(const char *key);
double setting_number(const char *key);
bool setting_bool(const char *key);

// ---- the event log (events.cpp) ----
// Writes one event in the current transaction. details_json is a JSON object's text (build strings
// in it with json_quoted()), or empty for none.
void record_event(const char *event, const char *source, const std::optional<std::string> &subject,
                  const std::string &details_json = "");
// The same event for several subjects (one details text each), in one statement.
void record_events(const char *event, const char *source, const std::vector<std::string> &subjects,
                   const std::vector<std::string> &details_json);
// A JSON string literal for s (quotes, backslashes and control characters escaped).
std::string json_quoted(std::string_view s);

// ---- upkeep, called by maintain() ----
// Partitions of the event log, metric points (and the audit log) ahead and past retention; returns
// partitions dropped, and adds to *busy those skipped because their lock was not granted in time.
int64 maintain_partitions(int64 *busy);
// Rolls up metrics (both periods); returns buckets written.
int64 roll_up_metrics();
// Deletes rollups and resolved issues past their retention; returns rows deleted.
int64 purge_expired();
// Records conveyor's own figures as metric points (jobs per minute per queue, spend, quota use).
int64 record_own_metrics();

// ---- the audit trail (audit.cpp) ----
// Runs body(fcinfo), the entry point's C++ body, and, when the call is audited, records it in
// conveyor.audit_log in the same transaction: the caller, the function, its arguments by name and its
// result. A call that fails records nothing (its error rolls the row back with the change). Which
// calls are audited is decided in audit.cpp from the privilege map: admin-only functions always
// (but periodic upkeep), worker functions when audit.worker_calls is on, readers never.
Datum audited_call(FunctionCallInfo fcinfo, Datum (*body)(FunctionCallInfo));

// At load (src/core/module.cpp).
void register_callbacks();

} // namespace conveyor::monitor

// Declares a SQL-callable function `name`, as CONVEYOR_FUNCTION does, whose calls go through
// monitor::audited_call: every entry point a worker or an admin may call is declared with it.
#define CONVEYOR_AUDITED_FUNCTION(name)                                                       \
    static Datum name##_impl(FunctionCallInfo fcinfo);                                        \
    extern "C" {                                                                              \
    PG_FUNCTION_INFO_V1(name);                                                                \
    Datum name(PG_FUNCTION_ARGS) {                                                            \
        return ::conveyor::at_boundary(                                                       \
            [fcinfo] { return ::conveyor::monitor::audited_call(fcinfo, name##_impl); });     \
    }                                                                                         \
    }                                                                                         \
    static Datum name##_impl(FunctionCallInfo fcinfo)
