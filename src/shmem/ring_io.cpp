#include "shmem/ring_io.hpp"

#include "shmem/state.hpp"

namespace pgcdcws::shmem {

namespace {

// One record, sleeping while the ring lacks room.
bool push_waiting(RingWriter *w, std::uint32_t flags, std::uint64_t lsn, const char *data, std::uint32_t length) {
    for (;;) {
        if (w->ring->push_or_announce_wait(flags, lsn, data, length, *w->producer_waiting)) {
            wake_server();
            return true;
        }
        wake_server();
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        w->producer_waiting->store(false);
        CHECK_FOR_INTERRUPTS();
        if (w->on_wakeup && w->on_wakeup(w->hook_arg))
            return false;
    }
}

}  // namespace

bool RingWriter::write(const char *data, std::size_t length, bool ends_message, std::uint64_t lsn) {
    std::size_t remaining = length;
    do {
        const std::size_t n = remaining < max_record ? remaining : max_record;
        const bool last = ends_message && n == remaining;
        if (!push_waiting(this, last ? kRecordMessageEnd : 0, last ? lsn : 0, data, static_cast<std::uint32_t>(n)))
            return false;
        wrote_any = true;
        data += n;
        remaining -= n;
    } while (remaining > 0);
    return true;
}

RingWriter make_ring_writer(Ring *ring, std::atomic<bool> &producer_waiting, std::size_t record_limit,
                            WakeupHook on_wakeup, void *hook_arg) {
    RingWriter w;
    w.ring = ring;
    w.producer_waiting = &producer_waiting;
    w.max_record = ring->max_payload() < record_limit ? ring->max_payload() : record_limit;
    w.on_wakeup = on_wakeup;
    w.hook_arg = hook_arg;
    w.wrote_any = false;
    return w;
}

void pop_record(Ring *ring, const RecordHeader &header, const std::atomic<bool> &producer_waiting,
                const std::atomic<Latch *> &producer_latch) {
    if (ring->pop_waking(header, producer_waiting))
        wake(producer_latch);
}

}  // namespace pgcdcws::shmem
