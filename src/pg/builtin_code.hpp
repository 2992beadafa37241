// Which code a client's choice makes Postgres run, told apart as "compiled into
// the server, immutable" or not. Used where a client picks code that some
// pgcdcws process then runs: row security policies (output/row_access.cpp) and
// the CHECK constraints of a domain a broadcast filter value is parsed as
// (server/pg_bridge.cpp).
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::pg {

// A function compiled into the server (prolang internal: no SQL body to inline
// or run through SPI), IMMUTABLE (reads no snapshot, table, session setting or
// clock) and not set-returning, whose OID comes from pg_proc.dat: below
// FirstGenbkiObjectId (access/transam.h) only the hand-assigned OIDs of the
// server's own catalog entries, never an object created by SQL, initdb's
// scripts included. A check_functions_in_node callback: true = not such a one.
bool not_builtin_immutable(Oid function, void *context);

// expression_tree_walker takes its callback as bool (*)(); through void (*)()
// so that g++ accepts the cast (the call site passes the right arguments).
template <typename Fn>
bool (*as_walker(Fn fn))() {
    return reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(fn));
}

// What a domain's CHECK constraints (its own, its ancestors', and those of the
// domains they coerce to) may run beyond built-in immutable functions on
// built-in values: `function` (InvalidOid: none) or a value of type `type`
// whose comparisons or I/O are code a user wrote (InvalidOid: none), found in
// the constraint `constraint` (a name in the type cache; valid for the
// transaction). found = false: every CHECK is built-in code only (plain
// comparisons, regular expressions, length(), ...). Not a domain: found = false.
// May ERROR (catalog lookups).
struct DomainUserCode {
    bool found = false;
    const char *constraint = nullptr;
    Oid function = InvalidOid;
    Oid type = InvalidOid;
};
void find_user_code_in_domain(Oid type, DomainUserCode *out);

}  // namespace pgcdcws::pg
