// Retention of applications' own tables (conveyor.retention_rules), as maintain() sees it.
#pragma once

#include "core/guard.hpp"

namespace conveyor::retention {

// Applies every rule once: deletes at most the rule's batch of rows older than its keep, as the
// table's owner; returns the rows deleted. A rule that fails (its table busy, its column changed, the
// table's owner changed, the owner's trigger raised) deletes nothing, records why in last_error and
// an event, and leaves the other rules and the rest of maintain() to go on. A rule whose table was
// dropped is removed.
int64 apply_rules();

} // namespace conveyor::retention
