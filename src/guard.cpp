#include "guard.hpp"

extern "C" {
PG_MODULE_MAGIC;
}

namespace conveyor {

MemoryContext boundary_context = nullptr;

namespace detail {

static void copy_text(char *dst, size_t cap, const std::string &src) noexcept {
    size_t n = src.size() < cap - 1 ? src.size() : cap - 1;
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
    std::strncpy(out.message, what ? what : "", sizeof out.message - 1);
    out.message[sizeof out.message - 1] = '\0';
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
} // namespace conveyor
