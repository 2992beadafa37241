// Postgres code that may raise an ERROR, run so that the caller goes on: inside
// an internal subtransaction, whose abort releases what the code held (locks,
// buffers, snapshots, settings, the user it switched to). Used wherever client-
// or role-controlled code runs in a pgcdcws process (row security policies,
// type input functions of filter values, subscription checks).
//
// `body` is a plain function: no C++ object with a destructor may live on the
// frames an ERROR crosses (docs/ARCHITECTURE.md, "The C++/Postgres boundary").
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::pg {

enum class OnSuccess {
    Commit,    // keep what body did (release the subtransaction)
    Rollback,  // a check: undo everything, even when it succeeded
};

// Runs body(arg) in a subtransaction. Returns nullptr when it returned, else
// the ERROR it raised, copied into the caller's memory context (FreeErrorData
// it); the error state is reset and the subtransaction rolled back. Memory,
// resource owner, user and security context are the caller's again either way.
ErrorData *run_in_subtransaction(void (*body)(void *), void *arg, OnSuccess on_success);

// The same, with body running as `role` in a security-restricted operation
// (current_user is the role; nothing may change the session).
ErrorData *run_as_role(Oid role, void (*body)(void *), void *arg, OnSuccess on_success);

// run_as_role with a time limit: when body has run `timeout_ms`, the next
// CHECK_FOR_INTERRUPTS in it raises "canceling statement due to statement
// timeout" (an ERROR, returned like any other). For code a client chooses
// (a domain's CHECK in a filter value) that a server loop must not wait for.
ErrorData *run_as_role_within(Oid role, int timeout_ms, void (*body)(void *), void *arg, OnSuccess on_success);

}  // namespace pgcdcws::pg
