// Text helpers with no PostgreSQL dependency (so test/libfuzzer can drive them outside a server).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace conveyor {

// The ellipsis that marks a clipped value in a message.
inline constexpr std::string_view utf8_ellipsis = "\xE2\x80\xA6";  // U+2026

// The same mark in plain ASCII, which every client encoding can show.
inline constexpr std::string_view ascii_ellipsis = "...";

// s itself if it fits in max_bytes; otherwise its longest prefix that ends on a UTF-8 character
// boundary and leaves room for the ellipsis, followed by it. Never longer than max_bytes (for
// max_bytes >= ellipsis.size()), never cut inside a character of valid UTF-8 input.
inline std::string clip_utf8(std::string_view s, size_t max_bytes, std::string_view ellipsis = utf8_ellipsis) {
    if (s.size() <= max_bytes) return std::string(s);
    if (max_bytes < ellipsis.size()) return std::string();
    size_t cut = max_bytes - ellipsis.size();
    // A byte 10xxxxxx continues the character before it: back up to the start of that character.
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    std::string out(s.substr(0, cut));
    out += ellipsis;
    return out;
}

}  // namespace conveyor
