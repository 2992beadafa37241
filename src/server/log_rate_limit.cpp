#include "server/log_rate_limit.hpp"

namespace pgcdcws::server {

namespace {
constexpr std::size_t kMaxKindLength = 80;
constexpr std::size_t kMaxExampleLength = 200;
}  // namespace

LogRateLimiter::LogRateLimiter(std::uint64_t interval_ms, std::size_t max_kinds)
    : interval_ms_(interval_ms), max_kinds_(max_kinds) {}

std::string LogRateLimiter::kind_of(std::string_view line) {
    std::string kind;
    bool in_number = false;
    for (char c : line) {
        if (kind.size() >= kMaxKindLength)
            break;
        if (c >= '0' && c <= '9') {
            if (!in_number)
                kind += '#';
            in_number = true;
            continue;
        }
        in_number = false;
        kind += c;
    }
    return kind;
}

LogRateLimiter::Kind &LogRateLimiter::find(std::string_view line) {
    std::string key = kind_of(line);
    auto it = kinds_.find(key);
    if (it != kinds_.end())
        return it->second;
    if (kinds_.size() >= max_kinds_)
        return overflow_;
    return kinds_.emplace(std::move(key), Kind{}).first->second;
}

LogRateLimiter::Verdict LogRateLimiter::admit(std::string_view line, std::uint64_t now_ms) {
    Kind &kind = find(line);
    Verdict verdict;
    if (!kind.seen || now_ms - kind.window_start >= interval_ms_) {
        kind.seen = true;
        verdict.log = true;
        verdict.held_back = kind.held_back;
        kind.held_back = 0;
        kind.window_start = now_ms;
        kind.example.assign(line.substr(0, kMaxExampleLength));
        return verdict;
    }
    kind.held_back++;
    kind.example.assign(line.substr(0, kMaxExampleLength));
    return verdict;
}

std::vector<LogRateLimiter::Summary> LogRateLimiter::due_summaries(std::uint64_t now_ms) {
    std::vector<Summary> out;
    auto visit = [&](Kind &kind) {
        if (kind.held_back == 0 || now_ms - kind.window_start < interval_ms_)
            return;
        out.push_back(Summary{kind.example, kind.held_back});
        kind.held_back = 0;
        kind.window_start = now_ms;
    };
    for (auto &entry : kinds_)
        visit(entry.second);
    visit(overflow_);
    return out;
}

}  // namespace pgcdcws::server
