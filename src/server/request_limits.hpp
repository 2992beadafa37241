// Per-socket limits on the requests of a /ws socket that cost the server's
// event loop (subscribe, unsubscribe; docs/PROTOCOL.md "Limits on /ws"). No
// Postgres, no lws: unit-tested (test/unit/test_request_limits.cpp).
//
// Every request of the server's clients waits while one is handled, so each
// socket gets two budgets, both token buckets:
// - requests: kRequestBurst at once, then kRequestsPerSecond (a subscribe
//   also sends the broadcast decoder a control message to act on);
// - loop time spent checking its subscriptions (catalog lookups, the values'
//   input functions): kCheckBurstUs at once, then kCheckUsPerSecond, a tenth
//   of the loop. Charged after the fact (a check's cost is known only once it
//   ran; each is cut at the statement timeout), so the level may go below
//   zero; checks resume when it is positive again.
// A request beyond either budget is refused (the client may retry later); a
// socket with kFloodRefusals refusals in a row, none admitted between them, is
// flooding and is closed. New sockets come with fresh budgets, so the sockets
// of one role together have one more (RoleCheckTime): half the loop.
#pragma once

#include <cstdint>
#include <unordered_map>

namespace pgcdcws::server {

// A token bucket: `capacity` tokens, refilled at `per_second`, starting full.
// Times are microseconds of a steady clock. Kept in millionths of a token, as
// integers: a refill over n microseconds adds exactly n * per_second of them.
class TokenBucket {
public:
    TokenBucket(std::int64_t capacity, std::int64_t per_second, std::uint64_t now_us);

    // Takes `amount` if the bucket holds at least that much.
    bool try_take(std::int64_t amount, std::uint64_t now_us);
    // Takes `amount` whatever the level (a cost already spent): the level may
    // go below zero, a debt repaid at the refill rate.
    void charge(std::int64_t amount, std::uint64_t now_us);
    // Whole tokens held (rounded down; negative: the debt, rounded up).
    std::int64_t level(std::uint64_t now_us);
    // Microseconds until the level reaches `amount` (0: it does now).
    std::uint64_t wait_us(std::int64_t amount, std::uint64_t now_us);
    bool full(std::uint64_t now_us);

private:
    static constexpr std::int64_t kScale = 1000 * 1000;
    void refill(std::uint64_t now_us);

    std::int64_t capacity_;  // scaled
    std::int64_t per_second_;
    std::int64_t level_;  // scaled
    std::uint64_t last_us_;
};

class RequestLimits {
public:
    // Twice the subscriptions one socket may hold: a client sets up its whole
    // set at once (and replaces it once), errors and unsubscribes included.
    static constexpr std::int64_t kRequestBurst = 200;
    static constexpr std::int64_t kRequestsPerSecond = 10;
    static constexpr std::int64_t kCheckBurstUs = 500 * 1000;
    static constexpr std::int64_t kCheckUsPerSecond = 100 * 1000;
    static constexpr int kFloodRefusals = 20;

    explicit RequestLimits(std::uint64_t now_us);

    enum class Verdict {
        Admit,
        RefuseRate,   // beyond the request budget
        RefuseCheck,  // beyond the loop-time budget of subscription checks
        RefuseRole,   // beyond the role's (RoleCheckTime; the caller's verdict, never counted here)
        Close,        // refused, and the kFloodRefusals-th refusal in a row
    };
    // A request; `checks`: it resolves a subscription (needs loop time left).
    Verdict admit(bool checks, std::uint64_t now_us);
    // The loop time a subscription check of this socket took.
    void charge_check(std::uint64_t elapsed_us, std::uint64_t now_us);
    // After a refusal: milliseconds until the same request would be admitted.
    std::uint64_t retry_after_ms(bool checks, std::uint64_t now_us);

private:
    TokenBucket requests_;
    TokenBucket check_time_;
    int refused_in_a_row_ = 0;
};

// Loop time spent checking the subscriptions of each role, all its sockets
// and upgrades together: kBurstUs at once, then kUsPerSecond (half the loop),
// so that opening sockets (each with fresh per-socket budgets) or a URL
// subscription per connection cannot take more. A role that owes nothing is
// forgotten: the map holds the roles in debt (and a few more between prunes).
class RoleCheckTime {
public:
    static constexpr std::int64_t kBurstUs = 1000 * 1000;
    static constexpr std::int64_t kUsPerSecond = 500 * 1000;

    // 0: a check for `role` may start; else milliseconds until one may.
    std::uint64_t retry_after_ms(std::uint32_t role, std::uint64_t now_us);
    void charge(std::uint32_t role, std::uint64_t elapsed_us, std::uint64_t now_us);
    std::size_t roles() const { return roles_.size(); }

private:
    std::unordered_map<std::uint32_t, TokenBucket> roles_;
    std::size_t pruned_size_ = 0;  // roles_.size() after the last prune
};

}  // namespace pgcdcws::server
