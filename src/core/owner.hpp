// Acting as the extension's owner for conveyor's own tables, inside a SECURITY INVOKER function
// (upsert's bookkeeping, the audit row of an invoker call).
#pragma once

#include "guard.hpp"

extern "C" {
#include "catalog/pg_namespace.h"
#include "utils/syscache.h"
}

namespace conveyor {

// Acting as `role`, restricted as a maintenance command run as a table's owner is (nothing in the
// scope may change the session's role or authorization, even if something unexpected ran there),
// for the lifetime of the object; it lives above every guard, and a (sub)transaction's abort restores
// the same identity should the destructor not run first.
class RoleScope {
  public:
    explicit RoleScope(Oid role) {
        pg_guard([&] {
            GetUserIdAndSecContext(&saved_user_, &saved_context_);
            SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
        });
    }
    ~RoleScope() { SetUserIdAndSecContext(saved_user_, saved_context_); }  // a plain assignment: cannot raise
    RoleScope(const RoleScope &) = delete;
    RoleScope &operator=(const RoleScope &) = delete;

  private:
    Oid saved_user_ = InvalidOid;
    int saved_context_ = 0;
};

// The owner of schema conveyor.
inline Oid conveyor_owner() {
    return pg_guard([] {
        HeapTuple tup = SearchSysCache1(NAMESPACENAME, CStringGetDatum("conveyor"));
        if (!HeapTupleIsValid(tup)) elog(ERROR, "schema conveyor does not exist");
        Oid o = ((Form_pg_namespace)GETSTRUCT(tup))->nspowner;
        ReleaseSysCache(tup);
        return o;
    });
}

// conveyor's owner, for the lifetime of the object.
class OwnerScope : public RoleScope {
  public:
    OwnerScope() : RoleScope(conveyor_owner()) {}
};

} // namespace conveyor
