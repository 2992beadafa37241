// See authorize.hpp. Postgres style: nothing here owns a destructor (any call may ERROR).
#include "auth/authorize.hpp"

#include "slots/slots.hpp"

namespace pgcdcws::auth {

bool may_use_slot(Oid role, const char *slot_name) {
    if (superuser_arg(role))
        return true;
    const Oid owner = slots::owner(slot_name);
    // A dropped owner leaves a stale OID: nobody but superusers may use the slot.
    if (!OidIsValid(owner) || !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
        return false;
    return has_privs_of_role(role, owner);
}

Oid login_role(const char *name, const char **why) {
    HeapTuple tuple = SearchSysCache1(AUTHNAME, CStringGetDatum(name));
    if (!HeapTupleIsValid(tuple)) {
        *why = "role does not exist";
        return InvalidOid;
    }
    const auto *form = reinterpret_cast<Form_pg_authid>(GETSTRUCT(tuple));
    const Oid oid = form->oid;
    const bool can_login = form->rolcanlogin;
    ReleaseSysCache(tuple);
    if (!can_login) {
        *why = "role is not permitted to log in";
        return InvalidOid;
    }
    *why = nullptr;
    return oid;
}

bool can_log_in(Oid role) {
    HeapTuple tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
    if (!HeapTupleIsValid(tuple))
        return false;
    const bool can_login = reinterpret_cast<Form_pg_authid>(GETSTRUCT(tuple))->rolcanlogin;
    ReleaseSysCache(tuple);
    return can_login;
}

bool may_create_slots(Oid role) { return superuser_arg(role) || has_rolreplication(role); }

}  // namespace pgcdcws::auth
