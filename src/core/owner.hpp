// Acting as the extension's owner for conveyor's own tables, inside a SECURITY INVOKER function
// (upsert's bookkeeping, the audit row of an invoker call).
#pragma once

#include "guard.hpp"

extern "C" {
#include "catalog/pg_namespace.h"
#include "utils/syscache.h"
}

namespace conveyor {

// The owner of schema conveyor, for the lifetime of the object; it lives above every guard.
class OwnerScope {
  public:
    OwnerScope() {
        GetUserIdAndSecContext(&saved_user_, &saved_context_);
        Oid owner = pg_guard([] {
            HeapTuple tup = SearchSysCache1(NAMESPACENAME, CStringGetDatum("conveyor"));
            if (!HeapTupleIsValid(tup)) elog(ERROR, "schema conveyor does not exist");
            Oid o = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
            ReleaseSysCache(tup);
            return o;
        });
        // Restricted, as for a maintenance command run as a table's owner: nothing in the scope may
        // change the session's role or authorization, even if something unexpected ran there.
        SetUserIdAndSecContext(owner, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    }
    ~OwnerScope() { SetUserIdAndSecContext(saved_user_, saved_context_); }
    OwnerScope(const OwnerScope &) = delete;
    OwnerScope &operator=(const OwnerScope &) = delete;

  private:
    Oid saved_user_ = InvalidOid;
    int saved_context_ = 0;
};

} // namespace conveyor
