#include "xact_lock.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace conveyor {

// ---- hashing ----

uint64 hash64(std::string_view bytes, uint64 seed) {
    return seed ? XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed) : XXH3_64bits(bytes.data(), bytes.size());
}

// ---- internal locks ----

LOCKTAG advisory_tag(LockSpace space, uint64 key) {
    LOCKTAG tag;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32)(key >> 32), (uint32)key, (uint16)space);
    return tag;
}

void xact_lock(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    pg_guard([&] { (void)LockAcquire(&tag, ExclusiveLock, false, false); });
}

void xact_lock_shared(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    pg_guard([&] { (void)LockAcquire(&tag, ShareLock, false, false); });
}

bool try_xact_lock(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    return pg_guard([&] { return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL; });
}

} // namespace conveyor
