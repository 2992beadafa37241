// Serves POST /v1/snapshot/data inside the snapshot worker, whose open
// transaction *is* the exported snapshot: every read sees exactly the rows
// committed before the slot's start LSN. Each request runs in a subtransaction,
// so a failing one never ends the snapshot. The response (a complete HTTP
// reply) goes to the server through the entry's ring, in bounded pieces.
#pragma once

#include "pg/pg.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::snapshot {

// Runs the Submitted request of `entry` (index `index`) and marks it Done.
void serve_request(shmem::SnapshotEntry *entry, int index);

}  // namespace pgcdcws::snapshot
