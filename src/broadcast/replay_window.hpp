// The broadcast decoder's replay window (issue 8, since=): the most recent
// decoded changes, oldest first, bounded by pgcdcws.broadcast_replay_size
// bytes. Pure bookkeeping (no Postgres headers; unit-tested in
// test/unit/test_replay_window.cpp): an entry is an opaque payload with its
// transaction's end LSN and the bytes it accounts for; the decoder
// (src/broadcast/engine.cpp) owns and frees the payloads.
//
// Whole transactions leave together: trimming evicts the oldest entries until
// the window fits, then the rest of the last evicted entry's transaction (the
// entries with its LSN, also those pushed later: a transaction bigger than the
// cap never stays in part), so the window never starts in the middle of one.
// oldest() is the end LSN of the newest evicted transaction, or the position
// decoding started from while nothing was evicted: the window holds every
// change that committed after it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace pgcdcws::broadcast {

class ReplayWindow {
public:
    struct Entry {
        std::uint64_t lsn;  // end LSN of the change's transaction
        std::size_t bytes;
        void *payload;
    };
    using Release = void (*)(void *context, void *payload);

    explicit ReplayWindow(std::uint64_t start_lsn = 0) : oldest_(start_lsn) {}

    // Appends the newest change; `lsn` never decreases from one push to the
    // next. May throw std::bad_alloc (nothing changes then).
    void push(std::uint64_t lsn, std::size_t bytes, void *payload);
    // Evicts whole transactions, oldest first, until bytes() <= cap;
    // release(context, payload) for each evicted entry. Returns how many.
    std::size_t trim(std::size_t cap, Release release, void *context);
    // Evicts everything (release as above) and starts over from `start_lsn`.
    void reset(std::uint64_t start_lsn, Release release, void *context);

    // The window holds every change whose transaction committed after it.
    std::uint64_t oldest() const { return oldest_; }
    std::size_t bytes() const { return bytes_; }
    std::size_t size() const { return entries_.size(); }
    const Entry &at(std::size_t i) const { return entries_[i]; }
    // Index of the first entry with lsn > since (size() if none).
    std::size_t first_after(std::uint64_t since) const;

private:
    std::deque<Entry> entries_;
    std::size_t bytes_ = 0;
    std::uint64_t oldest_;
};

}  // namespace pgcdcws::broadcast
