#include "pg/subtransaction.hpp"

namespace pgcdcws::pg {

namespace {

struct AsRole {
    Oid role;
    int security_context;
    void (*body)(void *);
    void *arg;
};

void run_body_as_role(void *p) {
    auto *as = static_cast<AsRole *>(p);
    SetUserIdAndSecContext(as->role, as->security_context | SECURITY_RESTRICTED_OPERATION);
    as->body(as->arg);
}

}  // namespace

ErrorData *run_in_subtransaction(void (*body)(void *), void *arg, OnSuccess on_success) {
    MemoryContext caller_context = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    Oid saved_user;
    int saved_security;
    GetUserIdAndSecContext(&saved_user, &saved_security);
    ErrorData *volatile error = nullptr;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller_context);
    PG_TRY();
    {
        body(arg);
        SetUserIdAndSecContext(saved_user, saved_security);
        if (on_success == OnSuccess::Commit)
            ReleaseCurrentSubTransaction();
        else
            RollbackAndReleaseCurrentSubTransaction();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        error = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        SetUserIdAndSecContext(saved_user, saved_security);
    }
    PG_END_TRY();
    MemoryContextSwitchTo(caller_context);
    CurrentResourceOwner = caller_owner;
    return error;
}

ErrorData *run_as_role(Oid role, void (*body)(void *), void *arg, OnSuccess on_success) {
    Oid user;
    int security;
    GetUserIdAndSecContext(&user, &security);
    AsRole as{role, security, body, arg};
    return run_in_subtransaction(run_body_as_role, &as, on_success);
}

ErrorData *run_as_role_within(Oid role, int timeout_ms, void (*body)(void *), void *arg, OnSuccess on_success) {
    enable_timeout_after(STATEMENT_TIMEOUT, timeout_ms);
    ErrorData *error = run_as_role(role, body, arg, on_success);
    disable_timeout(STATEMENT_TIMEOUT, false);
    // A limit reached after body returned must not cancel whatever the
    // process does next.
    QueryCancelPending = false;
    return error;
}

}  // namespace pgcdcws::pg
