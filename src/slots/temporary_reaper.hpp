// Temporary slots that nothing uses are dropped. A temporary slot goes when its
// stream ends (the decoder drops it), but one that is never streamed (a client
// of cdc_init(temporary => true) or POST /v1/init that never comes back) would
// otherwise keep its WAL until the cluster restarts.
#pragma once

#include "pg/pg.hpp"

namespace pgcdcws::slots {

// How long a temporary slot may stay unused before it is dropped: no stream
// (no channel, slot not active), no held snapshot, counted from the latest of
// its creation, the end of its snapshot and the last time it was seen in use.
// Long enough for a client to go from cdc_init() to its stream.
constexpr int kUnusedTemporaryGraceS = 60;

// One pass (at most every 2 s; cheaper calls return at once), from the server's
// housekeeping. A slot that cannot be dropped (it became active meanwhile) is
// logged and looked at again next pass. Outside a transaction.
void drop_unused_temporary();

}  // namespace pgcdcws::slots
