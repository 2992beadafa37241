// Creating a slot with its snapshot: the part cdc_init() (src/sql/functions.cpp,
// which waits) and POST /v1/init (the server, which must not block its event loop
// and polls instead) share. Postgres style: nothing here owns a destructor; any
// function may ERROR.
#pragma once

#include <cstdint>

#include "pg/pg.hpp"

namespace pgcdcws::snapshot {

// Reserves a snapshot entry for creating slot `name` on behalf of `role` (who will
// own the slot) in this process. ERRORs 42710 when another cdc_init() is creating
// the same name, 54000 when every entry is in use. `publications`: the slot's
// default publications (a canonical list, checked by the caller; nullptr: none).
int allocate_entry(const char *name, bool temporary, bool export_snapshot, Oid role, const char *publications);

// The requester is done with the entry: freed unless its worker still holds it.
void free_entry(int index);

enum class InitState { Pending, Ready, Failed };

struct InitOutcome {
    std::uint64_t lsn;
    char snapshot_name[64];
    int error_code;  // Failed: the SQLSTATE (0: unknown)
    char message[512];
};

// Non-blocking: where the entry's worker is. Ready and Failed are final: the entry
// is then released to its worker (Ready) or freed (Failed), and must not be polled
// again.
InitState poll_init(int index, BackgroundWorkerHandle *handle, InitOutcome *out);

// The requester gave up: the worker is told to stop (its EPHEMERAL slot goes with
// it). Then call cancel_finished until it returns true: once the worker is gone it
// drops the slot if it had been persisted meanwhile and frees the entry.
void cancel_init(int index, BackgroundWorkerHandle *handle);
bool cancel_finished(int index, BackgroundWorkerHandle *handle);

}  // namespace pgcdcws::snapshot
