// The C++/PostgreSQL boundary.
//
// PostgreSQL reports errors by longjmp (ereport); C++ by exceptions. Neither may cross the other:
//  * pg_guard(f) runs f, which calls into PostgreSQL, under its own sigsetjmp. A PostgreSQL error is
//    copied out of the error state (CopyErrorData + FlushErrorState) and thrown as PgError, so C++
//    destructors above the guard run normally.
//  * at_boundary(f) is the other direction, wherever PostgreSQL calls conveyor: it runs the C++
//    code inside try/catch and raises the error only after the catch block has ended, so no
//    exception object or destructor is skipped by the longjmp. PgError is re-raised with
//    ReThrowError: the client sees the original SQLSTATE, message, detail, hint and context (40001,
//    40P01 and 23505 survive). CONVEYOR_FUNCTION(name) declares a SQL-callable stub that does this;
//    transaction callbacks call at_boundary themselves.
//  * Inside f (the guarded lambda) no object with a non-trivial destructor may be created: a
//    longjmp out of f would skip it. Build strings and vectors outside, pass pointers in.
#pragma once

#include "pg.hpp"

namespace conveyor {

// A PostgreSQL error captured by pg_guard. The ErrorData lives in the boundary's memory context,
// which outlives every SPI connection opened below the boundary.
struct PgError final : std::exception {
    ErrorData *data;
    explicit PgError(ErrorData *d) : data(d) {}
    const char *what() const noexcept override { return data && data->message ? data->message : "PostgreSQL error"; }
    int sqlstate() const noexcept { return data ? data->sqlerrcode : 0; }
};

// An error conveyor raises itself, with the SQLSTATE callers branch on (see README, "Errors").
struct Error final : std::exception {
    int sqlstate;
    std::string message, detail, hint;
    Error(int code, std::string msg, std::string det = {}, std::string hnt = {})
        : sqlstate(code), message(std::move(msg)), detail(std::move(det)), hint(std::move(hnt)) {}
    const char *what() const noexcept override { return message.c_str(); }
};

// conveyor's own SQLSTATEs (README, "Errors").
constexpr int errcode_budget_exceeded = MAKE_SQLSTATE('C', 'V', '0', '0', '1');   // CV001
constexpr int errcode_quota_exhausted = MAKE_SQLSTATE('C', 'V', '0', '0', '2');   // CV002
constexpr int errcode_lease_lost = MAKE_SQLSTATE('C', 'V', '0', '0', '3');        // CV003
constexpr int errcode_idempotency_reused = MAKE_SQLSTATE('C', 'V', '0', '0', '4'); // CV004

// The memory context of the innermost active boundary; errors are copied into it.
extern MemoryContext boundary_context;

// The error e (its SQLSTATE, detail, column, constraint, ...) with another message and, when not
// empty, another hint, and no context line; in the boundary's memory like every captured error. The
// one way domain code rewords a PostgreSQL error it passes on (upsert names the failing element).
ErrorData *reworded(const ErrorData *e, const std::string &message, const std::string &hint);

namespace detail {

// Puts PostgreSQL's error stack pointers back as they were when the guard began, however the guarded
// call ends: a return, a longjmp caught by the guard, or a C++ exception thrown inside the lambda
// (which would otherwise leave PG_exception_stack pointing into a dead frame).
struct ErrorStacks {
    sigjmp_buf *const exception_stack = PG_exception_stack;
    ErrorContextCallback *const context_stack = error_context_stack;
    void restore() const noexcept {
        PG_exception_stack = exception_stack;
        error_context_stack = context_stack;
    }
    ~ErrorStacks() { restore(); }
};

} // namespace detail

// Runs f (which may ereport) and turns a PostgreSQL error into PgError.
template <typename F>
auto pg_guard(F &&f) -> decltype(f()) {
    using R = decltype(f());
    static_assert(std::is_void_v<R> || std::is_trivially_destructible_v<R>,
                  "a guarded call must return a trivially destructible value");
    MemoryContext caller_context = CurrentMemoryContext;
    const detail::ErrorStacks stacks;
    sigjmp_buf local_jmp;
    if (sigsetjmp(local_jmp, 0) == 0) {
        PG_exception_stack = &local_jmp;
        return f();
    }
    stacks.restore();  // before anything here can raise again
    MemoryContextSwitchTo(boundary_context ? boundary_context : caller_context);
    ErrorData *edata = CopyErrorData();
    FlushErrorState();
    MemoryContextSwitchTo(caller_context);
    throw PgError(edata);
}

// Runs f, a conversion by a PostgreSQL input, arithmetic or lookup function (timestamptz_in,
// numeric_int8, a time zone's name) under pg_guard: true if it succeeded, false if it raised a data
// exception (SQLSTATE class 22), which such functions raise before they acquire or change anything,
// so no subtransaction is needed to go on. Any other error passes as PgError. The one place domain
// code turns a PostgreSQL error into its own (it then raises its own, clearer one).
template <typename F>
bool converts(F &&f) {
    try {
        pg_guard(f);
        return true;
    } catch (const PgError &e) {
        if (ERRCODE_TO_CATEGORY(e.sqlstate()) != ERRCODE_DATA_EXCEPTION) throw;
        return false;
    }
}

namespace detail {

// Plain storage for an error on its way out of a catch block: nothing here has a destructor, so the
// ereport that follows skips nothing.
struct PendingError {
    ErrorData *pg = nullptr;
    int sqlstate = 0;
    char message[2048];
    char detail[2048];
    char hint[1024];
};

void capture(PendingError &out, const Error &e) noexcept;
void capture(PendingError &out, const char *what, int sqlstate) noexcept;
[[noreturn]] void raise(PendingError &pending);

} // namespace detail

// Runs f where PostgreSQL has called into conveyor (an entry point, a transaction callback): every
// C++ exception is caught, and the error is raised only after the catch block has ended, so no
// exception object or destructor is skipped by the longjmp. PgError is re-raised with ReThrowError:
// the client sees the original SQLSTATE, message, detail, hint and context.
template <typename F>
auto at_boundary(F &&f) -> decltype(f()) {
    using R = decltype(f());
    static_assert(std::is_void_v<R> || std::is_trivially_destructible_v<R>,
                  "a boundary must return a trivially destructible value");
    detail::PendingError pending;
    bool failed = false;
    std::conditional_t<std::is_void_v<R>, int, R> result{};
    MemoryContext outer_boundary = boundary_context;
    boundary_context = CurrentMemoryContext;
    try {
        if constexpr (std::is_void_v<R>) f();
        else result = f();
    } catch (const PgError &e) {
        pending.pg = e.data;
        failed = true;
    } catch (const Error &e) {
        detail::capture(pending, e);
        failed = true;
    } catch (const std::bad_alloc &) {
        detail::capture(pending, "out of memory", ERRCODE_OUT_OF_MEMORY);
        failed = true;
    } catch (const std::exception &e) {
        detail::capture(pending, e.what(), ERRCODE_INTERNAL_ERROR);
        failed = true;
    } catch (...) {
        detail::capture(pending, "unknown C++ exception", ERRCODE_INTERNAL_ERROR);
        failed = true;
    }
    boundary_context = outer_boundary;
    if (failed) detail::raise(pending);
    if constexpr (!std::is_void_v<R>) return result;
}

} // namespace conveyor

// Declares a SQL-callable function `name` whose C++ body is `name##_impl`.
#define CONVEYOR_FUNCTION(name)                                                        \
    static Datum name##_impl(FunctionCallInfo fcinfo);                                 \
    extern "C" {                                                                       \
    PG_FUNCTION_INFO_V1(name);                                                         \
    Datum name(PG_FUNCTION_ARGS) {                                                     \
        return ::conveyor::at_boundary([fcinfo] { return name##_impl(fcinfo); });      \
    }                                                                                  \
    }                                                                                  \
    static Datum name##_impl(FunctionCallInfo fcinfo)
