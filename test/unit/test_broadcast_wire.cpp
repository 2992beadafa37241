// Messages between the server and the broadcast decoder (src/broadcast/wire.cpp):
// each round-trips, and a truncated or altered message is refused, never read past.
#include "broadcast/wire.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace pgcdcws::broadcast;
using namespace pgcdcws::broadcast::wire;
using pgcdcws::protocol::FilterOp;

Subscribe sample_subscribe() {
    Subscribe s;
    s.handle = {7, 3};
    s.role = 16384;
    s.relid = 16390;
    s.kinds = 5;
    s.has_since = true;
    s.since = 0x1234567890ull;
    s.requested_at = 0x2000000ull;
    ResolvedFilter f;
    f.attnum = 2;
    f.op = FilterOp::In;
    f.type_oid = 25;
    f.collation = 100;
    f.values = {"a", "", "c:d"};
    s.filters.push_back(f);
    ResolvedFilter g;
    g.attnum = 1;
    g.op = FilterOp::Gt;
    g.type_oid = 23;
    g.values = {"5"};
    s.filters.push_back(g);
    return s;
}

TEST(BroadcastWire, SubscribeRoundTrips) {
    const Subscribe s = sample_subscribe();
    std::string m;
    encode(s, m);
    MessageType type;
    ASSERT_TRUE(peek_type(m, type));
    EXPECT_EQ(type, MessageType::Subscribe);
    Subscribe d;
    ASSERT_TRUE(decode(m, d));
    EXPECT_EQ(d.handle, s.handle);
    EXPECT_EQ(d.role, 16384u);
    EXPECT_EQ(d.relid, 16390u);
    EXPECT_EQ(d.kinds, 5);
    EXPECT_TRUE(d.has_since);
    EXPECT_EQ(d.since, 0x1234567890ull);
    EXPECT_EQ(d.requested_at, 0x2000000ull);
    ASSERT_EQ(d.filters.size(), 2u);
    EXPECT_EQ(d.filters[0].attnum, 2);
    EXPECT_EQ(d.filters[0].op, FilterOp::In);
    EXPECT_EQ(d.filters[0].collation, 100u);
    EXPECT_EQ(d.filters[0].values, (std::vector<std::string>{"a", "", "c:d"}));
    EXPECT_EQ(d.filters[1].op, FilterOp::Gt);
    EXPECT_EQ(d.filters[1].values, (std::vector<std::string>{"5"}));
}

TEST(BroadcastWire, EveryTruncationOfASubscribeIsRefused) {
    std::string m;
    encode(sample_subscribe(), m);
    for (std::size_t n = 0; n < m.size(); n++) {
        Subscribe d;
        EXPECT_FALSE(decode(std::string_view(m).substr(0, n), d)) << n;
    }
    Subscribe d;
    EXPECT_FALSE(decode(m + "x", d));
}

TEST(BroadcastWire, ControlAndOutputMessagesRoundTrip) {
    std::string m;
    encode_unsubscribe({9, 1}, m);
    SubscriptionHandle h;
    ASSERT_TRUE(decode_unsubscribe(m, h));
    EXPECT_EQ(h, (SubscriptionHandle{9, 1}));
    Subscribed sd;
    EXPECT_FALSE(decode(m, sd));  // another type

    m.clear();
    encode(Subscribed{{4, 2}, 0xABCDEFull}, m);
    ASSERT_TRUE(decode(m, sd));
    EXPECT_EQ(sd.handle, (SubscriptionHandle{4, 2}));
    EXPECT_EQ(sd.lsn, 0xABCDEFull);

    m.clear();
    encode(Gap{{4, 2}, 10, 20}, m);
    Gap g;
    ASSERT_TRUE(decode(m, g));
    EXPECT_EQ(g.since, 10u);
    EXPECT_EQ(g.oldest, 20u);

    m.clear();
    encode(Ended{{5, 6}, "table public.t was dropped"}, m);
    Ended e;
    ASSERT_TRUE(decode(m, e));
    EXPECT_EQ(e.handle, (SubscriptionHandle{5, 6}));
    EXPECT_EQ(e.reason, "table public.t was dropped");
    EXPECT_FALSE(decode(std::string_view(m).substr(0, m.size() - 1), e));
}

TEST(BroadcastWire, ChangeCarriesRecipientsAndBody) {
    const Recipient rs[] = {{{1, 1}, 0}, {{2, 7}, 3}};
    std::string m;
    encode_change_prefix(ChangeHeader{0x500, 741, 2}, rs, m);
    const std::string body = R"({"type":"change","kind":"update","xid":741,"lsn":"0/500")";
    m += body;
    ChangeHeader h;
    std::vector<Recipient> got;
    std::string_view b;
    ASSERT_TRUE(decode_change(m, h, got, b));
    EXPECT_EQ(h.lsn, 0x500u);
    EXPECT_EQ(h.xid, 741u);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[1].handle, (SubscriptionHandle{2, 7}));
    EXPECT_EQ(got[1].side, 3u);
    EXPECT_EQ(b, body);
    // A recipient count larger than the message holds is refused.
    std::string bad = m.substr(0, 4 + 8 + 4) + std::string("\xff\xff\xff\x0f", 4);
    EXPECT_FALSE(decode_change(bad, h, got, b));
}

}  // namespace
