// The snapshot worker ("pgcdcws snapshot"): one dynamic background worker per
// cdc_init(). It creates the slot, waits for a consistent point, exports the
// snapshot, and then keeps the exporting transaction open, because an exported
// snapshot lives exactly as long as its transaction. A SQL function cannot do
// this itself: exporting needs a process outside any transaction with no xmin.
//
// It holds the snapshot until the slot is dropped, pgcdcws.snapshot_timeout
// passes, release is requested, or the server stops.
#pragma once

#include "pg/pg.hpp"

extern "C" PGDLLEXPORT void pgcdcws_snapshot_main(Datum main_arg);

namespace pgcdcws::snapshot {

// Launches the worker for snapshot entry `index`; nullptr when no worker slot is free.
BackgroundWorkerHandle *launch(int index);

}  // namespace pgcdcws::snapshot
