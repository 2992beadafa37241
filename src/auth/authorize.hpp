// Who may do what with pgcdcws slots and tokens (PG side; docs/SECURITY.md,
// "Tokens and slot ownership"). Used by the SQL functions and by the server process
// (inside a transaction, connected to pgcdcws.database, through pg::guarded): they
// read the role catalog, so any of them may ERROR.
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::auth {

// Streaming, acknowledging, dropping a slot and using its snapshot: superusers, the
// slot's owner (the cdc_init() caller) and roles with the owner's privileges
// (members that inherit it). Slots without an owner mark (not created by cdc_init(),
// or whose owner role was dropped) are for superusers only.
bool may_use_slot(Oid role, const char *slot_name);

// The role a token names, when it exists and may log in (rolcanlogin): its OID.
// Otherwise InvalidOid, and *why says which (for the server log, never the client).
Oid login_role(const char *name, const char **why);

// Whether the role (by OID: a token's role once authenticated) still exists and may
// log in. A running stream is checked with this, so that a role dropped, or dropped
// and created again under the same name, or set NOLOGIN loses its stream.
bool can_log_in(Oid role);

// Creating slots (cdc_init(), POST /v1/init): superuser or REPLICATION, as Postgres
// requires for replication slots.
bool may_create_slots(Oid role);

}  // namespace pgcdcws::auth
