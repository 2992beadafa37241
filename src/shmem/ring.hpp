// Single-producer single-consumer byte ring for one stream, placed in shared
// memory: the decoder process produces records (fragments of WebSocket text
// messages), the server process consumes them.
//
// Why not shm_mq: a shm_mq dies when either side detaches, and neither side may
// block the other. This ring is plain memory with two monotonically growing
// positions, so either process can restart and the other sees a consistent state.
// Lock-free std::atomic<uint64_t> is address-free, so it works across processes.
// Latches are the caller's business (shmem/ring_io.hpp); this file has no Postgres
// headers. The flag protocol that makes a wakeup never lost is here:
// a producer that finds the ring full announces it will sleep
// (push_or_announce_wait), a consumer that frees space sees the announcement
// (pop_waking), both with a full fence between their store and their load.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace pgcdcws::shmem {

// Flags of a record.
constexpr std::uint32_t kRecordMessageEnd = 1u;  // last fragment of a WebSocket message

struct RecordHeader {
    std::uint32_t length;  // payload bytes
    std::uint32_t flags;
    std::uint64_t lsn;  // with kRecordMessageEnd: end LSN of the transaction, or 0 if it continues
};
static_assert(sizeof(RecordHeader) == 16, "record header layout");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared-memory atomics must be lock-free");

class Ring {
public:
    // Bytes of shared memory a ring with `capacity` data bytes needs.
    static std::size_t size_for(std::size_t capacity) { return offsetof(Ring, data_) + capacity; }
    // Constructs an empty ring in `memory` (size_for(capacity) bytes). capacity: multiple of 8.
    static Ring *create(void *memory, std::size_t capacity);

    // Largest payload one record can carry in this ring.
    std::size_t max_payload() const {
        return capacity_ / 2 > sizeof(RecordHeader) ? capacity_ / 2 - sizeof(RecordHeader) : 0;
    }

    // Producer side. Returns false (and writes nothing) when the ring lacks space.
    bool try_push(std::uint32_t flags, std::uint64_t lsn, const char *payload, std::uint32_t length);

    // Producer side, before sleeping: like try_push, but a failure leaves
    // `producer_waiting` set (after a fence and a second try), so a consumer
    // that frees space afterwards sees it and wakes the producer. The producer
    // clears the flag once woken.
    bool push_or_announce_wait(std::uint32_t flags, std::uint64_t lsn, const char *payload, std::uint32_t length,
                               std::atomic<bool> &producer_waiting);

    // Consumer side: the oldest record, if any.
    bool peek(RecordHeader &header) const;
    // Copies the payload of the record peek() returned.
    void copy_payload(const RecordHeader &header, char *out) const;
    // Releases the record peek() returned.
    void pop(const RecordHeader &header);
    // pop(), then whether the producer announced it sleeps for room (it must be woken).
    bool pop_waking(const RecordHeader &header, const std::atomic<bool> &producer_waiting);

    // Drops everything (consumer side; used when a stream is reset).
    void clear() { read_pos_.store(write_pos_.load(std::memory_order_acquire), std::memory_order_release); }

    bool empty() const {
        return read_pos_.load(std::memory_order_acquire) == write_pos_.load(std::memory_order_acquire);
    }
    std::size_t used() const {
        return static_cast<std::size_t>(write_pos_.load(std::memory_order_acquire) -
                                        read_pos_.load(std::memory_order_acquire));
    }
    std::size_t capacity() const { return capacity_; }

private:
    static std::size_t record_size(std::size_t payload) {
        return sizeof(RecordHeader) + ((payload + 7) & ~static_cast<std::size_t>(7));
    }
    void copy_in(std::uint64_t pos, const void *src, std::size_t n);
    void copy_out(std::uint64_t pos, void *dst, std::size_t n) const;

    std::atomic<std::uint64_t> write_pos_;  // bytes ever written; only the producer stores
    std::atomic<std::uint64_t> read_pos_;   // bytes ever consumed; only the consumer stores
    std::uint64_t capacity_;
    char data_[1];
};

}  // namespace pgcdcws::shmem
