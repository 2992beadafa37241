#include "shmem/ring.hpp"

#include <cstring>
#include <new>

namespace pgcdcws::shmem {

Ring *Ring::create(void *memory, std::size_t capacity) {
    Ring *ring = static_cast<Ring *>(memory);
    new (&ring->write_pos_) std::atomic<std::uint64_t>(0);
    new (&ring->read_pos_) std::atomic<std::uint64_t>(0);
    ring->capacity_ = capacity;
    return ring;
}

void Ring::copy_in(std::uint64_t pos, const void *src, std::size_t n) {
    const std::size_t offset = static_cast<std::size_t>(pos % capacity_);
    const std::size_t first = n < capacity_ - offset ? n : capacity_ - offset;
    std::memcpy(data_ + offset, src, first);
    if (n > first)
        std::memcpy(data_, static_cast<const char *>(src) + first, n - first);
}

void Ring::copy_out(std::uint64_t pos, void *dst, std::size_t n) const {
    const std::size_t offset = static_cast<std::size_t>(pos % capacity_);
    const std::size_t first = n < capacity_ - offset ? n : capacity_ - offset;
    std::memcpy(dst, data_ + offset, first);
    if (n > first)
        std::memcpy(static_cast<char *>(dst) + first, data_, n - first);
}

bool Ring::try_push(std::uint32_t flags, std::uint64_t lsn, const char *payload, std::uint32_t length) {
    const std::size_t need = record_size(length);
    const std::uint64_t write = write_pos_.load(std::memory_order_relaxed);
    const std::uint64_t read = read_pos_.load(std::memory_order_acquire);
    if (length > max_payload() || capacity_ - (write - read) < need)
        return false;
    const RecordHeader header{length, flags, lsn};
    copy_in(write, &header, sizeof header);
    if (length > 0)
        copy_in(write + sizeof header, payload, length);
    write_pos_.store(write + need, std::memory_order_release);
    return true;
}

bool Ring::push_or_announce_wait(std::uint32_t flags, std::uint64_t lsn, const char *payload, std::uint32_t length,
                                 std::atomic<bool> &producer_waiting) {
    if (try_push(flags, lsn, payload, length))
        return true;
    producer_waiting.store(true);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!try_push(flags, lsn, payload, length))
        return false;
    producer_waiting.store(false);
    return true;
}

bool Ring::peek(RecordHeader &header) const {
    const std::uint64_t read = read_pos_.load(std::memory_order_relaxed);
    const std::uint64_t write = write_pos_.load(std::memory_order_acquire);
    if (write == read)
        return false;
    copy_out(read, &header, sizeof header);
    return true;
}

void Ring::copy_payload(const RecordHeader &header, char *out) const {
    const std::uint64_t read = read_pos_.load(std::memory_order_relaxed);
    if (header.length > 0)
        copy_out(read + sizeof header, out, header.length);
}

void Ring::pop(const RecordHeader &header) {
    const std::uint64_t read = read_pos_.load(std::memory_order_relaxed);
    read_pos_.store(read + record_size(header.length), std::memory_order_release);
}

bool Ring::pop_waking(const RecordHeader &header, const std::atomic<bool> &producer_waiting) {
    pop(header);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return producer_waiting.load();
}

}  // namespace pgcdcws::shmem
