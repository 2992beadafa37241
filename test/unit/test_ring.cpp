// shmem::Ring (src/shmem/ring.cpp): SPSC byte ring of records {length, flags, lsn} + payload.
#include "shmem/ring.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using pgcdcws::shmem::kRecordMessageEnd;
using pgcdcws::shmem::RecordHeader;
using pgcdcws::shmem::Ring;

// Ring memory on the heap, exactly Ring::size_for(capacity) bytes (so ASan sees any
// access past the data area), pre-filled with garbage so create() must initialise it.
class RingMemory {
public:
    explicit RingMemory(std::size_t capacity)
        : size_(Ring::size_for(capacity)),
          memory_(static_cast<char *>(::operator new(size_, std::align_val_t(64)))) {
        std::memset(memory_, 0xA5, size_);
        ring_ = Ring::create(memory_, capacity);
    }
    ~RingMemory() { ::operator delete(memory_, std::align_val_t(64)); }
    RingMemory(const RingMemory &) = delete;
    RingMemory &operator=(const RingMemory &) = delete;

    Ring &operator*() const { return *ring_; }
    Ring *operator->() const { return ring_; }
    std::string bytes() const { return std::string(memory_, size_); }

private:
    std::size_t size_;
    char *memory_;
    Ring *ring_;
};

std::size_t record_size(std::size_t payload) { return sizeof(RecordHeader) + ((payload + 7) & ~std::size_t{7}); }

std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Deterministic payload of record `seq`: both sides can compute it independently.
std::string payload_for(std::uint64_t seq, std::size_t length) {
    std::string s(length, '\0');
    std::uint64_t state = splitmix64(seq);
    for (std::size_t i = 0; i < length; ++i) {
        if (i % 8 == 0)
            state = splitmix64(state);
        s[i] = static_cast<char>(state >> (8 * (i % 8)));
    }
    return s;
}

std::uint64_t fnv1a(const char *p, std::size_t n, std::uint64_t h = 0xCBF29CE484222325ull) {
    for (std::size_t i = 0; i < n; ++i) {
        h ^= static_cast<unsigned char>(p[i]);
        h *= 0x100000001B3ull;
    }
    return h;
}

bool push(Ring &ring, std::uint32_t flags, std::uint64_t lsn, const std::string &payload) {
    return ring.try_push(flags, lsn, payload.data(), static_cast<std::uint32_t>(payload.size()));
}

struct Record {
    RecordHeader header;
    std::string payload;
};

// peek + copy_payload + pop; the payload buffer is exactly header.length bytes.
::testing::AssertionResult pop_record(Ring &ring, Record &out) {
    if (!ring.peek(out.header))
        return ::testing::AssertionFailure() << "ring is empty";
    RecordHeader again{};
    if (!ring.peek(again) || std::memcmp(&again, &out.header, sizeof again) != 0)
        return ::testing::AssertionFailure() << "peek is not idempotent";
    std::vector<char> buf(out.header.length);
    ring.copy_payload(out.header, buf.data());
    out.payload.assign(buf.begin(), buf.end());
    ring.pop(out.header);
    return ::testing::AssertionSuccess();
}

void expect_record(Ring &ring, std::uint32_t flags, std::uint64_t lsn, const std::string &payload) {
    Record r;
    ASSERT_TRUE(pop_record(ring, r));
    EXPECT_EQ(r.header.flags, flags);
    EXPECT_EQ(r.header.lsn, lsn);
    EXPECT_EQ(r.header.length, payload.size());
    EXPECT_EQ(r.payload, payload);
}

// ---- layout and empty ring ---------------------------------------------------

TEST(Ring, SizesAndLimits) {
    RingMemory ring(1024);
    EXPECT_EQ(ring->capacity(), 1024u);
    EXPECT_EQ(ring->max_payload(), 1024u / 2 - sizeof(RecordHeader));
    EXPECT_GE(Ring::size_for(1024), 1024u + 2 * sizeof(std::uint64_t));
    EXPECT_EQ(Ring::size_for(2048) - Ring::size_for(1024), 1024u);
    EXPECT_EQ(sizeof(RecordHeader), 16u);
}

TEST(Ring, StartsEmpty) {
    RingMemory ring(256);
    EXPECT_TRUE(ring->empty());
    EXPECT_EQ(ring->used(), 0u);
    RecordHeader h{};
    EXPECT_FALSE(ring->peek(h));
}

// ---- single records ----------------------------------------------------------

TEST(Ring, PushPeekCopyPop) {
    RingMemory ring(256);
    ASSERT_TRUE(push(*ring, kRecordMessageEnd, 0x16B3748, "hello"));
    EXPECT_FALSE(ring->empty());
    EXPECT_EQ(ring->used(), record_size(5));
    EXPECT_EQ(ring->used(), 24u);
    expect_record(*ring, kRecordMessageEnd, 0x16B3748, "hello");
    EXPECT_TRUE(ring->empty());
    EXPECT_EQ(ring->used(), 0u);
}

TEST(Ring, ZeroLengthRecord) {
    RingMemory ring(256);
    ASSERT_TRUE(ring->try_push(kRecordMessageEnd, 42, nullptr, 0));
    EXPECT_EQ(ring->used(), sizeof(RecordHeader));
    RecordHeader h{};
    ASSERT_TRUE(ring->peek(h));
    EXPECT_EQ(h.length, 0u);
    EXPECT_EQ(h.flags, kRecordMessageEnd);
    EXPECT_EQ(h.lsn, 42u);
    ring->copy_payload(h, nullptr);  // must not touch `out`
    ring->pop(h);
    EXPECT_TRUE(ring->empty());
}

TEST(Ring, PayloadIsPaddedToEightBytes) {
    RingMemory ring(512);
    for (std::size_t len = 0; len <= 17; ++len) {
        const std::size_t before = ring->used();
        ASSERT_TRUE(push(*ring, 0, len, std::string(len, 'p')));
        EXPECT_EQ(ring->used() - before, record_size(len)) << len;
        EXPECT_EQ(ring->used() % 8, 0u);
    }
    for (std::size_t len = 0; len <= 17; ++len)
        expect_record(*ring, 0, len, std::string(len, 'p'));
}

TEST(Ring, FlagsAndLsnArePreserved) {
    RingMemory ring(512);
    ASSERT_TRUE(push(*ring, 0, 0, "a"));
    ASSERT_TRUE(push(*ring, kRecordMessageEnd, 0xFFFFFFFFFFFFFFFFull, "b"));
    ASSERT_TRUE(push(*ring, 0xFFFFFFFFu, 0x8000000000000000ull, "c"));
    expect_record(*ring, 0, 0, "a");
    expect_record(*ring, kRecordMessageEnd, 0xFFFFFFFFFFFFFFFFull, "b");
    expect_record(*ring, 0xFFFFFFFFu, 0x8000000000000000ull, "c");
}

TEST(Ring, BinaryPayloadWithNulBytes) {
    RingMemory ring(256);
    std::string payload;
    for (int c = 0; c < 100; ++c)
        payload += static_cast<char>(c * 37);
    payload[10] = '\0';
    ASSERT_TRUE(push(*ring, 0, 1, payload));
    expect_record(*ring, 0, 1, payload);
}

// ---- ordering ------------------------------------------------------------------

TEST(Ring, FifoOrder) {
    RingMemory ring(4096);
    std::vector<std::string> pushed;
    for (std::uint64_t i = 0;; ++i) {
        std::string p = payload_for(i, i % 23);
        if (!push(*ring, static_cast<std::uint32_t>(i & 1), i + 1, p))
            break;
        pushed.push_back(p);
    }
    ASSERT_GT(pushed.size(), 50u);
    for (std::size_t i = 0; i < pushed.size(); ++i)
        expect_record(*ring, static_cast<std::uint32_t>(i & 1), i + 1, pushed[i]);
    EXPECT_TRUE(ring->empty());
}

// ---- max_payload -----------------------------------------------------------------

TEST(Ring, MaxPayload) {
    RingMemory ring(1024);
    const std::size_t max = ring->max_payload();
    ASSERT_EQ(max, 496u);
    const std::string biggest = payload_for(1, max);
    ASSERT_TRUE(push(*ring, kRecordMessageEnd, 9, biggest));
    EXPECT_EQ(ring->used(), record_size(max));
    EXPECT_EQ(ring->used(), 512u);
    // A second maximal record fits exactly: half the ring each.
    ASSERT_TRUE(push(*ring, 0, 10, biggest));
    EXPECT_EQ(ring->used(), 1024u);
    expect_record(*ring, kRecordMessageEnd, 9, biggest);
    expect_record(*ring, 0, 10, biggest);
}

TEST(Ring, OverMaxPayloadIsRefusedAndWritesNothing) {
    RingMemory ring(1024);
    const std::size_t max = ring->max_payload();
    const std::string before = ring.bytes();
    const std::string too_big(max + 1, 'x');
    EXPECT_FALSE(push(*ring, 0, 1, too_big));  // rounds up to the same 512 bytes, still refused
    EXPECT_FALSE(push(*ring, 0, 1, std::string(ring->capacity(), 'x')));
    EXPECT_FALSE(ring->try_push(0, 1, too_big.data(), 0xFFFFFFFFu));  // must not read the payload
    EXPECT_EQ(ring.bytes(), before) << "a refused push modified the ring";
    EXPECT_TRUE(ring->empty());
    EXPECT_TRUE(push(*ring, 0, 1, std::string(max, 'x')));
}

// ---- full ring --------------------------------------------------------------------

TEST(Ring, FullRingRefusesAndWritesNothing) {
    RingMemory ring(256);
    const std::string p48(48, 'f');  // 64-byte records: exactly 4 fill the ring
    for (int i = 0; i < 4; ++i)
        ASSERT_TRUE(push(*ring, 0, i, p48)) << i;
    EXPECT_EQ(ring->used(), 256u);
    EXPECT_EQ(ring->used(), ring->capacity());

    const std::string before = ring.bytes();
    EXPECT_FALSE(push(*ring, 0, 99, p48));
    EXPECT_FALSE(push(*ring, 0, 99, ""));
    EXPECT_FALSE(ring->try_push(0, 99, nullptr, 0));
    EXPECT_EQ(ring.bytes(), before) << "a refused push modified the ring";
    EXPECT_EQ(ring->used(), 256u);

    expect_record(*ring, 0, 0, p48);
    EXPECT_EQ(ring->used(), 192u);
    EXPECT_FALSE(push(*ring, 0, 4, std::string(49, 'g')));  // needs 72 > 64 free
    ASSERT_TRUE(push(*ring, 0, 4, std::string(48, 'g')));   // needs exactly 64
    EXPECT_EQ(ring->used(), 256u);
    for (int i = 1; i < 4; ++i)
        expect_record(*ring, 0, i, p48);
    expect_record(*ring, 0, 4, std::string(48, 'g'));
    EXPECT_TRUE(ring->empty());
}

TEST(Ring, PartiallyFullRefusesOnlyWhatDoesNotFit) {
    RingMemory ring(128);  // max_payload 48
    ASSERT_TRUE(push(*ring, 0, 1, std::string(40, 'a')));  // 56 bytes
    ASSERT_TRUE(push(*ring, 0, 2, std::string(40, 'b')));  // 112 bytes used, 16 free
    EXPECT_FALSE(push(*ring, 0, 3, "x"));                  // needs 24
    ASSERT_TRUE(push(*ring, 0, 3, ""));                     // needs 16
    EXPECT_EQ(ring->used(), 128u);
    expect_record(*ring, 0, 1, std::string(40, 'a'));
    expect_record(*ring, 0, 2, std::string(40, 'b'));
    expect_record(*ring, 0, 3, "");
}

// ---- wraparound ----------------------------------------------------------------------

TEST(Ring, HeaderSplitAcrossTheEnd) {
    RingMemory ring(64);  // max_payload 16
    ASSERT_TRUE(push(*ring, 0, 1, std::string(8, 'a')));   // [0, 24)
    ASSERT_TRUE(push(*ring, 0, 2, std::string(16, 'b')));  // [24, 56)
    expect_record(*ring, 0, 1, std::string(8, 'a'));
    expect_record(*ring, 0, 2, std::string(16, 'b'));
    // Next header starts at offset 56: 8 bytes at the end, 8 at the start.
    const std::string p = payload_for(7, 16);
    ASSERT_TRUE(push(*ring, kRecordMessageEnd, 0x0123456789ABCDEFull, p));
    expect_record(*ring, kRecordMessageEnd, 0x0123456789ABCDEFull, p);
}

TEST(Ring, PayloadSplitAcrossTheEnd) {
    RingMemory ring(64);
    ASSERT_TRUE(push(*ring, 0, 1, std::string(16, 'a')));  // [0, 32)
    ASSERT_TRUE(push(*ring, 0, 2, ""));                     // [32, 48)
    expect_record(*ring, 0, 1, std::string(16, 'a'));
    expect_record(*ring, 0, 2, "");
    // Header exactly fills the end [48, 64); the payload (13 bytes, padded to 16) starts at 0.
    ASSERT_TRUE(push(*ring, 0, 3, "thirteen_byte"));
    expect_record(*ring, 0, 3, "thirteen_byte");
    // Move to offset 40, then a 16-byte payload straddles the end: 8 bytes at [56, 64), 8 at [0, 8).
    ASSERT_TRUE(push(*ring, 0, 4, std::string(8, 'c')));  // [16, 40)
    expect_record(*ring, 0, 4, std::string(8, 'c'));
    const std::string p = payload_for(5, 16);
    ASSERT_TRUE(push(*ring, 0, 5, p));  // header [40, 56), payload [56, 64) + [0, 8)
    expect_record(*ring, 0, 5, p);
}

TEST(Ring, EveryOffsetAndLengthWrapsCorrectly) {
    // Positions grow without bound; cycle through every alignment many times.
    RingMemory ring(128);
    const std::size_t max = ring->max_payload();
    std::uint64_t seq = 0;
    for (int round = 0; round < 200; ++round) {
        for (std::size_t len = 0; len <= max; len += 1 + round % 5) {
            const std::string p = payload_for(seq, len);
            ASSERT_TRUE(push(*ring, static_cast<std::uint32_t>(seq), seq, p));
            expect_record(*ring, static_cast<std::uint32_t>(seq), seq, p);
            ++seq;
        }
        // Also keep two records in flight across the wrap.
        const std::string a = payload_for(seq, round % (max + 1)), b = payload_for(seq + 1, max - round % (max + 1));
        ASSERT_TRUE(push(*ring, 0, seq, a));
        ASSERT_TRUE(push(*ring, 0, seq + 1, b));
        expect_record(*ring, 0, seq, a);
        expect_record(*ring, 0, seq + 1, b);
        seq += 2;
    }
    EXPECT_TRUE(ring->empty());
}

// ---- clear ---------------------------------------------------------------------------------

TEST(Ring, ClearDropsEverything) {
    RingMemory ring(256);
    ASSERT_TRUE(push(*ring, 0, 1, "one"));
    ASSERT_TRUE(push(*ring, 0, 2, "two"));
    ring->clear();
    EXPECT_TRUE(ring->empty());
    EXPECT_EQ(ring->used(), 0u);
    RecordHeader h{};
    EXPECT_FALSE(ring->peek(h));
    ASSERT_TRUE(push(*ring, kRecordMessageEnd, 3, "three"));
    expect_record(*ring, kRecordMessageEnd, 3, "three");
}

// ---- the wait flag: a producer that sleeps for room is woken by the consumer ----

TEST(Ring, PushOrAnnounceWaitSetsTheFlagOnlyWhenFull) {
    RingMemory ring(256);
    std::atomic<bool> waiting{false};
    const std::string p48(48, 'w');  // 64-byte records: 4 fill the ring
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(ring->push_or_announce_wait(0, i, p48.data(), 48, waiting)) << i;
        EXPECT_FALSE(waiting.load()) << "a push with room announced a wait";
    }
    const std::string before = ring.bytes();
    EXPECT_FALSE(ring->push_or_announce_wait(kRecordMessageEnd, 9, p48.data(), 48, waiting));
    EXPECT_TRUE(waiting.load());
    EXPECT_EQ(ring.bytes(), before) << "a refused push modified the ring";

    // The consumer frees a record and learns the producer must be woken.
    RecordHeader h{};
    ASSERT_TRUE(ring->peek(h));
    EXPECT_EQ(h.lsn, 0u);
    EXPECT_TRUE(ring->pop_waking(h, waiting));
    EXPECT_EQ(ring->used(), 192u);

    // Woken, the producer clears the flag and its record fits.
    waiting.store(false);
    ASSERT_TRUE(ring->push_or_announce_wait(kRecordMessageEnd, 9, p48.data(), 48, waiting));
    EXPECT_FALSE(waiting.load());
    ASSERT_TRUE(ring->peek(h));
    EXPECT_FALSE(ring->pop_waking(h, waiting)) << "nobody waits: no wakeup";
    for (int i = 2; i < 4; ++i)
        expect_record(*ring, 0, i, p48);
    expect_record(*ring, kRecordMessageEnd, 9, p48);
    EXPECT_TRUE(ring->empty());
}

TEST(Ring, PushOrAnnounceWaitNeverTakesAnOversizedRecord) {
    RingMemory ring(256);
    std::atomic<bool> waiting{false};
    const std::string big(ring->max_payload() + 1, 'x');
    EXPECT_FALSE(ring->push_or_announce_wait(0, 0, big.data(), static_cast<std::uint32_t>(big.size()), waiting));
    EXPECT_TRUE(waiting.load());
    EXPECT_TRUE(ring->empty());
}

// ---- shared memory: two mappings, two processes ----------------------------------------

// The ring stores no pointers: a second mapping of the same memory at another
// address (as another process would have) sees the same ring.
TEST(Ring, WorksThroughTwoMappingsAtDifferentAddresses) {
    const std::size_t capacity = 4096;
    const std::size_t size = Ring::size_for(capacity);
    const int fd = memfd_create("pgcdcws_ring_test", 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    void *a = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    void *b = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT_NE(a, MAP_FAILED);
    ASSERT_NE(b, MAP_FAILED);
    ASSERT_NE(a, b);

    Ring *producer = Ring::create(a, capacity);
    Ring *consumer = static_cast<Ring *>(b);  // attach: no create()
    EXPECT_EQ(consumer->capacity(), capacity);
    for (std::uint64_t seq = 0; seq < 5000; ++seq) {
        const std::string p = payload_for(seq, seq % 300);
        ASSERT_TRUE(push(*producer, 0, seq, p));
        EXPECT_EQ(consumer->used(), record_size(p.size()));
        expect_record(*consumer, 0, seq, p);
        EXPECT_TRUE(producer->empty());
    }
    munmap(a, size);
    munmap(b, size);
}

// ---- concurrency -------------------------------------------------------------------------------

constexpr auto kStressDeadline = std::chrono::seconds(120);

std::size_t stress_length(std::uint64_t seq, std::size_t max) {
    const std::uint64_t r = splitmix64(seq ^ 0x5EEDull);
    if (r % 64 == 0)
        return max - (r >> 8) % 8;  // occasionally (near) maximal
    if (r % 16 == 0)
        return 0;
    return (r >> 8) % 200;
}

// Two threads, a small ring (many wraps, frequently full and empty), 200k records
// whose length, flags, lsn and contents both sides derive from the sequence number.
TEST(RingStress, TwoThreadsProducerConsumer) {
    constexpr std::uint64_t kRecords = 200000;
    RingMemory mem(4096);
    Ring &ring = *mem;
    const std::size_t max = ring.max_payload();
    std::atomic<bool> failed{false};
    const auto deadline = std::chrono::steady_clock::now() + kStressDeadline;
    std::uint64_t producer_sum = 0, consumer_sum = 0;
    std::uint64_t full_spins = 0;

    std::thread producer([&] {
        for (std::uint64_t seq = 0; seq < kRecords && !failed; ++seq) {
            const std::string p = payload_for(seq, stress_length(seq, max));
            producer_sum = fnv1a(p.data(), p.size(), producer_sum ^ seq);
            const std::uint32_t flags = (seq % 3 == 0) ? kRecordMessageEnd : 0;
            while (!push(ring, flags, seq + 1, p)) {
                ++full_spins;
                if (std::chrono::steady_clock::now() > deadline) {
                    failed = true;
                    return;
                }
                std::this_thread::yield();
            }
            if (ring.used() > ring.capacity())
                failed = true;
        }
    });

    std::uint64_t received = 0;
    std::string first_error;
    std::vector<char> buf(max);
    while (received < kRecords && !failed) {
        RecordHeader h{};
        if (!ring.peek(h)) {
            if (std::chrono::steady_clock::now() > deadline) {
                first_error = "deadline passed";
                failed = true;
                break;
            }
            std::this_thread::yield();
            continue;
        }
        const std::uint64_t seq = received;
        const std::size_t len = stress_length(seq, max);
        if (h.lsn != seq + 1 || h.length != len ||
            h.flags != ((seq % 3 == 0) ? kRecordMessageEnd : 0u) || ring.used() > ring.capacity()) {
            first_error = "record " + std::to_string(seq) + ": header mismatch (lsn " + std::to_string(h.lsn) +
                          ", length " + std::to_string(h.length) + ")";
            failed = true;
            break;
        }
        ring.copy_payload(h, buf.data());
        const std::string expected = payload_for(seq, len);
        if (std::memcmp(buf.data(), expected.data(), len) != 0) {
            first_error = "record " + std::to_string(seq) + ": payload mismatch";
            failed = true;
            break;
        }
        consumer_sum = fnv1a(buf.data(), len, consumer_sum ^ seq);
        ring.pop(h);
        ++received;
    }
    producer.join();

    ASSERT_FALSE(failed) << first_error;
    EXPECT_EQ(received, kRecords);
    EXPECT_EQ(consumer_sum, producer_sum);
    EXPECT_TRUE(ring.empty());
    RecordProperty("full_spins", std::to_string(full_spins));
}

// Producer in a forked child, consumer in the parent, ring in MAP_SHARED memory:
// how the ring is used for real (decoder process -> server process).
TEST(RingStress, TwoProcessesThroughSharedMemory) {
    constexpr std::uint64_t kRecords = 50000;
    const std::size_t capacity = 2048;
    const std::size_t size = Ring::size_for(capacity);
    void *mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    Ring *ring = Ring::create(mem, capacity);
    const std::size_t max = ring->max_payload();

    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        const auto deadline = std::chrono::steady_clock::now() + kStressDeadline;
        for (std::uint64_t seq = 0; seq < kRecords; ++seq) {
            const std::string p = payload_for(seq, stress_length(seq, max));
            while (!push(*ring, 0, seq + 1, p)) {
                if (std::chrono::steady_clock::now() > deadline)
                    _exit(2);
                sched_yield();
            }
        }
        _exit(0);
    }

    const auto deadline = std::chrono::steady_clock::now() + kStressDeadline;
    std::uint64_t received = 0;
    std::string error;
    std::vector<char> buf(max);
    int status = 0;
    bool child_done = false;
    while (received < kRecords && error.empty()) {
        RecordHeader h{};
        if (!ring->peek(h)) {
            if (!child_done && waitpid(child, &status, WNOHANG) == child)
                child_done = true;
            else if (child_done && ring->empty())
                error = "producer exited early with status " + std::to_string(status);
            if (std::chrono::steady_clock::now() > deadline)
                error = "deadline passed";
            sched_yield();
            continue;
        }
        const std::size_t len = stress_length(received, max);
        if (h.lsn != received + 1 || h.length != len) {
            error = "record " + std::to_string(received) + ": header mismatch";
            break;
        }
        ring->copy_payload(h, buf.data());
        if (std::memcmp(buf.data(), payload_for(received, len).data(), len) != 0) {
            error = "record " + std::to_string(received) + ": payload mismatch";
            break;
        }
        ring->pop(h);
        ++received;
    }
    if (!error.empty() && !child_done)
        kill(child, SIGKILL);
    if (!child_done)
        waitpid(child, &status, 0);
    munmap(mem, size);

    ASSERT_TRUE(error.empty()) << error;
    EXPECT_EQ(received, kRecords);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

// A latch as Postgres has one: set wakes a waiter; a set before the wait is kept
// until reset.
class TestLatch {
public:
    void set() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            set_ = true;
        }
        cv_.notify_one();
    }
    // True when set, false on timeout.
    bool wait(std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [this] { return set_; });
    }
    void reset() {
        std::lock_guard<std::mutex> lock(mutex_);
        set_ = false;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool set_ = false;
};

// The producer loop of shmem::RingWriter against the consumer of
// shmem::pop_record, with a small ring so that the producer sleeps often: a
// sleep that ends by timeout while the ring had room for the record is a lost
// wakeup. The timeout is long (a descheduled consumer is not a lost wakeup).
TEST(RingStress, ProducerSleepingForRoomIsAlwaysWoken) {
    constexpr std::uint64_t kRecords = 20000;
    constexpr auto kLostAfter = std::chrono::milliseconds(5000);
    RingMemory mem(1024);  // stress_length: up to 200 bytes or max_payload (496)
    Ring &ring = *mem;
    const std::size_t max = ring.max_payload();
    std::atomic<bool> waiting{false};
    TestLatch producer_latch;
    std::atomic<bool> failed{false};
    std::uint64_t sleeps = 0, lost_wakeups = 0;
    const auto deadline = std::chrono::steady_clock::now() + kStressDeadline;

    std::thread producer([&] {
        for (std::uint64_t seq = 0; seq < kRecords && !failed; ++seq) {
            const std::string p = payload_for(seq, stress_length(seq, max));
            const auto length = static_cast<std::uint32_t>(p.size());
            while (!ring.push_or_announce_wait(0, seq + 1, p.data(), length, waiting)) {
                ++sleeps;
                const bool woken = producer_latch.wait(kLostAfter);
                producer_latch.reset();
                waiting.store(false);
                if (!woken && ring.capacity() - ring.used() >= record_size(length))
                    ++lost_wakeups;
                if (std::chrono::steady_clock::now() > deadline) {
                    failed = true;
                    return;
                }
            }
        }
    });

    std::uint64_t received = 0;
    std::vector<char> buf(max);
    while (received < kRecords && !failed) {
        RecordHeader h{};
        if (!ring.peek(h)) {
            if (std::chrono::steady_clock::now() > deadline)
                failed = true;
            std::this_thread::yield();
            continue;
        }
        ring.copy_payload(h, buf.data());
        const std::string expected = payload_for(received, stress_length(received, max));
        if (h.lsn != received + 1 || h.length != expected.size() ||
            std::memcmp(buf.data(), expected.data(), expected.size()) != 0) {
            failed = true;
            break;
        }
        if (ring.pop_waking(h, waiting))
            producer_latch.set();
        ++received;
        // A consumer slower than the producer now and then: the ring fills.
        if (received % 64 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    producer.join();

    ASSERT_FALSE(failed) << "after " << received << " records";
    EXPECT_EQ(received, kRecords);
    EXPECT_EQ(lost_wakeups, 0u);
    EXPECT_GT(sleeps, 0u) << "the producer never waited for room: the test tested nothing";
    RecordProperty("sleeps", std::to_string(sleeps));
}

}  // namespace
