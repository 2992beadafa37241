#include <cstring>
#include <new>

#include "shmem/broadcast_area.hpp"
#include "shmem/state.hpp"

namespace pgcdcws::shmem {

namespace {

BroadcastArea *area = nullptr;
Ring *control_ring = nullptr;
Ring *output_ring = nullptr;

void set_status(BroadcastStatus status) {
    area->status.store(static_cast<std::uint32_t>(status), std::memory_order_release);
}

}  // namespace

std::size_t broadcast_shmem_size() {
    return MAXALIGN(sizeof(BroadcastArea)) + MAXALIGN(Ring::size_for(kBroadcastControlRingBytes)) +
           MAXALIGN(Ring::size_for(kBroadcastOutputRingBytes));
}

void broadcast_shmem_init(char *base, bool found) {
    area = reinterpret_cast<BroadcastArea *>(base);
    char *p = base + MAXALIGN(sizeof(BroadcastArea));
    if (!found) {
        new (area) BroadcastArea();
        area->generation = 0;
        area->error[0] = '\0';
        control_ring = Ring::create(p, kBroadcastControlRingBytes);
        output_ring = Ring::create(p + MAXALIGN(Ring::size_for(kBroadcastControlRingBytes)), kBroadcastOutputRingBytes);
    } else {
        control_ring = reinterpret_cast<Ring *>(p);
        output_ring = reinterpret_cast<Ring *>(p + MAXALIGN(Ring::size_for(kBroadcastControlRingBytes)));
    }
}

BroadcastArea *broadcast_area() { return area; }
Ring *broadcast_control_ring() { return control_ring; }
Ring *broadcast_output_ring() { return output_ring; }

std::uint32_t begin_broadcast_decoder() {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    const std::uint32_t generation = ++area->generation;
    area->stop_requested.store(false);
    area->decoder_pid.store(0);
    area->decoder_latch.store(nullptr);
    area->output_producer_waiting.store(false);
    area->decoded_lsn.store(0);
    area->window_oldest.store(0);
    area->window_bytes.store(0);
    area->error[0] = '\0';
    // The server is the output ring's consumer: what a previous decoder left is stale.
    output_ring->clear();
    set_status(BroadcastStatus::Starting);
    LWLockRelease(st->lock);
    return generation;
}

void request_broadcast_stop() {
    area->stop_requested.store(true, std::memory_order_release);
    wake(area->decoder_latch);
}

bool publish_broadcast_decoder(std::uint32_t generation) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    const bool ours = area->generation == generation && !area->stop_requested.load();
    if (ours) {
        area->decoder_pid.store(MyProcPid);
        area->decoder_latch.store(MyLatch, std::memory_order_release);
        // The decoder is the control ring's consumer: what the server wrote
        // for an earlier decoder is stale.
        control_ring->clear();
    }
    LWLockRelease(st->lock);
    return ours;
}

void mark_broadcast_running(std::uint32_t generation) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    if (area->generation == generation)
        set_status(BroadcastStatus::Running);
    LWLockRelease(st->lock);
    wake_server();
}

void mark_broadcast_gone(std::uint32_t generation, const char *error) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_EXCLUSIVE);
    if (area->generation == generation) {
        if (error) {
            strlcpy(area->error, error, sizeof area->error);
            set_status(BroadcastStatus::Failed);
        } else {
            set_status(BroadcastStatus::Stopped);
        }
        area->decoder_pid.store(0);
        area->decoder_latch.store(nullptr);
    }
    LWLockRelease(st->lock);
    wake_server();
}

bool broadcast_generation_current(std::uint32_t generation) {
    SharedState *st = state();
    LWLockAcquire(st->lock, LW_SHARED);
    const bool current = area->generation == generation && !area->stop_requested.load();
    LWLockRelease(st->lock);
    return current;
}

}  // namespace pgcdcws::shmem
