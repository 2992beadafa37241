// The decoder: a dynamic background worker per stream ("pgcdcws decoder").
// It acquires one logical slot (a process can hold only one), decodes WAL
// in-process with the pgcdcws output plugin, and produces message fragments into
// its channel's ring for the server. Client acks arrive through the channel and
// are confirmed on the slot here, durably.
#pragma once

#include <cstdint>

#include "pg/pg.hpp"

extern "C" PGDLLEXPORT void pgcdcws_decoder_main(Datum main_arg);

namespace pgcdcws::decoder {

// Launches a decoder for channel `index` (generation `generation`). Returns the
// handle, or nullptr when no background worker slot is free.
BackgroundWorkerHandle *launch(int index, std::uint32_t generation);

}  // namespace pgcdcws::decoder
