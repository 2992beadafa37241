// STUB, TO BE DELETED BY THE INTEGRATOR when the broadcast decoder (branch
// wt-bdec, src/broadcast/decoder_worker.cpp) is merged: a weak definition of
// launch_decoder so the server links without the decoder. It starts nothing,
// so every subscription is told the decoder could not be started.
#include "server/broadcast_launch.hpp"

namespace pgcdcws::broadcast {

__attribute__((weak)) BackgroundWorkerHandle *launch_decoder(std::uint32_t) { return nullptr; }

}  // namespace pgcdcws::broadcast
