// The queue, as other parts of conveyor see it.
#pragma once

#include "core/guard.hpp"

namespace conveyor::queue {

// At load: the per-backend queue cache and partition bookkeeping follow catalog changes and aborts.
void register_callbacks();

} // namespace conveyor::queue
