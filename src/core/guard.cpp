#include "guard.hpp"

extern "C" {
#include "mb/pg_wchar.h"

}

namespace conveyor {

MemoryContext boundary_context = nullptr;

namespace detail {

// The longest prefix of s[0, len) that fits in limit bytes and ends on a character boundary of the
// database encoding, so a message cut to fit its buffer is still valid text. No PostgreSQL error can
// be raised here (we are inside a catch block): UTF-8 is handled by hand, other multibyte encodings by
// pg_encoding_mbcliplen, which only reads character lengths and raises nothing.
static size_t boundary_cut(const char *s, size_t len, size_t limit) noexcept {
    if (len <= limit) return len;
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8) {
        size_t cut = limit;
        // A byte 10xxxxxx continues the character before it: back up to that character's start.
        while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
        return cut;
    }
    if (pg_encoding_max_length(encoding) == 1) return limit;
    return (size_t)pg_encoding_mbcliplen(encoding, s, (int)(len < (size_t)PG_INT32_MAX ? len : PG_INT32_MAX), (int)limit);
}

static void copy_text(char *dst, size_t cap, const std::string &src) noexcept {
    size_t n = boundary_cut(src.data(), src.size(), cap - 1);
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

void capture(PendingError &out, const Error &e) noexcept {
    out.pg = nullptr;
    out.sqlstate = e.sqlstate;
    copy_text(out.message, sizeof out.message, e.message);
    copy_text(out.detail, sizeof out.detail, e.detail);
    copy_text(out.hint, sizeof out.hint, e.hint);
}

void capture(PendingError &out, const char *what, int sqlstate) noexcept {
    out.pg = nullptr;
    out.sqlstate = sqlstate;
    const char *text = what ? what : "";
    size_t n = boundary_cut(text, std::strlen(text), sizeof out.message - 1);
    std::memcpy(out.message, text, n);
    out.message[n] = '\0';
    out.detail[0] = '\0';
    out.hint[0] = '\0';
}

void raise(PendingError &pending) {
    if (pending.pg) ReThrowError(pending.pg);
    ereport(ERROR, (errcode(pending.sqlstate), errmsg_internal("%s", pending.message),
                    pending.detail[0] ? errdetail_internal("%s", pending.detail) : 0,
                    pending.hint[0] ? errhint("%s", pending.hint) : 0));
    pg_unreachable();
}

} // namespace detail
ErrorData *reworded(const ErrorData *e, const std::string &message, const std::string &hint) {
    const char *m = message.c_str();
    const char *h = hint.empty() ? nullptr : hint.c_str();
    return pg_guard([&] {
        MemoryContext old = MemoryContextSwitchTo(boundary_context ? boundary_context : CurrentMemoryContext);
        auto *copy = (ErrorData *)palloc(sizeof(ErrorData));
        *copy = *e;
        copy->message = pstrdup(m);
        if (h) copy->hint = pstrdup(h);
        copy->context = NULL;
        MemoryContextSwitchTo(old);
        return copy;
    });
}

} // namespace conveyor
