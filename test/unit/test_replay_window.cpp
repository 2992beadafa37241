#include <gtest/gtest.h>

#include <vector>

#include "broadcast/replay_window.hpp"

using pgcdcws::broadcast::ReplayWindow;

namespace {

void collect(void *context, void *payload) {
    static_cast<std::vector<int> *>(context)->push_back(static_cast<int>(reinterpret_cast<std::intptr_t>(payload)));
}

void *tag(int n) { return reinterpret_cast<void *>(static_cast<std::intptr_t>(n)); }

}  // namespace

TEST(ReplayWindow, StartsAtTheDecoderStartAndCountsBytes) {
    ReplayWindow w(0x100);
    EXPECT_EQ(w.oldest(), 0x100u);
    EXPECT_EQ(w.size(), 0u);
    w.push(0x200, 10, tag(1));
    w.push(0x200, 20, tag(2));
    w.push(0x300, 5, tag(3));
    EXPECT_EQ(w.bytes(), 35u);
    EXPECT_EQ(w.size(), 3u);
    std::vector<int> released;
    EXPECT_EQ(w.trim(35, collect, &released), 0u);
    EXPECT_TRUE(released.empty());
    EXPECT_EQ(w.oldest(), 0x100u);
}

TEST(ReplayWindow, EvictsWholeTransactionsOldestFirst) {
    ReplayWindow w(0x100);
    w.push(0x200, 10, tag(1));
    w.push(0x200, 20, tag(2));
    w.push(0x300, 5, tag(3));
    w.push(0x400, 7, tag(4));
    std::vector<int> released;
    // 42 bytes, cap 40: the first entry alone would do, but its transaction goes whole.
    EXPECT_EQ(w.trim(40, collect, &released), 2u);
    EXPECT_EQ(released, (std::vector<int>{1, 2}));
    EXPECT_EQ(w.bytes(), 12u);
    EXPECT_EQ(w.oldest(), 0x200u);
    EXPECT_EQ(w.at(0).lsn, 0x300u);
    released.clear();
    EXPECT_EQ(w.trim(0, collect, &released), 2u);
    EXPECT_EQ(released, (std::vector<int>{3, 4}));
    EXPECT_EQ(w.bytes(), 0u);
    EXPECT_EQ(w.oldest(), 0x400u);
}

TEST(ReplayWindow, AnEntryBiggerThanTheCapLeavesAtOnce) {
    ReplayWindow w(1);
    std::vector<int> released;
    w.push(0x10, 100, tag(7));
    EXPECT_EQ(w.trim(50, collect, &released), 1u);
    EXPECT_EQ(released, (std::vector<int>{7}));
    EXPECT_EQ(w.oldest(), 0x10u);
    EXPECT_EQ(w.size(), 0u);
}

TEST(ReplayWindow, FirstAfterFindsTheReplayStart) {
    ReplayWindow w(0);
    w.push(0x200, 1, tag(1));
    w.push(0x200, 1, tag(2));
    w.push(0x300, 1, tag(3));
    EXPECT_EQ(w.first_after(0), 0u);
    EXPECT_EQ(w.first_after(0x1FF), 0u);
    EXPECT_EQ(w.first_after(0x200), 2u);
    EXPECT_EQ(w.first_after(0x2FF), 2u);
    EXPECT_EQ(w.first_after(0x300), 3u);
    EXPECT_EQ(w.first_after(0x999), 3u);
}

TEST(ReplayWindow, ResetReleasesEverything) {
    ReplayWindow w(0);
    w.push(0x200, 3, tag(1));
    w.push(0x300, 4, tag(2));
    std::vector<int> released;
    w.reset(0x500, collect, &released);
    EXPECT_EQ(released, (std::vector<int>{1, 2}));
    EXPECT_EQ(w.bytes(), 0u);
    EXPECT_EQ(w.oldest(), 0x500u);
}

TEST(ReplayWindow, ATransactionBiggerThanTheCapNeverStaysInPart) {
    ReplayWindow w(0);
    std::vector<int> released;
    w.push(0x100, 4, tag(1));
    w.push(0x200, 4, tag(2));
    w.push(0x200, 4, tag(3));
    EXPECT_EQ(w.trim(6, collect, &released), 3u);  // 0x100 first, then all of 0x200
    EXPECT_EQ(w.oldest(), 0x200u);
    // More of the evicted transaction arrives: it is evicted at once, though it would fit.
    w.push(0x200, 4, tag(4));
    EXPECT_EQ(w.trim(6, collect, &released), 1u);
    EXPECT_EQ(released, (std::vector<int>{1, 2, 3, 4}));
    EXPECT_EQ(w.size(), 0u);
    // The next transaction stays.
    w.push(0x300, 4, tag(5));
    EXPECT_EQ(w.trim(6, collect, &released), 0u);
    EXPECT_EQ(w.size(), 1u);
    EXPECT_EQ(w.oldest(), 0x200u);
}
