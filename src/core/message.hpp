// Values in messages: clipped at a character boundary, so no message is ever invalid text.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- values in messages ----
// The one place messages quote values. A value longer than max_quoted_bytes is cut at a character
// boundary of the database encoding and marked with an ASCII ellipsis "...", so a message is never
// cut inside a character, converts to every client encoding the value itself converts to, and never
// approaches the 2048-byte buffers the boundary copies it into (src/core/guard.cpp).
constexpr size_t max_quoted_bytes = 200;
// The value itself, clipped as above (for numbers and other unquoted values of unbounded length).
std::string clipped(std::string_view s, size_t max_bytes = max_quoted_bytes);
// The value in double quotes, clipped (for messages only, never for SQL).
std::string quoted(std::string_view s);

} // namespace conveyor
