// The monitor module as the other modules and maintain() see it: settings, the event log, upkeep.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/pg.hpp"

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

// At load (src/core/module.cpp).
void register_callbacks();

} // namespace conveyor::monitor
