// The shared-memory meeting point of the server and the broadcast decoder
// (issue 8; docs/ARCHITECTURE.md "Broadcast engine"): two rings and the
// decoder's lifecycle. The messages on the rings are in src/broadcast/wire.hpp.
//
// One broadcast decoder serves every /ws subscriber of pgcdcws.database. The
// server launches it when the first subscription arrives; it creates its own
// temporary slot and exits when no subscription has existed for a while, or
// when asked to stop. Each launch bumps `generation`: every decoder write names
// the generation it was started for, so a stale decoder changes nothing. The
// control ring is cleared by each new decoder before it reports Running, and
// the server writes to it only while a decoder of the current generation is
// Running: a subscription therefore never outlives the decoder that knew it
// (the server closes its subscribers when the decoder stops; they reconnect
// with since=).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "pg/pg.hpp"
#include "shmem/ring.hpp"

namespace pgcdcws::shmem {

enum class BroadcastStatus : std::uint32_t {
    Stopped = 0,   // no decoder (never started, or exited after idling)
    Starting = 1,  // launched: creating its slot, waiting for a consistent point
    Running = 2,   // reading the control ring and decoding
    Failed = 3,    // stopped with an error (see `error`)
};

struct BroadcastArea {
    // Under SharedState::lock.
    std::uint32_t generation;

    // Server -> decoder.
    std::atomic<bool> stop_requested;

    // Decoder -> server.
    std::atomic<std::uint32_t> status;  // BroadcastStatus
    std::atomic<int> decoder_pid;
    std::atomic<Latch *> decoder_latch;
    std::atomic<bool> output_producer_waiting;  // decoder sleeps until the output ring has room
    std::atomic<std::uint64_t> decoded_lsn;     // end LSN of the last transaction decoded
    std::atomic<std::uint64_t> window_oldest;   // the replay window covers commits after this
    std::atomic<std::uint64_t> changes_decoded;  // row changes and truncates decoded
    std::atomic<std::uint64_t> changes_matched;  // ... that reached at least one subscription
    std::atomic<std::uint64_t> window_bytes;     // bytes the replay window holds
    char error[256];  // with Failed

    // Server counters (cdc_server_stats()).
    std::atomic<std::uint64_t> messages_delivered;  // change frames handed to client queues
    std::atomic<std::uint64_t> slow_clients_closed;  // closed with 1013
};

// Capacities of the two rings.
constexpr std::size_t kBroadcastControlRingBytes = 1024 * 1024;
constexpr std::size_t kBroadcastOutputRingBytes = 8 * 1024 * 1024;

BroadcastArea *broadcast_area();
Ring *broadcast_control_ring();
Ring *broadcast_output_ring();

// Server: a new decoder generation is about to be launched (status Starting,
// stop flag cleared). Returns the generation to pass to the decoder.
std::uint32_t begin_broadcast_decoder();
// Server: asks the current decoder to stop (no subscription left, or shutdown).
void request_broadcast_stop();

// Decoder: takes the area if it is still the generation it was started for,
// publishes pid and latch and clears the control ring. False: exit at once.
bool publish_broadcast_decoder(std::uint32_t generation);
// Decoder: the slot is consistent; subscriptions are accepted from now on.
void mark_broadcast_running(std::uint32_t generation);
// Decoder, on its way out: Failed with `error`, or Stopped. Wakes the server.
void mark_broadcast_gone(std::uint32_t generation, const char *error);
// Whether the decoder of `generation` is still the wanted one.
bool broadcast_generation_current(std::uint32_t generation);

// Sizes and placement, for shmem/state.cpp.
std::size_t broadcast_shmem_size();
void broadcast_shmem_init(char *base, bool found);

}  // namespace pgcdcws::shmem
