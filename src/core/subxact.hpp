// Subtransactions and scoped settings, the one way conveyor runs part of a call so that it can be
// undone alone (an upsert batch traced to its bad element, a lock wait that times out).
#pragma once

#include "guard.hpp"

extern "C" {
#include "utils/resowner.h"
}

namespace conveyor {

namespace detail {
// The memory context and resource owner a subtransaction returns to, however it ends.
struct SubxactFrame {
    MemoryContext context = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    void begin() const {
        pg_guard([] { BeginInternalSubTransaction(NULL); });
        MemoryContextSwitchTo(context);
    }
    void commit() const {
        pg_guard([] { ReleaseCurrentSubTransaction(); });
        back();
    }
    void roll_back() const {
        pg_guard([] { RollbackAndReleaseCurrentSubTransaction(); });
        back();
    }
    void back() const {
        MemoryContextSwitchTo(context);
        CurrentResourceOwner = owner;
    }
};
} // namespace detail

// Runs f in a subtransaction that commits if f returns; rolls it back and rethrows if f throws.
template <typename F>
void in_subtransaction(F &&f) {
    const detail::SubxactFrame frame;
    frame.begin();
    try {
        f();
    } catch (...) {
        frame.roll_back();
        throw;
    }
    frame.commit();
}

// Runs f in a subtransaction that is always rolled back; returns the PostgreSQL error f raised, or
// nullptr. Any other exception is rethrown after the rollback.
template <typename F>
ErrorData *try_and_roll_back(F &&f) {
    const detail::SubxactFrame frame;
    ErrorData *error = nullptr;
    frame.begin();
    try {
        f();
    } catch (const PgError &e) {
        error = e.data;
    } catch (...) {
        frame.roll_back();
        throw;
    }
    frame.roll_back();
    return error;
}

// A setting changed for the duration of f only (as a function's SET clause does): restored when f
// returns; when f throws, the enclosing (sub)transaction's abort restores it, and so does this.
int push_setting(const char *name, const char *value);
void pop_settings(int level, bool ok) noexcept;
template <typename F>
void with_setting(const char *name, const char *value, F &&f) {
    int level = push_setting(name, value);
    try {
        f();
    } catch (...) {
        pop_settings(level, false);
        throw;
    }
    pop_settings(level, true);
}

// Runs f in a subtransaction with lock_timeout = ms: true when f returned (committed), false when a
// lock it waited for was not granted in time (55P03; everything f did is rolled back). Upkeep uses it
// so that it never queues behind, or holds up, the hot path for long; any other error is rethrown.
template <typename F>
bool within_lock_timeout(int ms, F &&f) {
    std::string timeout = std::to_string(ms);
    try {
        in_subtransaction([&] { with_setting("lock_timeout", timeout.c_str(), f); });
    } catch (const PgError &e) {
        if (e.sqlstate() != ERRCODE_LOCK_NOT_AVAILABLE) throw;
        return false;
    }
    return true;
}

} // namespace conveyor
