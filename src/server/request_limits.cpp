#include "server/request_limits.hpp"

#include <algorithm>
#include <iterator>

namespace pgcdcws::server {

TokenBucket::TokenBucket(std::int64_t capacity, std::int64_t per_second, std::uint64_t now_us)
    : capacity_(capacity * kScale), per_second_(per_second), level_(capacity_), last_us_(now_us) {}

void TokenBucket::refill(std::uint64_t now_us) {
    if (now_us <= last_us_)
        return;  // a clock that did not move (or a caller's older reading)
    // Capped before multiplying: a long rest fills the bucket, never overflows.
    const std::uint64_t elapsed = std::min<std::uint64_t>(now_us - last_us_, 1000ull * 1000 * 1000 * 1000);
    const std::int64_t added = static_cast<std::int64_t>(elapsed) * per_second_;
    level_ = level_ >= capacity_ - added ? capacity_ : level_ + added;
    last_us_ = now_us;
}

bool TokenBucket::try_take(std::int64_t amount, std::uint64_t now_us) {
    refill(now_us);
    if (level_ < amount * kScale)
        return false;
    level_ -= amount * kScale;
    return true;
}

void TokenBucket::charge(std::int64_t amount, std::uint64_t now_us) {
    refill(now_us);
    level_ -= amount * kScale;
}

std::int64_t TokenBucket::level(std::uint64_t now_us) {
    refill(now_us);
    return level_ / kScale;
}

std::uint64_t TokenBucket::wait_us(std::int64_t amount, std::uint64_t now_us) {
    refill(now_us);
    const std::int64_t missing = amount * kScale - level_;
    if (missing <= 0)
        return 0;
    return static_cast<std::uint64_t>((missing + per_second_ - 1) / per_second_);
}

bool TokenBucket::full(std::uint64_t now_us) {
    refill(now_us);
    return level_ >= capacity_;
}

RequestLimits::RequestLimits(std::uint64_t now_us)
    : requests_(kRequestBurst, kRequestsPerSecond, now_us), check_time_(kCheckBurstUs, kCheckUsPerSecond, now_us) {}

RequestLimits::Verdict RequestLimits::admit(bool checks, std::uint64_t now_us) {
    Verdict refusal;
    // Loop time first: a refused request does not spend a request token.
    if (checks && check_time_.wait_us(1, now_us) > 0)
        refusal = Verdict::RefuseCheck;
    else if (!requests_.try_take(1, now_us))
        refusal = Verdict::RefuseRate;
    else {
        refused_in_a_row_ = 0;
        return Verdict::Admit;
    }
    return ++refused_in_a_row_ >= kFloodRefusals ? Verdict::Close : refusal;
}

void RequestLimits::charge_check(std::uint64_t elapsed_us, std::uint64_t now_us) {
    check_time_.charge(static_cast<std::int64_t>(elapsed_us), now_us);
}

std::uint64_t RequestLimits::retry_after_ms(bool checks, std::uint64_t now_us) {
    std::uint64_t us = requests_.wait_us(1, now_us);
    if (checks)
        // "positive": a microsecond above zero.
        us = std::max(us, check_time_.wait_us(1, now_us));
    return (us + 999) / 1000;
}

std::uint64_t RoleCheckTime::retry_after_ms(std::uint32_t role, std::uint64_t now_us) {
    auto it = roles_.find(role);
    if (it == roles_.end())
        return 0;
    return (it->second.wait_us(1, now_us) + 999) / 1000;
}

void RoleCheckTime::charge(std::uint32_t role, std::uint64_t elapsed_us, std::uint64_t now_us) {
    auto it = roles_.try_emplace(role, kBurstUs, kUsPerSecond, now_us).first;
    it->second.charge(static_cast<std::int64_t>(elapsed_us), now_us);
    // Pruned once it has doubled since the last prune: O(1) per charge.
    if (roles_.size() <= 2 * pruned_size_ + 16)
        return;
    for (auto r = roles_.begin(); r != roles_.end();)
        r = r->second.full(now_us) ? roles_.erase(r) : std::next(r);
    pruned_size_ = roles_.size();
}

}  // namespace pgcdcws::server
