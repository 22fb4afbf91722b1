// What the retention module's files (rules.cpp, apply.cpp) share: the checks a rule's table and
// column pass, when the rule is defined and again each time it runs.
#pragma once

#include <string>

#include "retention/retention.hpp"

namespace conveyor::retention {

// A rule's table as the catalog has it now.
struct Target {
    Oid relid = InvalidOid;
    Oid owner = InvalidOid;
    std::string owner_name;
    std::string qualified;  // schema.table, each quoted with quote_identifier
    std::string column;     // quoted with quote_identifier
};

// The table, an ordinary or partitioned one, not temporary: else Error 42P01 (no such table) or
// 22023. The caller holds a lock on the table, so what this returns stays true until the transaction
// ends.
Target check_table(Oid relid);
// Its column of type timestamptz, timestamp or date, not dropped: else Error 42703 (no such column)
// or 22023 (a system column, a column of another type); sets t.column.
void check_column(Target &t, const std::string &time_column);

} // namespace conveyor::retention
