// Replication slot facts pgcdcws needs, read from Postgres' shared memory, and
// the on-disk marks of temporary slots.
//
// Why temporary slots are marked on disk: a Postgres temporary slot belongs to
// the session that created it, but a pgcdcws slot is created by one worker and
// consumed by another. So pgcdcws creates a persistent slot and records that it
// is temporary in $PGDATA/pgcdcws/temporary/<slot>; the decoder drops it when
// its client leaves and the server drops leftovers when it starts.
//
// Owners: the role that called cdc_init() owns the slot; it is kept in
// $PGDATA/pgcdcws/owners/<slot> (the role's OID), written before the slot is
// persisted, removed when pgcdcws drops the slot, and swept for slots dropped
// by other means when the cluster starts. A slot without a mark was not made
// by cdc_init() (superusers only).
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::slots {

constexpr const char *kPluginName = "pgcdcws";

struct SlotInfo {
    bool logical;
    Oid database;
    char plugin[NAMEDATALEN];
    int active_pid;
    XLogRecPtr confirmed_flush;
    XLogRecPtr restart_lsn;
    bool invalidated;
};

// Copies the slot's state; false when no slot has that name. Takes only
// ReplicationSlotControlLock and the slot spinlock, so the server may call it.
bool find(const char *name, SlotInfo *out);

// The slot exists, is logical, belongs to `database` and uses the pgcdcws plugin.
bool is_ours(const SlotInfo &info, Oid database);

// Whether output_plugin_libraries (PG 15.19+) lets pgcdcws load as a plugin.
bool plugin_allowed();
// ERROR with a hint when it does not.
void check_plugin_allowed();
// The hint for a missing output_plugin_libraries entry: the ALTER SYSTEM
// command that adds pgcdcws to the current list (palloc'd).
char *plugin_not_allowed_hint();

// Temporary marks (see the file comment).
void mark_temporary(const char *name);
void unmark_temporary(const char *name);
bool is_temporary(const char *name);

// The slot's owner mark (see the file comment); InvalidOid when there is none.
void set_owner(const char *name, Oid role);
Oid owner(const char *name);
// Removes every mark of a slot pgcdcws dropped (temporary and owner).
void forget_marks(const char *name);
// Drops every marked slot that is not in use, and removes the marks. Server start.
void drop_leftover_temporary();

// A free readable name, cdc_<word><number>, into out[NAMEDATALEN].
void generate_name(char *out);

}  // namespace pgcdcws::slots
