// Library entry: settings, shared memory, the server worker, and the commit
// hook that wakes decoders. Loaded into the postmaster by
// shared_preload_libraries, hence into every backend.
#include "pg/pg.hpp"

#include "config.hpp"
#include "server/server.hpp"
#include "shmem/broadcast_area.hpp"
#include "shmem/state.hpp"

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

namespace {

// Nothing wakes a background worker when WAL is flushed (only walsenders are
// woken), so after a commit that wrote WAL every backend sets the latches of
// the running decoders. Decoders still poll as a fallback (async commit).
void wake_decoders_after_commit(XactEvent event, void *) {
    if (event != XACT_EVENT_COMMIT || !pgcdcws::shmem::available())
        return;
    if (!TransactionIdIsValid(GetTopTransactionIdIfAny()))
        return;
    pgcdcws::shmem::SharedState *st = pgcdcws::shmem::state();
    for (int i = 0; i < st->num_channels; i++)
        pgcdcws::shmem::wake_decoder(pgcdcws::shmem::channel(i));
    pgcdcws::shmem::wake(pgcdcws::shmem::broadcast_area()->decoder_latch);
}

}  // namespace

void _PG_init(void) {
    pgcdcws::config::define_settings();
    if (!process_shared_preload_libraries_in_progress)
        return;  // SQL functions then explain how to preload
    pgcdcws::shmem::install_hooks();
    pgcdcws::server::register_worker();
    RegisterXactCallback(wake_decoders_after_commit, nullptr);
}
