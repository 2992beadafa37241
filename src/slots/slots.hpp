// Replication slot facts pgcdcws needs, read from Postgres' shared memory, and
// the marks pgcdcws keeps with its slots.
//
// Marks are files in the slot's own directory, pg_replslot/<slot>/, written
// before the slot is persisted: Postgres removes that directory whenever the
// slot is dropped (by pgcdcws, pg_drop_replication_slot() or a crash before it
// was persisted), so a mark never outlives its slot and a later slot of the
// same name starts without marks.
//
// Temporary: a Postgres temporary slot belongs to the session that created it,
// but a pgcdcws slot is created by one worker and consumed by another. So
// pgcdcws creates a persistent slot marked temporary; the decoder drops it when
// its client leaves, the server drops it when nothing used it for a while
// (temporary_reaper.hpp) and drops leftovers when the cluster starts.
//
// Owner: the role that called cdc_init() (its OID). A slot without one was not
// made by cdc_init() (superusers only).
//
// Publication: cdc_init(publication => ...), the publications the slot's
// streams follow when the stream URL names none (a canonical list,
// protocol/publication_names.hpp). A slot without one streams every table.
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
// When the slot was marked temporary (its creation); 0 when it is not.
TimestampTz temporary_since(const char *name);

// The slot's owner mark (see the file comment); InvalidOid when there is none.
void set_owner(const char *name, Oid role);
Oid owner(const char *name);

// The slot's publication mark (see the file comment): set_publication writes
// `list` durably; publication copies it into out[size] (NUL-terminated).
void set_publication(const char *name, const char *list);
enum class Mark { Absent, Present, Unreadable };
Mark publication(const char *name, char *out, std::size_t size);

// Slots that use the pgcdcws plugin, copied under the slot control lock: up to
// max of them into out; returns how many.
struct Named {
    char name[NAMEDATALEN];
    int active_pid;
};
int list_ours(Named *out, int max);

// Drops every slot marked temporary before the cluster started that is not
// in use. Server start.
void drop_leftover_temporary();

// A free readable name, cdc_<word><number>, into out[NAMEDATALEN].
void generate_name(char *out);

}  // namespace pgcdcws::slots
