// The broadcast decoder: a dynamic background worker ("pgcdcws broadcast"),
// one at a time, launched by the server when the first /ws subscription
// arrives (issue 8; src/shmem/broadcast_area.hpp has its lifecycle). It creates
// a TEMPORARY logical slot `pgcdcws_broadcast` (dropped when it exits: a new
// decoder makes a new slot), decodes WAL with the pgcdcws output plugin in
// broadcast mode, confirms the slot continuously up to what it decoded (it
// never holds WAL for later), and runs the engine (src/broadcast/engine.hpp)
// that matches every change against the subscriptions the server sends on the
// control ring. It exits when the server asks (stop_requested) or launches
// another generation.
#pragma once

#include <cstdint>

#include "pg/pg.hpp"

extern "C" PGDLLEXPORT void pgcdcws_broadcast_main(Datum main_arg);

namespace pgcdcws::broadcast {

// Name of the decoder's temporary slot.
constexpr const char *kBroadcastSlotName = "pgcdcws_broadcast";

// Launches the decoder of `generation` (shmem::begin_broadcast_decoder()).
// Returns its handle, or nullptr when no background worker slot is free.
BackgroundWorkerHandle *launch_decoder(std::uint32_t generation);

}  // namespace pgcdcws::broadcast
