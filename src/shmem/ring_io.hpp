// The Postgres side of a Ring: how its producer waits for room and how its
// consumer wakes that producer. Every producer (a stream's decoder, a snapshot
// data read) writes through RingWriter; every consumer in the server releases
// records with pop_record. The flag protocol itself is in ring.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "pg/pg.hpp"
#include "shmem/ring.hpp"

namespace pgcdcws::shmem {

// Called each time a writer that waited for room wakes up (after
// CHECK_FOR_INTERRUPTS); true: stop writing. It may ereport or proc_exit:
// no frame of the writer owns a destructor.
using WakeupHook = bool (*)(void *arg);

// Producer side of one ring. Trivially destructible: it lives in frames that
// Postgres errors longjmp across.
struct RingWriter {
    Ring *ring;
    std::atomic<bool> *producer_waiting;  // the flag the ring's consumer checks (pop_record)
    std::size_t max_record;               // payload bytes per record
    WakeupHook on_wakeup;                 // may be null
    void *hook_arg;
    bool wrote_any;  // some record of this writer went to the ring

    // Writes `length` bytes as records of at most max_record bytes (one record,
    // empty, if length is 0). With ends_message the last record carries
    // kRecordMessageEnd and `lsn`. Wakes the server after each record; while
    // the ring is full, sleeps until the server frees space (or 1 s: a lost
    // wakeup, a stop to notice). False: the hook said stop; a prefix may be written.
    bool write(const char *data, std::size_t length, bool ends_message, std::uint64_t lsn);
};
static_assert(std::is_trivially_destructible_v<RingWriter>, "RingWriter lives in frames an ERROR can cross");

// A writer for `ring` whose records hold at most `record_limit` bytes (and no
// more than the ring can take); `producer_waiting` is the flag the consumer reads.
RingWriter make_ring_writer(Ring *ring, std::atomic<bool> &producer_waiting, std::size_t record_limit,
                            WakeupHook on_wakeup, void *hook_arg);

// Consumer side: releases the record peek() returned and, if the producer
// sleeps for room, wakes it through `producer_latch`.
void pop_record(Ring *ring, const RecordHeader &header, const std::atomic<bool> &producer_waiting,
                const std::atomic<Latch *> &producer_latch);

}  // namespace pgcdcws::shmem
