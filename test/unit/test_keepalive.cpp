// The server's keepalive table (src/server/keepalive.cpp): one ping per
// silence, a hang-up after twice the interval, and nothing for a peer that talks.
#include "server/keepalive.hpp"

#include <gtest/gtest.h>

namespace {

using pgcdcws::server::KeepaliveTable;

const int a = 0, b = 0;

TEST(Keepalive, PingsOnceAfterTheIntervalThenHangsUp) {
    KeepaliveTable t;
    KeepaliveTable::Sweep s;
    t.add(&a, 1000);
    t.sweep(2999, 2000, 4000, s);
    EXPECT_TRUE(s.ping.empty());
    EXPECT_FALSE(t.take_ping(&a));
    t.sweep(3000, 2000, 4000, s);
    ASSERT_EQ(s.ping.size(), 1u);
    EXPECT_EQ(s.ping[0], &a);
    EXPECT_TRUE(t.take_ping(&a));
    EXPECT_FALSE(t.take_ping(&a));  // owed once
    t.sweep(4500, 2000, 4000, s);
    EXPECT_TRUE(s.ping.empty());   // one ping per silence
    EXPECT_TRUE(s.hang_up.empty());
    t.sweep(5000, 2000, 4000, s);
    ASSERT_EQ(s.hang_up.size(), 1u);
    EXPECT_EQ(s.hang_up[0], &a);
    t.sweep(6000, 2000, 4000, s);
    EXPECT_TRUE(s.hang_up.empty());  // reported once
}

TEST(Keepalive, APeerThatTalksIsNeitherPingedNorHungUp) {
    KeepaliveTable t;
    KeepaliveTable::Sweep s;
    t.add(&a, 0);
    t.add(&b, 0);
    for (std::uint64_t now = 500; now <= 20000; now += 500) {
        t.heard_from(&a, now);
        t.sweep(now, 2000, 4000, s);
        for (const void *c : s.ping)
            EXPECT_NE(c, &a);
        for (const void *c : s.hang_up)
            EXPECT_NE(c, &a);
    }
    t.remove(&b);
    EXPECT_EQ(t.size(), 1u);
}

TEST(Keepalive, APongAfterThePingStartsANewSilence) {
    KeepaliveTable t;
    KeepaliveTable::Sweep s;
    t.add(&a, 0);
    t.sweep(2000, 2000, 4000, s);
    ASSERT_EQ(s.ping.size(), 1u);
    t.heard_from(&a, 2100);  // the pong
    t.sweep(4000, 2000, 4000, s);
    EXPECT_TRUE(s.ping.empty());
    EXPECT_TRUE(s.hang_up.empty());
    t.sweep(4100, 2000, 4000, s);
    EXPECT_EQ(s.ping.size(), 1u);  // a second silence, a second ping
    t.heard_from(&b, 4100);       // unknown: ignored
    EXPECT_FALSE(t.take_ping(&b));
}

// A peer reading a backlog answers no ping (it is queued behind the data) but
// acknowledges our bytes: it is kept while the count grows, hung up once it stops.
std::uint64_t fake_acked = 0;
std::uint64_t fake_bytes_acked(const void *) { return fake_acked; }

TEST(Keepalive, APeerThatAcknowledgesOurBytesIsKept) {
    KeepaliveTable t;
    KeepaliveTable::Sweep s;
    t.add(&a, 0);
    fake_acked = 100;
    t.sweep(2000, 2000, 4000, s, fake_bytes_acked);
    ASSERT_EQ(s.ping.size(), 1u);  // pinged at 100 bytes acknowledged
    fake_acked = 100 + 3;  // the ping itself, taken by a kernel whose program reads nothing
    t.sweep(3000, 2000, 4000, s, fake_bytes_acked);
    fake_acked = 5000;
    t.sweep(4000, 2000, 4000, s, fake_bytes_acked);
    EXPECT_TRUE(s.hang_up.empty());  // it read on: heard from now
    t.sweep(6000, 2000, 4000, s, fake_bytes_acked);
    ASSERT_EQ(s.ping.size(), 1u);  // a new silence, a new ping
    t.sweep(8000, 2000, 4000, s, fake_bytes_acked);
    ASSERT_EQ(s.hang_up.size(), 1u);  // nothing acknowledged since that ping
    EXPECT_EQ(s.hang_up[0], &a);
    // Without a probe (or 0: unknown) the rule is the plain one.
    KeepaliveTable u;
    u.add(&b, 0);
    fake_acked = 0;
    u.sweep(2000, 2000, 4000, s, fake_bytes_acked);
    u.sweep(4000, 2000, 4000, s, fake_bytes_acked);
    ASSERT_EQ(s.hang_up.size(), 1u);
}

}  // namespace

