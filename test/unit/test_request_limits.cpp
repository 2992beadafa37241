// TokenBucket and RequestLimits (src/server/request_limits.cpp): the per-socket
// limits on /ws subscribe/unsubscribe requests.
#include "server/request_limits.hpp"

#include <gtest/gtest.h>

namespace {

using pgcdcws::server::RequestLimits;
using pgcdcws::server::TokenBucket;
using Verdict = RequestLimits::Verdict;

constexpr std::uint64_t kSecond = 1000 * 1000;  // microseconds
constexpr std::uint64_t kStart = 5 * kSecond;

TEST(TokenBucket, StartsFullAndRefillsAtItsRate) {
    TokenBucket bucket(3, 2, kStart);  // 3 at once, 2 per second
    EXPECT_TRUE(bucket.try_take(1, kStart));
    EXPECT_TRUE(bucket.try_take(1, kStart));
    EXPECT_TRUE(bucket.try_take(1, kStart));
    EXPECT_FALSE(bucket.try_take(1, kStart));
    EXPECT_EQ(bucket.wait_us(1, kStart), kSecond / 2);
    EXPECT_FALSE(bucket.try_take(1, kStart + kSecond / 2 - 1));
    EXPECT_TRUE(bucket.try_take(1, kStart + kSecond / 2));
    // Never above capacity, however long it rests.
    EXPECT_EQ(bucket.level(kStart + 100 * kSecond), 3);
    EXPECT_EQ(bucket.wait_us(3, kStart + 100 * kSecond), 0u);
}

TEST(TokenBucket, ChargeGoesIntoDebtRepaidAtTheRate) {
    TokenBucket bucket(500, 100, kStart);  // e.g. ms of loop time: 500 at once, 100 per second
    bucket.charge(800, kStart);
    EXPECT_EQ(bucket.level(kStart), -300);
    EXPECT_FALSE(bucket.try_take(1, kStart));
    EXPECT_EQ(bucket.wait_us(1, kStart), 3 * kSecond + kSecond / 100);
    EXPECT_EQ(bucket.level(kStart + 3 * kSecond), 0);
    EXPECT_EQ(bucket.level(kStart + 4 * kSecond), 100);
}

TEST(TokenBucket, ClockGoingBackIsIgnored) {
    TokenBucket bucket(1, 1, kStart);
    EXPECT_TRUE(bucket.try_take(1, kStart));
    EXPECT_FALSE(bucket.try_take(1, kStart - kSecond));
    EXPECT_FALSE(bucket.try_take(1, kStart + kSecond - 1));
    EXPECT_TRUE(bucket.try_take(1, kStart + kSecond));
}

TEST(RequestLimits, Numbers) {
    EXPECT_EQ(RequestLimits::kRequestBurst, 200);
    EXPECT_EQ(RequestLimits::kRequestsPerSecond, 10);
}

TEST(RequestLimits, BurstThenRateThenRefusedWithRetryAfter) {
    RequestLimits limits(kStart);
    for (int i = 0; i < RequestLimits::kRequestBurst; i++)
        ASSERT_EQ(limits.admit(i % 2 == 0, kStart), Verdict::Admit) << i;
    EXPECT_EQ(limits.admit(true, kStart), Verdict::RefuseRate);
    EXPECT_EQ(limits.retry_after_ms(true, kStart), 100u);
    EXPECT_EQ(limits.admit(false, kStart + kSecond / 10), Verdict::Admit);
    EXPECT_EQ(limits.admit(false, kStart + kSecond / 10), Verdict::RefuseRate);
    // A second later: ten more.
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(limits.admit(false, kStart + kSecond + kSecond / 10), Verdict::Admit) << i;
    EXPECT_EQ(limits.admit(false, kStart + kSecond + kSecond / 10), Verdict::RefuseRate);
}

TEST(RequestLimits, TwentyRefusalsInARowClose) {
    RequestLimits limits(kStart);
    for (int i = 0; i < RequestLimits::kRequestBurst; i++)
        ASSERT_EQ(limits.admit(false, kStart), Verdict::Admit);
    for (int i = 1; i < RequestLimits::kFloodRefusals; i++)
        ASSERT_EQ(limits.admit(false, kStart), Verdict::RefuseRate) << i;
    EXPECT_EQ(limits.admit(false, kStart), Verdict::Close);
}

TEST(RequestLimits, AnAdmittedRequestResetsTheRefusalCount) {
    RequestLimits limits(kStart);
    for (int i = 0; i < RequestLimits::kRequestBurst; i++)
        ASSERT_EQ(limits.admit(false, kStart), Verdict::Admit);
    // A client at 15 requests per second: a third refused, never 20 in a row.
    std::uint64_t now = kStart;
    int admitted = 0, refused = 0;
    for (int i = 0; i < 150; i++) {
        now += kSecond / 15 + 1;  // 150 requests over 10.00005 s
        const Verdict v = limits.admit(false, now);
        ASSERT_NE(v, Verdict::Close) << i;
        (v == Verdict::Admit ? admitted : refused)++;
    }
    EXPECT_EQ(admitted, 100);  // 10 s at 10 per second
    EXPECT_EQ(refused, 50);
}

TEST(RequestLimits, CheckTimeBudget) {
    RequestLimits limits(kStart);
    // Checks that cost 250 ms each: two fit the 500 ms burst, the third starts
    // at 0 left and is refused; unsubscribes (no checks) still pass.
    EXPECT_EQ(limits.admit(true, kStart), Verdict::Admit);
    limits.charge_check(250 * 1000, kStart);
    EXPECT_EQ(limits.admit(true, kStart), Verdict::Admit);
    limits.charge_check(250 * 1000, kStart);
    EXPECT_EQ(limits.admit(true, kStart), Verdict::RefuseCheck);
    EXPECT_EQ(limits.retry_after_ms(true, kStart), 1u);  // 1 us of budget: 10 us at 10%
    EXPECT_EQ(limits.admit(false, kStart), Verdict::Admit);
    // A check cut at a 1 s timeout: 1 s of debt, repaid in 10 s.
    EXPECT_EQ(limits.admit(true, kStart + kSecond), Verdict::Admit);
    limits.charge_check(kSecond, kStart + kSecond);
    EXPECT_EQ(limits.admit(true, kStart + kSecond), Verdict::RefuseCheck);
    EXPECT_EQ(limits.retry_after_ms(true, kStart + kSecond), 9001u);
    EXPECT_EQ(limits.admit(true, kStart + kSecond + 9 * kSecond), Verdict::RefuseCheck);
    EXPECT_EQ(limits.admit(true, kStart + kSecond + 9 * kSecond + 10), Verdict::Admit);
}

}  // namespace

namespace {

using pgcdcws::server::RoleCheckTime;

TEST(RoleCheckTime, SharedBySocketsOfOneRoleOnly) {
    RoleCheckTime roles;
    EXPECT_EQ(roles.retry_after_ms(10, kStart), 0u);
    // Many sockets of role 10, each within its own budget: 1.2 s of checks at once.
    for (int i = 0; i < 4; i++)
        roles.charge(10, 300 * 1000, kStart);
    EXPECT_EQ(roles.retry_after_ms(10, kStart), 401u);  // 200 ms owed at 500 ms/s, +1 us
    EXPECT_EQ(roles.retry_after_ms(11, kStart), 0u);    // another role is not held back
    EXPECT_EQ(roles.retry_after_ms(10, kStart + 400 * 1000 + 2), 0u);
}

TEST(RoleCheckTime, RolesThatOweNothingAreForgotten) {
    RoleCheckTime roles;
    for (std::uint32_t role = 1; role <= 1000; role++)
        roles.charge(role, 1000, kStart);
    EXPECT_EQ(roles.roles(), 1000u);  // all in debt of 1 ms (of their 1 s burst, so none waits)
    EXPECT_EQ(roles.retry_after_ms(500, kStart), 0u);
    // 2 ms later every one is full again: the next charges prune them.
    for (std::uint32_t role = 2001; role <= 3000; role++)
        roles.charge(role, 1000, kStart + 2000 + role);
    EXPECT_LE(roles.roles(), 1100u);
}

}  // namespace
