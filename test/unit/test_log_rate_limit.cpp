// LogRateLimiter (src/server/log_rate_limit.cpp): one line per kind per interval.
#include "server/log_rate_limit.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::server::LogRateLimiter;

TEST(LogRateLimit, KindIgnoresNumbers) {
    EXPECT_EQ(LogRateLimiter::kind_of("accept: errno 24"), "accept: errno #");
    EXPECT_EQ(LogRateLimiter::kind_of("accept: errno 24"), LogRateLimiter::kind_of("accept: errno 105"));
    EXPECT_EQ(LogRateLimiter::kind_of("fd 1023 > 1000 max"), "fd # > # max");
    EXPECT_NE(LogRateLimiter::kind_of("accept: errno 24"), LogRateLimiter::kind_of("Too many fds (1 vs 2)"));
    EXPECT_EQ(LogRateLimiter::kind_of(std::string(500, 'x')).size(), 80u);
    EXPECT_EQ(LogRateLimiter::kind_of(""), "");
}

TEST(LogRateLimit, OneLinePerIntervalWithCount) {
    LogRateLimiter limiter(10000, 8);
    auto v = limiter.admit("accept: errno 24", 1000);
    EXPECT_TRUE(v.log);
    EXPECT_EQ(v.held_back, 0u);
    // A flood: 100000 lines within the interval, none logged.
    for (int i = 0; i < 100000; i++)
        EXPECT_FALSE(limiter.admit("accept: errno 24", 1000 + static_cast<std::uint64_t>(i) / 20).log);
    EXPECT_TRUE(limiter.due_summaries(10999).empty());
    // The next one after the interval is logged with the count held back.
    v = limiter.admit("accept: errno 23", 11000);
    EXPECT_TRUE(v.log);
    EXPECT_EQ(v.held_back, 100000u);
    v = limiter.admit("accept: errno 24", 11001);
    EXPECT_FALSE(v.log);
}

TEST(LogRateLimit, SummaryWhenTheFloodStops) {
    LogRateLimiter limiter(10000, 8);
    EXPECT_TRUE(limiter.admit("boom 1", 0).log);
    EXPECT_FALSE(limiter.admit("boom 2", 5).log);
    EXPECT_FALSE(limiter.admit("boom 3", 6).log);
    EXPECT_TRUE(limiter.due_summaries(9999).empty());
    auto due = limiter.due_summaries(10000);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0].held_back, 2u);
    EXPECT_EQ(due[0].example, "boom 3");
    // Reported once; and the interval restarted with the summary.
    EXPECT_TRUE(limiter.due_summaries(30000).empty());
    EXPECT_FALSE(limiter.admit("boom 4", 10001).log);
    EXPECT_TRUE(limiter.admit("boom 5", 20000).log);
}

TEST(LogRateLimit, KindsAreIndependent) {
    LogRateLimiter limiter(10000, 8);
    EXPECT_TRUE(limiter.admit("a 1", 0).log);
    EXPECT_TRUE(limiter.admit("b 1", 1).log);
    EXPECT_FALSE(limiter.admit("a 2", 2).log);
    EXPECT_FALSE(limiter.admit("b 2", 3).log);
    EXPECT_EQ(limiter.due_summaries(20000).size(), 2u);
}

TEST(LogRateLimit, BoundedNumberOfKinds) {
    LogRateLimiter limiter(10000, 4);
    int logged = 0;
    for (int i = 0; i < 1000; i++) {
        const std::string line = "kind " + std::string(static_cast<std::size_t>(i % 50), 'x');
        if (limiter.admit(line, 100).log)
            logged++;
    }
    EXPECT_EQ(limiter.kinds(), 4u);
    // The 4 kinds told apart, plus one shared bucket for all others: at most 5 lines.
    EXPECT_LE(logged, 5);
}

}  // namespace
