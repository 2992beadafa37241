// The broadcast decoder's entry point as the server calls it. The decoder
// (src/broadcast/decoder_worker.hpp, being built on branch wt-bdec) defines it;
// until it is merged, src/broadcast/decoder_stub.cpp provides a weak stand-in.
// INTEGRATOR: once decoder_worker.hpp exists, include it instead and delete
// this header and decoder_stub.cpp.
#pragma once

#include <cstdint>

#include "pg/pg.hpp"

namespace pgcdcws::broadcast {

// Registers the dynamic background worker of decoder generation `generation`
// (shmem::begin_broadcast_decoder); nullptr when no worker slot is free.
BackgroundWorkerHandle *launch_decoder(std::uint32_t generation);

}  // namespace pgcdcws::broadcast
