// libFuzzer harness for conveyor::clip_utf8 (src/core/text.hpp). The first two bytes choose max_bytes,
// the rest is the value. Checks: identity when the value fits; otherwise at most max_bytes (for
// max_bytes >= 3), a prefix of the value followed by the ellipsis, and for valid UTF-8 input a cut on
// a character boundary that drops no whole character it had room for.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "../../src/core/text.hpp"

namespace {

// Length of the UTF-8 sequence starting at s[i] if it is well-formed (RFC 3629), else 0.
size_t sequence_length(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = b(i);
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
    else return 0;
    if (i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k) {
        if ((b(i + k) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b(i + k) & 0x3F);
    }
    static const uint32_t min_for[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        size_t n = sequence_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

void check(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t max_bytes = (static_cast<size_t>(data[0]) << 8 | data[1]) % 600;
    std::string_view s(reinterpret_cast<const char *>(data + 2), size - 2);
    std::string out = conveyor::clip_utf8(s, max_bytes);
    const std::string_view ell = conveyor::utf8_ellipsis;

    if (s.size() <= max_bytes) {
        check(out == s);
        return 0;
    }
    if (max_bytes < ell.size()) {
        check(out.empty());
        return 0;
    }
    check(out.size() <= max_bytes);
    check(out.size() >= ell.size() && std::string_view(out).substr(out.size() - ell.size()) == ell);
    std::string_view kept = std::string_view(out).substr(0, out.size() - ell.size());
    check(s.substr(0, kept.size()) == kept);
    if (valid_utf8(s)) {
        // The cut is on a boundary: what is kept is whole characters, and the next one did not fit.
        check(valid_utf8(kept));
        check(kept.size() < s.size());
        check(kept.size() + sequence_length(s, kept.size()) > max_bytes - ell.size());
    }
    return 0;
}
