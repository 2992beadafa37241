// ConnectionTable and usable_connection_cap (src/server/connection_table.cpp).
#include "server/connection_table.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace {

using pgcdcws::server::ConnectionTable;
using pgcdcws::server::kReservedFileDescriptors;
using pgcdcws::server::usable_connection_cap;

TEST(ConnectionCap, BelowTheOpenFileLimit) {
    EXPECT_EQ(usable_connection_cap(1000, 20000, 20), 1000);
    EXPECT_EQ(usable_connection_cap(1000, 1024, 20), 1024 - 20 - kReservedFileDescriptors);
    EXPECT_EQ(usable_connection_cap(100, 100 + 20 + kReservedFileDescriptors, 20), 100);
    EXPECT_EQ(usable_connection_cap(101, 100 + 20 + kReservedFileDescriptors, 20), 100);
    EXPECT_EQ(usable_connection_cap(1000, 50, 20), 1);
}

TEST(ConnectionTable, CountsAndDeadlines) {
    ConnectionTable table;
    int a, b, c;
    table.add(&a, 1000);
    table.add(&b, 2000);
    table.add(&c, 3000);
    EXPECT_EQ(table.size(), 3u);
    EXPECT_TRUE(table.overdue(10999, 10000).empty());
    EXPECT_EQ(table.overdue(11000, 10000), std::vector<const void *>{&a});
    table.request_complete(&b);
    auto late = table.overdue(20000, 10000);
    std::sort(late.begin(), late.end());
    std::vector<const void *> want{&a, &c};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(late, want);
    table.remove(&a);
    table.remove(&a);
    EXPECT_EQ(table.size(), 2u);
    EXPECT_FALSE(table.contains(&a));
    EXPECT_TRUE(table.contains(&b));
    table.request_complete(&a);  // unknown: nothing happens
    EXPECT_EQ(table.overdue(20000, 10000), std::vector<const void *>{&c});
}

}  // namespace
