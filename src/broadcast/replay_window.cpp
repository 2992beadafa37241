#include "broadcast/replay_window.hpp"

#include <algorithm>

namespace pgcdcws::broadcast {

void ReplayWindow::push(std::uint64_t lsn, std::size_t bytes, void *payload) {
    entries_.push_back(Entry{lsn, bytes, payload});
    bytes_ += bytes;
}

std::size_t ReplayWindow::trim(std::size_t cap, Release release, void *context) {
    std::size_t evicted = 0;
    // Entries of the newest evicted transaction that were pushed after its
    // eviction began (a transaction bigger than the cap) go too: the window
    // never holds part of a transaction.
    while (!entries_.empty() && (bytes_ > cap || entries_.front().lsn <= oldest_)) {
        const std::uint64_t lsn = entries_.front().lsn;
        // The whole transaction of the oldest entry.
        while (!entries_.empty() && entries_.front().lsn == lsn) {
            const Entry e = entries_.front();
            entries_.pop_front();
            bytes_ -= e.bytes;
            evicted++;
            if (release)
                release(context, e.payload);
        }
        oldest_ = lsn;
    }
    return evicted;
}

void ReplayWindow::reset(std::uint64_t start_lsn, Release release, void *context) {
    while (!entries_.empty()) {
        const Entry e = entries_.front();
        entries_.pop_front();
        if (release)
            release(context, e.payload);
    }
    bytes_ = 0;
    oldest_ = start_lsn;
}

std::size_t ReplayWindow::first_after(std::uint64_t since) const {
    const auto it = std::upper_bound(entries_.begin(), entries_.end(), since,
                                     [](std::uint64_t value, const Entry &e) { return value < e.lsn; });
    return static_cast<std::size_t>(it - entries_.begin());
}

}  // namespace pgcdcws::broadcast
