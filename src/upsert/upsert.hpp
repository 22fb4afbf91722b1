// Upserts, as other parts of conveyor see them.
#pragma once

#include "core/guard.hpp"

namespace conveyor::upsert {

// At load: cached table descriptions are retired when their table changes.
void register_callbacks();

} // namespace conveyor::upsert
