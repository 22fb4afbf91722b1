#include "message.hpp"

#include <algorithm>

#include "text.hpp"

extern "C" {
#include "mb/pg_wchar.h"
}

namespace conveyor {

// ---- values in messages ----

std::string clipped(std::string_view s, size_t max_bytes) {
    if (s.size() <= max_bytes) return std::string(s);
    // The mark is ASCII "...", not U+2026: a message must convert to every client encoding (a LATIN1
    // client shown U+2026 would get 22P05 instead of the real error).
    static constexpr std::string_view dots = ascii_ellipsis;
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8) return clip_utf8(s, max_bytes, dots);
    // Another server encoding: pg_encoding_mbcliplen finds the longest whole-character prefix (it
    // stops at a NUL, which text never holds, and raises nothing).
    if (max_bytes < dots.size()) return std::string();
    const char *data = s.data();
    int len = (int)std::min<size_t>(s.size(), PG_INT32_MAX);
    int limit = (int)(max_bytes - dots.size());
    int cut = pg_guard([&] { return pg_encoding_mbcliplen(encoding, data, len, limit); });
    std::string out(s.substr(0, (size_t)cut));
    out += dots;
    return out;
}

std::string quoted(std::string_view s) {
    std::string out = "\"";
    out += clipped(s);
    out += '"';
    return out;
}

} // namespace conveyor
